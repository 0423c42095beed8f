"""f16 and bf16 arithmetic: one half-precision instruction per operation on CUDA (two lanes
per instruction where a thread's elements pair up), with the result of the f32 operation
rounded to the type (f32 holds more than twice the bits, so the two agree exactly), checked
against NumPy's float16 arithmetic bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import tegula as tg

SOURCE = """
kernel half_ops(x: f16[N], y: f16[N], product: f16[N], difference: f16[N])
    grid (cdiv(N, 256))
{
    i = bid.x * 256
    a = load(x[i : +256])
    b = load(y[i : +256])
    store(product[i : +256], a * b)
    store(difference[i : +256], a - b)
}
"""


def _inputs(n: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng()
    # Wide exponents: products overflow to inf and fall into subnormals too.
    x = (rng.standard_normal(n) * 2.0 ** rng.integers(-14, 9, n)).astype(np.float16)
    y = (rng.standard_normal(n) * 2.0 ** rng.integers(-14, 9, n)).astype(np.float16)
    return x, y


def _check(module: tg.Module, xp=np) -> None:
    x, y = _inputs(1000)
    outs = [xp.full(1000, np.nan, np.float16) for _ in range(2)]
    module.half_ops(xp.asarray(x), xp.asarray(y), *outs)
    got = [np.asarray(o.get() if hasattr(o, "get") else o) for o in outs]
    with np.errstate(over="ignore"):
        want = [x * y, x - y]
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g.view(np.uint16), w.view(np.uint16))


def test_half_arithmetic_matches_numpy_on_the_cpu() -> None:
    _check(tg.compile(SOURCE, target="cpu", cache=False))


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_half_arithmetic_is_two_lane_instructions_on_cuda(arch: str) -> None:
    source = tg.compile(SOURCE, target=f"cuda:{arch}", cache=False).results["half_ops"].source
    assert "__hmul2(" in source and "__hsub2(" in source
    assert "__half2float" not in source


@pytest.mark.gpu
def test_half_arithmetic_matches_numpy_on_the_gpu() -> None:
    cp = pytest.importorskip("cupy")
    _check(tg.compile(SOURCE, target="cuda", cache=False), xp=cp)
