"""Warp-specialized pipelines (``pipeline(..., tma=true, warp_specialize=true)``): a producer
warp past the kernel's own issues every TMA copy and leaves; the kernel's warps wait, compute
and release slots, and share named barriers after the split. Checked on the Loop IR and the
generated CUDA C (the GPU runs it in tests/runtime/test_tensor_map.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tegula.compiler.driver import build_binary, lower_kernel
from tegula.compiler.frontend import build_tile_kernel
from tegula.compiler.parser import parse
from tegula.compiler.targets import resolve_target
from tegula.ir import loop as L
from tegula.ir.atoms import MBARRIER_ARRIVE, MBARRIER_WAIT_PARITY

import tegula as tg

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WARPS = 8


def _gemm(target: str, ws: bool) -> L.LoopKernel:
    program = parse((EXAMPLES / "gemm.tg").read_text(), "gemm.tg")
    tgt = resolve_target(target)
    tile = build_tile_kernel(program, "gemm_tma", {"WS": ws}, {}, tgt.constants())
    return lower_kernel(tile, tgt)[0]


def _split(body: L.Stmt) -> tuple[L.If, list[L.Stmt], list[L.Stmt]]:
    """The producer's branch, and the statements before and after it (pre-order)."""
    order = list(L.walk_stmts(body))
    producer = next(s for s in order if isinstance(s, L.If) and isinstance(s.cond, L.Binary)
                    and s.cond.op is L.BinaryOp.GE and isinstance(s.cond.lhs, L.ThreadIdx)
                    and any(isinstance(t, L.For) for t in L.walk_stmts(s.then_body)))
    at = next(i for i, s in enumerate(order) if s is producer)
    inside = {id(s) for s in L.walk_stmts(producer)}
    after = [s for s in order[at:] if id(s) not in inside]
    return producer, order[:at], after


def _asm(stmts: list[L.Stmt], text: str) -> list[L.Asm]:
    return [s for s in stmts if isinstance(s, L.Asm) and text in s.template]


def test_the_producer_warp_issues_every_copy_and_the_warps_only_compute() -> None:
    kernel = _gemm("cuda:sm_90a", ws=True)
    assert kernel.block_threads == 32 * WARPS + 32
    producer, before, after = _split(kernel.body)
    assert producer.cond.rhs == L.Const(32 * WARPS, producer.cond.rhs.dtype)
    inside = list(L.walk_stmts(producer))
    assert isinstance(producer.then_body, L.Seq) and isinstance(producer.then_body.body[-1],
                                                                L.Return)
    # Every copy is the producer's, which alone waits on the empty barriers.
    assert _asm(inside, "cp.async.bulk.tensor") and not _asm(after, "cp.async.bulk.tensor")
    waits = _asm(inside, MBARRIER_WAIT_PARITY)
    assert waits and all("slot_empty" in s.inputs[0].buffer.name for s in waits)
    # The warps wait on full barriers and release slots on empty ones.
    consumer_waits = _asm(after, MBARRIER_WAIT_PARITY)
    assert consumer_waits and all("slot_full" in s.inputs[0].buffer.name
                                  for s in consumer_waits)
    assert _asm(after, MBARRIER_ARRIVE)
    # Barriers before the split are the whole block's (the producer is there); after it,
    # named ones of the kernel's threads, in the fallback loop and the epilogue too.
    assert all(s.threads is None for s in before if isinstance(s, L.Barrier))
    named = [s for s in after if isinstance(s, L.Barrier)]
    assert named and all(s.threads == 32 * WARPS for s in named)
    returns = [s for s in L.walk_stmts(kernel.body) if isinstance(s, L.Return)]
    assert len(returns) == 2  # the producer's, and at the start of the fallback loop
    assert not kernel.notes


def test_the_cuda_c_builds_and_says_who_does_what() -> None:
    module = tg.compile(EXAMPLES / "gemm.tg", target="cuda:sm_90a", kernels=["gemm_tma"],
                        cache=False, WS=True)
    result = module.results["gemm_tma"]
    source = result.source
    assert result.spec.block_threads == 32 * WARPS + 32
    assert f"__launch_bounds__({32 * WARPS + 32})" in source
    assert f'asm volatile("bar.sync 1, {32 * WARPS};" ::: "memory");' in source
    producer = source.split(f"if (thread_idx >= {32 * WARPS}) {{")[1].split("return;")[0]
    assert f"if (thread_idx == {32 * WARPS}) {{" in producer
    assert "mbarrier.arrive.expect_tx" in producer and "cp.async.bulk.tensor" in producer
    binary, _ = build_binary(source, "gemm_tma", resolve_target("cuda:sm_90a"))
    assert binary


@pytest.mark.parametrize("target", ["cuda:sm_80", "cuda:sm_90"])
def test_without_tma_the_request_is_a_note_and_the_code_is_unchanged(target: str) -> None:
    asked, plain = _gemm(target, ws=True), _gemm(target, ws=False)
    assert asked.body == plain.body and asked.block_threads == plain.block_threads
    assert any("warp_specialize not applied" in n and "TMA" in n for n in asked.notes)


def test_code_before_the_loop_that_touches_memory_keeps_the_warps_together() -> None:
    source = """
kernel scaled(a: f16[M, K], b: f16[K, N], c: f16[M, N], flag: i32[1])
    grid (cdiv(M, 128) * cdiv(N, 256)) warps 8
{
    store(flag[0 : +1], full(i32, [1], 1))
    i = bid.x // cdiv(N, 256) * 128
    j = bid.x % cdiv(N, 256) * 256
    acc = zeros(f32, [128, 256])
    for k in pipeline(0, K, 32, stages=4, tma=true, warp_specialize=true) {
        acc = dot(load(a[i : +128, k : +32]), load(b[k : +32, j : +256]), acc)
    }
    store(c[i : +128, j : +256], cast(acc, f16))
}
"""
    tgt = resolve_target("cuda:sm_90a")
    kernel, _ = lower_kernel(build_tile_kernel(parse(source), "scaled", {}, {},
                                               tgt.constants()), tgt)
    assert kernel.block_threads == 256
    assert not any(isinstance(s, L.Return) for s in L.walk_stmts(kernel.body))
    assert any("StoreOp before it" in n for n in kernel.notes)
