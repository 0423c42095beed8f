"""Narrow index arithmetic to 32 bits.

Lowering computes every index, offset and loop counter in ``i64``, so a kernel is correct
for tensors of any size. On a GPU that doubles the registers each live index takes and the
instructions each multiply-add of an address needs: a dequantizing GEMV holding 64-bit
addresses for its prefetched tiles needed 248 registers a thread, 128 with 32-bit ones.

This pass rewrites a CUDA kernel's ``i64`` arithmetic to ``i32`` when that cannot change
what it computes: the kernel's own values (Tile IR) have no ``i64`` (every ``i64`` in the
Loop IR is then an index the lowering made), and the launcher refuses, or hands to a 64-bit
build, any call with a size symbol above ``2^31 - 1`` or a tensor spanning more than
``2^30`` elements. The headroom keeps the offsets of windows that reach past a tensor's end
(masked, never dereferenced: the edge tiles, a prefetch past the last iteration) inside
``i32``. Size symbols still arrive as ``i64`` kernel arguments and are narrowed once at
entry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from tegula.ir import loop as L
from tegula.ir.dtypes import DType, i32, i64
from tegula.ir.tile import CastOp, TileKernel, TileType, Value, walk_ops

from .manager import PassContext, register_pass

INDEX_BITS_OPTION = "index_bits"  # PassContext option: 32 or 64, default by target
WIDE_VALUES_OPTION = "wide_values"  # set by lowering: the kernel's own values include i64
_I32_MAX = (1 << 31) - 1


def has_wide_values(kernel: TileKernel, values: Iterable[Value]) -> bool:
    """Whether a kernel computes with 64-bit integers of its own: an ``i64`` parameter, an
    ``i64`` tile, or an ``i64`` scalar converted to a float. (``i64`` scalars otherwise are
    sizes, loop counters and window starts: indices.)"""
    if any(_dtype(p.value.type) is i64 for p in kernel.params):
        return True
    if any(isinstance(v.type, TileType) and not v.type.is_scalar and v.type.dtype is i64
           for v in values):
        return True
    return any(
        isinstance(op, CastOp) and op.source.tile.dtype is i64 and op.result.tile.dtype.is_float
        for op in walk_ops(kernel.body)
    )


def _dtype(t: object) -> DType | None:
    return getattr(t, "dtype", None)


def wants_narrow_indices(ctx: PassContext) -> bool:
    """Whether this compile narrows: CUDA by default, unless asked for 64 bits or the
    kernel computes with 64-bit values of its own."""
    default = 32 if ctx.target.is_cuda else 64
    return ctx.options.get(INDEX_BITS_OPTION, default) == 32 and not ctx.options.get(
        WIDE_VALUES_OPTION, True
    )


@register_pass("narrow-indices", "compute indices in 32 bits where sizes fit (CUDA)")
def narrow_indices(kernel: L.LoopKernel, ctx: PassContext) -> L.LoopKernel:
    if not wants_narrow_indices(ctx) or kernel.index_bits == 32:
        return kernel
    if any(p.buffer is not None and p.buffer.dtype is i64 for p in kernel.params):
        return kernel
    narrowed = {s.name: L.Var(f"{s.name}_32", i32) for s in kernel.symbols}
    try:
        body = _narrow(kernel.body, narrowed)
    except _DoesNotFit:
        return kernel
    entry = [L.Let(narrowed[s.name], L.Cast(i32, s)) for s in kernel.symbols]
    buffers = tuple(_narrow(b, narrowed) for b in kernel.buffers)
    return dataclasses.replace(
        kernel, body=L.seq(*entry, body), buffers=buffers, index_bits=32
    )


class _DoesNotFit(Exception):
    """A 64-bit constant outside i32: the kernel keeps its 64-bit arithmetic."""


def _narrow(node: object, symbols: dict[str, L.Var]) -> object:
    """``node`` with its 64-bit integers made 32-bit (size symbols by their 32-bit copies)."""

    def narrowed(n: object) -> object | None:
        match n:
            case L.Var(name=name, type=dt) if dt is i64:
                return symbols.get(name, L.Var(name, i32))
            case L.Const(value=value, type=dt) if dt is i64:
                if not -_I32_MAX - 1 <= int(value) <= _I32_MAX:  # type: ignore[arg-type]
                    raise _DoesNotFit
                return L.Const(value, i32)
            case L.Cast(type=dt, operand=x) if dt is i64:
                inner = _narrow(x, symbols)
                # A widening of an i32 value becomes no conversion at all.
                return inner if inner.dtype is i32 else L.Cast(i32, inner)  # type: ignore[attr-defined]
            case L.Buffer(dtype=dt) if dt is i64:
                return dataclasses.replace(n, dtype=i32)
        return None

    return L.map_nodes(node, narrowed)
