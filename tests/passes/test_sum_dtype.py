"""`sum(x, axis, dtype=T)`: elements converted to T and summed in T itself (NumPy's
`sum(dtype=)`), on the CPU and in the CUDA C. (A low-bit accumulator's error message is in
the error corpus.)"""

from __future__ import annotations

import numpy as np
import pytest

import tegula as tg

SOURCE = """
kernel row_sums(x: f16[M, 64], in_f16: f16[M], in_f32: f32[M])
    grid (M)
{
    t = load(x[bid.x, :])
    store(in_f16[bid.x], sum(t, axis=0, dtype=f16))
    store(in_f32[bid.x], sum(t, axis=0, dtype=f32))
}
"""


def test_sums_run_in_the_type_asked_for_on_the_cpu() -> None:
    kernel = tg.compile(SOURCE, target="cpu", cache=False).row_sums
    rng = np.random.default_rng()
    x = (rng.standard_normal((40, 64)) * 30).astype(np.float16)
    in_f16 = np.full(40, np.nan, np.float16)
    in_f32 = np.full(40, np.nan, np.float32)
    kernel(x, in_f16, in_f32)
    exact = x.astype(np.float64).sum(axis=1)
    # f32 sums of 64 f16 values are exact to f32's precision; f16 sums round at every step
    # (64 additions of at most half an ulp of the running sum each).
    np.testing.assert_allclose(in_f32, exact, rtol=1e-6, atol=1e-3)
    bound = 64 * 2.0 ** -11 * np.abs(x.astype(np.float64)).sum(axis=1)
    assert (np.abs(in_f16.astype(np.float64) - exact) <= bound + 1e-3).all()
    # Summed in f16, not summed in f32 and rounded once: over 40 rows of 64 terms the two
    # disagree somewhere.
    assert (in_f16 != in_f32.astype(np.float16)).any()


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_f16_sums_are_half_additions_in_cuda_c(arch: str) -> None:
    source = tg.compile(SOURCE, target=f"cuda:{arch}", cache=False).results["row_sums"].source
    assert "__hadd(" in source


def test_the_tile_ir_says_the_accumulator_type() -> None:
    from tegula.compiler.frontend import build_tile_kernel
    from tegula.compiler.parser import parse
    from tegula.ir.printer_tile import print_tile_kernel

    text = print_tile_kernel(build_tile_kernel(parse(SOURCE, "<string>"), "row_sums", {}, {}))
    assert "axis 0 in f16" in text and "axis 0 in f32" in text
