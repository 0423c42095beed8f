"""Layout inference moves data between threads only where demands really conflict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tegula.passes.pipeline  # noqa: F401  (registers the passes)
from tegula.compiler.checking import entry_kernel, load_companion
from tegula.compiler.frontend import build_tile_kernel, specialization_symbols
from tegula.compiler.parser import parse
from tegula.ir.target import Target, cpu_target, cuda_target
from tegula.ir.tile import ConvertLayoutOp, LoadOp, StoreOp, TileKernel, walk_ops
from tegula.passes.manager import PassContext, run_pipeline

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Conversions the examples still need (on sm_90a the W8A8 outlier product runs on wgmma and
# the 8-bit one on mma.sync, whose accumulators meet once after both loops; on the CPU a
# conversion only re-indexes). Anything above this is a regression. A conversion whose result
# goes straight to a global store (to coalesce it) is counted apart: see
# test_a_narrow_accumulator_store_is_staged_through_shared_memory.
KNOWN_CONVERSIONS = {"quant_gemm_w8a8_outliers": 1}


def _conversions(kernel) -> tuple[list[ConvertLayoutOp], list[ConvertLayoutOp]]:
    """The kernel's conversions: those whose result is a global store's value, and the rest."""
    ops = list(walk_ops(kernel.body))
    stored = {op.value.name for op in ops if isinstance(op, StoreOp)}
    conversions = [op for op in ops if isinstance(op, ConvertLayoutOp)]
    return ([op for op in conversions if op.result.name in stored],
            [op for op in conversions if op.result.name not in stored])


def _inferred(path: Path, name: str, constants: dict[str, Any], target):
    program = parse(path.read_text(), str(path))
    kdef = program.kernel(name)
    assert kdef is not None
    # The target's own constants: `select(CUDA, gpu, cpu)` params give each target its shapes.
    symbols = dict.fromkeys(specialization_symbols(kdef, constants), 4096)
    tile = build_tile_kernel(program, name, constants, symbols, target=target.constants())
    return _infer(tile, target)


def _infer(tile: TileKernel, target: Target) -> TileKernel:
    """``tile`` after layout inference (and the dead code it leaves) for ``target``."""
    return run_pipeline(tile, ("infer-layouts", "eliminate-dead-code"), PassContext(target=target))


def _cases() -> list[tuple[Path, str, str, dict[str, Any]]]:
    """(file, case id, kernel, constants): every kernel at its defaults, and every companion
    entry that sets constants at them (a kernel generic over dtypes at each type it is
    checked at)."""
    cases = []
    for path in sorted(EXAMPLES.glob("*.tg")):
        cases += [(path, k.name, k.name, {}) for k in parse(path.read_text()).kernels]
        for entry, cfg in getattr(load_companion(path), "KERNELS", {}).items():
            if constants := dict(cfg.get("constants", {})):
                kernel = entry_kernel(entry, cfg)
                shown = ",".join(f"{k}={v}" for k, v in constants.items())
                case = entry if entry != kernel else f"{entry}[{shown}]"
                cases.append((path, case, kernel, constants))
    return cases


CASES = _cases()


@pytest.mark.parametrize(("path", "case", "name", "constants"), CASES,
                         ids=[c for _, c, _, _ in CASES])
def test_examples_convert_layouts_only_where_needed(
    path: Path, case: str, name: str, constants: dict[str, Any]
) -> None:
    for target in (cuda_target("sm_90a"), cpu_target()):
        kernel = _inferred(path, name, constants, target)
        conversions = len(_conversions(kernel)[1])
        limit = KNOWN_CONVERSIONS.get(name, 0)
        assert conversions <= limit, f"{name} on {target}: {conversions} conversions"


def test_a_value_is_rebuilt_rather_than_converted_and_the_original_dropped() -> None:
    # `g` is read in the layout of the 2-D product; the load is redone in the layout the
    # reduction leaves (no conversion), and the first load, now unused, is removed.
    source = """
kernel k(x: f32[M, N], g: f32[N], y: f32[N])
    params BM = 16, BN = 256
    grid (cdiv(N, BN)) warps 8
{
    j = bid.x * BN
    acc = zeros(f32, [BN])
    for i in range(0, M, BM) {
        acc = acc + sum(load(x[i : +BM, j : +BN]), axis=0) * load(g[j : +BN])
    }
    store(y[j : +BN], acc)
}
"""
    program = parse(source)
    tile = build_tile_kernel(program, "k", {})
    out = _infer(tile, cuda_target("sm_90a"))
    ops = list(walk_ops(out.body))
    assert not any(isinstance(op, ConvertLayoutOp) for op in ops)
    loads_of_g = [op for op in ops if isinstance(op, LoadOp) and op.tensor.name == "g"]
    assert len(loads_of_g) == 1


def test_a_short_chain_over_loads_is_recomputed_not_converted() -> None:
    # `g` is a scale times a constant, and `r` a loaded tile times one: both meet the
    # accumulator's layout by being loaded and computed again in it, not moved through
    # shared memory.
    source = """
