"""Layout inference: give every register tile a layout, converting only where demands meet.

Anchors fix some layouts: a global load or store wants its tile coalesced (``vector``
contiguous elements per thread along the tensor's contiguous dim, lanes side by side); a
``dot`` accumulator wants a register-blocked sub-tile per thread; a user's ``convert`` pins
one. Propagation carries layouts forward: an elementwise op or cast keeps its operands'
layout; a reduction slices its operand's layout (the threads along the reduced dim keep
copies of the result, so nothing moves); ``expand_dims`` and ``broadcast`` undo a slice;
``transpose`` permutes the layout's dims. Where two layouts meet at one op, the operand
hardest to move sets the layout (:meth:`_Inference.weight`) and the others are rebuilt in it
where they can be — fills, loads read again, casts, broadcasts and short elementwise chains
over those — and only the rest get a ``convert_layout`` (a trip through shared memory). A
loop-carried value takes the layout its loop body produces, so an accumulator is never
converted once per iteration.

Values that end in a global store pass a *hint* backwards, so tiles made from nothing
(``full``, reads of shared memory) are born in the layout the store wants.
"""

from __future__ import annotations

from dataclasses import replace

from tegula.ir.atoms import find_mma, find_wgmma, wgmma_tile_fits
from tegula.ir.distributed import (
    BlockedLayout,
    RegisterLayout,
    TVRegisterLayout,
    UniformLayout,
    default_blocked,
    dot_accumulator_layout,
    mma_accumulator_layout,
    wgmma_accumulator_layout,
)
from tegula.ir.dtypes import DType
from tegula.ir.layout import row_major
from tegula.ir.target import Target
from tegula.ir.tile import (
    ArangeOp,
    AtomicAddOp,
    Block,
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
    MemScope,
    Op,
    ReduceOp,
    StoreOp,
    TileKernel,
    TileType,
    ToSharedOp,
    TransposeOp,
    Value,
    YieldOp,
    walk_ops,
)

from .lowbit_codes import is_packed
from .manager import PassContext, register_pass

# The fewest 32-bit words in a run that is word-interleaved on the CPU (measured on Zen 4:
# a 4-bit run of 16 words lost 6x, one of 32 words gained 25%).
_MIN_INTERLEAVED_WORDS = 32
# The memory transaction granule a global store should fill: a sector of L2.
SECTOR_BYTES = 32

# The longest chain of elementwise ops rebuilt in a new layout instead of converted.
_REBUILT_CHAIN = 3


class LayoutInferenceError(RuntimeError):
    pass


