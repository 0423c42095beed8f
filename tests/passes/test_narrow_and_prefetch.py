"""32-bit index arithmetic on CUDA (``narrow-indices``), its 64-bit twin, and the register
prefetch of ``pipeline(...)`` loops: what the compiler builds, checked without a GPU (the
GPU tests run the same kernels against NumPy)."""

from __future__ import annotations

import pytest
from tegula.compiler.driver import compile_kernel, lower_kernel
from tegula.compiler.frontend import build_tile_kernel
from tegula.compiler.parser import parse
from tegula.ir import loop as L
from tegula.ir.dtypes import i64
from tegula.ir.target import cpu_target, cuda_target

SCALE = """
kernel scale(x: {dt}[N], y: {dt}[N])
    params B = 256
    grid (cdiv(N, B))
{{
    i = bid.x * B
    store(y[i : +B], load(x[i : +B]) * 3)
}}
"""

GEMV = """
kernel gemv(x: f16[K], w: u4[K, N], y: f32[N])
    params BK = 32, BN = 64, S = 3
    grid (cdiv(N, BN))
{
    j = bid.x * BN
    acc = zeros(f32, [BK, BN])
    for k in pipeline(0, K, BK, stages=S) {
        acc = acc + cast(load(x[k : +BK]), f32)[:, None] * cast(load(w[k : +BK, j : +BN]), f32)
    }
    store(y[j : +BN], sum(acc, axis=0))
}
"""


def lowered(source: str, name: str, target, **options) -> L.LoopKernel:
    tile = build_tile_kernel(parse(source), name, {}, target=target.constants())
    loop, _ = lower_kernel(tile, target, **options)
    return loop


def widths(loop: L.LoopKernel) -> set[int]:
    """The widths of the integers the body computes with (kernel arguments excluded)."""
    found = set()
    for stmt in L.walk_stmts(loop.body):
        for top in L.stmt_exprs(stmt):
            for e in L.walk_exprs(top):
                if e.dtype.is_int and not (isinstance(e, L.Var) and e in loop.symbols):
                    found.add(e.dtype.bits)
    return found


def test_cuda_kernels_index_in_32_bits_and_cpu_kernels_in_64() -> None:
    cuda = lowered(SCALE.format(dt="f32"), "scale", cuda_target("sm_90a"))
    assert cuda.index_bits == 32 and 64 not in widths(cuda)
    assert all(s.dtype is i64 for s in cuda.symbols)  # sizes still arrive as 64-bit arguments
    cpu = lowered(SCALE.format(dt="f32"), "scale", cpu_target())
    assert cpu.index_bits == 64 and 64 in widths(cpu)


def test_a_32_bit_kernel_prints_its_index_constants_bare() -> None:
    from tegula.ir.printer_loop import format_expr, print_loop_kernel

    cuda = lowered(SCALE.format(dt="f32"), "scale", cuda_target("sm_90a"))
    text = print_loop_kernel(cuda)
    assert "    indices i32\n" in text and "i32(256)" not in text and " * 256" in text
    assert "grid ((N + 255) // 256, 1, 1)" in text  # host arithmetic stays i64, bare
    assert format_expr(L.Const(256, L.i32)) == "i32(256)"  # outside a kernel: marked
    assert "indices" not in print_loop_kernel(lowered(SCALE.format(dt="f32"), "scale",
                                                      cpu_target()))


@pytest.mark.parametrize("why", ["i64 data", "asked for 64"])
def test_kernels_keep_64_bits_when_narrowing_could_change_them(why: str) -> None:
    source = SCALE.format(dt="i64" if why == "i64 data" else "f32")
    options = {"index_bits": 64} if why == "asked for 64" else {}
    loop = lowered(source, "scale", cuda_target("sm_90a"), **options)
    assert loop.index_bits == 64 and 64 in widths(loop)


def test_a_32_bit_kernel_has_a_64_bit_twin(tmp_path) -> None:
    from tegula.runtime.cache import KernelCache

    cache = KernelCache(tmp_path)
    result = compile_kernel(SCALE.format(dt="f32"), "s.tg", "scale", cuda_target("sm_90a"),
                            cache=cache)
    assert result.spec.index_bits == 32
    twin = result.kernel._wide_factory()
    assert twin.spec.index_bits == 64 and "long long" in twin.source
    again = compile_kernel(SCALE.format(dt="f32"), "s.tg", "scale", cuda_target("sm_90a"),
                           cache=cache)
    assert again.cache_hit and again.kernel._wide_factory is not None


