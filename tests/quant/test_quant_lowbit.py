"""Encoding to and decoding from low-bit codes.

Bit for bit against ml_dtypes where it has the type; against scalar references written
from each format's definition (the nearest of the enumerated values, ties to the even code)
everywhere, including float64 inputs and the types ml_dtypes lacks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from tegula.ir import dtypes
from tegula.ir.dtypes import DType
from tegula.ir.lowbit import LowBitError, code_values, decode, encode, grid

ml_dtypes = pytest.importorskip("ml_dtypes")

ML_NAMES = {
    "f8e4m3": "float8_e4m3fn",
    "f8e5m2": "float8_e5m2",
    "f6e3m2": "float6_e3m2fn",
    "f6e2m3": "float6_e2m3fn",
    "f4e2m1": "float4_e2m1fn",
    "e8m0": "float8_e8m0fnu",
}
FLOATS = list(ML_NAMES)
LOWBIT = [dt for dt in dtypes.all_dtypes() if dt.is_lowbit]


def ml_type(name: str) -> type:
    ml_name = ML_NAMES[name]
    if not hasattr(ml_dtypes, ml_name):
        pytest.skip(f"ml_dtypes {ml_dtypes.__version__} has no {ml_name}")
    return getattr(ml_dtypes, ml_name)


# -- scalar references from the definitions ---------------------------------------------------


def ref_value(dt: DType, code: int) -> float:
    """A code's value, read off the format's definition one field at a time."""
    if dt.is_int:
        return float(code - (1 << dt.bits) if dt.is_signed and code >> (dt.bits - 1) else code)
    if dt.table is not None:
        return dt.table[code]
    sign_bit = code >> (dt.bits - 1) if dt.has_sign else 0
    exponent = (code >> dt.mantissa) & ((1 << dt.exponent) - 1)
    mantissa = code & ((1 << dt.mantissa) - 1)
    all_ones = (1 << dt.exponent) - 1
    if dt.name == "e8m0":
        return math.nan if code == 0xFF else 2.0 ** (code - 127)
    if dt.name == "f8e4m3" and exponent == all_ones and mantissa == 7:
        magnitude = math.nan
    elif dt.name == "f8e5m2" and exponent == all_ones:
        magnitude = math.inf if mantissa == 0 else math.nan
    elif exponent == 0:
        magnitude = mantissa * 2.0 ** (1 - dt.bias - dt.mantissa)
    else:
        magnitude = (1 + mantissa / 2**dt.mantissa) * 2.0 ** (exponent - dt.bias)
    return -magnitude if sign_bit else magnitude


def ref_encode(dt: DType, x: float) -> int:
    """Nearest finite value (saturating), ties to the even code; by enumeration."""
    best = None
    for code in range(1 << dt.bits):
        v = ref_value(dt, code)
        if not math.isfinite(v):
            continue
        negative_code = code >> (dt.bits - 1) == 1
        if dt.is_float and dt.table is None and dt.has_sign and negative_code != (x < 0 or (
            x == 0 and math.copysign(1, x) < 0
        )):
            continue  # the sign travels on its own, so -0.0 and tiny negatives stay negative
        key = (abs(x - v), code & 1, code)  # the low bit: of the mantissa, or the integer
        if dt.table is not None:
            key = (abs(x - v), 0, code)  # tables: ties to the lower code
        if dt.name == "e8m0":
            key = (abs(x - v), -code, 0)  # ties up
        if best is None or key < best[0]:
            best = (key, code)
    assert best is not None
    return best[1]


def edge_inputs(dt: DType) -> np.ndarray:
    """Every value, every midpoint between neighbours (the ties), just either side, and
    the specials."""
    values = grid(dt).astype(np.float64)
    mids = (values[1:] + values[:-1]) / 2
    near = np.concatenate([np.nextafter(mids.astype(np.float32), np.float32(np.inf)),
                           np.nextafter(mids.astype(np.float32), np.float32(-np.inf))])
    top = dt.max_finite
    specials = [0.0, -0.0, top, -top, top * 1.01, -top * 1.01, top * 4, 1e30, -1e30]
    with np.errstate(over="ignore"):  # e8m0's 4 * 2^127 is inf in float32, as meant
        return np.concatenate([values, mids, near, specials]).astype(np.float32)


# -- decode ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FLOATS)
def test_decode_every_code_matches_ml_dtypes(name: str) -> None:
    dt = dtypes.dtype(name)
    codes = np.arange(1 << dt.bits, dtype=np.uint8)
    expected = codes.view(ml_type(name)).astype(np.float32)
    got = decode(codes, dt)
    assert got.dtype == np.float32
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    finite = ~np.isnan(expected)
    assert np.array_equal(got[finite].view(np.uint32), expected[finite].view(np.uint32))


@pytest.mark.parametrize("dt", LOWBIT, ids=str)
def test_decode_every_code_matches_the_definition(dt: DType) -> None:
    codes = np.arange(len(dt.table) if dt.table else 1 << dt.bits)
    expected = np.array([ref_value(dt, int(c)) for c in codes], dtype=np.float32)
    got = decode(codes, dt)
    assert np.array_equal(got, expected, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(expected))


def test_decode_refuses_bad_codes() -> None:
    with pytest.raises(LowBitError, match="code 16 is not a u4 code"):
        decode(np.array([1, 16]), dtypes.dtype("u4"))
    with pytest.raises(LowBitError, match="integer array"):
        decode(np.array([1.0]), dtypes.f4e2m1)
    with pytest.raises(LowBitError, match="f16 is not a low-bit type"):
        decode(np.array([1]), dtypes.f16)
    table = dtypes.lut_type("test_lut3", [-1.0, 0.0, 1.0])
    with pytest.raises(LowBitError, match="code 3 is not a test_lut3 code"):
        decode(np.array([3]), table)


# -- encode against ml_dtypes ---------------------------------------------------------------


def float32_inputs(dt: DType, rng: np.random.Generator) -> np.ndarray:
    """Edges, plus dense random values over the whole exponent range (subnormals too)."""
    scale = np.exp2(rng.uniform(-dt.bias - dt.mantissa - 3, math.log2(dt.max_finite) + 2,
                                20_000))
    dense = rng.choice([-1.0, 1.0], 20_000) * scale
    with np.errstate(over="ignore"):
        return np.concatenate([edge_inputs(dt), dense.astype(np.float32)])


@pytest.mark.parametrize("name", FLOATS)
def test_encode_matches_ml_dtypes_without_saturation(name: str) -> None:
    dt = dtypes.dtype(name)
    x = float32_inputs(dt, np.random.default_rng())
    specials = np.array([np.inf, -np.inf, np.nan, -np.nan], np.float32)
    if dt.name == "e8m0":
        # ml_dtypes rounds float32 subnormals linearly, so (2^-127, 1.5*2^-127) goes up to
        # 2^-126 there; the nearest power of two is 2^-127 (checked below).
        x = x[(x <= 2.0**-127) | (x >= 1.5 * 2.0**-127)]
    if dt.nan is not dtypes.NanEncoding.NONE:
        x = np.concatenate([x, specials])
    else:
        x = np.concatenate([x, specials[:2]])
    expected = x.astype(ml_type(name)).view(np.uint8)
    got = encode(x, dt, saturate=False)
    mismatch = np.flatnonzero(got != expected)
    assert mismatch.size == 0, (x[mismatch[:5]], got[mismatch[:5]], expected[mismatch[:5]])


@pytest.mark.parametrize("name", FLOATS)
def test_saturating_encode_clamps_to_max_finite(name: str) -> None:
    dt = dtypes.dtype(name)
    x = float32_inputs(dt, np.random.default_rng())
    x = np.concatenate([x, np.array([np.inf, -np.inf, min(3 * dt.max_finite, 3e38)], np.float32)])
    if dt.name == "e8m0":  # unsigned: negatives are NaN, saturated or not
        x = x[(x > 0) & ((x <= 2.0**-127) | (x >= 1.5 * 2.0**-127))]
    top = np.float32(dt.max_finite)
    clipped = np.clip(x, -top, top)
    assert np.array_equal(encode(x, dt), clipped.astype(ml_type(name)).view(np.uint8))
    assert np.all(np.isfinite(decode(encode(x, dt), dt)))


def test_nan_encodes_to_the_types_nan_and_is_refused_where_there_is_none() -> None:
    nan = np.array([np.nan, -np.nan])
    assert encode(nan, dtypes.f8e4m3).tolist() == [0x7F, 0xFF]
    assert encode(nan, dtypes.f8e5m2).tolist() == [0x7E, 0xFE]
    assert encode(nan, dtypes.e8m0).tolist() == [0xFF, 0xFF]
    for dt in (dtypes.f6e3m2, dtypes.f6e2m3, dtypes.f4e2m1, dtypes.nf4, dtypes.dtype("i4")):
        with pytest.raises(LowBitError, match=rf"{dt} has no NaN, but the input holds NaN at "
                                              r"index \(1,\)"):
            encode(np.array([1.0, np.nan, 2.0]), dt)


def test_e8m0_specials() -> None:
    x = np.array([0.0, -0.0, -1.0, 2.0**-140, 1.2 * 2.0**-127, 2.0**127, 1.5 * 2.0**127, np.inf])
    assert encode(x, dtypes.e8m0, saturate=False).tolist() == [255, 255, 255, 0, 0, 254, 255, 255]
    assert encode(x, dtypes.e8m0).tolist() == [0, 0, 255, 0, 0, 254, 254, 254]
    # Ties go to the larger power of two.
    assert encode(np.array([0.75, 1.5, 3.0, 6.0]), dtypes.e8m0).tolist() == [127, 128, 129, 130]


# -- encode against the definition ----------------------------------------------------------


@pytest.mark.parametrize("dt", LOWBIT, ids=str)
def test_encode_matches_the_definition(dt: DType) -> None:
    rng = np.random.default_rng()
    top = dt.max_finite if not dt.is_lut else max(abs(v) for v in dt.table or ())
    values = grid(dt).astype(np.float64)
    mids = (values[1:] + values[:-1]) / 2
    # float64 inputs: rounded once, from the exact value (ml_dtypes goes through float32).
    random = rng.uniform(-1.2 * top, 1.2 * top, 300)
    if dt.is_float and not dt.is_lut:
        random = np.concatenate([random, rng.uniform(-4, 4, 100) * dt.min_normal])
    if not dt.has_sign:
        random, mids = np.abs(random), mids[mids >= 0]
    if dt.name == "e8m0":  # no zero: keep to the positive range it covers
        random = np.exp2(rng.uniform(-130, 126, 300))
        random = np.concatenate([random, 1.5 * 2.0 ** rng.integers(-127, 126, 50)])
        mids = mids[:0]
    x = np.concatenate([random, mids, values, [1 + 2.0**-4 + 2.0**-30]])
    expected = np.array([ref_encode(dt, float(v)) for v in x], dtype=np.uint8)
    got = encode(x, dt)
    mismatch = np.flatnonzero(got != expected)
    assert mismatch.size == 0, (x[mismatch[:5]], got[mismatch[:5]], expected[mismatch[:5]])


def test_integers_round_half_even_and_clamp() -> None:
    i4, u3 = dtypes.dtype("i4"), dtypes.dtype("u3")
    x = np.array([-9.0, -8.5, -7.5, -0.5, 0.5, 1.5, 2.5, 6.5, 7.49, 100.0, -np.inf])
    assert decode(encode(x, i4), i4).tolist() == [-8, -8, -8, 0, 0, 2, 2, 6, 7, 7, -8]
    assert encode(np.array([-1.0, -8.0]), i4).tolist() == [0xF, 0x8]  # two's complement
    assert decode(encode(np.array([-3.0, 3.5, 4.5, 9.0]), u3), u3).tolist() == [0, 4, 4, 7]


def test_tables_take_the_nearest_entry_ties_to_the_lower_code() -> None:
    table = dtypes.lut_type("test_lut_unsorted", [1.0, -1.0, 0.0, 1.0])
    x = np.array([0.5, -0.5, 0.9, 2.0, -7.0])
    assert encode(x, table).tolist() == [0, 1, 0, 0, 1]
    nf4 = dtypes.nf4
    assert encode(np.array([-1.0, 0.0, 1.0, 0.04]), nf4).tolist() == [0, 7, 15, 8]


# -- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("dt", LOWBIT, ids=str)
def test_every_code_round_trips(dt: DType) -> None:
    values = code_values(dt)
    codes = np.flatnonzero(np.isfinite(values))
    once = decode(codes, dt)
    again = decode(encode(once, dt), dt)
    assert np.array_equal(once, again)
    assert np.array_equal(np.signbit(once), np.signbit(again))
    assert np.array_equal(decode(encode(once.astype(np.float64), dt, saturate=False), dt), once)


def test_encode_refuses_what_it_cannot_take() -> None:
    with pytest.raises(LowBitError, match="real array"):
        encode(np.array([1 + 1j]), dtypes.f8e4m3)
    with pytest.raises(LowBitError, match="f32 is not a low-bit type"):
        encode(np.array([1.0]), dtypes.f32)
    with pytest.raises(TypeError, match="tegula DType"):
        encode(np.array([1.0]), "f8e4m3")  # type: ignore[arg-type]