class _Inference:
    def __init__(self, kernel: TileKernel, target: Target) -> None:
        self.kernel = kernel
        self.target = target
        self.num_warps = kernel.num_warps if target.is_cuda else 1
        self.warp_size = target.warp_size
        self.env: dict[str, Value] = {}
        self.defs: dict[str, Op] = {}  # new value name -> op that made it
        self.counter = 0
        self.hints: dict[str, RegisterLayout] = {}
        # Per block being built (innermost last): its op list, and the values already given
        # another layout there, so two uses that want the same layout share one rebuild or
        # conversion (a broadcast activation feeding two products is loaded once).
        self.scopes: list[tuple[list[Op], dict[tuple[str, RegisterLayout], Value]]] = []

    # ------------------------------------------------------------------ preferences

    def preferred(self, shape: tuple[int, ...], dtype: DType) -> RegisterLayout:
        if not shape:
            return UniformLayout()
        vector = max(1, self.target.vector_bytes // dtype.itemsize)
        return default_blocked(shape, self.num_warps, self.warp_size, vector)

    def fresh(self, base: str) -> str:
        self.counter += 1
        return f"{base}.cvt{self.counter}"

    # ------------------------------------------------------------------ hints

    def collect_hints(self, block: Block) -> None:
        """Walk backwards from stores: values that reach a store prefer its layout."""
        ops = list(walk_ops(block))
        for _ in range(2):  # twice, so hints cross loop boundaries
            for op in reversed(ops):
                if isinstance(op, StoreOp | AtomicAddOp):
                    shape = op.value.tile.shape
                    if shape:
                        dtype = op.tensor.type.dtype  # type: ignore[union-attr]
                        self.hints.setdefault(op.value.name, self.preferred(shape, dtype))
                elif isinstance(op, ElementwiseOp | CastOp) and op.result.name in self.hints:
                    for a in op.operands():
                        if a.type.shape == op.result.tile.shape:  # type: ignore[union-attr]
                            self.hints.setdefault(a.name, self.hints[op.result.name])

    # ------------------------------------------------------------------ helpers

    def get(self, v: Value) -> Value:
        return self.env.get(v.name, v)

    def layout_of(self, v: Value) -> RegisterLayout | None:
        t = v.type
        return t.layout if isinstance(t, TileType) else None

    def typed(self, v: Value, layout: object) -> Value:
        assert isinstance(v.type, TileType)
        return Value(v.name, v.type.with_layout(layout))

    def coerce(self, v: Value, layout: RegisterLayout, out: list[Op], loc) -> Value:
        """``v`` in ``layout``: itself; rebuilt in that layout when rebuilding is cheaper
        than moving data (a ``full``/``arange``; a ``broadcast``, from its smaller source; a
        global ``load`` whose new layout still reads contiguous memory — the original, if
        now unused, is removed by dead-code elimination); or else a conversion."""
        if self.layout_of(v) == layout:
            return v
        # Only where ``out`` is the block being built: a value cached in it or an enclosing
        # block was made before this point. (Yields conformed after a body is built go
        # elsewhere and are not shared.)
        scoped = bool(self.scopes) and self.scopes[-1][0] is out
        key = (v.name, layout)
        if scoped:
            for _, made in reversed(self.scopes):
                if key in made:
                    return made[key]
        maker = self.defs.get(v.name)
        nv = self.rebuild(maker, v, layout, out, loc)
        if nv is None:
            nv = Value(self.fresh(v.name), v.type.with_layout(layout))  # type: ignore[union-attr]
            op = ConvertLayoutOp(results=(nv,), source=v, loc=loc)
            out.append(op)
            self.defs[nv.name] = op
        if scoped:
            self.scopes[-1][1][key] = nv
        return nv

    def rebuild(self, maker: Op | None, v: Value, layout: RegisterLayout, out: list[Op],
                loc) -> Value | None:
        nv = Value(self.fresh(v.name), v.type.with_layout(layout))  # type: ignore[union-attr]
        if isinstance(maker, FullOp | ArangeOp):
            op: Op = replace(maker, results=(nv,))
        elif isinstance(maker, LoadOp) and isinstance(layout, BlockedLayout) and (
            layout.rank < 2 or layout.order[0] == len(layout.base_shape) - 1
        ) and maker.mask is None:
            op = replace(maker, results=(nv,))
        elif (
            isinstance(maker, ExpandDimsOp)
            and isinstance(layout, BlockedLayout)
            and maker.source.tile.shape
            and len(layout.base_shape) > layout.rank - 1
            and self.new_dim_is_slice(layout, maker.axis)
            and self.weight(maker.source) <= 2
        ):
            # The new unit dim was a removed dim of the source: the source is the slice.
            d = layout.tile_dims[maker.axis]
            source_layout = replace(layout, unit=tuple(u for u in layout.unit if u != d),
                                    removed=tuple(sorted((*layout.removed, d))))
            src = self.coerce(self.unconverted(maker.source), source_layout, out, loc)
            op = replace(maker, source=src, results=(nv,))
        elif isinstance(maker, CastOp) and self.weight(maker.source) <= 2 and (
            self.rebuildable(maker.source)
            or maker.source.tile.dtype.bits <= v.tile.dtype.bits
        ):
            # A cast is made again from its source in the new layout, unless that moves a
            # wider source through shared memory (an f32 accumulator cast to f16): then the
            # narrow result is what gets converted.
            op = replace(maker, source=self.coerce(self.unconverted(maker.source), layout, out,
                                                   loc), results=(nv,))
        elif isinstance(maker, ElementwiseOp) and self.weight(v) <= 2:
            # Arithmetic on values that are themselves rebuilt (a scale times a constant, a
            # code minus its zero point): computing it again is cheaper than moving it.
            args = tuple(a if not a.tile.shape else
                         self.coerce(self.unconverted(a), layout, out, loc) for a in maker.args)
            op = replace(maker, args=args, results=(nv,))
        elif isinstance(maker, BroadcastOp) and isinstance(layout, BlockedLayout) and not (
            layout.removed or layout.unit
        ):
            src = self.unconverted(maker.source)
            if src.tile.shape:
                units = tuple(d for d, (a, b) in enumerate(zip(src.tile.shape, v.tile.shape,
                                                                   strict=True))
                              if a == 1 and b != 1)
                src = self.coerce(src, replace(layout, unit=units), out, loc)
            op = replace(maker, source=src, results=(nv,))
        else:
            return None
        out.append(op)
        self.defs[nv.name] = op
        return nv

    def in_element_order(self, v: Value, out: list[Op], loc) -> Value:
        """``v`` with its runs in element order: the CPU's ``dot`` reads operand rows as
        contiguous runs, so a word-interleaved operand (a packed weight tile) is rebuilt
        in the plain layout rather than read with strides."""
        lay = self.layout_of(v)
        if not isinstance(lay, BlockedLayout) or lay.interleave == 1:
            return v
        return self.coerce(v, replace(lay, interleave=1), out, loc)

    def new_dim_is_slice(self, layout: BlockedLayout, axis: int) -> bool:
        """Whether tile dim ``axis`` of ``layout`` can be the dim an ``expand_dims`` adds: a
        unit dim, or on the CPU (one thread holds every value) any dim of extent 1, such as
        the row of a ``[1, BN]`` tile whose run is word-interleaved."""
        d = layout.tile_dims[axis]
        return d in layout.unit or (not self.target.is_cuda and layout.base_shape[d] == 1)

    def emit(self, op: Op, out: list[Op]) -> None:
        out.append(op)
        for r in op.results:
            self.env[r.name] = r
            self.defs[r.name] = op

    # ------------------------------------------------------------------ the walk

    def run(self) -> TileKernel:
        self.collect_hints(self.kernel.body)
        for p in self.kernel.params:
            if isinstance(p.value.type, TileType):
                self.env[p.value.name] = self.typed(p.value, UniformLayout())
        for s in self.kernel.symbols:
            self.env[s.name] = self.typed(s, UniformLayout())
        body = self.block(self.kernel.body)
        params = tuple(replace(p, value=self.get(p.value)) for p in self.kernel.params)
        symbols = tuple(self.get(s) for s in self.kernel.symbols)
        return replace(self.kernel, params=params, symbols=symbols, body=body)

    def block(self, block: Block, arg_layouts: list[RegisterLayout] | None = None) -> Block:
        args = []
        for i, a in enumerate(block.args):
            lay = arg_layouts[i] if arg_layouts is not None else UniformLayout()
            na = self.typed(a, lay)
            self.env[a.name] = na
            args.append(na)
        out: list[Op] = []
        self.scopes.append((out, {}))
        try:
            for op in block.ops:
                self.op(op, out)
        finally:
            self.scopes.pop()
        return Block(tuple(args), tuple(out))

    def op(self, op: Op, out: list[Op]) -> None:
        loc = op.loc
        if isinstance(op, ForOp):
            self.for_op(op, out)
            return
        if isinstance(op, IfOp):
            self.if_op(op, out)
            return
        if isinstance(op, YieldOp):
            self.emit(replace(op, values=tuple(self.get(v) for v in op.values)), out)
            return

        if isinstance(op, FullOp | ArangeOp):
            r = op.result
            lay = self.hints.get(r.name) or self.preferred(r.tile.shape, r.tile.dtype)
            self.emit(replace(op, results=(self.typed(r, lay),)), out)
            return
        if not op.results and not isinstance(op, StoreOp | AtomicAddOp):
            self.emit(op, out)
            return

        if isinstance(op, ElementwiseOp):
            args = [self.get(a) for a in op.args]
            r = op.result
            if not r.tile.shape:
                self.emit(
                    replace(op, args=tuple(args), results=(self.typed(r, UniformLayout()),)), out
                )
                return
            target = self.choose(args, r)
            args = [a if not a.tile.shape else self.coerce(a, target, out, loc) for a in args]
            self.emit(replace(op, args=tuple(args), results=(self.typed(r, target),)), out)
        elif isinstance(op, CastOp):
            src = self.get(op.source)
            lay = self.layout_of(src) or UniformLayout()
            self.emit(replace(op, source=src, results=(self.typed(op.result, lay),)), out)
        elif isinstance(op, BroadcastOp):
            self.broadcast(op, out)
        elif isinstance(op, ExpandDimsOp):
            self.expand_dims(op, out)
        elif isinstance(op, ReduceOp):
            src = self.blocked_operand(self.get(op.source), out, loc)
            lay = src.tile.layout.reduce(op.axis)
            res_layout: RegisterLayout = lay if lay.rank > 0 else UniformLayout()
            self.emit(replace(op, source=src, results=(self.typed(op.result, res_layout),)), out)
        elif isinstance(op, TransposeOp):
            src = self.get(op.source)
            if src.tile.scope is MemScope.SHARED:
                self.emit(replace(op, source=src, results=(self.shared_transpose(op, src),)), out)
                return
            src = self.blocked_operand(src, out, loc, allow_sliced=False)
            lay = src.tile.layout.transpose(op.perm)
            self.emit(replace(op, source=src, results=(self.typed(op.result, lay),)), out)
        elif isinstance(op, LoadOp):
            r = op.result
            lay = self.word_interleaved(self.preferred(r.tile.shape, r.tile.dtype),
                                        r.tile.dtype)
            self.emit(
                replace(
                    op,
                    tensor=self.get(op.tensor),
                    window=self.window(op),
                    mask=self.maybe_coerce(op.mask, lay, out, loc),
                    other=self.get(op.other) if op.other is not None else None,
                    results=(self.typed(r, lay),),
                ),
                out,
            )
        elif isinstance(op, StoreOp | AtomicAddOp):
            value = self.get(op.value)
            lay = self.layout_of(value)
            dtype = op.tensor.type.dtype  # type: ignore[union-attr]
            # Atomics update element by element, so only a plain store gains from wide runs.
            whole_sectors = isinstance(op, StoreOp)
            if value.tile.shape and not self.good_for_store(lay, value.tile.shape, dtype,
                                                            whole_sectors):
                lay = self.preferred(value.tile.shape, dtype)
                value = self.coerce(value, lay, out, loc)
            self.emit(
                replace(
                    op,
                    tensor=self.get(op.tensor),
                    window=self.window(op),
                    value=value,
                    mask=self.maybe_coerce(op.mask, lay, out, loc) if lay else None,
                ),
                out,
            )
        elif isinstance(op, ToSharedOp):
            src = self.get(op.source)
            r = op.result
            shared_layout = r.tile.layout
            if shared_layout is None:
                shared_layout = row_major(r.tile.shape)
            self.emit(replace(op, source=src, results=(self.typed(r, shared_layout),)), out)
        elif isinstance(op, FromSharedOp):
            src = self.get(op.source)
            r = op.result
            lay = self.hints.get(r.name) or self.preferred(r.tile.shape, r.tile.dtype)
            self.emit(replace(op, source=src, results=(self.typed(r, lay),)), out)
        elif isinstance(op, DotOp):
            acc = self.get(op.acc)
            mma = self.mma_layout(op)
            if mma is not None:
                acc = self.coerce(acc, mma, out, loc)
                self.emit(replace(op, a=self.get(op.a), b=self.get(op.b), acc=acc,
                                  results=(self.typed(op.result, mma),)), out)
                return
            want = dot_accumulator_layout(
                acc.tile.shape,
                self.num_warps,
                self.warp_size,  # type: ignore[arg-type]
            )
            cur = self.layout_of(acc)
            if (isinstance(cur, BlockedLayout) and not cur.removed and not cur.unit
                    and cur.interleave == 1):
                want = cur  # any plain blocked accumulator works; keep the one we have
            acc = self.coerce(acc, want, out, loc)
            self.emit(
                replace(
                    op,
                    a=self.in_element_order(self.get(op.a), out, loc),
                    b=self.in_element_order(self.get(op.b), out, loc),
                    acc=acc,
                    results=(self.typed(op.result, want),),
                ),
                out,
            )
        elif isinstance(op, ConvertLayoutOp):
            src = self.get(op.source)
            lay = op.result.tile.layout
            if lay is not None and not isinstance(
                lay, BlockedLayout | UniformLayout | TVRegisterLayout
            ):
                lay = TVRegisterLayout(lay)
            if lay is None:
                lay = self.layout_of(src)
            self.emit(replace(op, source=src, results=(self.typed(op.result, lay),)), out)
        else:
            # Ops with scalar results and no layout decisions (block/thread index...).
            res = tuple(
                self.typed(r, UniformLayout()) if isinstance(r.type, TileType) else r
                for r in op.results
            )
            self.emit(replace(op, results=res), out)

    # ------------------------------------------------------------------ op rules

    def mma_layout(self, op: DotOp) -> BlockedLayout | None:
        """The tensor-core accumulator layout, when the target has an atom for these types."""
        if not self.target.is_cuda:
            return None
        atom = find_mma(op.a.tile.dtype, op.b.tile.dtype, op.acc.tile.dtype,
                        self.target.compute_capability)
        if atom is None or op.a.tile.shape[1] % atom.k:
            return None
        (m, k), (_, n) = op.a.tile.shape, op.b.tile.shape
        warpgroup_atom = find_wgmma(
            op.a.tile.dtype, op.b.tile.dtype, op.acc.tile.dtype, self.target.arch
        )
        if warpgroup_atom is not None and wgmma_tile_fits(warpgroup_atom, m, n, k,
                                                          self.num_warps):
            return wgmma_accumulator_layout((m, n), self.num_warps)
        return mma_accumulator_layout(op.acc.tile.shape, self.num_warps, atom.m, atom.n)  # type: ignore[arg-type]

    def choose(self, args: list[Value], result: Value) -> RegisterLayout:
        """The layout an elementwise op computes in: that of the operand whose layout is
        hardest to change (see :meth:`weight`); ties go to the first."""
        tiles = [a for a in args if a.tile.shape and self.layout_of(a) is not None]
        if tiles:
            best = max(tiles, key=self.weight)
            if self.weight(best) > 0:
                return self.layout_of(best)  # type: ignore[return-value]
        hint = self.hints.get(result.name)
        if hint is not None:
            return hint
        if tiles:
            return self.layout_of(tiles[0])  # type: ignore[return-value]
        return self.preferred(result.tile.shape, result.tile.dtype)

    def unconverted(self, v: Value) -> Value:
        """``v`` before the conversions inference inserted (a user's pinned one stays)."""
        maker = self.defs.get(v.name)
        while isinstance(maker, ConvertLayoutOp) and not maker.pinned:
            v = maker.source
            maker = self.defs.get(v.name)
        return v

    def weight(self, v: Value) -> int:
        """How costly it is to give ``v`` another layout: 0 for values rebuilt for free
        (``full``, ``arange``, a scalar's broadcast), 1 for other broadcasts and loop-carried
        values (which take the layout the loop body produces), 2 for loads (rebuilt, at some
        cost in coalescing) and for short chains of elementwise ops over such values (computed
        again), and 3 for other computed values, which only a conversion through shared
        memory moves."""
        maker = self.defs.get(v.name)
        if maker is None or isinstance(maker, FullOp | ArangeOp):
            return 0 if maker is not None else 1
        if isinstance(maker, BroadcastOp) and not maker.source.tile.shape:
            return 0  # a scalar spread over a tile: a register copy in any layout
        if isinstance(maker, BroadcastOp | ExpandDimsOp | ForOp):
            return 1
        if isinstance(maker, LoadOp):
            return 2
        if isinstance(maker, CastOp):
            return max(2, self.weight(maker.source))
        if isinstance(maker, ElementwiseOp) and self.rebuildable(v):
            return 2
        return 3

    def rebuildable(self, v: Value, depth: int = 0) -> bool:
        """Whether ``v`` can be made again in another layout from memory and constants alone
        (no conversion anywhere below it): fills, loads, and casts, broadcasts and short
        elementwise chains of such values. A loop's result or a product is not."""
        maker = self.defs.get(v.name)
        if not v.tile.shape:
            return True  # a scalar has no layout
        if isinstance(maker, FullOp | ArangeOp):
            return True
        if isinstance(maker, LoadOp):
            return maker.mask is None  # what rebuild() reloads
        if isinstance(maker, CastOp | BroadcastOp | ExpandDimsOp):
            return self.rebuildable(maker.source, depth)
        if isinstance(maker, ElementwiseOp) and depth < _REBUILT_CHAIN:
            return all(self.rebuildable(a, depth + 1) for a in maker.args)
        return False

    def blocked_operand(self, v: Value, out: list[Op], loc, allow_sliced: bool = True) -> Value:
        lay = self.layout_of(v)
        if isinstance(lay, BlockedLayout) and (allow_sliced or not (lay.removed or lay.unit)):
            return v
        return self.coerce(v, self.preferred(v.tile.shape, v.tile.dtype), out, loc)

    def word_interleaved(self, lay: RegisterLayout, dtype: DType) -> RegisterLayout:
        """On the CPU, a tile of packed codes whose width divides 32 holds its run in the
        order of the bits of 32-bit words (``BlockedLayout.interleave``): each code is then
        one constant shift from a word loaded as a vector lane, with no unpacking to bytes.
        A run of fewer than 32 words, a tile of several runs, or a GPU, keeps the element
        order."""
        if self.target.is_cuda or not isinstance(lay, BlockedLayout) or not lay.shape:
            return lay
        if not is_packed(dtype) or 32 % dtype.bits:
            return lay
        per_word = 32 // dtype.bits
        run = lay.spt[lay.order[0]]
        if lay.order[0] != len(lay.base_shape) - 1 or run % per_word:
            return lay
        if run < _MIN_INTERLEAVED_WORDS * per_word:
            # LLVM unrolls a shorter loop over the words before it vectorizes loops, and
            # then vectorizes across the codes of a word instead (gathers, per-lane shifts).
            return lay
        if lay.num_values != run:
            # Several runs (a slab of rows): once a row's loops are straight-line vector
            # code, LLVM vectorizes the loop over rows, with gathers. Rows stay in order.
            return lay
        return replace(lay, interleave=per_word)

    def good_for_store(self, lay: RegisterLayout | None, shape: tuple[int, ...],
                       dtype: DType, whole_sectors: bool = True) -> bool:
        """Keep a layout for a global store unless its lanes run across the contiguous dim, or
        each of a warp's row segments is narrower than a memory sector (32 bytes) where the
        coalesced layout's are wider: a ``dot`` accumulator's quad of lanes holds 16 bytes of
        an f16 row, so storing it directly writes every sector half full, with twice the
        store instructions; a trip through shared memory costs less than that on any tile
        big enough to matter."""
        if isinstance(lay, UniformLayout):
            return True
        if not isinstance(lay, BlockedLayout):
            return False
        if lay.removed or lay.unit:
            return True
        last = len(lay.base_shape) - 1
        if lay.order[0] != last:
            return False
        if self.warp_size == 1 or not whole_sectors:
            return True
        segment = _row_segment_bytes(lay, dtype)
        if segment >= SECTOR_BYTES:
            return True
        better = self.preferred(shape, dtype)
        return not (isinstance(better, BlockedLayout)
                    and _row_segment_bytes(better, dtype) > segment)

    def maybe_coerce(self, v: Value | None, lay, out, loc) -> Value | None:
        if v is None:
            return None
        v = self.get(v)
        if not v.tile.shape:
            return v
        return self.coerce(v, lay, out, loc)

    def window(self, op: LoadOp | StoreOp | AtomicAddOp):
        return replace(op.window, starts=tuple(self.get(s) for s in op.window.starts))

    def broadcast(self, op: BroadcastOp, out: list[Op]) -> None:
        src = self.get(op.source)
        r = op.result
        shape = r.tile.shape
        if not src.tile.shape:
            lay = self.hints.get(r.name) or self.preferred(shape, r.tile.dtype)
            self.emit(replace(op, source=src, results=(self.typed(r, lay),)), out)
            return
        cur = self.layout_of(src)
        if isinstance(cur, BlockedLayout):
            grown = cur.broadcast(shape)
            if grown is not None:
                self.emit(replace(op, source=src, results=(self.typed(r, grown),)), out)
                return
        lay = self.hints.get(r.name) or self.preferred(shape, r.tile.dtype)
        assert isinstance(lay, BlockedLayout)
        unit_dims = tuple(
            d
            for d, (a, b) in enumerate(zip(src.tile.shape, shape, strict=True))
            if a == 1 and b != 1
        )
        src = self.coerce(src, replace(lay, unit=unit_dims), out, op.loc)
        self.emit(replace(op, source=src, results=(self.typed(r, lay),)), out)

    def expand_dims(self, op: ExpandDimsOp, out: list[Op]) -> None:
        src = self.get(op.source)
        r = op.result
        cur = self.layout_of(src)
        if isinstance(cur, BlockedLayout):
            lay = cur.expand(op.axis)
            if lay is None:
                lay = _insert_unit_dim(cur, op.axis) if not (cur.removed or cur.unit) else None
            if lay is not None:
                self.emit(replace(op, source=src, results=(self.typed(r, lay),)), out)
                return
        lay = self.preferred(r.tile.shape, r.tile.dtype)
        if not src.tile.shape:
            self.emit(replace(op, source=src, results=(self.typed(r, lay),)), out)
            return
        src = self.coerce(src, self.preferred(src.tile.shape, src.tile.dtype), out, op.loc)
        lay = _insert_unit_dim(src.tile.layout, op.axis)
        self.emit(replace(op, source=src, results=(self.typed(r, lay),)), out)

    def shared_transpose(self, op: TransposeOp, src: Value) -> Value:
        from tegula.ir.layout import Layout

        lay = src.tile.layout
        perm = op.perm
        if isinstance(lay, Layout):
            shape = tuple(lay.shape[p] for p in perm)  # type: ignore[index]
            stride = tuple(lay.stride[p] for p in perm)  # type: ignore[index]
            new = Layout(shape, stride)
        else:  # a swizzled layout: permute its inner layout, keep the swizzle after it
            inner = lay.layout
            new = replace(
                lay,
                layout=Layout(
                    tuple(inner.shape[p] for p in perm), tuple(inner.stride[p] for p in perm)
                ),
            )
        return self.typed(op.result, new)

    # ------------------------------------------------------------------ control flow

    def for_op(self, op: ForOp, out: list[Op]) -> None:
        inits = [self.get(v) for v in op.inits]
        arg_layouts = [self.layout_of(v) or UniformLayout() for v in inits]
        for _attempt in range(3):
            saved_env, saved_defs, saved_counter = dict(self.env), dict(self.defs), self.counter
            body = self.block(op.body, [UniformLayout(), *arg_layouts])
            yields = body.terminator.values if body.terminator else ()
            changed = False
            for i, y in enumerate(yields):
                ylay = self.layout_of(y)
                if ylay != arg_layouts[i] and isinstance(
                    self.defs.get(inits[i].name), FullOp | ArangeOp
                ):
                    arg_layouts[i] = ylay  # type: ignore[assignment]
                    changed = True
            if not changed:
                break
            self.env, self.defs, self.counter = saved_env, saved_defs, saved_counter
        # Conform the yields to the loop-carried layouts, and the inits too.
        body_ops = list(body.ops[:-1]) if body.terminator else list(body.ops)
        new_yields = [
            self.coerce(y, arg_layouts[i], body_ops, op.loc) for i, y in enumerate(yields)
        ]
        if body.terminator:
            body_ops.append(replace(body.terminator, values=tuple(new_yields)))
        body = Block(body.args, tuple(body_ops))
        inits = [self.coerce(v, arg_layouts[i], out, op.loc) for i, v in enumerate(inits)]
        results = tuple(self.typed(r, arg_layouts[i]) for i, r in enumerate(op.results))
        self.emit(
            replace(
                op,
                start=self.get(op.start),
                stop=self.get(op.stop),
                step=self.get(op.step),
                inits=tuple(inits),
                body=body,
                results=results,
            ),
            out,
        )

    def if_op(self, op: IfOp, out: list[Op]) -> None:
        cond = self.get(op.cond)
        branches = [self.block(op.then), self.block(op.otherwise)]
        yields = [b.terminator.values for b in branches if b.terminator]
        # Each result takes the layout of the branch value that is costlier to move (a fill
        # in one branch takes the layout of what the other computes); the other converts.
        layouts = [
            self.layout_of(max(candidates, key=self.weight))
            for candidates in zip(*yields, strict=True)
        ]
        for b, branch in enumerate(branches):
            if branch.terminator:
                ops = list(branch.ops[:-1])
                ys = [self.coerce(y, layouts[i], ops, op.loc)
                      for i, y in enumerate(branch.terminator.values)]
                ops.append(replace(branch.terminator, values=tuple(ys)))
                branches[b] = Block(branch.args, tuple(ops))
        results = tuple(self.typed(r, layouts[i]) for i, r in enumerate(op.results))
        self.emit(replace(op, cond=cond, then=branches[0], otherwise=branches[1],
                          results=results), out)


def _row_segment_bytes(lay: BlockedLayout, dtype: DType) -> int:
    """Bytes of one row that a warp's store covers contiguously: a thread's run along the
    contiguous dim times the lanes side by side along it."""
    last = len(lay.base_shape) - 1
    return lay.spt[last] * lay.tpw[last] * dtype.itemsize


def _insert_unit_dim(lay: BlockedLayout, axis: int) -> BlockedLayout:
    """``lay`` with a new base dim of extent 1 at ``axis`` (held whole by every thread)."""

    def ins(t: tuple[int, ...], value: int) -> tuple[int, ...]:
        return (*t[:axis], value, *t[axis:])

    order = (*(o + 1 if o >= axis else o for o in lay.order), axis)
    return BlockedLayout(
        ins(lay.base_shape, 1), ins(lay.spt, 1), ins(lay.tpw, 1), ins(lay.wpc, 1), order
    )


@register_pass("infer-layouts", "give every register tile a layout; insert conversions")
def infer_layouts(kernel: TileKernel, ctx: PassContext) -> TileKernel:
    return _Inference(kernel, ctx.target).run()
