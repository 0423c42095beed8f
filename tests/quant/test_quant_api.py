"""quantize / dequantize: error bounds, exactness on the grid, MX scales, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tegula.ir import dtypes
from tegula.ir.lowbit import decode, grid
from tegula.ir.packing import marlin_interleave, unpack
from tegula.runtime.quant import QuantizationError, QuantizedTensor, dequantize, quantize

K, N = 256, 24


def weights(rng: np.random.Generator, shape: tuple[int, ...] = (K, N)) -> np.ndarray:
    # Rows of very different magnitude, so per-group scales matter.
    return (rng.standard_normal(shape) * np.exp2(rng.uniform(-6, 6, shape[-1]))).astype(
        np.float32
    )


def per_element(qt: QuantizedTensor) -> np.ndarray:
    scale = qt.scale_values()
    return scale if qt.axis is None else np.repeat(scale, qt.group_size, axis=qt.axis)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("group_size", [None, 32, 64, 128, 8])
def test_symmetric_int_error_is_at_most_half_a_scale(bits: int, group_size: int | None) -> None:
    w = weights(np.random.default_rng())
    qt = quantize(w, f"i{bits}", group_size=group_size)
    assert qt.data.shape == (K, -(-N * bits // 8)) and qt.data.dtype == np.uint8
    groups = 1 if group_size is None else K // group_size
    assert qt.scales.shape == (groups, N) and qt.scales.dtype == np.float16
    out = np.full_like(w, np.nan)
    out[...] = dequantize(qt)
    scale = per_element(qt)
    assert np.all(np.abs(out - w) <= scale / 2 * (1 + 1e-6))
    # The scale is as small as the f16 grid allows: amax / qmax rounded up, one ulp at most.
    amax = np.abs(w.reshape(groups, -1, N)).max(axis=1)
    ideal = amax / (2 ** (bits - 1) - 1)
    assert np.all(qt.scale_values() >= ideal)
    assert np.all(qt.scale_values() <= ideal * (1 + 2**-10))


def test_per_tensor_and_other_axes() -> None:
    rng = np.random.default_rng()
    w = weights(rng, (4, 6, 32))
    qt = quantize(w, "i4", axis=None)
    assert qt.scales.shape == (1, 1, 1) and qt.axis is None
    assert np.all(np.abs(dequantize(qt) - w) <= qt.scale_values() / 2 * (1 + 1e-6))
    qt = quantize(w, "i8", axis=-1, group_size=16)
    assert qt.scales.shape == (4, 6, 2) and qt.axis == 2
    assert np.all(np.abs(dequantize(qt) - w) <= per_element(qt) / 2 * (1 + 1e-6))


@pytest.mark.parametrize("name", ["f8e4m3", "f8e5m2", "f6e3m2", "f6e2m3", "f4e2m1", "nf4"])
def test_float_and_table_types_pick_the_nearest_grid_value(name: str) -> None:
    dt = dtypes.dtype(name)
    w = weights(np.random.default_rng(), (128, 8))
    qt = quantize(w, dt, group_size=32, scale_dtype="f32")
    scale = per_element(qt).astype(np.float64)
    values = grid(dt).astype(np.float64)
    best = np.abs(w[..., None] / scale[..., None] - values).min(axis=-1) * scale
    out = dequantize(qt).astype(np.float64)
    # Up to the float32 rounding of value * scale.
    assert np.all(np.abs(out - w) <= best * (1 + 1e-9) + np.abs(out) * 2.0**-23)
    # The group's largest magnitude lands on the type's largest value.
    top = float(np.abs(values).max())
    amax = np.abs(w.reshape(4, 32, 8)).max(axis=1)
    assert np.allclose(qt.scale_values() * top, amax, rtol=1e-6)


@pytest.mark.parametrize(("name", "kw"), [
    ("i4", {}), ("u4", {"symmetric": False}), ("f4e2m1", {}), ("nf4", {}), ("i3", {}),
    ("f8e4m3", {"group_size": 32}),
])
def test_values_already_on_the_grid_come_back_exactly(name: str, kw: dict) -> None:
    dt = dtypes.dtype(name)
    rng = np.random.default_rng()
    values = grid(dt)
    if dt.is_int and kw.get("symmetric", True):
        values = values[values >= -values.max()]  # symmetric: -(2^(b-1)) is never aimed at
    codes = rng.integers(0, len(values), (64, 8))
    scale = np.exp2(rng.integers(-8, 8, 8)).astype(np.float32)  # one per column
    w = values[codes] * scale
    # Every group holds the grid's extremes, so the scale found is the one used.
    w[::32], w[1::32] = values[0] * scale, values[-1] * scale
    qt = quantize(w, dt, **kw)
    assert np.array_equal(dequantize(qt), w)


def test_asymmetric_u4_uses_zero_points() -> None:
    rng = np.random.default_rng()
    w = (rng.uniform(0.5, 3.0, (K, N)) + rng.uniform(-1, 1, N)).astype(np.float32)
    qt = quantize(w, "u4", group_size=64, symmetric=False)
    assert qt.zeros is not None and qt.zeros.shape == (4, N) and qt.zeros.dtype == np.uint8
    assert np.all(qt.zeros <= 15)
    scale = per_element(qt)
    assert np.all(np.abs(dequantize(qt) - w) <= scale / 2 * (1 + 1e-6))
    # The range holds zero, and spreads over all 16 codes.
    lo = np.minimum(w.reshape(4, 64, N).min(axis=1), 0)
    hi = np.maximum(w.reshape(4, 64, N).max(axis=1), 0)
    assert np.all(qt.scale_values() >= (hi - lo) / 15)
    assert np.all(qt.scale_values() <= (hi - lo) / 15 * (1 + 2**-10))
    # Asymmetric beats symmetric on one-sided data.
    symmetric = quantize(w, "i4", group_size=64)
    assert np.abs(dequantize(qt) - w).mean() < np.abs(dequantize(symmetric) - w).mean()


# OCP Microscaling Formats (MX) v1.0, table 1: emax of each element type.
MX_EMAX = {"f8e4m3": 8, "f8e5m2": 15, "f6e3m2": 4, "f6e2m3": 2, "f4e2m1": 2}


@pytest.mark.parametrize("name", list(MX_EMAX))
def test_mx_scales_follow_the_spec(name: str) -> None:
    rng = np.random.default_rng()
    w = weights(rng, (128, 6))
    w[:32, 0] = 0.0  # an all-zero block
    w[32, 1] = 2.0**5  # an exact power of two as a block's amax
    w[33:64, 1] = 1.0
    qt = quantize(w, name, mx=True)
    assert qt.group_size == 32 and qt.scale_dtype is dtypes.e8m0
    assert qt.scales.dtype == np.dtype("float8_e8m0fnu") and qt.scales.shape == (4, 6)
    codes = qt.scales.view(np.uint8)
    for block in range(4):
        for col in range(6):
            amax = float(np.abs(w[32 * block : 32 * block + 32, col]).max())
            # "X = 2^(floor(log2(amax)) - emax_elem)"; the scale's exponent 2^-127 at least.
            exponent = -127 if amax == 0 else math.floor(math.log2(amax)) - MX_EMAX[name]
            assert codes[block, col] == max(exponent, -127) + 127
    # Elements: V / X rounded to the element type, clamped at its largest value.
    dt = dtypes.dtype(name)
    scale = per_element(qt).astype(np.float64)
    values = grid(dt).astype(np.float64)
    target = np.clip(w / scale, -dt.max_finite, dt.max_finite)
    best = np.abs(target[..., None] - values).min(axis=-1)
    got = dequantize(qt).astype(np.float64) / scale
    assert np.all(np.abs(got - target) <= best * (1 + 1e-9) + np.abs(got) * 2.0**-23)
    assert np.array_equal(dequantize(qt)[:32, 0], np.zeros(32))


def test_interleaved_data_is_the_marlin_layout() -> None:
    w = weights(np.random.default_rng(), (64, 32))
    qt = quantize(w, "u4", symmetric=False, interleave=marlin_interleave())
    plain = quantize(w, "u4", symmetric=False)
    assert np.array_equal(dequantize(qt), dequantize(plain))
    assert np.array_equal(unpack(qt.data, 4, 32, interleave=marlin_interleave()), plain.codes())
    assert not np.array_equal(qt.data, plain.data)


def test_bad_arguments_are_named() -> None:
    w = weights(np.random.default_rng(), (96, 8))
    cases = [
        ({"group_size": 64}, r"group_size 64 does not divide dim 0 of shape \(96, 8\) \(96\)"),
        ({"group_size": 0}, "group_size must be a positive int"),
        ({"axis": 2}, "axis 2 is not an axis of a 2-d tensor"),
        ({"axis": None, "group_size": 32}, "group_size needs an axis"),
        ({"scale_dtype": "i8"}, "scale_dtype must be one of"),
        ({"mx": True, "group_size": 16}, "mx=True uses blocks of 32, not 16"),
        ({"mx": True, "scale_dtype": "f16"}, "mx=True uses e8m0 scales"),
    ]
    for kwargs, message in cases:
        with pytest.raises(QuantizationError, match=message):
            quantize(w, "f4e2m1" if kwargs.get("mx") else "i4", **kwargs)
    with pytest.raises(QuantizationError, match="mx=True needs an MX element type"):
        quantize(w, "i4", mx=True)
    with pytest.raises(QuantizationError, match="symmetric=False needs an integer dtype"):
        quantize(w, "f8e4m3", symmetric=False)
    with pytest.raises(QuantizationError, match="f16 is not a low-bit type"):
        quantize(w, "f16")
    with pytest.raises(QuantizationError, match="inf or NaN"):
        quantize(np.array([1.0, np.nan]), "i4")
    with pytest.raises(QuantizationError, match="scales overflow f16"):
        quantize(np.array([1e9, 1.0]), "i4")
    qt = quantize(w, "i4", group_size=32)
    with pytest.raises(QuantizationError, match=r"scales must have shape \(3, 8\)"):
        QuantizedTensor(qt.data, qt.scales[:2], None, qt.dtype, qt.shape, 0, 32, qt.scale_dtype)
    with pytest.raises(QuantizationError, match=r"data must be uint8 of shape \(96, 4\)"):
        QuantizedTensor(qt.data[:, :3], qt.scales, None, qt.dtype, qt.shape, 0, 32,
                        qt.scale_dtype)


def test_decoded_codes_match_the_packed_data() -> None:
    w = weights(np.random.default_rng(), (32, 10))
    qt = quantize(w, "i3")
    codes = qt.codes()
    assert codes.shape == (32, 10)
    assert np.array_equal(decode(codes, qt.dtype) * qt.scale_values(), dequantize(qt))


@pytest.mark.parametrize(("scale_dtype", "storage"), [
    ("f16", np.float16), ("bf16", "bfloat16"), ("f32", np.float32), ("e8m0", "float8_e8m0fnu"),
])
def test_scale_types_round_up_and_keep_the_bound(scale_dtype: str, storage: object) -> None:
    w = weights(np.random.default_rng(), (64, 8))
    qt = quantize(w, "i4", group_size=32, scale_dtype=scale_dtype)
    assert qt.scales.dtype == np.dtype(storage) and qt.scale_dtype.name == scale_dtype
    ideal = np.abs(w.reshape(2, 32, 8)).max(axis=1) / 7
    assert np.all(qt.scale_values() >= ideal)
    if scale_dtype == "e8m0":  # the next power of two up
        assert np.array_equal(qt.scale_values(), np.exp2(np.ceil(np.log2(ideal))))
    assert np.all(np.abs(dequantize(qt) - w) <= per_element(qt) / 2 * (1 + 1e-6))


def test_mxint8_scales_and_elements_follow_the_spec() -> None:
    rng = np.random.default_rng()
    w = weights(rng, (96, 5))
    w[:32, 0] = 0.0
    qt = quantize(w, "i8", mx=True)
    assert qt.mx and qt.scale_dtype is dtypes.e8m0 and qt.element_scale == 2.0**-6
    for block in range(3):
        for col in range(5):
            amax = float(np.abs(w[32 * block : 32 * block + 32, col]).max())
            # INT8 elements carry 2^-6, so the largest is 127/64 and emax_elem is 0.
            exponent = -127 if amax == 0 else math.floor(math.log2(amax))
            assert qt.scales.view(np.uint8)[block, col] == exponent + 127
    # A code q stands for q * 2^-6 * X: the nearest such value, saturating at the int8 range.
    x = np.repeat(qt.scale_values().astype(np.float64), 32, axis=0) * 2.0**-6
    want = np.clip(np.rint(w / x), -128, 127)
    codes = decode(qt.codes(), dtypes.dtype("i8")).astype(np.float64)
    assert np.array_equal(codes, want)
    assert np.array_equal(dequantize(qt).astype(np.float64), (codes * x).astype(np.float32))


def test_nvfp4_is_two_level_scaling_with_e4m3_block_scales() -> None:
    rng = np.random.default_rng()
    w = weights(rng, (64, 6))
    qt = quantize(w, "f4e2m1", group_size=16, scale_dtype="f8e4m3")
    assert qt.scales.dtype == np.dtype("float8_e4m3fn") and qt.scales.shape == (4, 6)
    # The tensor scale puts the largest block scale at e4m3's largest value, 448.
    assert qt.tensor_scale == pytest.approx(float(np.abs(w).max()) / 6 / 448, rel=1e-6)
    assert float(qt.scale_values().max()) == 448.0
    # Each block scale is the smallest e4m3 value at or above amax / 6 (in tensor-scale
    # units), so no element needs clamping.
    ideal = np.abs(w.reshape(4, 16, 6)).max(axis=1) / 6 / qt.tensor_scale
    stored = qt.scale_values().astype(np.float64)
    assert np.all(stored >= ideal * (1 - 1e-6))
    e4m3 = np.sort(grid(dtypes.dtype("f8e4m3")).astype(np.float64))
    below = np.array([e4m3[np.searchsorted(e4m3, s) - 1] for s in stored.ravel()])
    assert np.all(below.reshape(stored.shape) < ideal * (1 + 1e-6))
    # Elements: the nearest e2m1 value of w / (block scale * tensor scale).
    scale = np.repeat(stored, 16, axis=0) * qt.tensor_scale
    values = grid(dtypes.dtype("f4e2m1")).astype(np.float64)
    target = w / scale
    assert np.abs(target).max() <= 6 * (1 + 1e-6)
    best = np.abs(target[..., None] - values).min(axis=-1)
    got = dequantize(qt).astype(np.float64) / scale
    assert np.all(np.abs(got - target) <= best * (1 + 1e-6) + 1e-6)


def test_two_level_scales_are_symmetric_only() -> None:
    with pytest.raises(QuantizationError, match="f8e4m3 scales are symmetric"):
        quantize(weights(np.random.default_rng(), (32, 4)), "u4", group_size=16,
                 scale_dtype="f8e4m3", symmetric=False)
