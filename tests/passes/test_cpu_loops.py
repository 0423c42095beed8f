"""What the CPU lowering does to loops, and that CUDA kernels are left as they were: loops
over groups (work that depends on ``k // G`` runs once per group), carried tiles updated in
place, software prefetch of loads that walk down rows, and fused multiply-adds in the LLVM
IR. Each structural check comes with a run against float64 NumPy on fresh random inputs."""

from __future__ import annotations

import numpy as np
import pytest
from tegula.codegen.llvm import generate_llvm
from tegula.compiler.driver import lower_kernel
from tegula.compiler.frontend import build_tile_kernel
from tegula.compiler.parser import parse
from tegula.ir import loop as L
from tegula.ir.target import cpu_target, cuda_target

import tegula as tg

# Group scales along k, as a weight-only quantized GEMV reads them; BK divides G.
SCALED = """
kernel scaled(x: f32[K], w: f32[K, N], s: f32[KG, N], y: f32[N])
    params G = 8, BK = 2, BN = 32
    grid (cdiv(N, BN))
{
    j = bid.x * BN
    acc = zeros(f32, [BK, BN])
    for k in range(START, K, BK) {
        a = load(x[k : +BK])
        g = load(s[k // G, j : +BN])
        acc = acc + a[:, None] * load(w[k : +BK, j : +BN]) * g[None, :]
    }
    store(y[j : +BN], sum(acc, axis=0))
}
"""

# Two carried tiles that read each other: neither may be overwritten before both are read.
SWAP = """
kernel swap(x: f32[N], y: f32[N])
    params B = 64
    grid (cdiv(N, B))
{
    i = bid.x * B
    a = load(x[i : +B])
    b = a * 2.0
    for k in range(0, 7) {
        t = a
        a = b
        b = t + b
    }
    store(y[i : +B], a + b * 0.5)
}
"""


def lowered(source: str, name: str, target) -> L.LoopKernel:
    tile = build_tile_kernel(parse(source), name, {}, target=target.constants())
    loop, _ = lower_kernel(tile, target)
    return loop


def loops(stmt: L.Stmt) -> list[L.For]:
    return [s for s in L.walk_stmts(stmt) if isinstance(s, L.For)]


def loads_of(stmt: L.Stmt, name: str) -> int:
    """How many loads of buffer ``name`` (or copies from it) ``stmt`` holds."""
    count = 0
    for s in L.walk_stmts(stmt):
        if isinstance(s, L.Copy) and s.src.name == name:
            count += 1
        for top in L.stmt_exprs(s):
            count += sum(isinstance(e, L.Load) and e.buffer.name == name
                         for e in L.walk_exprs(top))
    return count


def scaled_reference(x, w, s, group: int, start: int) -> np.ndarray:
    rows = np.arange(start, x.shape[0])
    return (x[rows].astype(np.float64)[:, None] * w[rows] * s[rows // group]).sum(axis=0)


def test_group_scales_are_loaded_once_per_group_on_the_cpu() -> None:
    loop = lowered(SCALED.replace("START", "0"), "scaled", cpu_target())
    group = next(f for f in loops(loop.body) if isinstance(f.step, L.Const) and f.step.value == 8)
    inner = next(f for f in loops(group.body) if f.var.name == "k")
    assert loads_of(group.body, "s") > 0 and loads_of(inner.body, "s") == 0
    assert loads_of(inner.body, "w") > 0  # the weights still stream row by row
    cuda = lowered(SCALED.replace("START", "0"), "scaled", cuda_target("sm_80"))
    assert not any(isinstance(f.step, L.Const) and f.step.value == 8 for f in loops(cuda.body))


@pytest.mark.parametrize(("start", "K", "grouped"), [(0, 45, True), (16, 64, True),
                                                     (2, 37, False), (0, 1, True)])
def test_grouped_loops_compute_what_the_loop_does(start: int, K: int, grouped: bool) -> None:
    """A partial last group (K = 45), a start a whole number of groups in, a start inside a
    group (no grouping then: k // G would change within a group), a single iteration."""
    source = SCALED.replace("START", str(start))
    loop = lowered(source, "scaled", cpu_target())
    assert any(f.var.name.endswith("_group") for f in loops(loop.body)) == grouped
    rng = np.random.default_rng()
    N = 70  # a ragged last block
    x = rng.standard_normal(K).astype(np.float32)
    w = rng.standard_normal((K, N)).astype(np.float32)
    s = rng.uniform(0.5, 2.0, (-(-K // 8), N)).astype(np.float32)
    y = np.full(N, np.nan, np.float32)
    tg.compile(source, target="cpu", cache=False).scaled(x, w, s, y)
    np.testing.assert_allclose(y, scaled_reference(x, w, s, 8, start), rtol=1e-5, atol=1e-5)


def test_carried_tiles_are_updated_in_place_on_the_cpu() -> None:
    """``acc = acc + ...`` reads the carried tile only where it writes it: no staging copy
    on the CPU. CUDA keeps its copy (register renaming, once unrolled)."""
    source = SCALED.replace("START", "0")
    cpu = lowered(source, "scaled", cpu_target())
    assert not [b for b in cpu.buffers if b.name.endswith("_next")]
    cuda = lowered(source, "scaled", cuda_target("sm_80"))
    assert [b for b in cuda.buffers if b.name.endswith("_next")]


def test_carried_tiles_that_read_each_other_are_staged() -> None:
    loop = lowered(SWAP, "swap", cpu_target())
    assert [b for b in loop.buffers if b.name.endswith("_next")]
    rng = np.random.default_rng()
    x = rng.integers(-50, 50, 200).astype(np.float32)  # small integers: every sum is exact
    a, b = x.astype(np.float64), 2.0 * x
    for _ in range(7):
        a, b = b, a + b
    y = np.full_like(x, np.nan)
    tg.compile(SWAP, target="cpu", cache=False).swap(x, y)
    np.testing.assert_array_equal(y, a + b * 0.5)


def test_loads_that_walk_down_rows_are_prefetched_on_the_cpu_only() -> None:
    """The weights' window moves a row per iteration: their lines are prefetched ahead,
    every line of the run including the one its last byte lies in. ``x`` moves along its
    contiguous dim and the scales once per group: neither is."""
    loop = lowered(SCALED.replace("START", "0"), "scaled", cpu_target())
    prefetches = [s for s in L.walk_stmts(loop.body) if isinstance(s, L.Prefetch)]
    assert prefetches and {p.buffer.name for p in prefetches} == {"w"}
    # A run is BN = 32 f32 (128 bytes): its lines at +0 and +64, and that of its last byte;
    # one run for each of the BK = 2 rows.
    offsets = sorted(e.value for p in prefetches for e in L.walk_exprs(p.index)
                     if isinstance(e, L.Const) and e.value in (16, 31))
    assert len(prefetches) == 3 and offsets == [16, 31]
    rows = [f for f in loops(loop.body) if not loops(f.body)
            and any(isinstance(s, L.Prefetch) for s in L.walk_stmts(f.body))]
    assert len(rows) == 1 and rows[0].stop == L.Const(2, rows[0].stop.dtype)
    assert "llvm.prefetch" in generate_llvm(loop)
    cuda = lowered(SCALED.replace("START", "0"), "scaled", cuda_target("sm_90a"))
    assert not [s for s in L.walk_stmts(cuda.body) if isinstance(s, L.Prefetch)]


def test_cpu_products_may_fuse_into_multiply_adds() -> None:
    text = generate_llvm(lowered(SCALED.replace("START", "0"), "scaled", cpu_target()))
    assert "fmul contract" in text and "fadd contract" in text
