"""``dot``: on tensor cores (mma.sync from swizzled shared memory), on CUDA cores, and as a
register-blocked micro-kernel on the CPU."""

from __future__ import annotations

import math
from collections.abc import Callable

from tegula.ir import loop as L
from tegula.ir.atoms import (
    PROXY_FENCE_ASYNC_SHARED,
    WGMMA_COMMIT,
    WGMMA_FENCE,
    WGMMA_SMEM_ALIGN,
    LdMatrixAtom,
    MmaAtom,
    WgmmaAtom,
    WgmmaSmemLayout,
    find_mma,
    find_wgmma,
    wgmma_descriptor,
    wgmma_tile_fits,
    wgmma_wait,
)
from tegula.ir.distributed import BlockedLayout
from tegula.ir.dtypes import u32
from tegula.ir.tile import (
    DotOp,
    Value,
)

from .base import LoweringBase
from .values import (
    BIN,
    Pos,
    RegTile,
    StagedTile,
    WarpgroupRows,
    _operand_swizzle,
    add,
    c64,
    cast,
    mul,
    value_index,
)


class Dots(LoweringBase):
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
            a_op, b_op = self.stage_operands(op, a_op, b_op)
            warpgroup_atom = self.wgmma_atom(op)
            if warpgroup_atom is not None:
                self.dot_wgmma(op, warpgroup_atom, a_op, b_op, acc)
            else:
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
            self.barrier()
            self.write_tile_to(a, smem_a, lambda c: add(mul(c[0], c64(k)), c[1]))
            self.write_tile_to(b, smem_a, lambda c: add(c64(m * k), add(mul(c[0], c64(n)), c[1])))
            self.barrier()

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
        # One vector of columns a row: eight accumulator vectors, the row of B and the
        # broadcasts fit any vector register file. Two vectors a row (sixteen accumulators)
        # measured 40% slower on a Zen 4 host (f32 GEMM 2048³: 112 against 180 GFLOP/s).
        nr = next(d for d in (vector, 8, 4, 2, 1) if n % d == 0)
        unroll = L.LoopKind.UNROLL

        def block(mb: L.Expr, nb: L.Expr) -> None:
            sums = self.local(f"{op.result.name}_block", dt, mr * nr)
            row0, col0 = mul(mb, c64(mr)), mul(nb, c64(nr))

            def cell(i: L.Expr, j: L.Expr) -> L.Expr:
                return add(mul(add(row0, i), c64(n)), add(col0, j))

            def move(into_sums: bool) -> None:
                def one(i: L.Expr, j: L.Expr) -> None:
                    slot, at = add(mul(i, c64(nr)), j), cell(i, j)
                    if into_sums:
                        self.emit(L.Store(sums, slot, L.Load(out, at)))
                    else:
                        self.emit(L.Store(out, at, L.Load(sums, slot)))

                self.loop(
                    "i", mr, lambda i: self.loop("j", nr, lambda j: one(i, j), unroll), unroll
                )

            move(into_sums=True)

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
            move(into_sums=False)

        self.loop(
            "mb",
            m // mr,
            lambda mb: self.loop("nb", n // nr, lambda nb: block(mb, nb), L.LoopKind.SERIAL),
            L.LoopKind.SERIAL,
        )

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

    def wgmma_atom(self, op: DotOp) -> WgmmaAtom | None:
        """The warpgroup atom this dot runs on: on sm_90a, when layout inference gave the
        accumulator the layout with every warp along M (``wgmma_accumulator_layout``)."""
        if not self.gpu:
            return None
        atom = find_wgmma(
            op.a.tile.dtype, op.b.tile.dtype, op.result.tile.dtype, self.target.arch
        )
        lay = op.result.tile.layout
        (m, k), (_, n) = op.a.tile.shape, op.b.tile.shape
        warps = self.kernel.num_warps
        if atom is None or not isinstance(lay, BlockedLayout):
            return None
        if (lay.spt, lay.tpw, lay.wpc, lay.order) != ((1, 2), (8, 4), (warps, 1), (1, 0)):
            return None
        return atom if wgmma_tile_fits(atom, m, n, k, warps) else None

    def staged_operand(
        self, op: DotOp, role: str, buffer: L.Buffer, base: L.Expr, n_major: bool = False
    ) -> StagedTile:
        """Operand ``role`` ("a" or "b") of ``op`` as it is laid out in shared memory at
        ``base``: for ldmatrix, row-major (or a B tile n-major) under the operand swizzle;
        for wgmma, a descriptor layout (A K-major with its rows in warpgroup order, B
        MN-major or, n-major, K-major)."""
        v = op.a if role == "a" else op.b
        shape: tuple[int, int] = v.tile.shape  # type: ignore[assignment]
        dtype = v.tile.dtype
        contiguous = shape[0] if n_major else shape[1]
        if self.wgmma_atom(op) is None:
            swizzle = _operand_swizzle(contiguous, dtype)
            return StagedTile(buffer, base, swizzle, shape, dtype, column_major=n_major)
        rows = shape[1] if n_major else shape[0]
        layout = WgmmaSmemLayout(rows, contiguous, dtype.itemsize)
        groups = None
        if role == "a":
            lay: BlockedLayout = op.result.tile.layout  # type: ignore[assignment]
            groups = WarpgroupRows(lay.wpc[0], lay.reps(0))
        return StagedTile(
            buffer, base, None, shape, dtype, column_major=n_major, wgmma=layout, row_groups=groups
        )

    def stage_operands(
        self, op: DotOp, a: RegTile | StagedTile, b: RegTile | StagedTile
    ) -> tuple[StagedTile, StagedTile]:
        """Operands computed in registers go through the scratch area in their shared-memory
        layout (``staged_operand``). B is stored n-major where ldmatrix needs it so (8-bit
        operands: it has no byte transpose) or where its registers already run along k (a
        transposed load)."""
        if isinstance(a, StagedTile) and isinstance(b, StagedTile):
            return a, b
        (m, k), (_, n) = op.a.tile.shape, op.b.tile.shape
        # A product left running across iterations still reads last iteration's operands:
        # this one's go to the other half of a doubled area. The loop's barrier at the top
        # of the iteration follows every warpgroup's wait for the product before that, so
        # the half written here is free without a barrier of its own.
        double = self.wgmma_left_running == id(op) and self.pipeline_parity is not None
        # (A doubled area holds only the operands computed in registers.)
        a_area = m * k if not double or isinstance(a, RegTile) else 0
        area = a_area + (k * n if not double or isinstance(b, RegTile) else 0)
        smem = self.scratch(a.dtype, 2 * area if double else area)
        base: L.Expr = c64(0)
        if double:
            assert self.pipeline_parity is not None
            base = mul(self.pipeline_parity, c64(area))
        staged_a = self.staged_operand(op, "a", smem, base)
        b_n_major = isinstance(b, RegTile) and (
            b.dtype.itemsize == 1 or _runs_along_rows(b.layout)
        )
        staged_b = self.staged_operand(op, "b", smem, add(base, c64(a_area)), n_major=b_n_major)
        if not double:
            self.barrier()
        if isinstance(a, RegTile):
            self.write_tile_vectorized(a, smem, staged_a.offset)
        if isinstance(b, RegTile):
            self.write_tile_vectorized(
                b, smem, staged_b.offset, contiguous_dim=0 if b_n_major else 1
            )
        if staged_a.wgmma is not None:
            self.smem_align = max(self.smem_align, WGMMA_SMEM_ALIGN)
            self.emit(L.Asm(PROXY_FENCE_ASYNC_SHARED, memory=True))
        self.barrier()
        return (
            a if isinstance(a, StagedTile) else staged_a,
            b if isinstance(b, StagedTile) else staged_b,
        )

    def dot_wgmma(
        self, op: DotOp, atom: WgmmaAtom, a: StagedTile, b: StagedTile, acc: RegTile
    ) -> None:
        """``dot`` on warpgroup tensor cores: each warpgroup multiplies its rows of A (64 per
        instruction, staged in warpgroup order) by all of B, reading both from shared memory
        through descriptors, and waits for its products before the operands' buffers are
        reused. The accumulator keeps the ``mma.sync`` layout (warps along M), so epilogues
        and the fallback paths read it as before."""
        r = op.result
        k, n = op.b.tile.shape
        lay: BlockedLayout = r.tile.layout
        out = self.local(r.name, r.tile.dtype, lay.num_values)
        self.for_positions(
            lay,
            lambda pos: self.emit(
                L.Store(out, value_index(lay, pos), cast(acc.at(pos), r.tile.dtype))
            ),
        )
        assert a.wgmma is not None and b.wgmma is not None and a.row_groups is not None
        if a.column_major:
            raise NotImplementedError("wgmma's A operand is staged K-major")
        item = a.dtype.itemsize
        warpgroup = self.let(
            "warpgroup", L.Binary(BIN.FLOORDIV, self.tid, c64(4 * self.target.warp_size))
        )
        b_mn_major = not b.column_major
        desc_a = self.let(
            "desc_a",
            wgmma_descriptor(
                a.wgmma.descriptor_bits(mn_major=False),
                L.Address(a.buffer, add(a.base, mul(a.row_groups.first_row(warpgroup, 0),
                                                    c64(a.wgmma.block)))),
            ),
        )
        desc_b = self.let(
            "desc_b",
            wgmma_descriptor(
                b.wgmma.descriptor_bits(mn_major=b_mn_major), L.Address(b.buffer, b.base)
            ),
        )
        instructions = lay.reps(0) // 2
        # One instruction spans all of B's columns when it can (up to 256); wider tiles split
        # at swizzle-block boundaries (64 columns).
        n_step = n
        if not atom.takes_n(n):
            n_step = max(d for d in range(64, atom.max_n + 1, 64) if n % d == 0)

        def advanced(desc: L.Var, elements: int) -> L.Expr:
            # Descriptor start addresses are in 16-byte units; offsets never carry out.
            return add(desc, L.Const(elements * item // 16, desc.dtype))

        self.emit(L.Asm(WGMMA_FENCE, memory=True))
        for kk in range(0, k, atom.k):
            for i in range(instructions):
                a_at = a.wgmma.unswizzled(64 * i, kk)
                for n0 in range(0, n, n_step):
                    if b_mn_major:
                        b_at = b.wgmma.unswizzled(kk, n0)
                    else:
                        b_at = b.wgmma.unswizzled(n0, kk)
                    c_idx = [
                        value_index(lay, {0: (c64(2 * i + h), c64(0)), 1: (c64(j), c64(s))})
                        for j in range(n0 // 8, (n0 + n_step) // 8)
                        for h in (0, 1)
                        for s in (0, 1)
                    ]
                    self.emit(
                        atom.multiply(
                            out, c_idx, advanced(desc_a, a_at), advanced(desc_b, b_at), b_mn_major
                        )
                    )
        self.emit(L.Asm(WGMMA_COMMIT, memory=True))
        if self.deferred_issue is not None and id(op) in self.deferred_issue[0]:
            refill = self.deferred_issue[1]
            self.deferred_issue = None
            refill()
        # Left running, the products finish before the next iteration's refill (its wait).
        self.emit(L.Asm(wgmma_wait(int(self.wgmma_left_running == id(op))), memory=True))
        if self.products_done is not None and id(op) in self.products_done[0]:
            self.products_done[1]()
        self.vals[r.name] = RegTile(r.tile.dtype, lay, buffer=out)

    def dot_mma(
        self,
        op: DotOp,
        atom: MmaAtom,
        a: StagedTile,
        b: StagedTile,
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
        k = op.a.tile.shape[1]
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
        if b.dtype.itemsize == 1 and not b.column_major:
            raise NotImplementedError("an 8-bit B operand must be staged n-major")
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
        # An ldmatrix row is 16 bytes: `half_k` elements, half an atom's k.
        half_k = 16 // a.dtype.itemsize
        ld_a = LdMatrixAtom(4, trans=False)
        trans_b = not b.column_major
        ld_b_pair, ld_b_one = LdMatrixAtom(4, trans=trans_b), LdMatrixAtom(2, trans=trans_b)
        k_half = mul(L.Binary(BIN.MOD, mat, c64(2)), c64(half_k))
        for kk in range(0, k, atom.k):
            # A: matrices (rows 0-7, k lo), (rows 8-15, k lo), (rows 0-7, k hi), (8-15, k hi)
            for i in range(row_atoms):
                rep = add(c64(2 * i), L.Binary(BIN.MOD, mat, c64(2)))
                row = add(add(mul(warp_m, c64(8)), mat_row), mul(rep, c64(8 * wm)))
                col = add(c64(kk), mul(L.Binary(BIN.FLOORDIV, mat, c64(2)), c64(half_k)))
                self.emit(ld_a.load(a_frag, i * 4, L.Address(a_smem, a_offset([row, col]))))
            # B: matrices (k lo, k hi) of a column atom, the next atom's as matrices 2 and 3
            # of an x4 load. Stored k-major, the loads transpose 8x8 blocks of 16-bit values
            # into the column-major fragment; stored n-major, the rows already are its columns.
            for j in range(0, col_atoms, 2):
                pair = j + 1 < col_atoms
                col = add(mul(warp_n, c64(8)), c64(j * 8 * wn))
                if pair:
                    col = add(col, mul(L.Binary(BIN.FLOORDIV, mat, c64(2)), c64(8 * wn)))
                ld_b = ld_b_pair if pair else ld_b_one
                if b.column_major:
                    at = [add(c64(kk), k_half), add(col, mat_row)]
                else:
                    at = [add(add(c64(kk), mat_row), k_half), col]
                self.emit(ld_b.load(b_frag, j * 2, L.Address(b_smem, b_offset(at))))
            for i in range(row_atoms):
                for j in range(col_atoms):
                    c_idx = [
                        value_index(lay, {0: (c64(2 * i + h), c64(0)), 1: (c64(j), c64(s))})
                        for h in (0, 1)
                        for s in (0, 1)
                    ]
                    self.emit(
                        atom.multiply(out, c_idx, a_frag, i * atom.a_regs, b_frag, j * atom.b_regs)
                    )
        self.vals[r.name] = RegTile(r.tile.dtype, lay, buffer=out)

    def write_tile_vectorized(
        self,
        t: RegTile,
        smem: L.Buffer,
        offset_of: Callable[[list[L.Expr]], L.Expr],
        contiguous_dim: int = 1,
    ) -> None:
        """Write a 2-D register tile to shared memory, where tile dim ``contiguous_dim`` is
        contiguous, 16 bytes at a time where the layout holds runs that long along it (the
        operand swizzles keep 16-byte chunks whole)."""
        lay = t.layout
        fast = lay.tile_dims[contiguous_dim]
        along = lay.order[0] == fast and fast in lay.live_dims
        run = math.gcd(lay.spt[fast] if along else 1, max(1, 16 // smem.dtype.itemsize))
        if run <= 1 or not t.in_buffer or lay.replicated(fast):
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


def _runs_along_rows(lay: object) -> bool:
    """Whether a 2-D register layout holds runs of consecutive values down its first dim."""
    return (
        isinstance(lay, BlockedLayout)
        and lay.order[0] == lay.tile_dims[0]
        and lay.tile_dims[0] in lay.live_dims
        and lay.spt[lay.tile_dims[0]] > 1
    )
