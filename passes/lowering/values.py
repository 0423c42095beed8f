"""The values lowering works with: Loop IR expression builders, the lowered forms of Tile IR
values (scalars, tensors, register tiles, shared tiles), and small index helpers."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from tegula.ir import loop as L
from tegula.ir.atoms import WgmmaSmemLayout
from tegula.ir.distributed import BlockedLayout
from tegula.ir.dtypes import DType, i64
from tegula.ir.tile import (
    CastOp,
    ElementwiseOp,
    FullOp,
    Op,
    ReduceKind,
    Value,
)


class LoweringError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- expression helpers

BIN = L.BinaryOp
_BINARY_FNS = {
    "add": BIN.ADD,
    "sub": BIN.SUB,
    "mul": BIN.MUL,
    "div": BIN.DIV,
    "floordiv": BIN.FLOORDIV,
    "mod": BIN.MOD,
    "min": BIN.MIN,
    "max": BIN.MAX,
    "pow": BIN.POW,
    "lt": BIN.LT,
    "le": BIN.LE,
    "gt": BIN.GT,
    "ge": BIN.GE,
    "eq": BIN.EQ,
    "ne": BIN.NE,
    "and": BIN.AND,
    "or": BIN.OR,
    "bitand": BIN.BITAND,
    "bitor": BIN.BITOR,
    "bitxor": BIN.BITXOR,
    "shl": BIN.SHL,
    "shr": BIN.SHR,
}
_UNARY_FNS = {u.value: u for u in L.UnaryOp}


def c64(v: int) -> L.Const:
    return L.Const(int(v), i64)


def cast(e: L.Expr, dt: DType) -> L.Expr:
    if e.dtype is dt:
        return e
    if isinstance(e, L.Const):
        if dt.is_float:
            return L.Const(float(e.value), dt)
        if dt.is_bool:
            return L.Const(bool(e.value), dt)
        return L.Const(int(e.value), dt)
    return L.Cast(dt, e)


def add(a: L.Expr, b: L.Expr) -> L.Expr:
    if isinstance(b, L.Const) and b.value == 0:
        return a
    if isinstance(a, L.Const) and a.value == 0:
        return b
    if isinstance(a, L.Const) and isinstance(b, L.Const):
        return L.Const(a.value + b.value, a.dtype)
    return L.Binary(BIN.ADD, a, b)


def mul(a: L.Expr, b: L.Expr) -> L.Expr:
    if isinstance(b, L.Const) and b.value == 1:
        return a
    if isinstance(a, L.Const) and a.value == 1:
        return b
    if (isinstance(a, L.Const) and a.value == 0) or (isinstance(b, L.Const) and b.value == 0):
        return c64(0)
    if isinstance(a, L.Const) and isinstance(b, L.Const):
        return L.Const(a.value * b.value, a.dtype)
    return L.Binary(BIN.MUL, a, b)


def land(a: L.Expr | None, b: L.Expr | None) -> L.Expr | None:
    if a is None:
        return b
    if b is None:
        return a
    return L.Binary(BIN.AND, a, b)


def identity(kind: ReduceKind, dt: DType) -> L.Const:
    if kind is ReduceKind.SUM:
        return L.Const(0.0 if dt.is_float else 0, dt)
    if dt.is_float:
        return L.Const(-math.inf if kind is ReduceKind.MAX else math.inf, dt)
    lo, hi = (
        (-(1 << (dt.bits - 1)), (1 << (dt.bits - 1)) - 1)
        if dt.is_signed
        else (0, (1 << dt.bits) - 1)
    )
    return L.Const(lo if kind is ReduceKind.MAX else hi, dt)


def combine(kind: ReduceKind, a: L.Expr, b: L.Expr) -> L.Expr:
    op = {ReduceKind.SUM: BIN.ADD, ReduceKind.MAX: BIN.MAX, ReduceKind.MIN: BIN.MIN}[kind]
    return L.Binary(op, a, b)


def parse_grid_expr(text: str, symbols: dict[str, L.Var]) -> L.Expr:
    """A grid expression (runtime grammar) as a Loop IR expression, for printing."""

    def conv(n: ast.AST) -> L.Expr:
        if isinstance(n, ast.Constant):
            return c64(n.value)
        if isinstance(n, ast.Name):
            return symbols.get(n.id, L.Var(n.id, i64))
        if isinstance(n, ast.BinOp):
            ops = {
                ast.Add: BIN.ADD,
                ast.Sub: BIN.SUB,
                ast.Mult: BIN.MUL,
                ast.FloorDiv: BIN.FLOORDIV,
                ast.Mod: BIN.MOD,
            }
            return L.Binary(ops[type(n.op)], conv(n.left), conv(n.right))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
            a, b = (conv(x) for x in n.args)
            if n.func.id == "cdiv":
                return L.Binary(BIN.FLOORDIV, L.Binary(BIN.ADD, a, L.Binary(BIN.SUB, b, c64(1))), b)
            return L.Binary(BIN.MIN if n.func.id == "min" else BIN.MAX, a, b)
        raise LoweringError(f"unsupported grid expression {text!r}")

    return conv(ast.parse(text, mode="eval").body)


# A CPU reduction across rows of at most this many is unrolled into one expression per result.
_UNROLLED_REDUCTION = 64

# ----------------------------------------------------------------------------- lowered values

Pos = dict[int, tuple[L.Expr, L.Expr]]  # base dim -> (rep, s)


@dataclass
class Scalar:
    expr: L.Expr


@dataclass
class Tensor:
    """A global tensor. A packed one (``packed_bits`` > 0) is a buffer of bytes: its
    ``strides`` count bytes for every dim but the last, whose elements are ``packed_bits``
    wide in each row's bitstream."""

    buffer: L.Buffer
    shape: tuple[L.Expr, ...]
    strides: tuple[L.Expr, ...]
    contiguous_last: bool
    packed_bits: int = 0


