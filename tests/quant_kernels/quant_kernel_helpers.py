"""Arguments of low-bit kernel parameters, and bit-exact comparison, for these tests."""

from __future__ import annotations

import numpy as np
import pytest
from tegula.ir.dtypes import DType
from tegula.ir.packing import pack

# A pipelined integer GEMM into an i32 accumulator; ``b_tile`` reads B ([K, N] or, transposed,
# [N, K]) for one k-slab.
INTEGER_DOT_KERNEL = """
kernel {name}(a: {a_type}[M, K], b: {b_type}[{b_dims}], c: i32[M, N])
    params BM = 64, BN = 64, BK = 64, STAGES = 2
    grid (cdiv(M, BM), cdiv(N, BN)) warps 4
{{
    i = bid.x * BM
    j = bid.y * BN
    acc = zeros(i32, [BM, BN])
    for k in pipeline(0, K, BK, stages=STAGES) {{
        acc = dot(load(a[i : +BM, k : +BK]), {b_tile}, acc)
    }}
    store(c[i : +BM, j : +BN], acc)
}}
"""
N_MAJOR_B = "transpose(load(b[j : +BN, k : +BK]))"


def as_argument(codes: np.ndarray, dt: DType) -> np.ndarray:
    """What a kernel parameter of ``dt`` takes for these codes (packed bytes below 8 bits)."""
    if dt.bits < 8:
        return pack(codes, dt.bits)
    if dt.numpy is not None:
        return codes.astype(np.uint8).view(dt.to_numpy())
    return codes.astype(np.uint8)


def all_codes(rng: np.random.Generator, dt: DType, shape: tuple[int, int]) -> np.ndarray:
    """Random codes of ``dt`` with every code present (tables: only codes with a value)."""
    count = len(dt.table) if dt.table is not None else 1 << dt.bits
    codes = rng.integers(0, count, shape, dtype=np.uint8)
    flat = codes.reshape(-1)
    flat[: min(count, flat.size)] = rng.permutation(count)[: flat.size]
    return codes


def assert_bit_exact(got: np.ndarray, want: np.ndarray) -> None:
    """``got`` holds the bits of ``want`` (of the same float type), NaNs where it has them."""
    assert got.dtype == want.dtype
    nan = np.isnan(want.astype(np.float32))
    assert np.array_equal(np.isnan(got.astype(np.float32)), nan)
    bits = np.dtype(f"u{got.dtype.itemsize}")
    assert np.array_equal(got[~nan].view(bits), want[~nan].view(bits))


def on_gpu(array: np.ndarray, dt: DType):
    """The argument on the GPU: CuPy has no float8 arrays, so those travel as torch tensors."""
    import cupy

    if dt.numpy is not None and "float8" in dt.numpy:
        torch = pytest.importorskip("torch", reason="CuPy has no float8 arrays; torch carries them")
        torch_dtype = {"f8e4m3": torch.float8_e4m3fn, "f8e5m2": torch.float8_e5m2}[dt.name]
        bits = torch.from_numpy(np.ascontiguousarray(array).view(np.uint8))
        return bits.cuda().view(torch_dtype)
    return cupy.asarray(array)
