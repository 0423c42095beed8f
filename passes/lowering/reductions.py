"""Reductions: within a thread, across the lanes holding the reduced dim (shuffles), and
across warps through shared memory."""

from __future__ import annotations

import math

from tegula.ir import loop as L
from tegula.ir.distributed import BlockedLayout
from tegula.ir.dtypes import DType, compute_type
from tegula.ir.tile import (
    ReduceOp,
    Value,
)

from .base import LoweringBase
from .values import (
    _UNROLLED_REDUCTION,
    BIN,
    Pos,
    RegTile,
    Scalar,
    _pairwise,
    _row_major,
    add,
    c64,
    cast,
    combine,
    identity,
    mul,
    value_index,
)


class Reductions(LoweringBase):
    # ------------------------------------------------------------------ reductions

    def reduce(self, op: ReduceOp) -> None:
        r = op.result
        src = self.tile(op.source)
        lay = src.layout
        p = lay.tile_dims[op.axis]
        dt = r.tile.dtype
        acc_t = compute_type(dt) if dt.is_float and not op.exact_type else dt
        res_lay: BlockedLayout = lay.reduce(op.axis)
        out = self.local(r.name, acc_t, res_lay.num_values)
        kind = op.kind
        to = self.thread_offset(lay)
        live = [d for d in lay.order if d in lay.live_dims]
        if not self.gpu and live and live[0] != p and lay.value_extent(p) <= _UNROLLED_REDUCTION:
            # A CPU thread holds the whole tile: reducing across rows, the loop over the
            # result runs along contiguous memory and each result is one expression over the
            # (unrolled) reduced dim, so LLVM vectorizes it with the sums in registers. The
            # terms are combined pairwise: short dependency chains, and a more accurate sum.
            def unrolled(pos: Pos) -> None:
                terms: list[L.Expr] = []
                for rep in range(lay.reps(p)):
                    for s in range(lay.spt[p]):
                        full = dict(pos)
                        full[p] = (c64(rep), c64(s))
                        terms.append(cast(src.at(full), acc_t))
                self.emit(L.Store(out, value_index(res_lay, pos), _pairwise(kind, terms)))

            self.for_positions(res_lay, unrolled)
            self.finish_reduce(r, dt, acc_t, res_lay, out)
            return

        def per_result(pos: Pos) -> None:
            ridx = value_index(res_lay, pos)
            self.emit(L.Store(out, ridx, identity(kind, acc_t)))

            def term(var_rep: L.Expr, var_s: L.Expr) -> None:
                full = dict(pos)
                full[p] = (var_rep, var_s)
                val = cast(src.at(full), acc_t)
                if lay.replicated(p) or lay.base_shape[p] % lay.coverage(p):
                    raw = add(add(to[p], mul(var_rep, c64(lay.coverage(p)))), var_s)
                    val = L.Select(
                        L.Binary(BIN.LT, raw, c64(lay.base_shape[p])), val, identity(kind, acc_t)
                    )
                self.emit(L.Store(out, ridx, combine(kind, L.Load(out, ridx), val)))

            self.loop(
                f"r{p}",
                lay.reps(p),
                lambda rv: self.loop(f"s{p}", lay.spt[p], lambda sv: term(rv, sv), self.loop_kind),
                L.LoopKind.UNROLL if self.gpu else L.LoopKind.SERIAL,
            )

        self.for_positions(res_lay, per_result)

        if self.gpu and lay.tpw[p] > 1:

            def shuffle(pos: Pos) -> None:
                ridx = value_index(res_lay, pos)
                stride = lay.lane_stride(p)
                k = 1
                while k < lay.tpw[p]:
                    self.emit(
                        L.Store(
                            out,
                            ridx,
                            combine(
                                kind, L.Load(out, ridx), L.ShuffleXor(L.Load(out, ridx), stride * k)
                            ),
                        )
                    )
                    k *= 2

            self.for_positions(res_lay, shuffle)

        if self.gpu and lay.wpc[p] > 1:
            nw = lay.wpc[p]
            numel = math.prod(res_lay.shape) if res_lay.shape else 1
            smem = self.scratch(acc_t, numel * nw)
            warp_p = L.Binary(
                BIN.MOD,
                L.Binary(
                    BIN.FLOORDIV,
                    L.Binary(BIN.FLOORDIV, self.tid, c64(self.target.warp_size)),
                    c64(lay.warp_stride(p)),
                ),
                c64(nw),
            )
            self.barrier()

            def slot(pos: Pos) -> L.Expr:
                coords = self.coords(res_lay, pos) if res_lay.shape else []
                return mul(_row_major(coords, res_lay.shape), c64(nw))

            self.for_positions(
                res_lay,
                lambda pos: self.emit(
                    L.Store(smem, add(slot(pos), warp_p), L.Load(out, value_index(res_lay, pos)))
                ),
            )
            self.barrier()

            def gather(pos: Pos) -> None:
                ridx = value_index(res_lay, pos)
                base = slot(pos)
                e: L.Expr = L.Load(smem, base)
                for w in range(1, nw):
                    e = combine(kind, e, L.Load(smem, add(base, c64(w))))
                self.emit(L.Store(out, ridx, e))

            self.for_positions(res_lay, gather)

        self.finish_reduce(r, dt, acc_t, res_lay, out)

    def finish_reduce(
        self, r: Value, dt: DType, acc_t: DType, res_lay: BlockedLayout, out: L.Buffer
    ) -> None:
        """Bind a reduction's result: the accumulators, converted back to ``dt``."""
        if acc_t is not dt:
            acc = RegTile(acc_t, res_lay, buffer=out)
            res = RegTile(dt, res_lay, element=lambda pos: cast(acc.at(pos), dt))
        else:
            res = RegTile(dt, res_lay, buffer=out)
        if r.tile.is_scalar:
            self.vals[r.name] = Scalar(self.let(r.name, res.at({})))
        else:
            self.define(r, res)
