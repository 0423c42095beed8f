"""A module's CUDA kernels build on several threads (NVRTC compiles concurrently): the
binaries are those of one-at-a-time builds, and the first failing kernel in file order is the
error raised."""

from __future__ import annotations

import pytest
from tegula.compiler.diagnostics import DSLError

import tegula as tg

KERNELS = "".join(
    f"""
kernel scale{i}(x: f32[N], y: f32[N])
    grid (cdiv(N, 256))
{{
    j = bid.x * 256
    store(y[j : +256], load(x[j : +256]) * {i + 2})
}}
"""
    for i in range(4)
)


def test_threaded_builds_give_the_binaries_of_one_at_a_time_builds() -> None:
    together = tg.compile(KERNELS, target="cuda:sm_90a", cache=False)
    assert list(together.results) == [f"scale{i}" for i in range(4)]
    for name, result in together.results.items():
        alone = tg.compile(KERNELS, target="cuda:sm_90a", cache=False, kernels=[name])
        assert result.source == alone.results[name].source
        assert result.kernel.launcher.image == alone.results[name].kernel.launcher.image


def test_the_first_failing_kernel_in_file_order_is_reported() -> None:
    broken = KERNELS.replace("* 3)", "* undefined_a)").replace("* 5)", "* undefined_b)")
    with pytest.raises(DSLError, match="undefined_a"):
        tg.compile(broken, target="cuda:sm_90a", cache=False)
