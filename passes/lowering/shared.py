"""Shared memory: register tiles written and read through it, layout conversions, and
``shared(...)`` tiles."""

from __future__ import annotations

import math
from collections.abc import Callable

from tegula.ir import loop as L
from tegula.ir.distributed import BlockedLayout, TVRegisterLayout
from tegula.ir.dtypes import DType
from tegula.ir.tile import (
    ConvertLayoutOp,
    FromSharedOp,
    ToSharedOp,
)

from .base import LoweringBase, SharedAlloc
from .values import (
    LoweringError,
    Pos,
    RegTile,
    Scalar,
    SharedTile,
    _row_major,
    c64,
    cast,
    shared_offset,
    value_index,
)


class SharedMemory(LoweringBase):
    # ------------------------------------------------------------------ shared memory

    def write_tile_to(
        self, t: RegTile, smem: L.Buffer, offset_of: Callable[[list[L.Expr]], L.Expr]
    ) -> None:
        self.for_positions(
            t.layout,
            lambda pos: self.emit(
                L.Store(smem, offset_of(self.coords(t.layout, pos)), cast(t.at(pos), smem.dtype))
            ),
        )

    def read_tile_from(
        self,
        name: str,
        dt: DType,
        lay: BlockedLayout,
        smem: L.Buffer,
        offset_of: Callable[[list[L.Expr]], L.Expr],
    ) -> RegTile:
        buf = self.local(name, dt, lay.num_values)
        self.for_positions(
            lay,
            lambda pos: self.emit(
                L.Store(buf, value_index(lay, pos), L.Load(smem, offset_of(self.coords(lay, pos))))
            ),
        )
        return RegTile(dt, lay, buffer=buf)

    def convert(self, op: ConvertLayoutOp) -> None:
        r = op.result
        src = self.vals[op.source.name]
        if isinstance(src, Scalar):
            self.vals[r.name] = src
            return
        t = self.tile(op.source)
        lay = r.tile.layout
        if isinstance(lay, TVRegisterLayout):
            raise LoweringError(
                "thread-value layouts written by hand are not lowered yet; use a blocked layout"
            )
        if not self.gpu or t.layout == lay:
            # One thread holds everything: a conversion only re-orders the buffer.
            self.define(
                r, RegTile(r.tile.dtype, lay, element=lambda pos: self._elem_by_coords(t, lay, pos))
            )
            return
        shape = r.tile.shape
        smem = self.scratch(r.tile.dtype, math.prod(shape))
        self.emit(L.Barrier())
        self.write_tile_to(t, smem, lambda c: _row_major(c, shape))
        self.emit(L.Barrier())
        self.vals[r.name] = self.read_tile_from(
            r.name, r.tile.dtype, lay, smem, lambda c: _row_major(c, shape)
        )

    def _elem_by_coords(self, t: RegTile, lay: BlockedLayout, pos: Pos) -> L.Expr:
        """On a one-thread target: the element of ``t`` at the coordinates of ``pos`` in ``lay``."""
        coords = self.coords(lay, pos)
        src_pos: Pos = {}
        for ax, d in enumerate(t.layout.tile_dims):
            if d in t.layout.live_dims:
                src_pos[d] = (c64(0), coords[ax])
        return t.at(src_pos)

    def to_shared(self, op: ToSharedOp) -> None:
        r = op.result
        t = self.tile(op.source)
        layout = r.tile.layout
        cosize = int(layout.cosize)
        name = self.unique(f"{r.name}_smem")
        buf = L.Buffer(name, r.tile.dtype, L.Scope.SHARED, cosize, 0)
        self.buffers.append(buf)
        self.shared_allocs.append(SharedAlloc(name, cosize * r.tile.dtype.itemsize))
        self.emit(L.Barrier())
        self.write_tile_to(t, buf, lambda c: shared_offset(layout, c))
        self.emit(L.Barrier())
        self.vals[r.name] = SharedTile(buf, layout, r.tile.shape)

    def from_shared(self, op: FromSharedOp) -> None:
        r = op.result
        s = self.vals[op.source.name]
        assert isinstance(s, SharedTile)
        self.vals[r.name] = self.read_tile_from(
            r.name, r.tile.dtype, r.tile.layout, s.buffer, lambda c: shared_offset(s.layout, c)
        )
