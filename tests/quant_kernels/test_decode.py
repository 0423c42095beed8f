"""Low-bit tensors in kernels: packed loads of every width and exact decoding by ``cast``.

A kernel loads a window of codes (ragged on purpose, so runs start off byte boundaries and
cross the tensor's edge) and stores ``cast(t, f32)``; the result must equal
``tegula.ir.lowbit.decode`` of the codes bit for bit, every code of the type included.
Casts to ``f16`` and ``bf16`` (which CUDA decodes through their own mantissas) must equal
that value rounded to the type.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from quant_kernel_helpers import all_codes, as_argument, assert_bit_exact, on_gpu
from tegula.ir import dtypes, lowbit

import tegula as tg

INTEGERS = [f"{s}{b}" for b in range(1, 9) for s in "iu"]
FLOATS = ["f8e4m3", "f8e5m2", "f6e3m2", "f6e2m3", "f4e2m1", "nf4"]
TABLE = dtypes.lut_type("quant_kernels_lut3", [-3.5, -1.0, -0.25, 0.0, 0.5, 1.5, 2.0, 7.0])
ALL_TYPES = [*INTEGERS, *FLOATS, TABLE.name]

_DECODE = """
kernel decode(w: {dt}[R, C], out: {ot}[R, C])
    params BR = 8, BC = 64
    grid (cdiv(R, BR), cdiv(C, BC))
{{
    i = bid.x * BR
    j = bid.y * BC
    store(out[i : +BR, j : +BC], cast(load(w[i : +BR, j : +BC]{extra}), {ot}))
}}
"""


OUTPUTS = {"f32": np.float32, "f16": np.float16, "bf16": ml_dtypes.bfloat16}


def decode_source(dt: str, extra: str = "", out: str = "f32") -> str:
    return _DECODE.format(dt=dt, extra=extra, ot=out)


@pytest.mark.parametrize("name", ALL_TYPES)
def test_cast_decodes_every_code_exactly(name: str) -> None:
    dt = dtypes.dtype(name)
    rng = np.random.default_rng()
    kernel = tg.compile(decode_source(name), target="cpu", cache=False).decode
    for rows, cols in ((21, 75), (3, 13), (1, 1)):  # ragged: edges inside tiles and bytes
        codes = all_codes(rng, dt, (rows, cols))
        out = np.full((rows, cols), np.nan, np.float32)
        kernel(as_argument(codes, dt), out)
        assert_bit_exact(out, lowbit.decode(codes, dt))


@pytest.mark.parametrize("name", ["u3", "i4", "f4e2m1", "u7"])
def test_masked_and_offset_loads(name: str) -> None:
    """A user mask and a window that starts off a byte boundary read element by element;
    masked-off elements take ``other``, encoded in the type."""
    dt = dtypes.dtype(name)
    source = f"""
kernel shifted(w: {name}[R, C], out: f32[R, C])
    params BC = 32
    grid (1)
{{
    j = arange(BC)
    t = load(w[0, 1 : +BC], mask=j % 3 != 0, other=1)
    store(out[0, 1 : +BC], cast(t, f32))
}}
"""
    kernel = tg.compile(source, target="cpu", cache=False).shifted
    rng = np.random.default_rng()
    codes = all_codes(rng, dt, (2, 40))
    out = np.full((2, 40), -7.0, np.float32)
    kernel(as_argument(codes, dt), out)
    want = lowbit.decode(codes[0, 1:33], dt)
    want[np.arange(32) % 3 == 0] = 1.0
    assert_bit_exact(out[0, 1:33], want)
    assert (out[0, [0, *range(33, 40)]] == -7.0).all() and (out[1] == -7.0).all()


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_every_decode_builds_for_cuda(arch: str) -> None:
    source = "".join(
        decode_source(name, out=out).replace("kernel decode", f"kernel decode_{name}_{out}")
        for name in ALL_TYPES for out in OUTPUTS
    )
    module = tg.compile(source, target=f"cuda:{arch}", cache=False)
    for name in ALL_TYPES:
        for out in OUTPUTS:
            assert "__global__" in module.results[f"decode_{name}_{out}"].source
    # Integer codes reach f16 through its mantissa (a quarter-rate int→float conversion saved):
    # two at a time where two codes share a byte, one at a time where codes straddle bytes.
    assert "__byte_perm(" in module.results["decode_i4_f16"].source
    assert "| 0x6400" in module.results["decode_i3_f16"].source


@pytest.mark.parametrize("out", ["f16", "bf16"])
@pytest.mark.parametrize("name", ["i4", "u8", "i8", "u1", "f4e2m1", "nf4"])
def test_cast_to_half_types_rounds_the_decoded_value(name: str, out: str) -> None:
    dt = dtypes.dtype(name)
    rng = np.random.default_rng()
    kernel = tg.compile(decode_source(name, out=out), target="cpu", cache=False).decode
    codes = all_codes(rng, dt, (21, 75))
    got = np.full((21, 75), np.nan, OUTPUTS[out])
    kernel(as_argument(codes, dt), got)
    assert_bit_exact(got, lowbit.decode(codes, dt).astype(OUTPUTS[out]))


@pytest.mark.gpu
@pytest.mark.parametrize("out", list(OUTPUTS))
@pytest.mark.parametrize("name", ALL_TYPES)
def test_cast_decodes_every_code_exactly_on_gpu(name: str, out: str) -> None:
    import cupy

    dt = dtypes.dtype(name)
    kernel = tg.compile(decode_source(name, out=out), target="cuda", cache=False).decode
    rng = np.random.default_rng()
    torch = pytest.importorskip("torch", reason="CuPy has no bfloat16") if out == "bf16" else None
    for rows, cols in ((37, 300), (3, 13)):
        codes = all_codes(rng, dt, (rows, cols))
        if torch is not None:
            got = torch.full((rows, cols), float("nan"), dtype=torch.bfloat16, device="cuda")
        else:
            got = cupy.full((rows, cols), np.nan, OUTPUTS[out])
        kernel(on_gpu(as_argument(codes, dt), dt), got)
        if torch is not None:
            host = got.view(torch.int16).cpu().numpy().view(OUTPUTS[out])
        else:
            host = got.get()
        assert_bit_exact(host, lowbit.decode(codes, dt).astype(OUTPUTS[out]))


def test_ml_dtypes_arrays_are_taken_for_8_bit_floats() -> None:
    codes = np.arange(256, dtype=np.uint8).reshape(4, 64)
    out = np.empty((4, 64), np.float32)
    tg.compile(decode_source("f8e5m2"), target="cpu", cache=False).decode(
        codes.view(ml_dtypes.float8_e5m2), out
    )
    assert_bit_exact(out, codes.view(ml_dtypes.float8_e5m2).astype(np.float32))