@dataclass
class RegTile:
    """A register tile: values in ``buffer``, or an element function (fused, recomputed).
    With both, ``buffer`` is the storage the element function reads (a low-bit tile's
    packed codes) and holds no values one per element."""

    dtype: DType
    layout: BlockedLayout
    buffer: L.Buffer | None = None
    element: Callable[[Pos], L.Expr] | None = None

    @property
    def in_buffer(self) -> bool:
        """Whether ``buffer`` holds the values one per element, in value-index order."""
        return self.buffer is not None and self.element is None

    def at(self, pos: Pos) -> L.Expr:
        if self.element is not None:
            return self.element(pos)
        assert self.buffer is not None
        return L.Load(self.buffer, value_index(self.layout, pos))


@dataclass
class SharedTile:
    buffer: L.Buffer
    layout: object  # Layout or SwizzledLayout, coordinates -> element offset
    shape: tuple[int, ...]


@dataclass
class StagedTile:
    """A tile already in shared memory under an operand swizzle, at ``base`` (one stage of a
    software pipeline's ring of buffers): row-major, or with ``column_major`` its columns
    contiguous (a ``dot``'s B operand stored n-major, as 8-bit tensor-core operands need)."""

    buffer: L.Buffer
    base: L.Expr
    swizzle: tuple[int, int, int] | None
    shape: tuple[int, int]
    dtype: DType
    column_major: bool = False
    # For wgmma: the descriptor-readable layout (``swizzle`` is then unused), and for an A
    # operand the order its 8-row groups are stored in.
    wgmma: WgmmaSmemLayout | None = None
    row_groups: WarpgroupRows | None = None

    def offset(self, coords: list[L.Expr]) -> L.Expr:
        row, col = coords
        row_length = self.shape[1]
        if self.column_major:
            row, col, row_length = col, row, self.shape[0]
        if self.wgmma is None:
            return add(self.base, _swizzled(add(mul(row, c64(row_length)), col), self.swizzle))
        if self.row_groups is not None:
            row = self.row_groups.stored_row(row)
        lay = self.wgmma
        within: L.Expr = add(mul(row, c64(lay.block)), L.Binary(BIN.MOD, col, c64(lay.block)))
        if lay.cols > lay.block:
            block = L.Binary(BIN.FLOORDIV, col, c64(lay.block))
            within = add(mul(block, c64(lay.rows * lay.block)), within)
        return add(self.base, _swizzled(within, lay.swizzle))

    def tma_boxes(self) -> TmaPlan:
        """How TMA boxes of the tile itself fill it (a wgmma layout): exact at any edge.

        A wgmma layout is swizzle-wide blocks of whole rows, 1024-byte aligned, which is
        what a box ``block`` wide with the same swizzle writes (the swizzle is a function
        of the shared address). A's 8-row groups are stored in warpgroup order, so A takes
        a box per group and block; B takes one per block (of at most 256 rows).
        """
        lay = self.wgmma
        assert lay is not None and not self.column_major
        rows, cols = self.shape
        group = 8 if self.row_groups is not None or rows > 256 else rows
        origin = replace(self, base=c64(0))
        boxes = []
        for first_row in range(0, rows, group):
            for first_col in range(0, cols, lay.block):
                at = origin.offset([c64(first_row), c64(first_col)])
                boxes.append((first_row, first_col, _constant(at)))
        return TmaPlan(((1, 0, 1), (0, 0, 1)), (lay.block, group), tuple(boxes))

    def tma_view(self) -> TmaPlan | None:
        """The same tile in one box per swizzle block (A: per instruction row too, where a
        warpgroup issues several), through a view of the tensor that walks its rows in the
        order they are stored; exact only where the tile lies inside the tensor.

        B (MN-major): columns within a block, rows, then blocks: the layout itself. A: the
        8-row groups of instruction ``a`` of warpgroup ``q`` hold tile rows ``16 warps a +
        8 warps h + 32 q + 8 w + r`` at stored rows ``64 (q reps/2 + a) + 16 w + 8 h + r``
        (:class:`WarpgroupRows`), so the view walks ``r`` (8), ``h`` (2, by ``8 warps``
        rows), ``w`` (4, by 8 rows) and ``q`` (by 32 rows), in that order.
        """
        lay = self.wgmma
        assert lay is not None and not self.column_major
        rows, cols = self.shape
        blocks = cols // lay.block
        if self.row_groups is None:
            if rows > 256 or blocks > 256:
                return None
            dims = ((1, lay.block, 1), (0, 0, 1), (1, 0, lay.block))
            return TmaPlan(dims, (lay.block, rows, blocks), ((0, 0, 0),))
        warps, reps = self.row_groups.warps, self.row_groups.reps
        instructions, warpgroups = reps // 2, warps // 4
        dims = ((1, 0, 1), (0, 8, 1), (0, 2, 8 * warps), (0, 4, 8), (0, 0, 32))
        per_box = warpgroups if instructions == 1 else 1  # warpgroups stored back to back
        boxes = []
        for a in range(instructions):
            for q in range(0, warpgroups, per_box):
                for b in range(blocks):
                    at = (64 * (q * instructions + a) + b * rows) * lay.block
                    boxes.append((16 * warps * a + 32 * q, b * lay.block, at))
        return TmaPlan(dims, (lay.block, 8, 2, 4, per_box), tuple(boxes))


