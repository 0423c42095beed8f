"""Grouped loops on the CPU: a loop whose body reads ``k // C`` (a group-wise scale, a zero
point per group of rows) runs as a loop over groups around a loop within the group, and the
body's work that depends on ``k`` only through ``k // C`` runs once per group.

A CPU block is one thread running the loop in order, so nothing recomputes such a value for
free: a GEMV that reloads and converts its group scales every iteration spends as much on them
as on the weights. On CUDA the loop stays as written (its loads are pipelined instead).

    for k in range(start, stop, step):            for k0 in range(start, stop, C):
        g = f(k // C); body(k, g)          ==>        g = f(k0 // C)
                                                      for k in range(k0, min(k0 + C, stop), step):
                                                          body(k, g)

The iterations are the same and run in the same order when ``C`` is a multiple of ``step``;
``k // C == k0 // C`` for every ``k`` of a group when ``start`` is a multiple of ``C``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tegula.ir import loop as L
from tegula.ir.dtypes import i64
from tegula.ir.tile import (
    AtomicAddOp,
    BroadcastOp,
    CastOp,
    ElementwiseOp,
    ExpandDimsOp,
    ForOp,
    FullOp,
    LoadOp,
    Op,
    StoreOp,
    Value,
    walk_ops,
)

from .base import LoweringBase
from .values import BIN, RegTile, Scalar, add, c64, cast

# Emits a loop body for the loop variable bound to a Var, leaving out the ops given by id.
BodyLowering = Callable[[L.Var, frozenset[int]], None]

# Ops that compute from their operands alone (a load reads memory the loop does not write).
_PURE = (ElementwiseOp, CastOp, BroadcastOp, ExpandDimsOp, FullOp, LoadOp)


@dataclass(frozen=True)
class GroupPlan:
    """How a loop runs grouped: ``size`` iterations' worth of the loop variable per group,
    and the body ops that run once per group (in body order)."""

    size: int
    hoisted: tuple[Op, ...]


class GroupedLoops(LoweringBase):
    def group_plan(self, op: ForOp) -> GroupPlan | None:
        """The grouping of a CPU loop, or None: the body must divide the loop variable by a
        constant multiple ``C`` of a constant step, from a constant start that ``C``
        divides, and a load must depend on the quotient (else there is nothing to save)."""
        if self.gpu:
            return None
        start, step = self.scalar(op.start), self.scalar(op.step)
        if not (isinstance(start, L.Const) and isinstance(step, L.Const)) or step.value <= 0:
            return None
        size = self.group_size(op, int(step.value))
        if size is None or int(start.value) % size:
            return None
        hoisted = self.group_invariant(op, size)
        if not any(isinstance(o, LoadOp) for o in hoisted):
            return None
        return GroupPlan(size, hoisted)

    def group_size(self, op: ForOp, step: int) -> int | None:
        """The first ``C`` of a ``k // C`` in the body that is a multiple of (and larger
        than) the step."""
        loop_var = op.body.args[0]
        for o in op.body.ops:
            divisor = self.divisor_of(o, loop_var, op)
            if divisor is not None and divisor > step and divisor % step == 0:
                return divisor
        return None

    def divisor_of(self, o: Op, loop_var: Value, loop: ForOp) -> int | None:
        """``C`` when ``o`` is ``loop_var // C`` for a constant ``C``, else None."""
        if not isinstance(o, ElementwiseOp) or o.fn != "floordiv" or o.args[0] != loop_var:
            return None
        divisor = o.args[1]
        producer = next((p for p in loop.body.ops if divisor in p.results), None)
        if isinstance(producer, FullOp) and not isinstance(producer.value, float | bool):
            return int(producer.value)
        outside = self.vals.get(divisor.name)
        if isinstance(outside, Scalar) and isinstance(outside.expr, L.Const):
            return int(outside.expr.value) if not outside.expr.dtype.is_float else None
        return None

    def group_invariant(self, op: ForOp, size: int) -> tuple[Op, ...]:
        """The body ops whose results depend on the loop variable only through
        ``k // size``: pure ops over values from outside the loop, constants, the quotient
        and one another. Loads of a tensor the loop stores to stay in the loop."""
        loop_var = op.body.args[0]
        written = {
            o.tensor.name for o in walk_ops(op.body) if isinstance(o, StoreOp | AtomicAddOp)
        }
        inside = {a.name for a in op.body.args}
        inside |= {v.name for o in walk_ops(op.body) for v in o.results}
        invariant: set[str] = set()
        hoisted: list[Op] = []
        for o in op.body.ops:
            quotient = self.divisor_of(o, loop_var, op) == size  # from the group's first k
            if quotient or self.hoistable(o, written, inside - invariant):
                hoisted.append(o)
                invariant |= {v.name for v in o.results}
        return tuple(hoisted)

    @staticmethod
    def hoistable(o: Op, written: set[str], varying: set[str]) -> bool:
        """A pure op none of whose operands vary within a group; a load only of a tensor
        the loop does not write."""
        if not isinstance(o, _PURE) or o.blocks():
            return False
        if isinstance(o, LoadOp) and o.tensor.name in written:
            return False
        return not any(v.name in varying for v in o.operands())

    def grouped_loop(self, op: ForOp, plan: GroupPlan, lower_body: BodyLowering) -> None:
        """Emit the loop over groups: the hoisted ops (with the loop variable at the group's
        first value), then the loop within the group, whose body ``lower_body`` emits."""
        loop_var = op.body.args[0]
        start = cast(self.scalar(op.start), i64)
        stop = cast(self.scalar(op.stop), i64)
        step = cast(self.scalar(op.step), i64)
        group = L.Var(self.unique(f"{loop_var.name}_group"), i64)
        self.nest()
        self.vals[loop_var.name] = Scalar(cast(group, loop_var.tile.dtype))
        for o in plan.hoisted:
            self.comment(o)
            self.op(o)
            self.keep_converted(o)
        within = L.Var(self.unique(loop_var.name), i64)
        group_end = self.let(
            "group_end", L.Binary(BIN.MIN, add(group, c64(plan.size)), stop)
        )
        self.nest()
        lower_body(within, frozenset(id(o) for o in plan.hoisted))
        inner = self.unnest()
        self.emit(L.For(within, group, group_end, step, inner, L.LoopKind.SERIAL))
        body = self.unnest()
        self.emit(L.For(group, start, stop, c64(plan.size), body, L.LoopKind.SERIAL))

    def keep_converted(self, o: Op) -> None:
        """Store a hoisted conversion's values once per group: left as an expression, each
        iteration of the inner loop would convert (or decode) them again."""
        if not isinstance(o, CastOp):
            return
        tile = self.vals.get(o.result.name)
        if isinstance(tile, RegTile) and tile.element is not None:
            self.vals[o.result.name] = self.materialize(o.result.name, tile)

