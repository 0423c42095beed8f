"""The register-pressure estimate: live ranges of local buffers, not their sum."""

from __future__ import annotations

from pathlib import Path

from tegula.compiler.driver import lower_kernel
from tegula.compiler.frontend import build_tile_kernel
from tegula.compiler.parser import parse
from tegula.compiler.tuning.space import MAX_LOCAL_WORDS_PER_THREAD, legality
from tegula.ir import loop as L
from tegula.ir.dtypes import boolean, f16, f32, i64
from tegula.ir.target import cuda_target
from tegula.passes.analysis.register_pressure import (
    buffer_words,
    live_ranges,
    peak_local_words,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _local(name: str, size: int, dtype=f32) -> L.Buffer:
    return L.Buffer(name, dtype, L.Scope.LOCAL, size)


def _touch(buffer: L.Buffer) -> L.Stmt:
    return L.Store(buffer, L.Const(0, i64), L.Const(1.0, buffer.dtype))


def _kernel(body: L.Stmt, *buffers: L.Buffer) -> L.LoopKernel:
    one = L.Const(1, i64)
    return L.LoopKernel("k", (), (), (one, one, one), 32, buffers, 0, body)


def test_sub_word_elements_pack_into_registers() -> None:
    assert buffer_words(_local("h", 7, f16)) == 4
    assert buffer_words(_local("w", 3, f32)) == 3


def test_branches_do_not_add_up() -> None:
    fast, slow = _local("fast", 100), _local("slow", 60)
    body = L.If(L.Const(True, boolean), _touch(fast), _touch(slow))
    assert peak_local_words(_kernel(body, fast, slow)) == 100


def test_unreferenced_buffers_cost_nothing() -> None:
    used, unused = _local("used", 8), _local("unused", 1000)
    assert peak_local_words(_kernel(_touch(used), used, unused)) == 8


def test_a_buffer_used_around_a_loop_lives_through_it() -> None:
    # ``carried`` is written before the loop and read in its first statement only; ``temp``
    # lives in the loop's last statement. They overlap because the loop runs again.
    carried, temp, after = _local("carried", 50), _local("temp", 30), _local("after", 70)
    loop = L.For(L.Var("k"), L.Const(0, i64), L.Const(4, i64), L.Const(1, i64),
                 L.Seq((_touch(carried), L.Comment("work"), _touch(temp))))
    body = L.Seq((_touch(carried), loop, _touch(after)))
    ranges = live_ranges(body)
    assert ranges[carried][1] >= ranges[temp][1]
    assert peak_local_words(_kernel(body, carried, temp, after)) == 80


def test_a_buffer_private_to_one_iteration_range_stays_inside() -> None:
    a, b = _local("a", 40), _local("b", 40)
    loop = L.For(L.Var("k"), L.Const(0, i64), L.Const(4, i64), L.Const(1, i64),
                 L.Seq((_touch(a), _touch(a), _touch(b))))
    assert peak_local_words(_kernel(loop, a, b)) == 40


def _lowered_gemm(config: dict[str, int]) -> L.LoopKernel:
    program = parse((EXAMPLES / "gemm.tg").read_text(), "gemm.tg")
    shapes = {"M": 4096, "N": 4096, "K": 4096}
    target = cuda_target("sm_90a")
    tile = build_tile_kernel(program, "gemm_f16", config, shapes, target.constants())
    loop, _ = lower_kernel(tile, target)
    return loop


def test_the_shipped_gemm_default_is_legal_and_a_spilling_tile_is_not() -> None:
    target = cuda_target("sm_90a")
    fits = _lowered_gemm({"BM": 128, "BN": 256, "BK": 32, "WARPS": 8, "STAGES": 5, "GROUP_M": 8})
    declared = sum(buffer_words(b) for b in fits.buffers if b.scope is L.Scope.LOCAL)
    # The fast and slow versions of the loop each hold an accumulator pair: the sum of every
    # declaration counts both.
    assert peak_local_words(fits) < declared
    assert legality(fits, target) is None
    # Four warps on a 128 x 256 tile: 256 accumulator words a thread on mma.sync, twice over
    # for the carried copy, past any register file.
    spills = _lowered_gemm({"BM": 128, "BN": 256, "BK": 32, "WARPS": 4, "STAGES": 4,
                            "GROUP_M": 8})
    assert peak_local_words(spills) > MAX_LOCAL_WORDS_PER_THREAD
    assert "live at once" in (legality(spills, target) or "")