def test_pipelined_loops_prefetch_their_loads_into_registers() -> None:
    """``stages=S`` keeps S register tiles of each load (a ring: S - 1 ahead, one in use);
    the 4-bit weights' tiles hold packed bytes, BK * BN / 2 per block."""
    for stages in (1, 2, 3, 5):
        source = GEMV.replace("S = 3", f"S = {stages}")
        loop = lowered(source, "gemv", cuda_target("sm_90a"))
        packed = [b for b in loop.buffers if "_packed" in b.name]
        assert len(packed) == stages
        threads = loop.block_threads
        assert all(b.size == 32 * 64 // 2 // threads for b in packed)
    cpu = lowered(GEMV, "gemv", cpu_target())
    assert not [b for b in cpu.buffers if "_packed" in b.name]


def test_a_register_ring_loop_is_unrolled_by_its_length() -> None:
    """Rolled, the ring's bottom-of-loop copy out of the newest tile waits on the load just
    issued into it; unrolled by the ring's length the copies are renamings."""
    from tegula.codegen.cuda import generate_cuda
    from tegula.ir.printer_loop import print_loop_kernel

    for stages in (1, 2, 3, 5):
        loop = lowered(GEMV.replace("S = 3", f"S = {stages}"), "gemv", cuda_target("sm_90a"))
        serial = [s for s in L.walk_stmts(loop.body)
                  if isinstance(s, L.For) and s.kind is L.LoopKind.SERIAL]
        assert [s.unroll for s in serial] == [stages], stages
        text = generate_cuda(loop)
        assert (f"#pragma unroll {stages}\n" in text) is (stages > 1)
        assert (f"# unroll {stages}" in print_loop_kernel(loop)) is (stages > 1)


def _size_names(loop: L.LoopKernel) -> set[str]:
    """The size symbols' names, and those of their 32-bit copies (``narrow-indices``)."""
    names = {v.name for v in loop.symbols}
    for s in L.walk_stmts(loop.body):
        if isinstance(s, L.Let) and isinstance(s.value, L.Cast) and s.value.operand in loop.symbols:
            names.add(s.var.name)
    return names


def _bounds_tests(where: L.Stmt | L.Expr, loop: L.LoopKernel) -> int:
    """Comparisons against the kernel's sizes in a statement (nested ones too) or an
    expression."""
    sizes = _size_names(loop)
    tops = ([where] if isinstance(where, L.Expr)
            else [e for s in L.walk_stmts(where) for e in L.stmt_exprs(s)])
    count = 0
    for top in tops:
        for e in L.walk_exprs(top):
            if isinstance(e, L.Binary) and e.op in (L.BinaryOp.LT, L.BinaryOp.LE):
                names = {x.name for x in L.walk_exprs(e.rhs) if isinstance(x, L.Var)}
                count += bool(names & sizes)
    return count


def test_a_prefetch_tests_its_windows_once_where_they_are_inside() -> None:
    """Each iteration's prefetch comes in two versions writing the same ring slot: where
    every window lies inside its tensor (one block-wide test on scalars), no element tests
    its bounds; elsewhere each does."""
    loop = lowered(GEMV, "gemv", cuda_target("sm_90a"))
    (ring_loop,) = [s for s in L.walk_stmts(loop.body)
                    if isinstance(s, L.For) and s.kind is L.LoopKind.SERIAL]
    versions = [s for s in L.walk_stmts(ring_loop.body)
                if isinstance(s, L.If) and s.else_body is not None
                and any(isinstance(e, L.Binary) and e.op is L.BinaryOp.LE
                        for e in L.walk_exprs(s.cond))]
    assert len(versions) == 1
    tested = versions[0]
    assert _bounds_tests(tested.cond, loop) >= 2  # K for x and w, N for w's columns
    assert _bounds_tests(tested.then_body, loop) == 0
    assert _bounds_tests(tested.else_body, loop) > 0
    written = [{b.name for s in L.walk_stmts(body) for b in L.stmt_buffers(s)
                if b.scope is L.Scope.LOCAL and "_packed" in b.name}
               for body in (tested.then_body, tested.else_body)]
    assert written[0] == written[1] != set()  # the same ring slot either way


def _alignment_tests(stmt: L.Stmt) -> int:
    """Tests of the form ``e % c == 0`` (a run's alignment) in ``stmt``'s conditions."""
    count = 0
    for s in L.walk_stmts(stmt):
        if isinstance(s, L.If):
            for e in L.walk_exprs(s.cond):
                if (isinstance(e, L.Binary) and e.op is L.BinaryOp.EQ
                        and isinstance(e.lhs, L.Binary) and e.lhs.op is L.BinaryOp.MOD):
                    count += 1
    return count


def test_the_fast_prefetch_also_asks_for_aligned_rows_and_drops_its_alignment_tests() -> None:
    """The block-wide test of the prefetch's fast version also asks that every row of the
    packed weights (N codes of 4 bits) start on a 16-byte boundary, N a multiple of 32;
    under it the runs' own alignment tests fold, so its loads are plain vector loads. The
    other version keeps them; on the CPU nothing is asked."""
    loop = lowered(GEMV, "gemv", cuda_target("sm_90a"))
    (ring_loop,) = [s for s in L.walk_stmts(loop.body)
                    if isinstance(s, L.For) and s.kind is L.LoopKind.SERIAL]
    (tested,) = [s for s in L.walk_stmts(ring_loop.body)
                 if isinstance(s, L.If) and s.else_body is not None
                 and any(isinstance(e, L.Binary) and e.op is L.BinaryOp.LE
                         for e in L.walk_exprs(s.cond))]
    asked = [e for e in L.walk_exprs(tested.cond)
             if isinstance(e, L.Binary) and e.op is L.BinaryOp.MOD]
    assert [(str(e.lhs), e.rhs) for e in asked] == [("N", L.Const(32, i64))] or any(
        isinstance(e.rhs, L.Const) and e.rhs.value == 32 for e in asked)
    assert _alignment_tests(tested.then_body) == 0
    assert _alignment_tests(tested.else_body) > 0
    cpu = lowered(GEMV, "gemv", cpu_target())
    assert not any(isinstance(e, L.Binary) and e.op is L.BinaryOp.MOD
                   and isinstance(e.rhs, L.Const) and e.rhs.value == 32
                   for s in L.walk_stmts(cpu.body) if isinstance(s, L.If)
                   for e in L.walk_exprs(s.cond))
