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

from collections.abc import Callable

from tegula.ir import loop as L
from tegula.ir.distributed import BlockedLayout
from tegula.ir.dtypes import DType, boolean, f32, i64, promote, u8
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
    ReduceOp,
    StoreOp,
    TensorType,
    ThreadIndexOp,
    TileKernel,
    TileType,
    ToSharedOp,
    TransposeOp,
    YieldOp,
    walk_ops,
)

from .lowbit_codes import (
    decode,
    decode_int,
    exact_int_conversion,
    int_to_float_exactly,
    is_code_type,
    is_packed,
    storage_dtype,
)
from .lowering.base import LoweringBase, SharedAlloc
from .lowering.control import ControlFlow
from .lowering.dot import Dots
from .lowering.memory import GlobalMemory
from .lowering.reductions import Reductions
from .lowering.shared import SharedMemory
from .lowering.values import (
    _BINARY_FNS,
    _UNARY_FNS,
    BIN,
    LoweringError,
    Pos,
    RegTile,
    Scalar,
    SharedTile,
    Tensor,
    _align,
    _packed_byte_strides,
    c64,
    cast,
    mul,
    parse_grid_expr,
)
from .manager import PassContext, register_pass
from .narrow import WIDE_VALUES_OPTION, has_wide_values


class _Lowering(ControlFlow, Dots, SharedMemory, GlobalMemory, Reductions, LoweringBase):
    """The whole lowering: the shared machinery (``lowering/base.py``) and one part per kind
    of operation, put together; ``run`` drives it over a kernel."""

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
        # Pipeline rings share bytes with the scratch that only code outside their loops
        # uses (the unaligned fallback loop, epilogues), unless a shared tile sits there.
        offsets: dict[str, int] = {}

        def place(allocs: list[SharedAlloc], cursor: int) -> int:
            for a in allocs:
                offsets[a.name] = cursor = _align(cursor, a.align)
                cursor = _align(cursor + a.nbytes, 16)
                self.smem_align = max(self.smem_align, a.align)
            return cursor

        tiles = [a for a in self.shared_allocs if not a.ring]
        rings = [a for a in self.shared_allocs if a.ring]
        tiles_end = place(tiles, _align(self.scratch_bytes, 16))
        rings_end = place(rings, tiles_end if tiles else _align(self.pipeline_scratch_bytes, 16))
        cursor = max(tiles_end, rings_end)
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
            block_threads=self.threads + self.producer_threads,
            buffers=buffers,
            smem_bytes=cursor,
            body=body,
            smem_align=self.smem_align,
            tensor_maps=tuple(self.tensor_maps),
            source_name=k.source_file,
            notes=tuple(self.notes),
        )

    def block(self, block: Block) -> None:
        for op in block.ops:
            if isinstance(op, YieldOp):
                continue
            self.comment(op)
            self.op(op)

    # ------------------------------------------------------------------ ops

    def op(self, op: Op) -> None:
        outer, self.current_op = self.current_op, op
        try:
            self.lower_op(op)
        finally:
            self.current_op = outer

    def lower_op(self, op: Op) -> None:
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
        if result is source:
            return lambda e: e
        # Integer codes to floats go through the mantissa (of 2^23 for f32, 2^10 for f16) on
        # CUDA, whose int→float conversion runs at a quarter of the rate; a CPU converts a
        # vector in one instruction, two fewer than the or and subtraction.
        exact_trick = self.gpu and exact_int_conversion(source, result)
        if not is_code_type(source):
            if exact_trick:  # i8/u8 → f32, f16
                return lambda e: int_to_float_exactly(cast(e, u8), source, result)
            return lambda e: cast(e, result)
        if source.is_int and not exact_trick:
            return lambda e: cast(decode_int(e, source), result)
        return lambda e: cast(decode(e, source, result), result)

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


def _all_values(k: TileKernel):
    yield from (p.value for p in k.params)
    for op in walk_ops(k.body):
        yield from op.results
        for b in op.blocks():
            yield from b.args


def _rebind_buffers(stmt: L.Stmt, table: dict[str, L.Buffer]) -> L.Stmt:
    """Replace buffers by their final versions (shared offsets are fixed after lowering)."""
    return L.map_nodes(
        stmt, lambda b: table.get(b.name, b) if isinstance(b, L.Buffer) else None
    )  # type: ignore[return-value]


@register_pass("lower-to-loops", "Tile IR -> Loop IR: distribute tiles over threads")
def lower_to_loops(kernel: TileKernel, ctx: PassContext) -> L.LoopKernel:
    ctx.options[WIDE_VALUES_OPTION] = has_wide_values(kernel, _all_values(kernel))
    return _Lowering(kernel, ctx.target).run()
