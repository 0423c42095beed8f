"""Dead-code elimination on Tile IR: drop operations whose results nobody uses.

Layout inference rebuilds a value in the layout a consumer wants (a load, a broadcast, a
cast) rather than converting it; the original is then often unused. Operations with effects
(stores, atomics, loops and branches that contain them) always stay.
"""

from __future__ import annotations

from dataclasses import replace

from tegula.ir.tile import AtomicAddOp, Block, ForOp, IfOp, Op, StoreOp, TileKernel, YieldOp

from .manager import PassContext, register_pass

_EFFECTS = (StoreOp, AtomicAddOp, YieldOp)


def _has_effects(op: Op) -> bool:
    if isinstance(op, _EFFECTS):
        return True
    return any(_has_effects(inner) for block in op.blocks() for inner in block.ops)


def _sweep(block: Block, live: set[str]) -> Block:
    """Keep the ops of ``block`` whose results are live or which have effects; walk
    backwards so an op's operands become live before the ops that define them are seen."""
    kept: list[Op] = []
    for op in reversed(block.ops):
        if not _has_effects(op) and not any(r.name in live for r in op.results):
            continue
        if isinstance(op, ForOp):
            op = replace(op, body=_sweep(op.body, live))
        elif isinstance(op, IfOp):
            op = replace(op, then=_sweep(op.then, live), otherwise=_sweep(op.otherwise, live))
        live.update(v.name for v in op.operands())
        kept.append(op)
    return Block(block.args, tuple(reversed(kept)))


@register_pass("eliminate-dead-code", "drop operations whose results are unused")
def eliminate_dead_code(kernel: TileKernel, ctx: PassContext) -> TileKernel:
    # Two sweeps: a loop's body can make values of the enclosing block live only after the
    # loop itself was kept, which the backward walk sees in one go; a second pass settles
    # values that loops read but whose users were found dead in the first.
    body = kernel.body
    for _ in range(2):
        body = _sweep(body, set())
    return replace(kernel, body=body)
