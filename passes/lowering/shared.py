"""Shared memory: register tiles written and read through it, layout conversions, and
``shared(...)`` tiles."""

from __future__ import annotations

import math
from collections.abc import Callable

from tegula.ir import loop as L
from tegula.ir.distributed import BlockedLayout, RegisterLayout, TVRegisterLayout
from tegula.ir.dtypes import DType
from tegula.ir.layout import Layout, row_major
from tegula.ir.swizzle import Swizzle, SwizzledLayout
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
        staging = conversion_staging(shape, smem.dtype)

        def at(coords: list[L.Expr]) -> L.Expr:
            return shared_offset(staging, coords)

        write_run = _shared_run(t.layout, smem.dtype) if t.dtype is smem.dtype else 1
        read_run = _shared_run(lay, smem.dtype) if r.tile.dtype is smem.dtype else 1
        self.barrier()
        if write_run > 1:
            src = self.materialize(f"{op.source.name}_staged", t)
            self.for_runs(t.layout, write_run, lambda first: self.emit(L.Copy(
                smem, at(self.coords(t.layout, first)), src.buffer,  # type: ignore[arg-type]
                value_index(t.layout, first), write_run, aligned=True)))
        else:
            self.write_tile_to(t, smem, at)
        self.barrier()
        if read_run > 1:
            buf = self.local(r.name, r.tile.dtype, lay.num_values)
            self.for_runs(lay, read_run, lambda first: self.emit(L.Copy(
                buf, value_index(lay, first), smem, at(self.coords(lay, first)), read_run,
                aligned=True)))
            self.vals[r.name] = RegTile(r.tile.dtype, lay, buffer=buf)
        else:
            self.vals[r.name] = self.read_tile_from(r.name, r.tile.dtype, lay, smem, at)

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
        self.barrier()
        self.write_tile_to(t, buf, lambda c: shared_offset(layout, c))
        self.barrier()
        self.vals[r.name] = SharedTile(buf, layout, r.tile.shape)

    def from_shared(self, op: FromSharedOp) -> None:
        r = op.result
        s = self.vals[op.source.name]
        assert isinstance(s, SharedTile)
        self.vals[r.name] = self.read_tile_from(
            r.name, r.tile.dtype, r.tile.layout, s.buffer, lambda c: shared_offset(s.layout, c)
        )


# Shared memory serves a warp's accesses in 16-byte units across 128 bytes of banks.
_BANK_ROW_BYTES = 128
_BANK_UNIT_BYTES = 16


def _shared_run(lay: RegisterLayout, dtype: DType) -> int:
    """How many values a thread moves with one shared-memory access of a conversion: its run
    along the row (the staging layout's contiguous dim), up to one 16-byte unit, which the
    staging swizzle keeps in place."""
    if not isinstance(lay, BlockedLayout) or lay.removed or lay.unit or lay.interleave != 1:
        return 1
    last = len(lay.base_shape) - 1
    if lay.order[0] != last:
        return 1
    return math.gcd(lay.spt[last], _BANK_UNIT_BYTES // dtype.itemsize)


def conversion_staging(shape: tuple[int, ...], dtype: DType) -> Layout | SwizzledLayout:
    """Where a layout conversion puts each element in shared memory: row-major, with each
    row's 16-byte units permuted by the row's index (``unit ^ row % 8``) when rows span
    whole 128-byte bank rows. Threads that hold a column strip (a ``dot`` accumulator's
    quads: 8 rows of 16 bytes each) then hit 8 different bank groups instead of one, and
    a thread's 16-byte run stays in one unit, so coalesced reads stay vectorizable."""
    plain = row_major(shape)
    row_bytes = shape[-1] * dtype.itemsize
    unit = _BANK_UNIT_BYTES // dtype.itemsize
    if len(shape) < 2 or row_bytes % _BANK_ROW_BYTES or row_bytes & (row_bytes - 1):
        return plain
    units_per_bank_row = _BANK_ROW_BYTES // _BANK_UNIT_BYTES
    bits = units_per_bank_row.bit_length() - 1
    base = unit.bit_length() - 1
    return SwizzledLayout(Swizzle(bits, base, shape[-1].bit_length() - 1 - base), plain)
