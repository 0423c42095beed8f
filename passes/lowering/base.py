"""The lowering's state and the machinery every part shares: emitting statements, naming,
local and shared buffers, loops over a layout's value positions, and thread coordinates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tegula.ir import loop as L
from tegula.ir.distributed import BlockedLayout
from tegula.ir.dtypes import DType, i64, u8
from tegula.ir.target import Target
from tegula.ir.tile import (
    Block,
    ForOp,
    Op,
    TileKernel,
    Value,
    walk_ops,
)

from ..lowbit_codes import (
    storage_dtype,
)
from .values import (
    BIN,
    Lowered,
    Pos,
    RegTile,
    Scalar,
    add,
    c64,
    land,
    mul,
    value_index,
)


@dataclass(frozen=True)
class SharedAlloc:
    """A named shared buffer, placed once the scratch area is sized: a shared tile lives
    anywhere in the kernel, so it follows the whole scratch area; a pipeline ring lives only
    inside its loop, so it only follows the scratch that loop bodies use (``ring``)."""

    name: str
    nbytes: int
    align: int = 16
    ring: bool = False


@dataclass
class _Frame:
    stmts: list[L.Stmt] = field(default_factory=list)
    last_comment: str = ""


class LoweringBase:
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
        self.shared_allocs: list[SharedAlloc] = []
        # Scratch bytes used inside pipelined loops, where their rings are live too.
        self.pipeline_scratch_bytes = 0
        self.in_pipeline = 0
        # Set while lowering loads whose whole windows were tested inside their tensors
        # (``windows_inside``): their elements skip their own bounds tests.
        self.window_inside = False
        self.smem_align = 16  # of the dynamic shared memory's start
        self.tensor_maps: list[L.TensorMap] = []  # TMA maps the kernel takes, in ABI order
        # A pipelined loop's refill of its rings, left for the first of its (planned) dots
        # that runs on wgmma to emit once its products are issued.
        self.deferred_issue: tuple[frozenset[int], Callable[[], None]] | None = None
        # What a pipelined loop does once the products of its (one, planned) wgmma dot that
        # read a ring slot are known complete: dot_wgmma calls it after its wait.
        self.products_done: tuple[frozenset[int], Callable[[], None]] | None = None
        # The wgmma dot (by id) whose products may still run when its iteration ends.
        self.wgmma_left_running: int | None = None
        # Inside a pipelined loop's body: the iteration's parity (which half of a doubled
        # staging area it writes).
        self.pipeline_parity: L.Expr | None = None
        self.thread_offsets: dict[tuple, dict[int, L.Expr]] = {}
        self.uses = _use_counts(kernel.body)
        self.current_op: Op | None = None  # the op being lowered (lower.py's dispatch sets it)
        self.loop_kind = L.LoopKind.UNROLL if self.gpu else L.LoopKind.VECTORIZE
        self.tid = L.Var("tid", i64)
        # A warp-specialized pipeline adds producer warps after the kernel's own warps
        # (``producer_threads``: one warp, or a warpgroup whose registers go to the others
        # by ``producer_split``, ``(producer, consumer)`` registers a thread); once they have
        # left, block barriers are named ones of the kernel's own threads
        # (``barrier_threads``).
        self.producer_threads = 0
        self.producer_split: tuple[int, int] | None = None
        self.barrier_threads: int | None = None
        self.notes: list[str] = []  # what the kernel's dump should say about its lowering

    # ------------------------------------------------------------------ emission helpers

    def emit(self, *stmts: L.Stmt) -> None:
        self.frames[-1].stmts.extend(stmts)

    def barrier(self) -> None:
        """A barrier of every thread still in the kernel."""
        self.emit(L.Barrier(self.barrier_threads))

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

    def tensor_map(self, tensor: L.Buffer, box: tuple[int, ...], swizzle_bytes: int,
                   dims: tuple[tuple[int, int, int], ...] = ()) -> L.TensorMap:
        """The kernel's TMA map of ``tensor`` (or of a view of it, ``dims``) with this box
        and swizzle (one per kind)."""
        for m in self.tensor_maps:
            if (m.tensor, m.box, m.swizzle_bytes, m.dims) == (tensor, box, swizzle_bytes, dims):
                return m
        buffer = L.Buffer(self.unique(f"{tensor.name}_map"), u8, L.Scope.PARAM, 128)
        found = L.TensorMap(buffer, tensor, box, swizzle_bytes, dims)
        self.tensor_maps.append(found)
        return found

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
        if self.in_pipeline:
            self.pipeline_scratch_bytes = max(self.pipeline_scratch_bytes, nbytes)
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
            if part == "s" and d == lay.interleaved_dim:
                self.interleaved_run(lay, d, pos, lambda: go(i + 1))
                return

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

    def for_runs(self, lay: BlockedLayout, run: int, body: Callable[[Pos], None]) -> None:
        """Call ``body`` at the first position of every ``run`` values a thread holds side by
        side along ``lay``'s fastest live dim (``run`` divides that dim's values per
        thread): where one vector access moves them."""
        fast = next(d for d in lay.order if d in lay.live_dims)

        def chunks(pos: Pos) -> None:
            rep, _ = pos[fast]
            self.loop(f"v{fast}", lay.spt[fast] // run,
                      lambda chunk: body({**pos, fast: (rep, mul(chunk, c64(run)))}))

        self.for_positions(lay, chunks, innermost_run=True)

    def interleaved_run(
        self, lay: BlockedLayout, d: int, pos: Pos, then: Callable[[], None]
    ) -> None:
        """The run along ``d`` of an interleaved layout as two loops: the code ``i`` of each
        word outside, the words ``l`` inside (consecutive values, the loop LLVM vectorizes),
        at element ``l * n + i``."""
        n = lay.interleave

        def code(i: L.Expr) -> None:
            def word(w: L.Expr) -> None:
                pos[d] = (pos[d][0], add(mul(w, c64(n)), i))
                then()

            self.loop(f"w{d}", lay.spt[d] // n, word, self.loop_kind)

        self.loop(f"i{d}", n, code, L.LoopKind.SERIAL)

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

    def probe_position(self, lay: BlockedLayout) -> Pos:
        """A symbolic value position of ``lay``: one fresh variable per part."""
        return {
            d: (L.Var(f"probe_rep{d}", i64), L.Var(f"probe_s{d}", i64))
            for d in lay.order
            if d in lay.live_dims
        }

    def probe_loads(self, tile: RegTile, pos: Pos, buffer: L.Buffer) -> list[L.Expr] | None:
        """The indices at which ``tile``'s value at ``pos`` reads ``buffer``; None when
        building that value would emit statements (it is then not a plain expression)."""
        self.nest()
        expr = tile.at(pos)
        emitted = self.unnest()
        if not isinstance(emitted, L.Seq) or emitted.body:
            return None
        return [e.index for e in L.walk_exprs(expr) if isinstance(e, L.Load) and e.buffer == buffer]

    def read_after(self, op: Op) -> set[str]:
        """The values read after ``op``: by an op that follows ``op`` in its block, or by one
        in another block than ``op``'s own and those nested in it (conservatively, also one
        that runs before ``op`` there)."""
        nested = {id(x) for blk in op.blocks() for x in walk_ops(blk)}
        blocks = [self.kernel.body, *(b for o in walk_ops(self.kernel.body) for b in o.blocks())]
        names: set[str] = set()
        for blk in blocks:
            position = next((i for i, o in enumerate(blk.ops) if o is op), None)
            later = blk.ops if position is None else blk.ops[position + 1:]
            names.update(v.name for o in later if o is not op and id(o) not in nested
                         for v in o.operands())
        return names

    def materialize(self, name: str, t: RegTile, into: L.Buffer | None = None) -> RegTile:
        """``t`` held in registers: a new buffer, or ``into``, written position by position."""
        if t.in_buffer:
            return t
        buf = into if into is not None else self.local(name, t.dtype, t.layout.num_values)
        self.for_positions(
            t.layout, lambda pos: self.emit(L.Store(buf, value_index(t.layout, pos), t.at(pos)))
        )
        return RegTile(t.dtype, t.layout, buffer=buf)

    def define(self, v: Value, t: RegTile, lazy_ok: bool = True) -> None:
        """Bind a tile result; keep it as an expression if it is used at most once."""
        if t.element is not None and (not lazy_ok or self.uses.get(v.name, 0) > 1):
            t = self.materialize(v.name, t, into=self.dead_operand_buffer(t))
        self.vals[v.name] = t

    def buffer_read_after(self, buffer: L.Buffer, op: Op) -> bool:
        """Whether a value read after ``op`` comes from ``buffer``: held there, or computed
        from it where it is used (so overwriting the buffer in ``op`` would change it)."""
        later = self.read_after(op)
        return any(isinstance(x, RegTile) and name in later and self.reads_buffer(x, buffer)
                   for name, x in self.vals.items())

    def reads_buffer(self, tile: RegTile, buffer: L.Buffer) -> bool:
        """Whether ``tile``'s values come from ``buffer``: held there, or an expression that
        loads from it (or one that cannot be looked into)."""
        if tile.buffer is buffer:
            return True
        if tile.element is None:
            return False
        loads = self.probe_loads(tile, self.probe_position(tile.layout), buffer)
        return loads is None or bool(loads)

    def dead_operand_buffer(self, t: RegTile) -> L.Buffer | None:
        """On the CPU, the buffer of an operand of the op being lowered that ``t`` may
        overwrite: of ``t``'s layout and type, read by ``t`` only at the position it writes,
        and read by no value used after the op, neither one held there nor one computed from
        it where it is used (``part = part + a * q`` in a loop updates the carried ``part``
        where it is, instead of a copy and a copy back). On CUDA a copy
        between register arrays is renaming, so there is nothing to save."""
        op = self.current_op
        if self.gpu or op is None:
            return None
        probe = None
        for operand in op.operands():
            held = self.vals.get(operand.name)
            if not (isinstance(held, RegTile) and held.buffer is not None
                    and held.element is None and held.layout == t.layout
                    and held.dtype == t.dtype):
                continue
            if self.buffer_read_after(held.buffer, op):
                continue
            probe = probe or self.probe_position(t.layout)
            reads = self.probe_loads(t, probe, held.buffer)
            if reads is not None and all(i == value_index(t.layout, probe) for i in reads):
                return held.buffer
        return None


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
