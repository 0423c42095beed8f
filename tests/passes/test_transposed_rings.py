"""A B operand stored [N, K] and transposed in registers (``transpose(load(w[j : +BN, k :
+BK]))``, a linear layer's weights) is pipelined like a plain one: its ring holds the slab
n-major, the stored order, so ``cp.async`` copies 16-byte chunks of its rows and the product
reads it K-major (8-bit operands included, which a k-major copy could not serve); on sm_90a
TMA boxes over the stored tensor fill it too. Checked on the Loop IR and the generated CUDA
C; the GPU runs such kernels in tests/quant_kernels and tests/e2e."""

from __future__ import annotations

import pytest
from tegula.compiler.driver import lower_kernel
from tegula.compiler.frontend import build_tile_kernel
from tegula.compiler.parser import parse
from tegula.compiler.targets import resolve_target
from tegula.ir import loop as L

import tegula as tg

SOURCE = """
kernel nt(a: {t}[M, K], w: {t}[N, K], c: {acc}[M, N])
    params BM = 128, BN = 128, BK = {bk}, WARPS = 8, STAGES = 3
    grid (cdiv(M, BM), cdiv(N, BN)) warps WARPS
{{
    i = bid.x * BM
    j = bid.y * BN
    acc = zeros({acc}, [BM, BN])
    for k in pipeline(0, K, BK, stages=STAGES{tma}) {{
        acc = dot(load(a[i : +BM, k : +BK]), transpose(load(w[j : +BN, k : +BK])), acc)
    }}
    store(c[i : +BM, j : +BN], acc)
}}
"""
TYPES = {"i8": ("i8", "i32", 128), "f16": ("f16", "f32", 64)}


def _source(kind: str, tma: bool = False) -> str:
    t, acc, bk = TYPES[kind]
    return SOURCE.format(t=t, acc=acc, bk=bk, tma=", tma=true" if tma else "")


def _lowered(kind: str, target: str, tma: bool = False) -> L.LoopKernel:
    tgt = resolve_target(target)
    tile = build_tile_kernel(parse(_source(kind, tma)), "nt", {}, {}, tgt.constants())
    return lower_kernel(tile, tgt)[0]


def _copies_into(kernel: L.LoopKernel, ring: str) -> int:
    return sum(1 for s in L.walk_stmts(kernel.body) if isinstance(s, L.Asm)
               and "cp.async.cg" in s.template and isinstance(s.inputs[0], L.Address)
               and s.inputs[0].buffer.name.startswith(ring))


@pytest.mark.parametrize("kind", sorted(TYPES))
@pytest.mark.parametrize("target", ["cuda:sm_80", "cuda:sm_90a"])
def test_a_transposed_b_is_copied_into_a_ring(kind: str, target: str) -> None:
    kernel = _lowered(kind, target)
    rings = [b.name for b in kernel.buffers if b.name.endswith("_ring")]
    assert len(rings) == 2  # A's and the weights'
    for ring in rings:
        assert _copies_into(kernel, ring) > 0
    module = tg.compile(_source(kind), target=target, cache=False)
    result = module.results["nt"]
    log = result.backend_log
    assert "spill" not in log or " 0 bytes spill stores" in log
    if target == "cuda:sm_90a":
        # The weights' descriptor points into their ring, read K-major (no transpose flag).
        assert "__cvta_generic_to_shared(&" in result.source
        assert any(f"&{r}[" in line and "desc_b" in line
                   for r in rings for line in result.source.splitlines())


@pytest.mark.parametrize("kind", sorted(TYPES))
def test_tma_fills_a_transposed_ring_in_the_tensors_frame(kind: str) -> None:
    """The n-major ring is the load's tile row-major, so TMA boxes over the stored [N, K]
    tensor fill it: one box a swizzle block of K (128 bytes) by the tile's N rows, and with a
    producer warpgroup too."""
    kernel = _lowered(kind, "cuda:sm_90a", tma=True)
    t, _, _ = TYPES[kind]
    itemsize = 1 if t == "i8" else 2
    weights = [m for m in kernel.tensor_maps if m.tensor.name == "w"]
    assert weights and all(m.box[:2] == (128 // itemsize, 128) for m in weights)
    assert not kernel.notes
    source = _source(kind, tma=True).replace("tma=true", "tma=true, warp_specialize=true")
    result = tg.compile(source, target="cuda:sm_90a", cache=False).results["nt"]
    assert result.spec.block_threads == 8 * 32 + 128
    assert "setmaxnreg.inc" in result.source
    assert " 0 bytes spill stores" in result.backend_log
