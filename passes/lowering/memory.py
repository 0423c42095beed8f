"""Global memory: windows of tensors loaded into and stored from register tiles, vectorized
where runs are contiguous and aligned, bounds-split on the CPU, packed for low-bit types."""

from __future__ import annotations

import math
from collections.abc import Callable

from tegula.ir import loop as L
from tegula.ir.distributed import BlockedLayout
from tegula.ir.dtypes import DType, i64, u8, u32, u64
from tegula.ir.tile import (
    AtomicAddOp,
    LoadOp,
    StoreOp,
)

from ..lowbit_codes import (
    code_of,
    extract_constant,
    extract_dynamic,
    is_code_type,
    storage_dtype,
    unit_of,
)
from .base import LoweringBase
from .values import (
    BIN,
    LoweringError,
    Pos,
    RegTile,
    Scalar,
    Tensor,
    _clamp,
    _packed_pitch,
    add,
    c64,
    cast,
    land,
    mul,
    value_index,
)


class GlobalMemory(LoweringBase):
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
            pred = land(pred, self.inside_dim(idx, tensor.shape[d]))
        return offset, pred

    def inside_dim(self, idx: L.Expr, extent: L.Expr) -> L.Expr | None:
        """``0 <= idx < extent``, or None inside a window already tested whole
        (``windows_inside``)."""
        if self.window_inside:
            return None
        return land(L.Binary(BIN.GE, idx, c64(0)), L.Binary(BIN.LT, idx, extent))

    def window_test(self, op: LoadOp, tensor: Tensor) -> L.Expr | None:
        """Whether all of ``op``'s window lies inside ``tensor``: per dim ``0 <= start`` and
        ``start + size <= extent``, one test for the block."""
        starts, _ = self.window_geometry(tensor, op, None)
        test: L.Expr | None = None
        for start, size, extent in zip(starts, op.window.sizes, tensor.shape, strict=True):
            end = add(start, c64(size))
            test = land(test, land(L.Binary(BIN.GE, start, c64(0)), L.Binary(BIN.LE, end, extent)))
        return test

    def row_alignment_facts(self, tensor: Tensor) -> dict[L.Var, int]:
        """What size and stride symbols must be multiples of for every row of ``tensor`` to
        start on a ``vector_bytes`` boundary (its base does: CUDA calls refuse any other).
        Sufficient, not necessary: a packed row of ``K`` codes asks for ``K * bits`` a
        multiple of ``8 * vector_bytes``. Nothing where no symbol decides it (constant
        rows, 1-d tensors) or on the CPU, whose vector accesses assume element alignment
        only."""
        if not self.gpu or len(tensor.shape) < 2:
            return {}
        vector = self.target.vector_bytes
        if tensor.packed_bits:
            # Byte strides of whole rows of codes: ceil(K * bits / 8) for the last dim.
            checks = [(tensor.shape[-1], 8 * vector // math.gcd(tensor.packed_bits, 8 * vector))]
        else:
            itemsize = tensor.buffer.dtype.itemsize
            checks = [(stride, vector // math.gcd(vector, itemsize))
                      for stride in tensor.strides[:-1]]
        return {expr: multiple for expr, multiple in checks
                if isinstance(expr, L.Var) and multiple > 1}

    def rows_aligned(self, loads: list[LoadOp]) -> L.Expr | None:
        """One test that the tensors ``loads`` read runs of (along their rows: a load of one
        element a row needs no alignment) have rows on vector boundaries
        (:meth:`row_alignment_facts`), one term per symbol. Where it holds, ``simplify``
        knows those symbols' divisibility and the vector accesses' own alignment tests
        fold (``(row * K + k) % 8 == 0`` for rows of f16)."""
        wanted: dict[L.Var, int] = {}
        for op in loads:
            tensor = self.vals[op.tensor.name]
            if not isinstance(tensor, Tensor) or op.window.sizes[-1] <= 1:
                continue
            for var, multiple in self.row_alignment_facts(tensor).items():
                wanted[var] = math.lcm(wanted.get(var, 1), multiple)
        test: L.Expr | None = None
        for var, multiple in wanted.items():
            test = land(test, L.Binary(BIN.EQ, L.Binary(BIN.MOD, var, c64(multiple)), c64(0)))
        return test

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

    def packed_load(self, op: LoadOp, tensor: Tensor, starts, axes, fill: L.Const) -> None:
        """A window of a packed tensor into a tile of codes.

        A thread's run of contiguous elements that starts on a byte boundary, lies inside
        the tensor and covers whole bytes is read as those bytes; anything else element by
        element, each code from the byte (or two) that holds it, under its bounds test.

        On the CPU the runs' bytes are split into codes with constant shifts, unit by unit
        (``unit_of``), one code per ``u8`` register. On CUDA the tile stays packed: each
        run's bytes land in registers in one vector access where aligned (the element
        path packs its codes into the same bytes), every run's access issued before any
        code is used, and each use extracts its code where it needs it. A thread then has
        all its accesses in flight at once, and holds a 4-bit tile in an eighth of the
        registers that one code per register takes.
        """
        r = op.result
        bits = tensor.packed_bits
        if r.tile.is_scalar:
            tmp = self.local(r.name, r.tile.dtype, 1)
            self.packed_element(tensor, starts, axes, [], None, tmp, c64(0), fill)
            self.vals[r.name] = Scalar(self.let(r.name, L.Load(tmp, c64(0))))
            return
        lay: BlockedLayout = r.tile.layout
        mask = self.tile(op.mask) if op.mask is not None else None
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

        def element(pos: Pos, dst: L.Buffer, vidx: L.Expr) -> None:
            pred = None if mask is None else mask.at(pos)
            self.packed_element(tensor, starts, axes, self.coords(lay, pos), pred, dst, vidx, fill)

        if (fast is not None and fast == lay.interleaved_dim and mask is None
                and axes[-1] == lay.tile_dims.index(fast)):
            self.interleaved_load(op, tensor, starts, axes, lay, fast, fill)
            return
        if run == 1 or fast is None:
            buf = self.local(r.name, r.tile.dtype, lay.num_values)
            self.vals[r.name] = RegTile(r.tile.dtype, lay, buffer=buf)
            self.for_positions(lay, lambda pos: element(pos, buf, value_index(lay, pos)))
            return
        run_bytes = run * bits // 8
        if self.gpu:
            staged = self.local(f"{r.name}_packed", u8, -(-lay.num_values // run) * run_bytes)
            self.vals[r.name] = RegTile(
                r.tile.dtype,
                lay,
                buffer=staged,
                element=lambda pos: _packed_code(staged, value_index(lay, pos), run, bits),
            )
        else:
            codes = self.local(r.name, r.tile.dtype, lay.num_values)
            self.vals[r.name] = RegTile(r.tile.dtype, lay, buffer=codes)

        def runs(pos: Pos) -> None:
            rep_f, _ = pos[fast]
            self.loop(f"v{fast}", lay.spt[fast] // run, lambda chunk: one_run(pos, rep_f, chunk))

        def one_run(pos: Pos, rep_f: L.Expr, chunk: L.Expr) -> None:
            first = dict(pos)
            first[fast] = (rep_f, mul(chunk, c64(run)))
            last = dict(pos)
            last[fast] = (rep_f, add(mul(chunk, c64(run)), c64(run - 1)))
            row, col, ok_first = self.packed_address(tensor, starts, axes, self.coords(lay, first))
            _, _, ok_last = self.packed_address(tensor, starts, axes, self.coords(lay, last))
            whole_bytes = L.Binary(BIN.EQ, L.Binary(BIN.MOD, col, c64(unit)), c64(0))
            vidx0 = value_index(lay, first)
            start = self.let(
                "run_byte", add(row, mul(L.Binary(BIN.FLOORDIV, col, c64(unit)), c64(unit_bytes)))
            )

            def at(e: L.Expr) -> Pos:
                p = dict(pos)
                p[fast] = (rep_f, add(mul(chunk, c64(run)), e))
                return p

            self.nest()
            if self.gpu:
                slot = mul(L.Binary(BIN.FLOORDIV, vidx0, c64(run)), c64(run_bytes))
                self.stage_bytes(tensor, start, run_bytes, staged, slot)
                fast_path = self.unnest()
                self.nest()
                self.loop(
                    "unit",
                    run // unit,
                    lambda u: self.pack_unit(staged, slot, u, at, element, bits),
                )
            else:
                def split_unit(u: L.Expr) -> None:
                    for e in range(unit):
                        code = extract_constant(
                            lambda i: L.Load(
                                tensor.buffer, add(start, add(mul(u, c64(unit_bytes)), c64(i)))
                            ),
                            bits,
                            e,
                        )
                        vidx = add(vidx0, add(mul(u, c64(unit)), c64(e)))
                        self.emit(L.Store(codes, vidx, code))

                self.loop("unit", run // unit, split_unit, self.loop_kind)
                fast_path = self.unnest()
                self.nest()
                self.loop(
                    "e",
                    run,
                    lambda e: element(at(e), codes, add(vidx0, e)),
                    L.LoopKind.SERIAL,
                )
            slow_path = self.unnest()
            cond = land(land(ok_first, ok_last), whole_bytes)
            self.emit(L.If(cond, fast_path, slow_path) if cond is not None else fast_path)

        self.for_positions(lay, runs, innermost_run=True)

    def interleaved_run_access(
        self,
        tensor: Tensor,
        starts,
        axes,
        lay: BlockedLayout,
        fast: int,
        pos: Pos,
        unchecked: Callable[[Pos], None],
        checked: Callable[[Pos], None],
    ) -> None:
        """One run of a word-interleaved tile (``BlockedLayout.interleave``, the CPU) to or
        from a tensor of whole elements: its elements are not in register order, so the run
        is no vector access, but one bounds test for the whole run spares the per-element
        tests where it lies inside the tensor (a group's scales, the sums stored at the end)."""
        first = dict(pos)
        first[fast] = (pos[fast][0], c64(0))
        last = dict(pos)
        last[fast] = (pos[fast][0], c64(lay.spt[fast] - 1))
        _, ok_first = self.element_address(tensor, starts, axes, self.coords(lay, first))
        _, ok_last = self.element_address(tensor, starts, axes, self.coords(lay, last))
        inside = land(ok_first, ok_last)

        def visit(access: Callable[[Pos], None]) -> L.Stmt:
            p = dict(pos)
            self.nest()
            self.interleaved_run(lay, fast, p, lambda: access(dict(p)))
            return self.unnest()

        fast_path = visit(unchecked)
        self.emit(L.If(inside, fast_path, visit(checked)) if inside is not None else fast_path)

    def interleaved_load(
        self, op: LoadOp, tensor: Tensor, starts, axes, lay: BlockedLayout, fast: int,
        fill: L.Const,
    ) -> None:
        """A packed window into a word-interleaved tile (the CPU; ``BlockedLayout.interleave``).

        Each run along the fast dim is staged as the 32-bit words the tensor packs it in:
        where the run lies inside the tensor and starts on a byte boundary, one word per four
        bytes (a loop LLVM turns into vector loads); otherwise word by word from codes read
        element by element under their bounds tests (``fill`` outside). A value is then its
        word shifted by a constant and masked, so a consumer that walks the words as vector
        lanes decodes every code of a lane with one shift.

        The edge path packs its words into a buffer of their own and copies them over in
        one loop like the in-bounds one: with every access to the staged words a whole-run
        vector copy, LLVM replaces the staging by a choice of where to read the words from
        (the tensor's row or the edge words), and the consumer loads them straight into
        registers. Staged through memory, each row's words were read back right after the
        store that waits on their load, which cost a sixth of the time with cold weights."""
        r = op.result
        bits, n = tensor.packed_bits, lay.interleave
        words = lay.spt[fast] // n
        staged = self.local(f"{r.name}_words", u32, lay.num_values // n)

        def element(pos: Pos, dst: L.Buffer, vidx: L.Expr) -> None:
            self.packed_element(tensor, starts, axes, self.coords(lay, pos), None, dst, vidx, fill)

        def run(pos: Pos) -> None:
            first = dict(pos)
            first[fast] = (pos[fast][0], c64(0))
            last = dict(pos)
            last[fast] = (pos[fast][0], c64(lay.spt[fast] - 1))
            row, col, ok_first = self.packed_address(tensor, starts, axes, self.coords(lay, first))
            _, _, ok_last = self.packed_address(tensor, starts, axes, self.coords(lay, last))
            whole_bytes = L.Binary(BIN.EQ, L.Binary(BIN.MOD, col, c64(8 // bits)), c64(0))
            start = self.let("run_byte", add(row, L.Binary(BIN.FLOORDIV, mul(col, c64(bits)),
                                                           c64(8))))
            slot = L.Binary(BIN.FLOORDIV, value_index(lay, first), c64(n))

            def word_from_memory(w: L.Expr) -> None:
                at = add(start, mul(w, c64(4)))
                self.emit(L.Store(staged, add(slot, w), _little_endian_word(tensor.buffer, at)))

            edge_words = self.local(f"{r.name}_edge", u32, words)

            def word_from_codes(w: L.Expr) -> None:
                codes = self.local("codes", u8, n)
                word: L.Expr = L.Const(0, u32)
                for i in range(n):
                    p = dict(pos)
                    p[fast] = (pos[fast][0], add(mul(w, c64(n)), c64(i)))
                    element(p, codes, c64(i))
                    code = L.Binary(BIN.SHL, L.Cast(u32, L.Load(codes, c64(i))),
                                    L.Const(i * bits, u32))
                    word = L.Binary(BIN.BITOR, word, code)
                self.emit(L.Store(edge_words, w, word))

            def edge_word(w: L.Expr) -> None:
                self.emit(L.Store(staged, add(slot, w), L.Load(edge_words, w)))

            self.nest()
            self.loop("word", words, word_from_memory, self.loop_kind)
            fast_path = self.unnest()
            self.nest()
            self.loop("word", words, word_from_codes, L.LoopKind.SERIAL)
            self.loop("word", words, edge_word, self.loop_kind)
            slow_path = self.unnest()
            cond = land(land(ok_first, ok_last), whole_bytes)
            self.emit(L.If(cond, fast_path, slow_path) if cond is not None else fast_path)

        def code(pos: Pos) -> L.Expr:
            first = dict(pos)
            first[fast] = (pos[fast][0], c64(0))
            s = pos[fast][1]
            word_index = add(L.Binary(BIN.FLOORDIV, value_index(lay, first), c64(n)),
                             L.Binary(BIN.FLOORDIV, s, c64(n)))
            shift = mul(L.Binary(BIN.MOD, s, c64(n)), c64(bits))
            word = L.Binary(BIN.SHR, L.Load(staged, word_index), L.Cast(u32, shift))
            return L.Cast(u8, L.Binary(BIN.BITAND, word, L.Const((1 << bits) - 1, u32)))

        self.for_positions(lay, run, innermost_run=True)
        self.vals[r.name] = RegTile(r.tile.dtype, lay, buffer=staged, element=code)

    def pack_unit(
        self,
        staged: L.Buffer,
        slot: L.Expr,
        u: L.Expr,
        at: Callable[[L.Expr], Pos],
        element: Callable[[Pos, L.Buffer, L.Expr], None],
        bits: int,
    ) -> None:
        """Read the codes of unit ``u`` of a run element by element and pack them into its
        bytes of ``staged``, as the tensor packs them (the first code in the low bits)."""
        unit, unit_bytes = unit_of(bits)
        codes = self.local("codes", u8, unit)
        word_type = u32 if unit * bits <= 32 else u64
        word: L.Expr | None = None
        for e in range(unit):
            element(at(add(mul(u, c64(unit)), c64(e))), codes, c64(e))
            code = L.Cast(word_type, L.Load(codes, c64(e)))
            if e:
                code = L.Binary(BIN.SHL, code, L.Const(e * bits, word_type))
            word = code if word is None else L.Binary(BIN.BITOR, word, code)
        assert word is not None
        packed = self.let("packed_unit", word)
        base = add(slot, mul(u, c64(unit_bytes)))
        for i in range(unit_bytes):
            byte = packed if i == 0 else L.Binary(BIN.SHR, packed, L.Const(8 * i, word_type))
            self.emit(L.Store(staged, add(base, c64(i)), L.Cast(u8, byte)))

    def stage_bytes(
        self, tensor: Tensor, start: L.Expr, count: int, staged: L.Buffer, slot: L.Expr
    ) -> None:
        """Copy the ``count`` bytes at ``start`` to ``staged[slot:]``: in accesses of the
        largest vector width that divides ``count`` (one access where ``count`` is a width;
        five 2-byte ones for the 10 bytes of sixteen 5-bit codes) where ``start`` is aligned
        to it, else byte by byte."""

        def bytewise() -> None:
            for i in range(count):
                self.emit(
                    L.Store(staged, add(slot, c64(i)), L.Load(tensor.buffer, add(start, c64(i))))
                )

        width = math.gcd(count, 16)
        if width == 1:
            bytewise()
            return
        aligned = L.Binary(BIN.EQ, L.Binary(BIN.MOD, start, c64(width)), c64(0))
        self.nest()
        for i in range(0, count, width):
            at = c64(i)
            self.emit(L.Copy(staged, add(slot, at), tensor.buffer, add(start, at), width,
                             aligned=True))
        vector = self.unnest()
        self.nest()
        bytewise()
        self.emit(L.If(aligned, vector, self.unnest()))

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
            pred = land(pred, self.inside_dim(idx, tensor.shape[d]))
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
            pitch = (
                tensor.strides[-2]
                if len(tensor.shape) > 1
                else _packed_pitch(tensor.shape[-1], bits)
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
        converted = RegTile(dt, lay, element=lambda pos: cast(t.at(pos), dt))
        if self.gpu and not atomic:
            # A vector store copies from a buffer: computed producers run here, once.
            src = (
                t
                if t.in_buffer and t.dtype is dt
                else self.materialize(op.value.name, converted)
            )
        else:
            src = converted  # the CPU and atomics read the producers element by element
        mask = self.tile(op.mask) if op.mask is not None else None
        run = 1 if atomic else self.run_width(tensor, axes, lay, dt, mask is not None)
        self.global_access(
            tensor,
            starts,
            axes,
            lay,
            run,
            src.buffer,
            dt,
            is_load=False,
            mask=mask,
            atomic=atomic,
            src_tile=src,
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

        def unchecked(pos: Pos) -> None:
            offset, _ = self.element_address(tensor, starts, axes, self.coords(lay, pos))
            vidx = value_index(lay, pos)
            if is_load:
                assert buf is not None
                self.emit(L.Store(buf, vidx, L.Load(tensor.buffer, offset)))
                return
            value = src_tile.at(pos) if src_tile is not None else L.Load(buf, vidx)  # type: ignore[arg-type]
            self.emit(L.Store(tensor.buffer, offset, value))

        if (fast is not None and fast == lay.interleaved_dim and mask is None and not atomic
                and axes[-1] == lay.tile_dims.index(fast)):
            self.for_positions(
                lay,
                lambda pos: self.interleaved_run_access(tensor, starts, axes, lay, fast, pos,
                                                        unchecked, element),
                innermost_run=True,
            )
            return
        if run <= 1 or fast is None:
            self.for_positions(lay, element)
            return

        def vector(first: Pos) -> None:
            rep_f, start = first[fast]
            last = {**first, fast: (rep_f, add(start, c64(run - 1)))}
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
                self.loop("e", run, lambda e: element({**first, fast: (rep_f, add(start, e))}),
                          L.LoopKind.UNROLL)
                slow = self.unnest()
                self.emit(L.If(fast_cond, fast_copy, slow) if fast_cond is not None else fast_copy)
            else:
                self.cpu_run(
                    tensor,
                    starts,
                    axes,
                    lay,
                    {**first, fast: (rep_f, c64(0))},
                    fast,
                    rep_f,
                    run,
                    buf,
                    is_load=is_load,
                    fill=fill,
                    atomic=atomic,
                    src_tile=src_tile,
                )

        self.for_runs(lay, run, vector)


def _packed_code(staged: L.Buffer, vidx: L.Expr, run: int, bits: int) -> L.Expr:
    """The code of value ``vidx`` of a packed register tile: runs of ``run`` codes, each in
    its own whole bytes, the first code of a run in the low bits of its first byte."""
    run_bytes = run * bits // 8
    bit = mul(L.Binary(BIN.MOD, vidx, c64(run)), c64(bits))
    byte = add(
        mul(L.Binary(BIN.FLOORDIV, vidx, c64(run)), c64(run_bytes)),
        L.Binary(BIN.SHR, bit, c64(3)),
    )
    high = None
    if 8 % bits:  # a code may continue into the next byte (clamped: the last one cannot)
        assert staged.size is not None
        high = L.Load(staged, L.Binary(BIN.MIN, add(byte, c64(1)), c64(staged.size - 1)))
    return extract_dynamic(L.Load(staged, byte), high, L.Binary(BIN.BITAND, bit, c64(7)), bits)


def _little_endian_word(buf: L.Buffer, at: L.Expr) -> L.Expr:
    """The ``u32`` the four bytes ``buf[at:at + 4]`` spell, least significant first (LLVM
    folds the four loads into one)."""
    word: L.Expr = L.Cast(u32, L.Load(buf, at))
    for i in range(1, 4):
        byte = L.Cast(u32, L.Load(buf, add(at, c64(i))))
        word = L.Binary(BIN.BITOR, word, L.Binary(BIN.SHL, byte, L.Const(8 * i, u32)))
    return word
