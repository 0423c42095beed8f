"""`dot` of sub-byte integer tiles (W4A4, W4A8): the codes are the integers they stand for,
widened exactly to i8 in registers (a `cast` the IR dump shows), then the 8-bit integer
product. Results are exact, so they are compared for equality with an int64 NumPy product
on fresh random codes with poisoned outputs; low-bit float and table codes stay refused."""

from __future__ import annotations

import numpy as np
import pytest
from quant_kernel_helpers import INTEGER_DOT_KERNEL, N_MAJOR_B
from tegula.compiler.diagnostics import DSLError
from tegula.compiler.frontend import build_tile_kernel
from tegula.compiler.parser import parse
from tegula.ir.dtypes import dtype
from tegula.ir.lowbit import encode
from tegula.ir.packing import pack
from tegula.ir.printer_tile import print_tile_kernel

import tegula as tg


def _kernel(name: str, a_type: str, b_type: str) -> str:
    return INTEGER_DOT_KERNEL.format(name=f"dot_{name}", a_type=a_type, b_type=b_type,
                                     b_dims="N, K", b_tile=N_MAJOR_B)


PAIRS = {"i4": ("i4", "i4"), "u4": ("u4", "u4"), "i4_i8": ("i4", "i8"), "i2": ("i2", "i2")}
SOURCE = "".join(_kernel(n, a, b) for n, (a, b) in PAIRS.items())

# Multiples of the tiles, and ragged shapes (masked edges, a partial slab, an odd K whose
# rows end mid-byte).
SHAPES = [(128, 64, 192), (77, 45, 101)]


def _codes(rng: np.random.Generator, type_name: str, shape: tuple[int, int]
           ) -> tuple[np.ndarray, np.ndarray]:
    """Random integers of ``type_name`` and the array a kernel takes (packed if sub-byte)."""
    dt = dtype(type_name)
    lo, hi = (-(2 ** (dt.bits - 1)), 2 ** (dt.bits - 1)) if dt.is_signed else (0, 2**dt.bits)
    values = rng.integers(lo, hi, shape)
    if dt.bits == 8:
        return values, values.astype(dt.to_numpy())
    return values, pack(encode(values, dt), dt.bits)


def check(target: str, to_device, to_host, name: str) -> None:
    module = tg.compile(SOURCE, target=target, cache=False)
    rng = np.random.default_rng()
    a_type, b_type = PAIRS[name]
    for m, n, k in SHAPES:
        a, a_arg = _codes(rng, a_type, (m, k))
        b, b_arg = _codes(rng, b_type, (n, k))
        c = to_device(np.full((m, n), -(2**31), np.int32))
        module[f"dot_{name}"](to_device(a_arg), to_device(b_arg), c)
        want = a.astype(np.int64) @ b.T.astype(np.int64)
        np.testing.assert_array_equal(to_host(c), want, err_msg=f"dot_{name} at {(m, n, k)}")


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_low_bit_integer_dot_on_cpu(name: str) -> None:
    check("cpu", np.asarray, np.asarray, name)


def test_the_codes_widen_to_i8_in_the_ir() -> None:
    kernel = build_tile_kernel(parse(SOURCE), "dot_i4", {}, {"M": 64, "N": 64, "K": 64}, {})
    text = print_tile_kernel(kernel)
    widened = [line for line in text.splitlines() if "= cast" in line and "-> i8[" in line]
    assert len(widened) == 2, text  # one per operand, between its load and the dot


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_low_bit_integer_dot_uses_the_s8_atom(arch: str) -> None:
    module = tg.compile(SOURCE, target=f"cuda:{arch}", cache=False)
    for name in PAIRS:
        result = module.results[f"dot_{name}"]
        atom = ("wgmma.mma_async.sync.aligned.m64n64k32.s32.s8.s8" if arch == "sm_90a"
                else "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32")
        assert atom in result.source
        assert "spill" not in result.backend_log or " 0 bytes spill stores" in result.backend_log


@pytest.mark.parametrize("type_name", ["f4e2m1", "nf4"])
def test_dot_refuses_codes_that_are_not_integers(type_name: str) -> None:
    source = _kernel("bad", type_name, type_name)
    with pytest.raises(DSLError, match="decode it first"):
        tg.compile(source, target="cpu", cache=False)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_low_bit_integer_dot_on_gpu(name: str) -> None:
    import cupy

    check("cuda", cupy.asarray, cupy.asnumpy, name)