@dataclass(frozen=True)
class TmaPlan:
    """Boxes that fill a staged tile: the map's dimensions over the tile (``(tile dim, extent
    or 0, step)`` innermost first, tile dim 0 the rows and 1 the columns; see
    ``runtime.tensor_map.TensorMapSpec``), the box, and per box its first row, first column
    and element offset in the tile. A dimension of extent 0 carries a box's start along its
    tile dim (in steps); the others start at 0."""

    dims: tuple[tuple[int, int, int], ...]
    box: tuple[int, ...]
    boxes: tuple[tuple[int, int, int], ...]


def _constant(e: L.Expr) -> int:
    """The value of an integer expression of constants."""
    from tegula.passes.simplify import simplify_expr  # (simplify imports no lowering)

    folded = simplify_expr(e)
    if not isinstance(folded, L.Const):
        raise ValueError(f"not a constant expression: {e}")
    return int(folded.value)


@dataclass(frozen=True)
class WarpgroupRows:
    """The order of a wgmma A operand's rows in shared memory.

    The accumulator keeps the ``mma.sync`` layout with ``warps`` warps along M: warp ``v``,
    lane group ``g`` and row repeat ``r`` hold tile row ``8 (r * warps + v) + g``. A wgmma
    gives warp ``w`` of warpgroup ``q`` the rows ``16 w + 8 h + g`` of the 64 its A
    descriptor points at, so instruction ``a`` of warpgroup ``q`` (repeats ``r = 2 a + h``)
    wants the 8-row groups of those tile rows side by side: group ``(r, v = 4 q + w)`` is
    stored at group ``8 (q * reps / 2 + a) + 2 w + h``. Whole 8-row groups move, so the
    swizzle (which depends on the row within its group of eight) is unchanged.
    """

    warps: int
    reps: int

    def stored_row(self, row: L.Expr) -> L.Expr:
        def div(x: L.Expr, d: int) -> L.Expr:
            return L.Binary(BIN.FLOORDIV, x, c64(d))

        def mod(x: L.Expr, d: int) -> L.Expr:
            return L.Binary(BIN.MOD, x, c64(d))

        group = div(row, 8)
        rep, warp = div(group, self.warps), mod(group, self.warps)
        q, w, a, h = div(warp, 4), mod(warp, 4), div(rep, 2), mod(rep, 2)
        instruction = add(mul(q, c64(self.reps // 2)), a)
        stored_group = add(mul(instruction, c64(8)), add(mul(w, c64(2)), h))
        return add(mul(stored_group, c64(8)), mod(row, 8))

    def first_row(self, warpgroup: L.Expr, instruction: int) -> L.Expr:
        """The stored row where instruction ``instruction`` of ``warpgroup`` starts."""
        return mul(add(mul(warpgroup, c64(self.reps // 2)), c64(instruction)), c64(64))


Lowered = Scalar | Tensor | RegTile | SharedTile | StagedTile


def value_index(lay: BlockedLayout, pos: Pos) -> L.Expr:
    """The buffer index of the value at ``pos`` (inverse of the position loops)."""
    live = [d for d in lay.order if d in lay.live_dims]
    terms: L.Expr = c64(0)
    scale = 1
    for d in live:
        terms = add(terms, mul(run_slot(lay, d, pos[d][1]), c64(scale)))
        scale *= lay.spt[d]
    for d in live:
        terms = add(terms, mul(pos[d][0], c64(scale)))
        scale *= lay.reps(d)
    return terms


def run_slot(lay: BlockedLayout, d: int, s: L.Expr) -> L.Expr:
    """Where element ``s`` of a thread's run along ``d`` sits in the run's values: itself,
    or for an interleaved run, ``s % n * (spt / n) + s // n`` (the loops that visit it
    write ``s`` as ``l * n + i``, which simplifies to ``i * (spt / n) + l``)."""
    n = lay.interleave
    if d != lay.interleaved_dim:
        return s
    words = lay.spt[d] // n
    return add(mul(L.Binary(BIN.MOD, s, c64(n)), c64(words)), L.Binary(BIN.FLOORDIV, s, c64(n)))


def _operand_swizzle(row_elements: int, dtype: DType) -> tuple[int, int, int] | None:
    """The ``Swizzle<B, M, S>`` that makes ``ldmatrix`` on a row-major operand tile with rows of
    ``row_elements`` conflict-free: 16-byte chunks (``M``) stay whole, and the chunk index is
    XORed with the index of the 128-byte line (``S``), so the eight rows one ``ldmatrix``
    phase reads land in eight different bank groups."""
    chunk = 16 // dtype.itemsize
    chunks_per_row = row_elements // chunk
    if chunks_per_row < 2:
        return None
    base = chunk.bit_length() - 1
    bits = min(3, chunks_per_row.bit_length() - 1)
    line = max(row_elements, 128 // dtype.itemsize).bit_length() - 1
    return bits, base, line - base


def _swizzled(offset: L.Expr, swz: tuple[int, int, int] | None) -> L.Expr:
    if swz is None:
        return offset
    bits, base, shift = swz
    mask = ((1 << bits) - 1) << (base + shift)
    moved = L.Binary(BIN.SHR, L.Binary(BIN.BITAND, offset, c64(mask)), c64(shift))
    return L.Binary(BIN.BITXOR, offset, moved)


def _pairwise(kind: ReduceKind, terms: list[L.Expr]) -> L.Expr:
    """``terms`` combined as a balanced tree."""
    if len(terms) == 1:
        return terms[0]
    half = len(terms) // 2
    return combine(kind, _pairwise(kind, terms[:half]), _pairwise(kind, terms[half:]))


def _packed_pitch(extent: L.Expr, bits: int) -> L.Expr:
    """Bytes a packed row of ``extent`` elements takes: ``ceil(extent * bits / 8)``."""
    if isinstance(extent, L.Const):
        return c64(-(-int(extent.value) * bits // 8))
    return L.Binary(BIN.FLOORDIV, add(mul(extent, c64(bits)), c64(7)), c64(8))


def _packed_byte_strides(shape: tuple[L.Expr, ...], bits: int) -> list[L.Expr]:
    """Byte strides of a C-contiguous packed tensor (the last entry, 1, is not used)."""
    strides: list[L.Expr] = [c64(1)]
    acc = _packed_pitch(shape[-1], bits)
    for d in reversed(shape[:-1]):
        strides.append(acc)
        acc = mul(acc, d)
    strides.reverse()
    return strides


def _clamp(e: L.Expr, hi: int) -> L.Expr:
    """``min(max(e, 0), hi)``."""
    return L.Binary(BIN.MIN, L.Binary(BIN.MAX, e, c64(0)), c64(hi))


def _row_major(coords: list[L.Expr], shape: tuple[int, ...]) -> L.Expr:
    e: L.Expr = c64(0)
    stride = 1
    for c, n in zip(reversed(coords), reversed(shape), strict=True):
        e = add(e, mul(c, c64(stride)))
        stride *= n
    return e


def shared_offset(layout: object, coords: list[L.Expr]) -> L.Expr:
    """Evaluate a shared-memory layout (optionally swizzled) on symbolic coordinates."""
    from tegula.ir.layout import Layout
    from tegula.ir.swizzle import SwizzledLayout

    swz = None
    if isinstance(layout, SwizzledLayout):
        swz, layout = layout.swizzle, layout.layout
    assert isinstance(layout, Layout)
    shape = layout.shape if isinstance(layout.shape, tuple) else (layout.shape,)
    stride = layout.stride if isinstance(layout.stride, tuple) else (layout.stride,)
    off: L.Expr = c64(0)
    for c, sh, st in zip(coords, shape, stride, strict=True):
        flat_sh, flat_st = _flatten(sh), _flatten(st)
        rest = c
        for i, (s_i, d_i) in enumerate(zip(flat_sh, flat_st, strict=True)):
            part = rest if i == len(flat_sh) - 1 else L.Binary(BIN.MOD, rest, c64(s_i))
            off = add(off, mul(part, c64(d_i)))
            rest = L.Binary(BIN.FLOORDIV, rest, c64(s_i))
    if swz is not None:
        mask = ((1 << swz.bits) - 1) << (swz.base + max(0, swz.shift))
        picked = L.Binary(BIN.BITAND, off, c64(mask))
        moved = (
            L.Binary(BIN.SHR, picked, c64(swz.shift))
            if swz.shift >= 0
            else L.Binary(BIN.SHL, picked, c64(-swz.shift))
        )
        off = L.Binary(BIN.BITXOR, off, moved)
    return off


def _flatten(t: object) -> list[int]:
    if isinstance(t, tuple):
        out: list[int] = []
        for x in t:
            out.extend(_flatten(x))
        return out
    return [int(t)]  # type: ignore[call-overload]


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def scalar_chain(starts: tuple[Value, ...], producers: dict[str, Op]) -> list[Op] | None:
    """The body ops (in order) computing ``starts``, if all are scalar arithmetic."""
    needed: list[Op] = []
    seen: set[int] = set()

    def visit(v: Value) -> bool:
        o = producers.get(v.name)
        if o is None:
            return True  # defined outside the body, or the loop variable
        if id(o) in seen:
            return True
        if not isinstance(o, ElementwiseOp | CastOp | FullOp) or not v.tile.is_scalar:
            return False
        seen.add(id(o))
        if not all(visit(a) for a in o.operands()):
            return False
        needed.append(o)
        return True

    if not all(visit(s) for s in starts):
        return None
    return needed
