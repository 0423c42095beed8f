"""Lowering: Tile IR (every tile laid out) → Loop IR (what one thread does).

Each register tile becomes the values one thread holds: a ``local`` buffer of
``layout.num_values`` elements, or — for values that are cheap to recompute and used once,
such as constants, broadcasts, casts and single-use elementwise results — an expression
rebuilt at each use, which fuses chains of elementwise ops into one loop without a pass of
its own. Values are visited by nested loops over the layout's value positions (``rep`` and
``s`` per dim, see ``ir/distributed.py``), so coordinates are sums, never divisions, and the
same Loop IR is good for both targets: on CUDA the loops have constant trip counts and are
unrolled (the arrays become registers); on the CPU a block is one thread holding the whole
tile and the innermost loop runs along contiguous memory, ready for LLVM's vectorizer.

Communication between threads (reductions across lanes and warps, layout conversions,
shared tiles, ``dot`` operands) goes through shared memory or warp shuffles. Every use of the
shared scratch area is bracketed by barriers (before writing and before reading), so all
scratch uses can start at offset 0; shared tiles made by ``shared(...)`` live longer and get
regions of their own after the scratch area.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from tegula.ir import loop as L
from tegula.ir.atoms import (
    CP_ASYNC_COMMIT,
    CpAsyncAtom,
    LdMatrixAtom,
    MmaAtom,
    cp_async_wait,
    find_mma,
)
from tegula.ir.distributed import BlockedLayout, TVRegisterLayout
from tegula.ir.dtypes import DType, boolean, compute_type, f32, i64, promote, u32
from tegula.ir.target import Target
from tegula.ir.tile import (
    ArangeOp,
    AtomicAddOp,
    Block,
    BlockIndexOp,
    BroadcastOp,
    CastOp,
    ConvertLayoutOp,
    DotOp,
    ElementwiseOp,
    ExpandDimsOp,
    ForOp,
    FromSharedOp,
    FullOp,
    IfOp,
    LoadOp,
    Op,
    ReduceKind,
    ReduceOp,
    StoreOp,
    TensorType,
    ThreadIndexOp,
    TileKernel,
    TileType,
    ToSharedOp,
    TransposeOp,
    Value,
    YieldOp,
    walk_ops,
)

from .lowbit_codes import (
    code_of,
    decode,
    extract_constant,
    extract_dynamic,
    is_code_type,
    is_packed,
    storage_dtype,
    unit_of,
)
from .manager import PassContext, register_pass


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
    """A register tile: values in ``buffer``, or an element function (fused, recomputed)."""

    dtype: DType
    layout: BlockedLayout
    buffer: L.Buffer | None = None
    element: Callable[[Pos], L.Expr] | None = None

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
    """A tile already in shared memory, row-major under an operand swizzle, at ``base`` (one
    stage of a software pipeline's ring of buffers)."""

    buffer: L.Buffer
    base: L.Expr
    swizzle: tuple[int, int, int] | None
    shape: tuple[int, int]
    dtype: DType

    def offset(self, coords: list[L.Expr]) -> L.Expr:
        within = _swizzled(add(mul(coords[0], c64(self.shape[1])), coords[1]), self.swizzle)
        return add(self.base, within)


Lowered = Scalar | Tensor | RegTile | SharedTile | StagedTile


def value_index(lay: BlockedLayout, pos: Pos) -> L.Expr:
    """The buffer index of the value at ``pos`` (inverse of the position loops)."""
    live = [d for d in lay.order if d in lay.live_dims]
    terms: L.Expr = c64(0)
    scale = 1
    for d in live:
        terms = add(terms, mul(pos[d][1], c64(scale)))
        scale *= lay.spt[d]
    for d in live:
        terms = add(terms, mul(pos[d][0], c64(scale)))
        scale *= lay.reps(d)
    return terms


# ----------------------------------------------------------------------------- the lowering


@dataclass
class _Frame:
    stmts: list[L.Stmt] = field(default_factory=list)
    last_comment: str = ""


class _Lowering:
    def __init__(self, kernel: TileKernel, target: Target) -> None:
        self.kernel = kernel
        self.target = target
        self.gpu = target.is_cuda
        self.threads = kernel.num_warps * target.warp_size if self.gpu else 1
        self.vals: dict[str, Lowered] = {}
        self.buffers: list[L.Buffer] = []
        self.names: set[str] = set()
        self.frames: list[_Frame] = [_Frame()]
        self.scratch_bytes = 0
        self.shared_tiles_bytes = 0
        self.shared_allocs: list[tuple[str, int, DType]] = []
        self.thread_offsets: dict[tuple, dict[int, L.Expr]] = {}
        self.uses = _use_counts(kernel.body)
        self.loop_kind = L.LoopKind.UNROLL if self.gpu else L.LoopKind.VECTORIZE
        self.tid = L.Var("tid", i64)

    # ------------------------------------------------------------------ emission helpers

    def emit(self, *stmts: L.Stmt) -> None:
        self.frames[-1].stmts.extend(stmts)

    def unique(self, base: str) -> str:
        base = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in base) or "v"
        if base[0].isdigit():
            base = "v" + base
        name, n = base, 0
        while name in self.names:
            n += 1
            name = f"{base}_{n}"
        self.names.add(name)
        return name

    def let(self, base: str, expr: L.Expr) -> L.Var:
        if isinstance(expr, L.Var | L.Const):
            return expr  # type: ignore[return-value]
        var = L.Var(self.unique(base), expr.dtype)
        self.emit(L.Let(var, expr))
        return var

    def local(self, base: str, dtype: DType, size: int) -> L.Buffer:
        buf = L.Buffer(self.unique(base), storage_dtype(dtype), L.Scope.LOCAL, size)
        self.buffers.append(buf)
        return buf

    def scratch(self, dtype: DType, elements: int) -> L.Buffer:
        """The shared scratch area viewed as ``elements`` of ``dtype`` (offset 0)."""
        dtype = storage_dtype(dtype)
        nbytes = elements * dtype.itemsize
        self.scratch_bytes = max(self.scratch_bytes, nbytes)
        buf = L.Buffer(self.unique(f"scratch_{dtype}"), dtype, L.Scope.SHARED, elements, 0)
        self.buffers.append(buf)
        return buf

    def nest(self) -> None:
        self.frames.append(_Frame())

    def unnest(self) -> L.Stmt:
        return L.seq(*self.frames.pop().stmts)

    def loop(
        self, name: str, extent: int, body: Callable[[L.Expr], None], kind: L.LoopKind | None = None
    ) -> None:
        """Emit ``for name in range(extent)`` (nothing for 0, the body alone for 1)."""
        if extent <= 0:
            return
        if extent == 1:
            body(c64(0))
            return
        var = L.Var(self.unique(name), i64)
        self.nest()
        body(var)
        inner = self.unnest()
        self.emit(L.For(var, c64(0), c64(extent), c64(1), inner, kind or self.loop_kind))

    def comment(self, op: Op) -> None:
        """Carry the op's source line into the code, once per run of ops from that line."""
        if op.loc is None or not op.loc.text:
            return
        text = f"{op.loc.file.rsplit('/', 1)[-1]}:{op.loc.line}: {op.loc.text.strip()}"
        frame = self.frames[-1]
        if frame.last_comment != text:
            frame.last_comment = text
            self.emit(L.Comment(text))

    # ------------------------------------------------------------------ layouts → expressions

    def thread_offset(self, lay: BlockedLayout) -> dict[int, L.Expr]:
        key = (lay.base_shape, lay.spt, lay.tpw, lay.wpc, lay.order)
        return self.thread_offsets[key]

    def prepare_thread_offsets(self, layouts: list[BlockedLayout]) -> None:
        if self.gpu:
            self.emit(L.Let(self.tid, L.Cast(i64, L.ThreadIdx())))
            lane = self.let("lane", L.Binary(BIN.MOD, self.tid, c64(self.target.warp_size)))
            warp = self.let("warp", L.Binary(BIN.FLOORDIV, self.tid, c64(self.target.warp_size)))
        for lay in layouts:
            key = (lay.base_shape, lay.spt, lay.tpw, lay.wpc, lay.order)
            if key in self.thread_offsets:
                continue
            offs: dict[int, L.Expr] = {}
            tag = len(self.thread_offsets)
            for d in range(len(lay.base_shape)):
                if not self.gpu or (lay.tpw[d] == 1 and lay.wpc[d] == 1):
                    offs[d] = c64(0)
                    continue
                parts: L.Expr = c64(0)
                if lay.wpc[d] > 1:
                    w = L.Binary(
                        BIN.MOD,
                        L.Binary(BIN.FLOORDIV, warp, c64(lay.warp_stride(d))),
                        c64(lay.wpc[d]),
                    )
                    parts = mul(w, c64(lay.tpw[d]))
                if lay.tpw[d] > 1:
                    ln = L.Binary(
                        BIN.MOD,
                        L.Binary(BIN.FLOORDIV, lane, c64(lay.lane_stride(d))),
                        c64(lay.tpw[d]),
                    )
                    parts = add(parts, ln)
                offs[d] = self.let(f"t{tag}_d{d}", mul(parts, c64(lay.spt[d])))
            self.thread_offsets[key] = offs

    def coords(self, lay: BlockedLayout, pos: Pos) -> list[L.Expr]:
        """Tile coordinates (one per tile dim) of the value at ``pos``."""
        to = self.thread_offset(lay)
        out = []
        for d in lay.tile_dims:
            if d in lay.unit:
                out.append(c64(0))
                continue
            rep, s = pos[d]
            c = add(add(to[d], mul(rep, c64(lay.coverage(d)))), s)
            if lay.replicated(d) or lay.base_shape[d] % lay.coverage(d):
                c = L.Binary(BIN.MOD, c, c64(lay.base_shape[d]))
            out.append(c)
        return out

    def owner(self, lay: BlockedLayout, pos: Pos) -> L.Expr | None:
        """True on exactly one of the threads/values holding each element (for stores)."""
        if not self.gpu:
            return None
        to = self.thread_offset(lay)
        pred: L.Expr | None = None
        for d in range(len(lay.base_shape)):
            if d in lay.live_dims:
                if lay.replicated(d) or lay.base_shape[d] % lay.coverage(d):
                    rep, s = pos[d]
                    raw = add(add(to[d], mul(rep, c64(lay.coverage(d)))), s)
                    pred = land(pred, L.Binary(BIN.LT, raw, c64(lay.base_shape[d])))
            elif lay.tpw[d] > 1 or lay.wpc[d] > 1:
                pred = land(pred, L.Binary(BIN.EQ, to[d], c64(0)))
        return pred

    def for_positions(
        self, lay: BlockedLayout, body: Callable[[Pos], None], innermost_run: bool = False
    ) -> None:
        """Nested loops over every value position of ``lay``; with ``innermost_run`` the
        fastest live dim's ``s`` is left at 0 for the caller to handle as a run."""
        live = [d for d in lay.order if d in lay.live_dims]
        plan: list[tuple[int, str]] = []
        for d in reversed(live):
            plan.append((d, "rep"))
        for d in reversed(live):
            plan.append((d, "s"))
        if innermost_run and live:
            plan = [p for p in plan if p != (live[0], "s")]
        pos: Pos = {d: (c64(0), c64(0)) for d in live}

        def go(i: int) -> None:
            if i == len(plan):
                body(dict(pos))
                return
            d, part = plan[i]
            extent = lay.reps(d) if part == "rep" else lay.spt[d]

            def inner(var: L.Expr, d=d, part=part) -> None:
                rep, s = pos[d]
                pos[d] = (var, s) if part == "rep" else (rep, var)
                go(i + 1)

            kind = (
                self.loop_kind
                if part == "s"
                else (L.LoopKind.UNROLL if self.gpu else L.LoopKind.SERIAL)
            )
            self.loop(f"{part}{d}", extent, inner, kind)

        go(0)

    # ------------------------------------------------------------------ value access

    def scalar(self, v: Value) -> L.Expr:
        lv = self.vals[v.name]
        assert isinstance(lv, Scalar), f"{v} is not a scalar"
        return lv.expr

    def tile(self, v: Value) -> RegTile:
        lv = self.vals[v.name]
        if isinstance(lv, Scalar):  # a scalar used where a tile is wanted
            return RegTile(
                lv.expr.dtype,
                BlockedLayout((1,), (1,), (1,), (1,), (0,)),
                element=lambda pos, e=lv.expr: e,
            )
        assert isinstance(lv, RegTile), f"{v} is not a register tile"
        return lv

    def materialize(self, name: str, t: RegTile) -> RegTile:
        if t.buffer is not None and t.element is None:
            return t
        buf = self.local(name, t.dtype, t.layout.num_values)
        self.for_positions(
            t.layout, lambda pos: self.emit(L.Store(buf, value_index(t.layout, pos), t.at(pos)))
        )
        return RegTile(t.dtype, t.layout, buffer=buf)

    def define(self, v: Value, t: RegTile, lazy_ok: bool = True) -> None:
        """Bind a tile result; keep it as an expression if it is used at most once."""
        if t.element is not None and (not lazy_ok or self.uses.get(v.name, 0) > 1):
            t = self.materialize(v.name, t)
        self.vals[v.name] = t

    # ------------------------------------------------------------------ kernel

    def run(self) -> L.LoopKernel:
        k = self.kernel
        params: list[L.LoopParam] = []
        symbol_vars = {s.name: L.Var(self.unique(s.name), i64) for s in k.symbols}
        for s in k.symbols:
            self.vals[s.name] = Scalar(symbol_vars[s.name])
        for p in k.params:
            t = p.value.type
            if isinstance(t, TensorType):
                buf = L.Buffer(
                    self.unique(p.name),
                    storage_dtype(t.dtype),
                    L.Scope.GLOBAL,
                    None,
                    read_only=not getattr(p, "writes", False),
                )
                shape = tuple(c64(d) if isinstance(d, int) else symbol_vars[d] for d in t.shape)
                if t.strides is None:
                    strides: list[L.Expr] = []
                    acc: L.Expr = c64(1)
                    for d in reversed(shape):
                        strides.append(acc)
                        acc = mul(acc, d)
                    strides.reverse()
                    contiguous = True
                else:
                    strides = [c64(s) if isinstance(s, int) else symbol_vars[s] for s in t.strides]
                    contiguous = t.strides[-1] == 1 if t.strides else True
                bits = t.dtype.bits if is_packed(t.dtype) else 0
                if bits:
                    strides = _packed_byte_strides(shape, bits)
                self.vals[p.value.name] = Tensor(buf, shape, tuple(strides), contiguous, bits)
                params.append(L.LoopParam(p.name, buffer=buf))
            else:
                var = L.Var(self.unique(p.name), t.dtype)
                self.vals[p.value.name] = Scalar(var)
                params.append(L.LoopParam(p.name, var=var))

        layouts = [
            v.type.layout
            for v in _all_values(k)
            if isinstance(v.type, TileType) and isinstance(v.type.layout, BlockedLayout)
        ]
        self.prepare_thread_offsets(layouts)
        self.block(k.body)
        body = L.seq(*self.frames[0].stmts)

        # Shared tiles sit after the scratch area; fix their offsets now that it is sized.
        base = _align(self.scratch_bytes, 16)
        offsets: dict[str, int] = {}
        cursor = base
        for name, nbytes, _dt in self.shared_allocs:
            offsets[name] = cursor
            cursor = _align(cursor + nbytes, 16)
        buffers = tuple(
            L.Buffer(
                b.name, b.dtype, b.scope, b.size, offsets.get(b.name, b.smem_offset), b.read_only
            )
            for b in self.buffers
        )
        body = _rebind_buffers(body, {b.name: b for b in buffers})
        grid = tuple(parse_grid_expr(g, symbol_vars) for g in k.grid)
        return L.LoopKernel(
            name=k.name,
            params=tuple(params),
            symbols=tuple(symbol_vars[s.name] for s in k.symbols),
            grid=grid,
            block_threads=self.threads,
            buffers=buffers,
            smem_bytes=cursor,
            body=body,
            source_name=k.source_file,
        )

    def block(self, block: Block) -> None:
        for op in block.ops:
            if isinstance(op, YieldOp):
                continue
            self.comment(op)
            self.op(op)

    # ------------------------------------------------------------------ ops

    def op(self, op: Op) -> None:
        if isinstance(op, FullOp):
            r = op.result
            if r.tile.is_scalar:
                self.vals[r.name] = Scalar(L.Const(op.value, r.tile.dtype))
            else:
                const = L.Const(op.value, r.tile.dtype)
                self.define(r, RegTile(r.tile.dtype, r.tile.layout, element=lambda pos: const))
        elif isinstance(op, ArangeOp):
            r = op.result
            lay = r.tile.layout
            self.define(
                r,
                RegTile(
                    r.tile.dtype,
                    lay,
                    element=lambda pos: cast(self.coords(lay, pos)[0], r.tile.dtype),
                ),
            )
        elif isinstance(op, BlockIndexOp):
            self.vals[op.result.name] = Scalar(
                self.let(f"bid_{'xyz'[op.axis]}", L.Cast(op.result.tile.dtype, L.BlockIdx(op.axis)))
            )
        elif isinstance(op, ThreadIndexOp):
            self.vals[op.result.name] = Scalar(cast(self.tid, op.result.tile.dtype))
        elif isinstance(op, ElementwiseOp):
            self.elementwise(op)
        elif isinstance(op, CastOp):
            r = op.result
            src = self.vals[op.source.name]
            convert = self.converter(op.source.tile.dtype, r.tile.dtype)
            if isinstance(src, Scalar):
                self.vals[r.name] = Scalar(self.let(r.name, convert(src.expr)))
            else:
                s = self.tile(op.source)
                self.define(
                    r,
                    RegTile(
                        r.tile.dtype,
                        r.tile.layout,
                        element=lambda pos: convert(s.at(pos)),
                    ),
                )
        elif isinstance(op, BroadcastOp | ExpandDimsOp):
            r = op.result
            src = self.vals[op.source.name]
            if isinstance(src, Scalar):
                if r.tile.is_scalar:
                    self.vals[r.name] = src
                else:
                    e = src.expr
                    self.define(r, RegTile(r.tile.dtype, r.tile.layout, element=lambda pos: e))
            else:
                s = self.tile(op.source)
                inserted = len(r.tile.layout.base_shape) - len(s.layout.base_shape)
                if inserted == 0:
                    # Same base layout: positions carry over; unit/removed dims are ignored.
                    self.define(r, RegTile(r.tile.dtype, r.tile.layout, element=s.at))
                else:
                    # A new base dim at `axis` (extent 1): source dims at or after it move up.
                    axis = op.axis  # type: ignore[union-attr]

                    def shifted(pos: Pos, s: RegTile = s, axis: int = axis) -> L.Expr:
                        return s.at({d - (d > axis): p for d, p in pos.items() if d != axis})

                    self.define(r, RegTile(r.tile.dtype, r.tile.layout, element=shifted))
        elif isinstance(op, TransposeOp):
            r = op.result
            src = self.vals[op.source.name]
            if isinstance(src, SharedTile):
                self.vals[r.name] = SharedTile(src.buffer, r.tile.layout, r.tile.shape)
            else:
                s = self.materialize(op.source.name, self.tile(op.source))
                self.vals[r.name] = RegTile(r.tile.dtype, r.tile.layout, buffer=s.buffer)
        elif isinstance(op, ReduceOp):
            self.reduce(op)
        elif isinstance(op, LoadOp):
            self.load(op)
        elif isinstance(op, StoreOp | AtomicAddOp):
            self.store(op)
        elif isinstance(op, ConvertLayoutOp):
            self.convert(op)
        elif isinstance(op, ToSharedOp):
            self.to_shared(op)
        elif isinstance(op, FromSharedOp):
            self.from_shared(op)
        elif isinstance(op, DotOp):
            self.dot(op)
        elif isinstance(op, ForOp):
            self.for_op(op)
        elif isinstance(op, IfOp):
            self.if_op(op)
        else:
            raise LoweringError(f"cannot lower {type(op).__name__}")

    def converter(self, source: DType, result: DType) -> Callable[[L.Expr], L.Expr]:
        """How ``cast`` turns a value of ``source`` into ``result``: a plain conversion, or
        for a low-bit source the exact decoding of its code (``lowbit_codes``)."""
        if is_code_type(result) and result is not source:
            raise LoweringError(f"cast to {result}: kernels decode low-bit codes, never encode")
        if not is_code_type(source) or result is source:
            return lambda e: cast(e, result)
        return lambda e: cast(decode(e, source), result)

    def elementwise(self, op: ElementwiseOp) -> None:
        r = op.result
        dt = r.tile.dtype
        fn = op.fn
        args = [self.vals[a.name] for a in op.args]
        arg_types = [a.tile.dtype for a in op.args]

        def compute(xs: list[L.Expr]) -> L.Expr:
            return _apply(fn, xs, arg_types, dt)

        if all(isinstance(a, Scalar) for a in args):
            self.vals[r.name] = Scalar(self.let(r.name, compute([a.expr for a in args])))  # type: ignore[union-attr]
            return
        tiles = [self.tile(a) for a in op.args]
        self.define(
            r, RegTile(dt, r.tile.layout, element=lambda pos: compute([t.at(pos) for t in tiles]))
        )

    # ------------------------------------------------------------------ reductions

    def reduce(self, op: ReduceOp) -> None:
        r = op.result
        src = self.tile(op.source)
        lay = src.layout
        p = lay.tile_dims[op.axis]
        dt = r.tile.dtype
        acc_t = compute_type(dt) if dt.is_float else dt
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
            self.emit(L.Barrier())

            def slot(pos: Pos) -> L.Expr:
                coords = self.coords(res_lay, pos) if res_lay.shape else []
                return mul(_row_major(coords, res_lay.shape), c64(nw))

            self.for_positions(
                res_lay,
                lambda pos: self.emit(
                    L.Store(smem, add(slot(pos), warp_p), L.Load(out, value_index(res_lay, pos)))
                ),
            )
            self.emit(L.Barrier())

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

    # ------------------------------------------------------------------ global memory

    def window_geometry(
        self, tensor: Tensor, op: LoadOp | StoreOp | AtomicAddOp, lay: BlockedLayout | None
    ):
        """Per tensor dim: (start expr, tile axis or None)."""
        w = op.window
        starts = [cast(self.scalar(s), i64) for s in w.starts]
        axes: list[int | None] = []
        axis = 0
        for q in w.squeeze:
            if q:
                axes.append(None)
            else:
                axes.append(axis)
                axis += 1
        return starts, axes

    def cpu_run(
        self,
        tensor: Tensor,
        starts,
        axes,
        lay: BlockedLayout,
        pos: Pos,
        fast: int,
        rep_f: L.Expr,
        run: int,
        buf: L.Buffer | None,
        *,
        is_load: bool,
        fill: L.Expr | None,
        atomic: bool,
        src_tile: RegTile | None,
    ) -> None:
        """One contiguous run on the CPU, split by bounds instead of tested element by element.

        The elements of the run that lie inside the tensor form one range ``[lo, hi)`` along
        its contiguous dim, so the copy is a branch-free loop LLVM vectorizes; the rest of a
        loaded run is filled. The other dims are one test for the whole run.
        """
        first = dict(pos)
        first[fast] = (rep_f, c64(0))
        coords = self.coords(lay, first)
        fast_axis = lay.tile_dims.index(fast)
        offset0: L.Expr = c64(0)
        others: L.Expr | None = None
        idx_fast: L.Expr = c64(0)
        extent_fast: L.Expr = c64(0)
        for d, (start, ax) in enumerate(zip(starts, axes, strict=True)):
            idx = start if ax is None else add(start, coords[ax])
            offset0 = add(offset0, mul(idx, tensor.strides[d]))
            if ax == fast_axis:
                idx_fast, extent_fast = idx, tensor.shape[d]
                continue
            others = land(
                others, land(L.Binary(BIN.GE, idx, c64(0)), L.Binary(BIN.LT, idx, tensor.shape[d]))
            )
        base = self.let("run_start", idx_fast)
        lo = self.let(
            "run_lo",
            _clamp(
                L.Unary(L.UnaryOp.NEG, base) if not isinstance(base, L.Const) else c64(-base.value),
                run,
            ),
        )
        hi = self.let("run_hi", _clamp(L.Binary(BIN.SUB, extent_fast, base), run))
        vidx0 = value_index(lay, first)
        at = self.let("run_at", offset0)

        def body() -> None:
            var = L.Var(self.unique("e"), i64)
            if is_load:
                assert buf is not None
                inner: L.Stmt = L.Store(buf, add(vidx0, var), L.Load(tensor.buffer, add(at, var)))
            else:
                p = dict(pos)
                p[fast] = (rep_f, var)
                value = src_tile.at(p) if src_tile is not None else L.Load(buf, add(vidx0, var))  # type: ignore[arg-type]
                target = add(at, var)
                inner = (
                    L.AtomicAdd(tensor.buffer, target, value)
                    if atomic
                    else L.Store(tensor.buffer, target, value)
                )
            self.emit(L.For(var, lo, hi, c64(1), inner, L.LoopKind.VECTORIZE))

        def fill_range(start: L.Expr, stop: L.Expr) -> None:
            assert buf is not None and fill is not None
            var = L.Var(self.unique("e"), i64)
            self.emit(
                L.For(
                    var,
                    start,
                    stop,
                    c64(1),
                    L.Store(buf, add(vidx0, var), fill),
                    L.LoopKind.VECTORIZE,
                )
            )

        self.nest()
        if is_load:
            fill_range(c64(0), lo)
        body()
        if is_load:
            fill_range(L.Binary(BIN.MAX, lo, hi), c64(run))
        inside = self.unnest()
        if others is None:
            self.emit(inside)
            return
        outside = None
        if is_load:
            self.nest()
            fill_range(c64(0), c64(run))
            outside = self.unnest()
        self.emit(L.If(others, inside, outside))

    def element_address(
        self, tensor: Tensor, starts, axes, coords: list[L.Expr]
    ) -> tuple[L.Expr, L.Expr | None]:
        """Flattened element offset and the in-bounds predicate for tile coordinates."""
        offset: L.Expr = c64(0)
        pred: L.Expr | None = None
        for d, (start, ax) in enumerate(zip(starts, axes, strict=True)):
            idx = start if ax is None else add(start, coords[ax])
            offset = add(offset, mul(idx, tensor.strides[d]))
            pred = land(
                pred, land(L.Binary(BIN.GE, idx, c64(0)), L.Binary(BIN.LT, idx, tensor.shape[d]))
            )
        return offset, pred

    def run_width(
        self, tensor: Tensor, axes, lay: BlockedLayout, dtype: DType, has_mask: bool
    ) -> int:
        """Elements per vector access: a thread's contiguous run along the tensor's last dim."""
        if has_mask or axes[-1] is None or not tensor.contiguous_last or lay.rank == 0:
            return 1
        if axes[-1] != lay.rank - 1:
            return 1
        run = lay.contiguous_run()
        if self.gpu:
            run = math.gcd(run, max(1, self.target.vector_bytes // dtype.itemsize))
        return run

    def load(self, op: LoadOp) -> None:
        r = op.result
        tensor = self.vals[op.tensor.name]
        assert isinstance(tensor, Tensor)
        dt = r.tile.dtype
        starts, axes = self.window_geometry(tensor, op, None)
        if is_code_type(dt):
            other = self.fill_code(op, dt)
            dt = storage_dtype(dt)
        else:
            other = L.Const(0.0 if dt.is_float else 0, dt)
            if op.other is not None:
                other = cast(self.scalar(op.other), dt)
        if tensor.packed_bits:
            self.packed_load(op, tensor, starts, axes, other)
            return
        if r.tile.is_scalar:
            offset, pred = self.element_address(tensor, starts, axes, [])
            val: L.Expr = L.Load(tensor.buffer, offset)
            if pred is not None:
                tmp = self.local(r.name, dt, 1)
                self.emit(L.Copy(tmp, c64(0), tensor.buffer, offset, 1, pred, other))
                val = L.Load(tmp, c64(0))
            self.vals[r.name] = Scalar(self.let(r.name, val))
            return
        lay: BlockedLayout = r.tile.layout
        buf = self.local(r.name, dt, lay.num_values)
        mask = self.tile(op.mask) if op.mask is not None else None
        run = self.run_width(tensor, axes, lay, dt, mask is not None)
        self.global_access(
            tensor, starts, axes, lay, run, buf, dt, is_load=True, fill=other, mask=mask
        )
        self.vals[r.name] = RegTile(r.tile.dtype, lay, buffer=buf)

    def fill_code(self, op: LoadOp, dt: DType) -> L.Const:
        """The code a low-bit load gives elements it does not read: ``other`` (a
        compile-time constant) encoded in ``dt``, by default the code of 0."""
        value: float = 0.0
        if op.other is not None:
            other = self.scalar(op.other)
            if not isinstance(other, L.Const):
                raise LoweringError(f"the 'other' of a {dt} load must be a constant")
            value = float(other.value)
        return L.Const(code_of(value, dt), storage_dtype(dt))

    def packed_load(
        self, op: LoadOp, tensor: Tensor, starts, axes, fill: L.Const
    ) -> None:
        """A window of a packed tensor into a tile of codes, one per ``u8`` register.

        A thread's run of contiguous elements that starts on a byte boundary, lies inside
        the tensor and covers whole bytes is read as those bytes (on CUDA with one vector
        load when their count is 1, 2, 4, 8 or 16 and aligned) and split with constant
        shifts, unit by unit (``unit_of``); anything else is read element by element, each
        code from the byte (or two) that holds it, under its bounds test.
        """
        r = op.result
        bits = tensor.packed_bits
        if r.tile.is_scalar:
            tmp = self.local(r.name, r.tile.dtype, 1)
            self.packed_element(tensor, starts, axes, [], None, tmp, c64(0), fill)
            self.vals[r.name] = Scalar(self.let(r.name, L.Load(tmp, c64(0))))
            return
        lay: BlockedLayout = r.tile.layout
        buf = self.local(r.name, r.tile.dtype, lay.num_values)
        mask = self.tile(op.mask) if op.mask is not None else None
        self.vals[r.name] = RegTile(r.tile.dtype, lay, buffer=buf)
        live = [d for d in lay.order if d in lay.live_dims]
        fast = live[0] if live else None
        unit, unit_bytes = unit_of(bits)
        run = 1
        if mask is None and fast is not None and axes[-1] == lay.rank - 1:
            run = lay.contiguous_run()
            if self.gpu:  # at most one 16-byte access per run
                run = math.gcd(run, 1 << ((128 // bits).bit_length() - 1))
        if run % unit:
            run = 1

        def element(pos: Pos) -> None:
            pred = None if mask is None else mask.at(pos)
            self.packed_element(
                tensor, starts, axes, self.coords(lay, pos), pred, buf, value_index(lay, pos), fill
            )

        if run == 1 or fast is None:
            self.for_positions(lay, element)
            return
        run_bytes = run * bits // 8

        def runs(pos: Pos) -> None:
            rep_f, _ = pos[fast]
            self.loop(f"v{fast}", lay.spt[fast] // run, lambda chunk: one_run(pos, rep_f, chunk))

        def one_run(pos: Pos, rep_f: L.Expr, chunk: L.Expr) -> None:
            first = dict(pos)
            first[fast] = (rep_f, mul(chunk, c64(run)))
            last = dict(pos)
            last[fast] = (rep_f, add(mul(chunk, c64(run)), c64(run - 1)))
            coords = self.coords(lay, first)
            row, col, ok_first = self.packed_address(tensor, starts, axes, coords)
            _, _, ok_last = self.packed_address(tensor, starts, axes, self.coords(lay, last))
            whole_bytes = L.Binary(BIN.EQ, L.Binary(BIN.MOD, col, c64(unit)), c64(0))
            start = self.let("run_byte", add(row, mul(L.Binary(BIN.FLOORDIV, col, c64(unit)),
                                                     c64(unit_bytes))))
            vidx0 = value_index(lay, first)
            self.nest()
            byte_at = self.run_bytes(tensor, start, run_bytes)

            def split_unit(u: L.Expr) -> None:
                for e in range(unit):
                    code = extract_constant(
                        lambda i: byte_at(add(mul(u, c64(unit_bytes)), c64(i))), bits, e
                    )
                    self.emit(L.Store(buf, add(vidx0, add(mul(u, c64(unit)), c64(e))), code))

            self.loop("unit", run // unit, split_unit, self.loop_kind)
            fast_path = self.unnest()
            self.nest()
            self.loop(
                "e",
                run,
                lambda e: element_at(pos, rep_f, chunk, e),
                L.LoopKind.UNROLL if self.gpu else L.LoopKind.SERIAL,
            )
            slow_path = self.unnest()
            cond = land(land(ok_first, ok_last), whole_bytes)
            self.emit(L.If(cond, fast_path, slow_path) if cond is not None else fast_path)

        def element_at(pos: Pos, rep_f: L.Expr, chunk: L.Expr, e: L.Expr) -> None:
            p = dict(pos)
            p[fast] = (rep_f, add(mul(chunk, c64(run)), e))
            element(p)

        self.for_positions(lay, runs, innermost_run=True)

    def run_bytes(self, tensor: Tensor, start: L.Expr, count: int) -> Callable[[L.Expr], L.Expr]:
        """Byte ``i`` of the ``count`` bytes at ``start``: on CUDA first copied to registers
        in one access where ``count`` is a vector width and ``start`` is aligned to it."""
        if not self.gpu:
            return lambda i: L.Load(tensor.buffer, add(start, i))
        raw = self.local("packed_bytes", storage_dtype(tensor.buffer.dtype), count)
        if count in (1, 2, 4, 8, 16):
            aligned = L.Binary(BIN.EQ, L.Binary(BIN.MOD, start, c64(count)), c64(0))
            vector = L.Copy(raw, c64(0), tensor.buffer, start, count, aligned=True)
            self.nest()
            for i in range(count):
                self.emit(L.Store(raw, c64(i), L.Load(tensor.buffer, add(start, c64(i)))))
            self.emit(L.If(aligned, vector, self.unnest()))
        else:
            for i in range(count):
                self.emit(L.Store(raw, c64(i), L.Load(tensor.buffer, add(start, c64(i)))))
        return lambda i: L.Load(raw, i)

    def packed_address(
        self, tensor: Tensor, starts, axes, coords: list[L.Expr]
    ) -> tuple[L.Expr, L.Expr, L.Expr | None]:
        """The byte offset of an element's row, its index in the row, and the in-bounds
        predicate, for tile coordinates in a packed tensor."""
        row: L.Expr = c64(0)
        pred: L.Expr | None = None
        col: L.Expr = c64(0)
        last = len(starts) - 1
        for d, (start, ax) in enumerate(zip(starts, axes, strict=True)):
            idx = start if ax is None else add(start, coords[ax])
            if d == last:
                col = idx
            else:
                row = add(row, mul(idx, tensor.strides[d]))
            pred = land(
                pred, land(L.Binary(BIN.GE, idx, c64(0)), L.Binary(BIN.LT, idx, tensor.shape[d]))
            )
        return row, col, pred

    def packed_element(
        self,
        tensor: Tensor,
        starts,
        axes,
        coords: list[L.Expr],
        pred: L.Expr | None,
        buf: L.Buffer,
        vidx: L.Expr,
        fill: L.Const,
    ) -> None:
        """One code of a packed tensor into ``buf[vidx]`` (``fill`` outside the bounds or
        the mask). A code that may straddle two bytes reads the next byte too, clamped to
        the row's last byte (where no straddling code can start)."""
        bits = tensor.packed_bits
        row, col, inside = self.packed_address(tensor, starts, axes, coords)
        pred = land(inside, pred)
        bit = mul(col, c64(bits))
        byte = add(row, L.Binary(BIN.SHR, bit, c64(3)))
        shift = L.Binary(BIN.BITAND, bit, c64(7))
        high = None
        if 8 % bits:
            pitch = tensor.strides[-2] if len(tensor.shape) > 1 else _packed_pitch(
                tensor.shape[-1], bits
            )
            row_end = add(row, L.Binary(BIN.SUB, pitch, c64(1)))
            high = L.Load(tensor.buffer, L.Binary(BIN.MIN, add(byte, c64(1)), row_end))
        code = extract_dynamic(L.Load(tensor.buffer, byte), high, shift, bits)
        read = L.Store(buf, vidx, code)
        self.emit(read if pred is None else L.If(pred, read, L.Store(buf, vidx, fill)))

    def store(self, op: StoreOp | AtomicAddOp) -> None:
        tensor = self.vals[op.tensor.name]
        assert isinstance(tensor, Tensor)
        dt = tensor.buffer.dtype
        starts, axes = self.window_geometry(tensor, op, None)
        src = self.vals[op.value.name]
        atomic = isinstance(op, AtomicAddOp)
        if isinstance(src, Scalar):
            offset, pred = self.element_address(tensor, starts, axes, [])
            if self.gpu:
                pred = land(pred, L.Binary(BIN.EQ, self.tid, c64(0)))
            value = cast(src.expr, dt)
            stmt: L.Stmt = (
                L.AtomicAdd(tensor.buffer, offset, value)
                if atomic
                else L.Store(tensor.buffer, offset, value)
            )
            self.emit(stmt if pred is None else L.If(pred, stmt))
            return
        t = self.tile(op.value)
        lay = t.layout
        value_dt = t.dtype
        if not self.gpu and not atomic:
            conv = RegTile(dt, lay, element=lambda pos: cast(t.at(pos), dt))
            mask = self.tile(op.mask) if op.mask is not None else None
            run = self.run_width(tensor, axes, lay, dt, mask is not None)
            self.global_access(
                tensor,
                starts,
                axes,
                lay,
                run,
                t.buffer,
                dt,
                is_load=False,
                mask=mask,
                src_tile=conv,
            )
            return
        if atomic or t.buffer is None or value_dt is not dt:
            # Stores read the value element by element (fused producers run here).
            conv = RegTile(dt, lay, element=lambda pos: cast(t.at(pos), dt))
            t = self.materialize(op.value.name, conv) if not atomic else conv
        mask = self.tile(op.mask) if op.mask is not None else None
        run = 1 if atomic else self.run_width(tensor, axes, lay, dt, mask is not None)
        self.global_access(
            tensor,
            starts,
            axes,
            lay,
            run,
            t.buffer,
            dt,
            is_load=False,
            mask=mask,
            atomic=atomic,
            src_tile=t,
        )

    def global_access(
        self,
        tensor: Tensor,
        starts,
        axes,
        lay: BlockedLayout,
        run: int,
        buf: L.Buffer | None,
        dt: DType,
        *,
        is_load: bool,
        fill: L.Expr | None = None,
        mask: RegTile | None = None,
        atomic: bool = False,
        src_tile: RegTile | None = None,
    ) -> None:
        live = [d for d in lay.order if d in lay.live_dims]
        fast = live[0] if live else None
        spt_fast = lay.spt[fast] if fast is not None else 1

        def element(pos: Pos) -> None:
            coords = self.coords(lay, pos)
            offset, pred = self.element_address(tensor, starts, axes, coords)
            if mask is not None:
                pred = land(pred, mask.at(pos))
            vidx = value_index(lay, pos)
            if is_load:
                assert buf is not None
                self.emit(L.Copy(buf, vidx, tensor.buffer, offset, 1, pred, fill))
                return
            pred = land(pred, self.owner(lay, pos))
            value = src_tile.at(pos) if src_tile is not None else L.Load(buf, vidx)  # type: ignore[arg-type]
            stmt: L.Stmt = (
                L.AtomicAdd(tensor.buffer, offset, value)
                if atomic
                else L.Store(tensor.buffer, offset, value)
            )
            self.emit(stmt if pred is None else L.If(pred, stmt))

        if run <= 1 or fast is None:
            self.for_positions(lay, element)
            return

        def vector_runs(pos: Pos) -> None:
            rep_f, _ = pos[fast]
            self.loop(f"v{fast}", spt_fast // run, lambda chunk: vector(pos, rep_f, chunk))

        def vector(pos: Pos, rep_f: L.Expr, chunk: L.Expr) -> None:
            first = dict(pos)
            first[fast] = (rep_f, mul(chunk, c64(run)))
            last = dict(pos)
            last[fast] = (rep_f, add(mul(chunk, c64(run)), c64(run - 1)))
            offset, pred_first = self.element_address(tensor, starts, axes, self.coords(lay, first))
            _, pred_last = self.element_address(tensor, starts, axes, self.coords(lay, last))
            vidx = value_index(lay, first)
            owner = None if is_load else self.owner(lay, first)
            whole = land(land(pred_first, pred_last), owner)
            if self.gpu:
                aligned = L.Binary(BIN.EQ, L.Binary(BIN.MOD, offset, c64(run)), c64(0))
                fast_cond = land(whole, aligned)
                if is_load:
                    fast_copy: L.Stmt = L.Copy(buf, vidx, tensor.buffer, offset, run, aligned=True)  # type: ignore[arg-type]
                else:
                    fast_copy = L.Copy(tensor.buffer, offset, buf, vidx, run, aligned=True)  # type: ignore[arg-type]
                self.nest()
                self.loop("e", run, lambda e: element_at(pos, rep_f, chunk, e), L.LoopKind.UNROLL)
                slow = self.unnest()
                self.emit(L.If(fast_cond, fast_copy, slow) if fast_cond is not None else fast_copy)
            else:
                self.cpu_run(
                    tensor,
                    starts,
                    axes,
                    lay,
                    pos,
                    fast,
                    rep_f,
                    run,
                    buf,
                    is_load=is_load,
                    fill=fill,
                    atomic=atomic,
                    src_tile=src_tile,
                )

        def element_at(pos: Pos, rep_f: L.Expr, chunk: L.Expr, e: L.Expr) -> None:
            p = dict(pos)
            p[fast] = (rep_f, add(mul(chunk, c64(run)), e))
            element(p)

        self.for_positions(lay, vector_runs, innermost_run=True)

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
        self.shared_allocs.append((name, cosize * r.tile.dtype.itemsize, r.tile.dtype))
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

    # ------------------------------------------------------------------ dot

    def dot(self, op: DotOp) -> None:
        r = op.result
        acc = self.tile(op.acc)
        dt = r.tile.dtype
        lay: BlockedLayout = r.tile.layout
        atom = self.mma_atom(op)
        if atom is not None:
            a_val, b_val = self.vals[op.a.name], self.vals[op.b.name]
            # An operand computed in registers (a dequantized weight tile: a cast-and-scale
            # chain) is made once, so it reaches shared memory in 16-byte stores.
            a_op = a_val if isinstance(a_val, StagedTile) else self.operand_tile(op.a)
            b_op = b_val if isinstance(b_val, StagedTile) else self.operand_tile(op.b)
            self.dot_mma(op, atom, a_op, b_op, acc)
            return
        a, b = self.tile(op.a), self.tile(op.b)
        (m, k), (_, n) = op.a.tile.shape, op.b.tile.shape
        out = self.local(r.name, dt, lay.num_values)
        self.for_positions(
            lay, lambda pos: self.emit(L.Store(out, value_index(lay, pos), cast(acc.at(pos), dt)))
        )
        if not self.gpu and lay.spt == (m, n) and lay.order == (1, 0):
            self.dot_cpu(op, self.materialize(op.a.name, a), self.materialize(op.b.name, b), out)
            self.vals[r.name] = RegTile(dt, lay, buffer=out)
            return
        if self.gpu:
            smem_a = self.scratch(dt, m * k + k * n)
            self.emit(L.Barrier())
            self.write_tile_to(a, smem_a, lambda c: add(mul(c[0], c64(k)), c[1]))
            self.write_tile_to(b, smem_a, lambda c: add(c64(m * k), add(mul(c[0], c64(n)), c[1])))
            self.emit(L.Barrier())

            def a_at(row: L.Expr, kk: L.Expr) -> L.Expr:
                return cast(L.Load(smem_a, add(mul(row, c64(k)), kk)), dt)

            def b_at(kk: L.Expr, col: L.Expr) -> L.Expr:
                return cast(L.Load(smem_a, add(c64(m * k), add(mul(kk, c64(n)), col))), dt)
        else:
            a_m = self.materialize(op.a.name, a)
            b_m = self.materialize(op.b.name, b)

            def a_at(row: L.Expr, kk: L.Expr) -> L.Expr:
                return cast(self._elem_by_coords_2d(a_m, row, kk), dt)

            def b_at(kk: L.Expr, col: L.Expr) -> L.Expr:
                return cast(self._elem_by_coords_2d(b_m, kk, col), dt)

        def step(kk: L.Expr) -> None:
            def fma(pos: Pos) -> None:
                row, col = self.coords(lay, pos)
                vidx = value_index(lay, pos)
                self.emit(
                    L.Store(out, vidx, add(L.Load(out, vidx), mul(a_at(row, kk), b_at(kk, col))))
                )

            self.for_positions(lay, fma)

        self.loop("k", k, step, L.LoopKind.SERIAL)
        self.vals[r.name] = RegTile(dt, lay, buffer=out)

    def dot_cpu(self, op: DotOp, a: RegTile, b: RegTile, out: L.Buffer) -> None:
        """``out += a @ b`` on the CPU as a register-blocked micro-kernel.

        The output tile (row-major in ``out``) is cut into MR x NR blocks; each block's sums
        live in a small local array across the whole ``k`` loop, and every loop inside it is
        fully unrolled, so the array becomes registers (LLVM's SROA) and the MR x NR
        multiply-adds become vector FMAs (its SLP vectorizer): one load of ``a`` broadcast
        against NR/vector lanes of ``b`` per row, as a BLAS micro-kernel does.
        """
        (m, k), (_, n) = op.a.tile.shape, op.b.tile.shape
        dt = out.dtype
        vector = max(1, self.target.vector_bytes // dt.itemsize)
        mr = next(d for d in (8, 6, 4, 3, 2, 1) if m % d == 0)
        nr = next(d for d in (2 * vector, vector, 8, 4, 2, 1) if n % d == 0)
        unroll = L.LoopKind.UNROLL

        def block(mb: L.Expr, nb: L.Expr) -> None:
            sums = self.local(f"{op.result.name}_block", dt, mr * nr)
            row0, col0 = mul(mb, c64(mr)), mul(nb, c64(nr))

            def cell(i: L.Expr, j: L.Expr) -> L.Expr:
                return add(mul(add(row0, i), c64(n)), add(col0, j))

            self.loop("i", mr, lambda i: self.loop("j", nr, lambda j: self.emit(
                L.Store(sums, add(mul(i, c64(nr)), j), L.Load(out, cell(i, j)))), unroll), unroll)

            def step(kk: L.Expr) -> None:
                def row(i: L.Expr) -> None:
                    a_ik = self.let("a_ik", cast(self._elem_by_coords_2d(a, add(row0, i), kk), dt))

                    def column(j: L.Expr) -> None:
                        slot = add(mul(i, c64(nr)), j)
                        b_kj = cast(self._elem_by_coords_2d(b, kk, add(col0, j)), dt)
                        self.emit(L.Store(sums, slot, add(L.Load(sums, slot), mul(a_ik, b_kj))))

                    self.loop("j", nr, column, unroll)

                self.loop("i", mr, row, unroll)

            self.loop("k", k, step, L.LoopKind.SERIAL)
            self.loop("i", mr, lambda i: self.loop("j", nr, lambda j: self.emit(
                L.Store(out, cell(i, j), L.Load(sums, add(mul(i, c64(nr)), j)))), unroll), unroll)

        self.loop("mb", m // mr, lambda mb: self.loop("nb", n // nr, lambda nb: block(mb, nb),
                                                      L.LoopKind.SERIAL), L.LoopKind.SERIAL)

    def operand_tile(self, v: Value) -> RegTile:
        return self.materialize(v.name, self.tile(v))

    def mma_atom(self, op: DotOp) -> MmaAtom | None:
        """The tensor-core atom this dot runs on (its accumulator has the atom's layout)."""
        if not self.gpu:
            return None
        lay = op.result.tile.layout
        atom = find_mma(
            op.a.tile.dtype, op.b.tile.dtype, op.result.tile.dtype, self.target.compute_capability
        )
        ok = isinstance(lay, BlockedLayout) and (lay.spt, lay.tpw, lay.order) == (
            (1, 2),
            (8, 4),
            (1, 0),
        )
        return atom if ok else None

    def dot_mma(
        self,
        op: DotOp,
        atom: MmaAtom,
        a: RegTile | StagedTile,
        b: RegTile | StagedTile,
        acc: RegTile,
    ) -> None:
        """``dot`` on tensor cores: operands through swizzled shared memory, fragments loaded
        with ``ldmatrix``, one ``mma.sync`` per (row atom, column atom, k step).

        The accumulator is in the atom's C layout repeated over the tile
        (``mma_accumulator_layout``): warp ``(wm, wn)`` and lane group ``g`` hold rows
        ``wm*8 + g + 8*WM*rep``; two consecutive row repeats form one m16 atom, so the A
        fragment of atom ``i`` gathers those two 8-row groups — ``ldmatrix`` takes a row
        address per lane, so the rows need not be adjacent in memory.
        """
        r = op.result
        (m, k), (_, n) = op.a.tile.shape, op.b.tile.shape
        lay: BlockedLayout = r.tile.layout
        wm, wn = lay.wpc
        row_atoms = lay.reps(0) // 2
        col_atoms = lay.reps(1)
        out = self.local(r.name, r.tile.dtype, lay.num_values)
        self.for_positions(
            lay,
            lambda pos: self.emit(
                L.Store(out, value_index(lay, pos), cast(acc.at(pos), r.tile.dtype))
            ),
        )
        if isinstance(a, RegTile) or isinstance(b, RegTile):
            # Operands in registers go through the scratch area, swizzled for ldmatrix.
            smem = self.scratch(a.dtype, m * k + k * n)
            staged_a = StagedTile(smem, c64(0), _operand_swizzle(k, a.dtype), (m, k), a.dtype)
            staged_b = StagedTile(smem, c64(m * k), _operand_swizzle(n, b.dtype), (k, n), b.dtype)
            self.emit(L.Barrier())
            if isinstance(a, RegTile):
                self.write_tile_vectorized(a, smem, staged_a.offset)
            if isinstance(b, RegTile):
                self.write_tile_vectorized(b, smem, staged_b.offset)
            self.emit(L.Barrier())
            a = a if isinstance(a, StagedTile) else staged_a
            b = b if isinstance(b, StagedTile) else staged_b
        a_smem, b_smem = a.buffer, b.buffer
        a_offset, b_offset = a.offset, b.offset

        lane = L.Binary(BIN.MOD, self.tid, c64(32))
        warp = L.Binary(BIN.FLOORDIV, self.tid, c64(32))
        warp_m = self.let(
            "warp_m",
            L.Binary(BIN.MOD, L.Binary(BIN.FLOORDIV, warp, c64(lay.warp_stride(0))), c64(wm)),
        )
        warp_n = self.let(
            "warp_n",
            L.Binary(BIN.MOD, L.Binary(BIN.FLOORDIV, warp, c64(lay.warp_stride(1))), c64(wn)),
        )
        # ldmatrix: lane l addresses row l % 8 of matrix l // 8.
        mat = self.let("ld_matrix", L.Binary(BIN.FLOORDIV, lane, c64(8)))
        mat_row = self.let("ld_row", L.Binary(BIN.MOD, lane, c64(8)))
        a_frag = self.local(f"{op.a.name}_frag", u32, row_atoms * atom.a_regs)
        b_frag = self.local(f"{op.b.name}_frag", u32, col_atoms * atom.b_regs)
        ld_a, ld_b = LdMatrixAtom(4, trans=False), LdMatrixAtom(2, trans=True)
        for kk in range(0, k, atom.k):
            # A: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (8-15, 8-15)
            for i in range(row_atoms):
                rep = add(c64(2 * i), L.Binary(BIN.MOD, mat, c64(2)))
                row = add(add(mul(warp_m, c64(8)), mat_row), mul(rep, c64(8 * wm)))
                col = add(c64(kk), mul(L.Binary(BIN.FLOORDIV, mat, c64(2)), c64(8)))
                self.emit(ld_a.load(a_frag, i * 4, L.Address(a_smem, a_offset([row, col]))))
            # B (k x n, row-major): transposed loads give the column-major B fragment.
            for j in range(col_atoms):
                krow = add(add(c64(kk), mat_row), mul(L.Binary(BIN.MOD, mat, c64(2)), c64(8)))
                col = add(mul(warp_n, c64(8)), c64(j * 8 * wn))
                self.emit(ld_b.load(b_frag, j * 2, L.Address(b_smem, b_offset([krow, col]))))
            for i in range(row_atoms):
                for j in range(col_atoms):
                    c_idx = [
                        value_index(lay, {0: (c64(2 * i + h), c64(0)), 1: (c64(j), c64(s))})
                        for h in (0, 1)
                        for s in (0, 1)
                    ]
                    self.emit(atom.multiply(out, c_idx, a_frag, i * atom.a_regs, b_frag,
                                            j * atom.b_regs))
        self.vals[r.name] = RegTile(r.tile.dtype, lay, buffer=out)

    def write_tile_vectorized(
        self, t: RegTile, smem: L.Buffer, offset_of: Callable[[list[L.Expr]], L.Expr]
    ) -> None:
        """Write a register tile to shared memory, 16 bytes at a time where the layout holds
        runs that long (the operand swizzles keep 16-byte chunks whole)."""
        lay = t.layout
        run = math.gcd(lay.contiguous_run(), max(1, 16 // smem.dtype.itemsize))
        fast = lay.tile_dims[-1]
        if run <= 1 or t.buffer is None or lay.replicated(fast):
            self.write_tile_to(t, smem, offset_of)
            return

        def chunks(pos: Pos) -> None:
            rep_f, _ = pos[fast]

            def one(chunk: L.Expr) -> None:
                p = dict(pos)
                p[fast] = (rep_f, mul(chunk, c64(run)))
                self.emit(
                    L.Copy(
                        smem,
                        offset_of(self.coords(lay, p)),
                        t.buffer,  # type: ignore[arg-type]
                        value_index(lay, p),
                        run,
                        aligned=True,
                    )
                )

            self.loop(f"c{fast}", lay.spt[fast] // run, one, L.LoopKind.UNROLL)

        self.for_positions(lay, chunks, innermost_run=True)

    def _elem_by_coords_2d(self, t: RegTile, row: L.Expr, col: L.Expr) -> L.Expr:
        d0, d1 = t.layout.tile_dims
        return t.at({d0: (c64(0), row), d1: (c64(0), col)})

    # ------------------------------------------------------------------ control flow

    def carried_storage(self, name: str, v: Value) -> Lowered:
        lv = self.vals[v.name]
        if isinstance(lv, Scalar):
            buf = self.local(f"{name}_carry", lv.expr.dtype, 1)
            return Scalar(L.Load(buf, c64(0)))  # the read; writes go through store_carried
        t = self.tile(v)
        buf = self.local(f"{name}_carry", t.dtype, t.layout.num_values)
        return RegTile(t.dtype, t.layout, buffer=buf)

    def store_carried(self, dst: Lowered, src_value: Value) -> None:
        src = self.vals[src_value.name]
        if isinstance(dst, Scalar):
            assert isinstance(dst.expr, L.Load) and isinstance(src, Scalar)
            self.emit(L.Store(dst.expr.buffer, c64(0), cast(src.expr, dst.expr.dtype)))
            return
        assert isinstance(dst, RegTile) and dst.buffer is not None
        s = self.tile(src_value)
        if s.buffer is dst.buffer and s.element is None:
            return
        self.for_positions(
            dst.layout,
            lambda pos: self.emit(
                L.Store(dst.buffer, value_index(dst.layout, pos), cast(s.at(pos), dst.dtype))
            ),
        )  # type: ignore[arg-type]

    def read_carried(self, name: str, carried: Lowered) -> Lowered:
        if isinstance(carried, Scalar):
            return Scalar(self.let(name, carried.expr))
        return carried

    def for_op(self, op: ForOp) -> None:
        plan = self.pipeline_plan(op) if op.pipeline_stages > 1 else None
        if plan is None:
            self.serial_for(op)
            return
        carried = [
            self.carried_storage(a.name, init)
            for a, init in zip(op.body.args[1:], op.inits, strict=True)
        ]
        for c, init in zip(carried, op.inits, strict=True):
            self.store_carried(c, init)
        guard = self.pipeline_guard(plan)
        self.nest()
        self.pipelined_loop(op, plan, carried)
        fast = self.unnest()
        self.nest()
        self.serial_for(op, carried)
        slow = self.unnest()
        self.emit(L.If(guard, fast, slow))
        for r, c in zip(op.results, carried, strict=True):
            self.vals[r.name] = self.read_carried(r.name, c)

    # ------------------------------------------------------------------ software pipelining

    def pipeline_plan(self, op: ForOp) -> list[_PipelinedLoad] | None:
        """The loads of this loop that can be pipelined: their only use is as a tensor-core
        operand, and their window depends on scalars only. None if there are none."""
        if not self.gpu:
            return None
        body = op.body
        uses: dict[str, list[Op]] = {}
        producers: dict[str, Op] = {}
        for o in body.ops:
            for v in o.operands():
                uses.setdefault(v.name, []).append(o)
            for v in o.results:
                producers[v.name] = o
        plan: list[_PipelinedLoad] = []
        for o in body.ops:
            if not isinstance(o, DotOp) or self.mma_atom(o) is None:
                continue
            for operand, rows_cols in ((o.a, "a"), (o.b, "b")):
                load = producers.get(operand.name)
                if not isinstance(load, LoadOp) or load.mask is not None or load.other is not None:
                    continue
                if len(uses.get(operand.name, [])) != 1 or load.result.tile.rank != 2:
                    continue
                tensor = self.vals[load.tensor.name]
                if not isinstance(tensor, Tensor) or not tensor.contiguous_last:
                    continue
                lay = load.result.tile.layout
                chunk = 16 // load.result.tile.dtype.itemsize
                if not isinstance(lay, BlockedLayout) or lay.contiguous_run() % chunk:
                    continue
                # Leading dims may be indexed (a batch); the tile is the last two dims.
                if any(load.window.squeeze[-2:]):
                    continue
                chain = _scalar_chain(load.window.starts, producers)
                if chain is None:
                    continue
                del rows_cols
                plan.append(_PipelinedLoad(load, chain, chunk))
        return plan or None

    def pipeline_guard(self, plan: list[_PipelinedLoad]) -> L.Expr:
        """``cp.async`` moves 16-byte chunks: rows and base pointers must be 16-byte aligned."""
        cond: L.Expr | None = None
        for p in plan:
            tensor = self.vals[p.load.tensor.name]
            assert isinstance(tensor, Tensor)
            aligned_rows: L.Expr | None = None
            for stride in tensor.strides[:-1]:  # every row of every batch starts aligned
                ok = L.Binary(BIN.EQ, L.Binary(BIN.MOD, stride, c64(p.chunk)), c64(0))
                aligned_rows = land(aligned_rows, ok)
            base = L.Address(tensor.buffer, c64(0))
            aligned_base = L.Binary(
                BIN.EQ, L.Binary(BIN.MOD, base, L.Const(16, base.dtype)), L.Const(0, base.dtype)
            )
            cond = land(cond, land(aligned_rows, aligned_base))
        assert cond is not None
        return cond

    def pipelined_loop(self, op: ForOp, plan: list[_PipelinedLoad], carried: list[Lowered]) -> None:
        """The loop with its operand loads ``stages - 1`` iterations ahead, through a ring of
        shared-memory buffers filled by ``cp.async``:

            prologue: issue iterations 0 .. S-2
            for each iteration i:  wait for i's copies; barrier;
                                   issue iteration i + S - 1 into the buffer i - 1 used;
                                   compute on buffer i % S
            drain:    wait for everything; barrier

        The barrier after the wait both publishes iteration ``i``'s data and tells every
        thread that iteration ``i - 1``'s buffer is no longer read, so it may be refilled.
        """
        stages = op.pipeline_stages
        loop_var = op.body.args[0]
        start = cast(self.scalar(op.start), i64)
        stop = cast(self.scalar(op.stop), i64)
        step = cast(self.scalar(op.step), i64)
        rings = []
        for p in plan:
            shape = p.load.result.tile.shape
            numel = shape[0] * shape[1]
            name = self.unique(f"{p.load.result.name}_ring")
            dtype = p.load.result.tile.dtype
            buf = L.Buffer(name, dtype, L.Scope.SHARED, numel * stages, 0)
            self.buffers.append(buf)
            self.shared_allocs.append((name, numel * stages * dtype.itemsize, dtype))
            rings.append((buf, numel, _operand_swizzle(shape[1], dtype)))

        def issue(iteration: L.Expr) -> None:
            k_value = add(start, mul(iteration, step))
            live = L.Binary(BIN.LT, k_value, stop)
            stage = L.Binary(BIN.MOD, iteration, c64(stages))
            for p, (buf, numel, swz) in zip(plan, rings, strict=True):
                self.issue_async_load(
                    p,
                    loop_var,
                    k_value,
                    live,
                    StagedTile(
                        buf, mul(stage, c64(numel)), swz, p.load.result.tile.shape, buf.dtype
                    ),
                )  # type: ignore[arg-type]
            self.emit(L.Asm(CP_ASYNC_COMMIT, memory=True))

        for s in range(stages - 1):
            issue(c64(s))
        var = L.Var(self.unique(loop_var.name), i64)
        self.nest()
        it = self.let("iteration", L.Binary(BIN.FLOORDIV, L.Binary(BIN.SUB, var, start), step))
        self.emit(L.Asm(cp_async_wait(stages - 2), memory=True))
        self.emit(L.Barrier())
        issue(add(it, c64(stages - 1)))
        stage = self.let("stage", L.Binary(BIN.MOD, it, c64(stages)))
        self.vals[loop_var.name] = Scalar(cast(var, loop_var.tile.dtype))
        for a, c in zip(op.body.args[1:], carried, strict=True):
            self.vals[a.name] = self.read_carried(a.name, c)
        skip = {id(p.load) for p in plan}
        for p, (buf, numel, swz) in zip(plan, rings, strict=True):
            self.vals[p.load.result.name] = StagedTile(
                buf, mul(stage, c64(numel)), swz, p.load.result.tile.shape, buf.dtype
            )  # type: ignore[arg-type]
        for o in op.body.ops:
            if isinstance(o, YieldOp) or id(o) in skip:
                continue
            self.comment(o)
            self.op(o)
        if op.body.terminator is not None:
            self.yield_into(carried, op.body.terminator.values)
        body = self.unnest()
        self.emit(L.For(var, start, stop, step, body, L.LoopKind.SERIAL))
        self.emit(L.Asm(cp_async_wait(0), memory=True))
        self.emit(L.Barrier())

    def issue_async_load(
        self, p: _PipelinedLoad, loop_var: Value, k_value: L.Expr, live: L.Expr, dst: StagedTile
    ) -> None:
        """``cp.async`` this thread's 16-byte chunks of ``p.load``'s window, with the loop
        variable at ``k_value``, into ``dst``; chunks outside the tensor (or past the loop's
        end, when ``live`` is false) copy zero bytes and are zero-filled."""
        saved = dict(self.vals)
        self.vals[loop_var.name] = Scalar(cast(k_value, loop_var.tile.dtype))
        for dep in p.chain:
            self.op(dep)
        tensor = self.vals[p.load.tensor.name]
        assert isinstance(tensor, Tensor)
        starts, axes = self.window_geometry(tensor, p.load, None)
        lay: BlockedLayout = p.load.result.tile.layout
        fast = lay.tile_dims[-1]
        atom = CpAsyncAtom(16)

        def chunks(pos: Pos) -> None:
            rep_f, _ = pos[fast]

            def one(chunk: L.Expr) -> None:
                first = dict(pos)
                first[fast] = (rep_f, mul(chunk, c64(p.chunk)))
                last = dict(pos)
                last[fast] = (rep_f, add(mul(chunk, c64(p.chunk)), c64(p.chunk - 1)))
                coords = self.coords(lay, first)
                offset, ok_first = self.element_address(tensor, starts, axes, coords)
                _, ok_last = self.element_address(tensor, starts, axes, self.coords(lay, last))
                ok = self.let("chunk_ok", land(land(ok_first, ok_last), live))  # type: ignore[arg-type]
                src = L.Address(tensor.buffer, L.Select(ok, offset, c64(0)))
                nbytes = L.Select(ok, L.Const(16, u32), L.Const(0, u32))
                self.emit(
                    L.Asm(
                        atom.ptx,
                        (),
                        (),
                        (L.Address(dst.buffer, dst.offset(coords)), src, nbytes),
                        ("r", "l", "r"),
                        memory=True,
                    )
                )

            self.loop(f"c{fast}", lay.spt[fast] // p.chunk, one, L.LoopKind.UNROLL)

        self.for_positions(lay, chunks, innermost_run=True)
        self.vals = saved

    def serial_for(self, op: ForOp, carried: list[Lowered] | None = None) -> None:
        own = carried is None
        carried = (
            carried
            if carried is not None
            else [
                self.carried_storage(a.name, init)
                for a, init in zip(op.body.args[1:], op.inits, strict=True)
            ]
        )
        if own:
            for c, init in zip(carried, op.inits, strict=True):
                self.store_carried(c, init)
        start = cast(self.scalar(op.start), i64)
        stop = cast(self.scalar(op.stop), i64)
        step = cast(self.scalar(op.step), i64)
        var = L.Var(self.unique(op.body.args[0].name), i64)
        self.nest()
        self.vals[op.body.args[0].name] = Scalar(
            cast(var, op.body.args[0].tile.dtype) if op.body.args[0].tile.dtype is not i64 else var
        )
        for a, c in zip(op.body.args[1:], carried, strict=True):
            self.vals[a.name] = self.read_carried(a.name, c)
        self.block(op.body)
        term = op.body.terminator
        if term is not None:
            self.yield_into(carried, term.values)
        body = self.unnest()
        self.emit(L.For(var, start, stop, step, body, L.LoopKind.SERIAL))
        if own:
            for r, c in zip(op.results, carried, strict=True):
                self.vals[r.name] = self.read_carried(r.name, c)

    def yield_into(self, carried: list[Lowered], values: tuple[Value, ...]) -> None:
        # Materialize everything first: a yielded expression may read a carried buffer that
        # an earlier copy in this same yield overwrites.
        staged: list[Value] = []
        for c, v in zip(carried, values, strict=True):
            lv = self.vals[v.name]
            if isinstance(lv, RegTile) and (
                lv.element is not None
                or any(
                    isinstance(o, RegTile) and o.buffer is lv.buffer and o is not c for o in carried
                )
            ):
                tmp = self.local(f"{v.name}_next", lv.dtype, lv.layout.num_values)
                self.for_positions(
                    lv.layout,
                    lambda pos, lv=lv, tmp=tmp: self.emit(
                        L.Store(tmp, value_index(lv.layout, pos), lv.at(pos))
                    ),
                )
                self.vals[v.name] = RegTile(lv.dtype, lv.layout, buffer=tmp)
            elif isinstance(lv, Scalar) and isinstance(c, Scalar):
                self.vals[v.name] = Scalar(self.let(f"{v.name}_next", lv.expr))
            staged.append(v)
        for c, v in zip(carried, staged, strict=True):
            self.store_carried(c, v)

    def if_op(self, op: IfOp) -> None:
        cond = self.scalar(op.cond)
        carried = [
            self.carried_storage(r.name, y)
            for r, y in zip(
                op.results, op.then.terminator.values if op.then.terminator else (), strict=True
            )
        ]
        branches = []
        for blk in (op.then, op.otherwise):
            self.nest()
            self.block(blk)
            if blk.terminator is not None:
                self.yield_into(carried, blk.terminator.values)
            branches.append(self.unnest())
        self.emit(L.If(cond, branches[0], branches[1]))
        for r, c in zip(op.results, carried, strict=True):
            self.vals[r.name] = self.read_carried(r.name, c)


# ----------------------------------------------------------------------------- helpers


def _apply(fn: str, xs: list[L.Expr], arg_types: list[DType], dt: DType) -> L.Expr:
    if fn == "where":
        return L.Select(cast(xs[0], boolean), cast(xs[1], dt), cast(xs[2], dt))
    if fn in _UNARY_FNS:
        u = _UNARY_FNS[fn]
        if fn == "not":
            return L.Unary(u, cast(xs[0], boolean))
        if dt.is_float and dt.bits < 32:  # math on halves runs in f32
            return cast(L.Unary(u, cast(xs[0], f32)), dt)
        return L.Unary(u, cast(xs[0], dt))
    op = _BINARY_FNS[fn]
    if op.is_comparison:
        common = promote(arg_types[0], arg_types[1])
        return L.Binary(op, cast(xs[0], common), cast(xs[1], common))
    if op.is_logical:
        return L.Binary(op, cast(xs[0], boolean), cast(xs[1], boolean))
    if op is BIN.DIV and not dt.is_float:
        dt = f32
    if op in (BIN.SHL, BIN.SHR):
        return L.Binary(op, cast(xs[0], dt), cast(xs[1], dt))
    if dt.is_float and dt.bits < 32 and op in (BIN.POW,):
        return cast(L.Binary(op, cast(xs[0], f32), cast(xs[1], f32)), dt)
    return L.Binary(op, cast(xs[0], dt), cast(xs[1], dt))


@dataclass(frozen=True)
class _PipelinedLoad:
    load: LoadOp
    chain: list[Op]  # the scalar ops in the loop body its window starts depend on
    chunk: int  # elements per 16-byte cp.async


def _scalar_chain(starts: tuple[Value, ...], producers: dict[str, Op]) -> list[Op] | None:
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


def _use_counts(block: Block) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in walk_ops(block):
        for v in op.operands():
            counts[v.name] = counts.get(v.name, 0) + 1

    # A value used inside a loop body but defined outside is used once per iteration:
    # keep it in a buffer rather than recomputing it.
    def visit(b: Block, defined_outside: set[str]) -> None:
        for op in b.ops:
            if isinstance(op, ForOp):
                inner_defs = {v.name for o in walk_ops(op.body) for v in o.results} | {
                    a.name for a in op.body.args
                }
                for o in walk_ops(op.body):
                    for v in o.operands():
                        if v.name not in inner_defs:
                            counts[v.name] = counts.get(v.name, 0) + 2
            for inner in op.blocks():
                visit(inner, defined_outside)

    visit(block, set())
    return counts


def _all_values(k: TileKernel):
    yield from (p.value for p in k.params)
    for op in walk_ops(k.body):
        yield from op.results
        for b in op.blocks():
            yield from b.args


def _rebind_buffers(stmt: L.Stmt, table: dict[str, L.Buffer]) -> L.Stmt:
    """Replace buffers by their final versions (shared offsets are fixed after lowering)."""
    import dataclasses

    def fix(node: object) -> object:
        if isinstance(node, L.Buffer):
            return table.get(node.name, node)
        if isinstance(node, tuple):
            return tuple(fix(x) for x in node)
        if isinstance(node, L.Expr | L.Stmt):
            changes = {f.name: fix(getattr(node, f.name)) for f in dataclasses.fields(node)}
            return dataclasses.replace(node, **changes)
        return node

    return fix(stmt)  # type: ignore[return-value]


@register_pass("lower-to-loops", "Tile IR -> Loop IR: distribute tiles over threads")
def lower_to_loops(kernel: TileKernel, ctx: PassContext) -> L.LoopKernel:
    return _Lowering(kernel, ctx.target).run()