kernel k(a: f16[M, K], b: f16[K, N], s: f32[N], r: f16[M, N], c: f16[M, N])
    params BM = 64, BN = 64, BK = 32
    grid (cdiv(M, BM), cdiv(N, BN)) warps 4
{
    i = bid.x * BM
    j = bid.y * BN
    acc = zeros(f32, [BM, BN])
    for k in pipeline(0, K, BK, stages=2) {
        acc = dot(load(a[i : +BM, k : +BK]), load(b[k : +BK, j : +BN]), acc)
    }
    g = load(s[j : +BN]) * 0.5
    y = acc * g[None, :] + cast(load(r[i : +BM, j : +BN]), f32) * 2.0
    store(c[i : +BM, j : +BN], cast(y, f16))
}
"""
    program = parse(source)
    tile = build_tile_kernel(program, "k", {}, {"M": 256, "N": 256, "K": 256})
    for target in (cuda_target("sm_80"), cuda_target("sm_90a")):
        kernel = _infer(tile, target)
        assert not _conversions(kernel)[1]


GEMM_EPILOGUE = """
kernel k(a: f16[M, K], b: f16[K, N], c: OT[M, N])
    params OT = f16 in (f16, f32), BM = 128, BN = 128, BK = 32
    grid (cdiv(M, BM), cdiv(N, BN)) warps 8
{
    i = bid.x * BM
    j = bid.y * BN
    acc = zeros(f32, [BM, BN])
    for k in pipeline(0, K, BK, stages=3) {
        acc = dot(load(a[i : +BM, k : +BK]), load(b[k : +BK, j : +BN]), acc)
    }
    store(c[i : +BM, j : +BN], cast(acc, OT))
}
"""


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_a_narrow_accumulator_store_is_staged_through_shared_memory(arch: str) -> None:
    # An mma accumulator puts 2 values of a row in a thread and 4 threads side by side: 16
    # bytes of an f16 row, half a sector. The f16 result (not the f32 accumulator, twice the
    # bytes) goes through shared memory once, into the coalesced layout; an f32 result's 32
    # bytes fill a sector and are stored as they are; on the CPU nothing moves.
    program = parse(GEMM_EPILOGUE)
    sizes = {"M": 256, "N": 256, "K": 256}
    for out_type, staged in (("f16", 1), ("f32", 0)):
        tile = build_tile_kernel(program, "k", {"OT": out_type}, sizes)
        for target, expected in ((cuda_target(arch), staged), (cpu_target(), 0)):
            kernel = _infer(tile, target)
            at_store, others = _conversions(kernel)
            assert not others
            assert len(at_store) == expected, (out_type, str(target))
            for op in at_store:
                assert op.source.tile.dtype.name == out_type


def test_two_uses_wanting_one_layout_share_one_rebuild() -> None:
    """An activation slab broadcast against two weight tiles of the same layout is loaded
    again in that layout once, not once per product (each thread then reads it for both)."""
    source = """
kernel two_rows(x: f16[K], w: i4[N, K], y: f16[N])
    params BN = 16, BK = 128
    grid (cdiv(N, 2 * BN)) warps 4
{
    j = bid.x * 2 * BN
    acc0 = zeros(f32, [BN])
    acc1 = zeros(f32, [BN])
    for k in range(0, K, BK) {
        a = load(x[k : +BK])
        p0 = sum(cast(load(w[j : +BN, k : +BK]), f16) * a[None, :], axis=1, dtype=f16)
        p1 = sum(cast(load(w[j + BN : +BN, k : +BK]), f16) * a[None, :], axis=1, dtype=f16)
        acc0 = acc0 + cast(p0, f32)
        acc1 = acc1 + cast(p1, f32)
    }
    store(y[j : +BN], cast(acc0, f16))
    store(y[j + BN : +BN], cast(acc1, f16))
}
"""
    tile = build_tile_kernel(parse(source), "two_rows", {}, {"K": 4096, "N": 4096},
                             target=cuda_target("sm_90a").constants())
    kernel = _infer(tile, cuda_target("sm_90a"))
    loads = [op for op in walk_ops(kernel.body) if isinstance(op, LoadOp)
             and op.tensor.name == "x"]
    assert len(loads) == 1
    assert not any(isinstance(op, ConvertLayoutOp) for op in walk_ops(kernel.body))
