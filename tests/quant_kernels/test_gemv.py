"""The quantized GEMV of examples/quant_gemv.tg at every width and for the float and table
types, on fresh random inputs with poisoned outputs, against float64 NumPy on the weights
the packed bytes stand for; and the DSL's errors for misuse of low-bit tiles."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from quant_kernel_helpers import as_argument, on_gpu
from tegula.compiler.checking import check_file, load_companion
from tegula.compiler.diagnostics import DSLError
from tegula.ir import lowbit

import tegula as tg

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
companion = load_companion(EXAMPLES / "quant_gemv.tg")
assert companion is not None


def gemv_source(dtype: str) -> str:
    """The example's i4 kernel with another weight type: the same text serves every type."""
    text = (EXAMPLES / "quant_gemv.tg").read_text()
    kernel = re.search(r"kernel quant_gemv_i4\(.*?\n}\n", text, re.S)
    assert kernel is not None
    return kernel.group(0).replace("w: i4[", f"w: {dtype}[").replace("quant_gemv_i4", "gemv")


def random_weight(rng: np.random.Generator, dtype: str, K: int, N: int, group: int
                  ) -> dict[str, np.ndarray]:
    """Random finite codes of ``dtype`` (every width, where quantize has no symmetric
    scheme, as for i1) and random f16 scales, as the kernel's parameters take them."""
    dt = tg.dtypes.dtype(dtype)
    count = len(dt.table) if dt.table is not None else 1 << dt.bits
    values = lowbit.decode(np.arange(count, dtype=np.uint8), dt)
    finite = np.flatnonzero(np.isfinite(values))
    codes = rng.choice(finite, (K, N)).astype(np.uint8)
    # Scales that bring the largest value near 1, so sums over long rows stay within f16.
    largest = max(float(np.abs(values[finite]).max()), 1.0)
    scales = (rng.uniform(0.1, 1.0, (-(-K // group), N)) / largest).astype(np.float16)
    return {"w": as_argument(codes, dt), "s": scales}


WEIGHT_TYPES = [*(f"i{b}" for b in range(1, 9)), *(f"u{b}" for b in range(1, 9)), "f4e2m1",
                "f6e3m2", "f6e2m3", "f8e4m3", "f8e5m2", "nf4"]


def check_gemv_every_weight_type(dtype: str, target: str, to_device, weight_to_device, to_host,
                                 **params) -> None:
    kernel = tg.compile(gemv_source(dtype), target=target, cache=False, G=32, **params).gemv
    rng = np.random.default_rng()
    # K = 90: the last group of 32 is partial; N = 77: runs cross the edge mid-byte.
    for M, N, K in ((2, 77, 90), (1, 256, 64), (3, 200, 1000)):
        x = rng.standard_normal((M, K)).astype(np.float16)
        w = random_weight(rng, dtype, K, N, 32)
        y = to_device(np.full((M, N), np.nan, np.float16))
        kernel(to_device(x), weight_to_device(w["w"]), to_device(w["s"]), y)
        weight = companion.dequantized(w["w"], w["s"], dtype, N, group=32)
        ref = x.astype(np.float64) @ weight
        scale = np.abs(x).astype(np.float64) @ np.abs(weight)  # the size of the terms
        np.testing.assert_array_less(np.abs(to_host(y) - ref), 2e-3 * scale + 1e-2)


@pytest.mark.parametrize("dtype", WEIGHT_TYPES)
def test_gemv_every_weight_type(dtype: str) -> None:
    check_gemv_every_weight_type(dtype, "cpu", np.asarray, np.asarray, np.asarray)


@pytest.mark.gpu
@pytest.mark.parametrize("stages", [1, 3])
@pytest.mark.parametrize("dtype", WEIGHT_TYPES)
def test_gemv_every_weight_type_on_gpu(dtype: str, stages: int) -> None:
    """On CUDA a low-bit tile stays packed in registers and ``pipeline`` prefetches it
    (``stages`` - 1 iterations ahead; 1 is a plain loop): both decode every width."""
    import cupy

    dt = tg.dtypes.dtype(dtype)
    check_gemv_every_weight_type(dtype, "cuda", cupy.asarray, lambda w: on_gpu(w, dt),
                                 cupy.asnumpy, BK=32, S=stages)


@pytest.mark.parametrize("name", ["quant_gemv", "quant_gemm"])
def test_examples_on_cpu_at_odd_sizes(name: str) -> None:
    for sizes in ({"M": 5, "N": 33, "K": 129}, {"M": 17, "N": 8, "K": 31}):
        for r in check_file(EXAMPLES / f"{name}.tg", "cpu", sizes, repeats=1):
            assert r.passed, f"{r.kernel} at {sizes}: max abs error {r.max_abs_error}"


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["quant_gemv", "quant_gemm"])
def test_examples_on_gpu(name: str) -> None:
    # K = 2000: a ring's windows lie inside K for most slabs (the tested, unguarded
    # prefetch) and run past it for the last ones; N = 300 leaves a ragged edge block.
    odd = ({"M": 5, "N": 33, "K": 129}, {"M": 1, "N": 1, "K": 1}, {"M": 2, "N": 300, "K": 2000})
    for sizes in (None, *odd):
        for r in check_file(EXAMPLES / f"{name}.tg", "cuda", sizes, repeats=1):
            assert r.passed, f"{r.kernel} at {sizes}: max abs error {r.max_abs_error}"


_HEADER = "kernel k(w: u4[K, N], f: f4e2m1[K, N], z: f32[K, N])\n    grid (1)\n{\n    "
_MISUSES = {
    "t = load(w[0 : +8, 0 : +8])\n    store(z[0 : +8, 0 : +8], t + 1)":
        r"arithmetic does not take u4\[8, 8\]: a u4 tile holds packed codes; decode it first",
    # Integer codes are integers to dot (W4A4); float codes must be decoded first.
    "t = load(f[0 : +8, 0 : +8])\n    store(z[0 : +8, 0 : +8], dot(t, t))":
        r"dot does not take f4e2m1\[8, 8\]",
    "store(w[0 : +8, 0 : +8], load(z[0 : +8, 0 : +8]))":
        r"store to a u4 tensor: kernels read low-bit codes but do not encode them",
    "t = cast(load(z[0 : +8, 0 : +8]), u4)": r"cast to u4: kernels decode low-bit codes",
    "t = zeros(u4, [8])": r"zeros: u4 tiles come only from loads of u4 tensors",
    "x = load(z[0, 0])\n    t = load(w[0 : +8, 0 : +8], other=x)":
        r"the 'other' of a load of u4 codes must be a compile-time constant",
}


@pytest.mark.parametrize("body", list(_MISUSES))
def test_misuse_of_codes_is_a_dsl_error(body: str) -> None:
    with pytest.raises(DSLError, match=_MISUSES[body]):
        tg.compile(_HEADER + body + "\n}\n", target="cpu", cache=False)
