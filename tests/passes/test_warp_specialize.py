"""Warp-specialized pipelines (``pipeline(..., tma=true, warp_specialize=true)``): a producer
past the kernel's own warps issues every TMA copy and leaves; the kernel's warps wait, compute
and release slots, and share named barriers after the split. On sm_90a, where the consumers
gain registers by it, the producer is a warpgroup that hands registers over (``setmaxnreg``).
Checked on the Loop IR and the generated CUDA C (the GPU runs it in
tests/runtime/test_tensor_map.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tegula.compiler.driver import build_binary, lower_kernel
from tegula.compiler.frontend import build_tile_kernel
from tegula.compiler.parser import parse
from tegula.compiler.targets import resolve_target
from tegula.ir import loop as L
from tegula.ir.atoms import (
    MBARRIER_ARRIVE,
    MBARRIER_WAIT_PARITY,
    WARPGROUP_THREADS,
    launch_registers,
    register_split,
)
from tegula.runtime.nvrtc import compile_cuda

import tegula as tg

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WARPS = 8
# sm_90a gives the 8 consumer warps a producer warpgroup and its registers.
SPLIT = register_split(32 * WARPS)
PRODUCER_THREADS = WARPGROUP_THREADS if SPLIT is not None else 32


def _gemm(target: str, ws: bool, **params: object) -> L.LoopKernel:
    program = parse((EXAMPLES / "gemm.tg").read_text(), "gemm.tg")
    tgt = resolve_target(target)
    tile = build_tile_kernel(program, "gemm_f16", {"TMA": True, "WS": ws, **params}, {},
                             tgt.constants())
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
    assert kernel.block_threads == 32 * WARPS + PRODUCER_THREADS
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
    module = tg.compile(EXAMPLES / "gemm.tg", target="cuda:sm_90a", kernels=["gemm_f16"],
                        cache=False, WS=True)
    result = module.results["gemm_f16"]
    source = result.source
    assert result.spec.block_threads == 32 * WARPS + PRODUCER_THREADS
    assert f"__launch_bounds__({32 * WARPS + PRODUCER_THREADS})" in source
    assert f'asm volatile("bar.sync 1, {32 * WARPS};" ::: "memory");' in source
    producer = source.split(f"if (thread_idx >= {32 * WARPS}) {{")[1].split("return;")[0]
    assert f"if (thread_idx == {32 * WARPS}) {{" in producer
    assert "mbarrier.arrive.expect_tx" in producer and "cp.async.bulk.tensor" in producer
    binary, _ = build_binary(source, "gemm_f16", resolve_target("cuda:sm_90a"))
    assert binary


def test_the_register_split_fits_the_pool_the_block_launches_with() -> None:
    """What the producer warpgroup gives back covers what the consumers take (else their
    ``setmaxnreg.inc`` would wait forever), and the consumers gain registers."""
    for consumers in (256, 384):
        split = register_split(consumers)
        assert split is not None
        producer, consumer = split
        launch = launch_registers(consumers + WARPGROUP_THREADS)
        assert producer % 8 == 0 and consumer % 8 == 0 and 24 <= producer < launch < consumer
        assert (consumer - launch) * consumers <= (launch - producer) * WARPGROUP_THREADS
    # Four warps already get every register a thread may have: no warpgroup for them.
    assert register_split(128) is None and register_split(96) is None


def test_the_producer_warpgroup_hands_its_registers_to_the_consumers_on_every_path() -> None:
    assert SPLIT is not None
    producer_count, consumer_count = SPLIT
    kernel = _gemm("cuda:sm_90a", ws=True)
    producer, _, _ = _split(kernel.body)
    assert producer.cond.rhs == L.Const(32 * WARPS, producer.cond.rhs.dtype)
    first = producer.then_body.body[0]
    assert isinstance(first, L.Asm) and first.template == (
        f"setmaxnreg.dec.sync.aligned.u32 {producer_count};")
    # The pipelined loop and the fallback loop (the producer leaves at its start) both
    # grow the consumers before the shared epilogue.
    grows = [s for s in L.walk_stmts(kernel.body) if isinstance(s, L.Asm)
             and s.template == f"setmaxnreg.inc.sync.aligned.u32 {consumer_count};"]
    shrinks = [s for s in L.walk_stmts(kernel.body) if isinstance(s, L.Asm)
               and s.template.startswith("setmaxnreg.dec")]
    assert len(grows) == len(shrinks) == 2
    # ptxas builds it with the launch bound's registers and, given the consumers' count, spills
    # nothing (with one producer warp and no split, the 128 x 256 tile spilled).
    module = tg.compile(EXAMPLES / "gemm.tg", target="cuda:sm_90a", kernels=["gemm_f16"],
                        cache=False, WS=True)
    usage = compile_cuda(module.results["gemm_f16"].source, "gemm_f16", "sm_90a").resources
    assert usage is not None and not usage.spills
    assert usage.registers == launch_registers(32 * WARPS + WARPGROUP_THREADS)


def test_four_warps_keep_a_lone_producer_warp() -> None:
    kernel = _gemm("cuda:sm_90a", ws=True, WARPS=4, BM=64)
    assert kernel.block_threads == 4 * 32 + 32
    assert not any(isinstance(s, L.Asm) and "setmaxnreg" in s.template
                   for s in L.walk_stmts(kernel.body))


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
