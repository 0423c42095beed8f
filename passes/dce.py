"""Dead-code elimination on Tile IR: drop operations whose results nobody uses.

Layout inference rebuilds a value in the layout a consumer wants (a load, a broadcast, a
cast) rather than converting it; the original is then often unused. Operations with effects
(stores, atomics, loops and branches that contain them) always stay, but a loop's carried
values and a branch's results that nothing reads go, with what computes them.
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
            op = _drop_dead_carried(op, live)
            op = replace(op, body=_sweep(op.body, live))
        elif isinstance(op, IfOp):
            op = _drop_unused_results(op, live)
            op = replace(op, then=_sweep(op.then, live), otherwise=_sweep(op.otherwise, live))
        live.update(v.name for v in op.operands())
        kept.append(op)
    return Block(block.args, tuple(reversed(kept)))


def _with_yield(block: Block, keep: list[int]) -> Block:
    """``block`` with its terminator yielding only the values at ``keep``."""
    term = block.terminator
    if term is None:
        return block
    values = tuple(term.values[i] for i in keep)
    return Block(block.args, (*block.ops[:-1], replace(term, values=values)))


def _drop_dead_carried(op: ForOp, live: set[str]) -> ForOp:
    """``op`` without the loop-carried values nothing reads: the result unused after the
    loop, and the body reading the value only to compute its own next value (a carried tile
    that a compile-time branch left untouched, say)."""
    slots = range(len(op.inits))
    dead = {i for i in slots if op.results[i].name not in live}
    while dead:
        keep = [i for i in slots if i not in dead]
        read: set[str] = set()
        _sweep(_with_yield(op.body, keep), read)
        revived = {i for i in dead if op.body.args[1 + i].name in read}
        if not revived:
            break
        dead -= revived
    if not dead:
        return op
    keep = [i for i in slots if i not in dead]
    body = _with_yield(op.body, keep)
    args = (body.args[0], *(body.args[1 + i] for i in keep))
    return replace(op, inits=tuple(op.inits[i] for i in keep), body=Block(args, body.ops),
                   results=tuple(op.results[i] for i in keep))


def _drop_unused_results(op: IfOp, live: set[str]) -> IfOp:
    """``op`` without the results nothing reads after it."""
    keep = [i for i, r in enumerate(op.results) if r.name in live]
    if len(keep) == len(op.results):
        return op
    return replace(op, then=_with_yield(op.then, keep), otherwise=_with_yield(op.otherwise, keep),
                   results=tuple(op.results[i] for i in keep))


@register_pass("eliminate-dead-code", "drop operations whose results are unused")
def eliminate_dead_code(kernel: TileKernel, ctx: PassContext) -> TileKernel:
    # Two sweeps: a loop's body can make values of the enclosing block live only after the
    # loop itself was kept, which the backward walk sees in one go; a second pass settles
    # values that loops read but whose users were found dead in the first.
    body = kernel.body
    for _ in range(2):
        body = _sweep(body, set())
    return replace(kernel, body=body)
