"""Control flow: loops with carried values, branches, and the software pipelining of
``pipeline(...)`` loops: tensor-core operands through cp.async rings in shared memory, other
loads prefetched into registers."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from tegula.ir import loop as L
from tegula.ir.atoms import (
    CP_ASYNC_COMMIT,
    PROXY_FENCE_ASYNC_SHARED,
    WARPGROUP_THREADS,
    WGMMA_SMEM_ALIGN,
    CpAsyncAtom,
    cp_async_wait,
    register_split,
    wgmma_wait,
)
from tegula.ir.distributed import BlockedLayout
from tegula.ir.dtypes import i64, u32
from tegula.ir.tile import (
    ArangeOp,
    Block,
    BlockIndexOp,
    BroadcastOp,
    CastOp,
    DotOp,
    ElementwiseOp,
    ExpandDimsOp,
    ForOp,
    FullOp,
    IfOp,
    LoadOp,
    Op,
    ThreadIndexOp,
    TransposeOp,
    Value,
    YieldOp,
    walk_ops,
)

from .base import LoweringBase, SharedAlloc
from .grouped import GroupedLoops
from .prefetch import Prefetches
from .tma import TmaCopies, TmaOperand
from .values import (
    BIN,
    Lowered,
    Pos,
    RegTile,
    Scalar,
    StagedTile,
    Tensor,
    add,
    c64,
    cast,
    land,
    mul,
    value_index,
)
from .values import scalar_chain as _scalar_chain

# What the code before a warp-specialized loop may do (the producer warp runs it too, at a
# thread index no layout covers): compute scalars and register tiles, nothing that reads or
# writes memory.
_REGISTER_ONLY_OPS = (FullOp, ArangeOp, BlockIndexOp, ThreadIndexOp, ElementwiseOp, CastOp,
                      BroadcastOp, ExpandDimsOp)


class ControlFlow(GroupedLoops, Prefetches, TmaCopies, LoweringBase):
    # ------------------------------------------------------------------ control flow

    def carried_storage(self, name: str, v: Value) -> Lowered:
        """Registers that hold ``v``'s values across a loop's iterations or out of a branch;
        shaped like the lowered ``v``, or where ``v`` is not lowered yet (a branch's result),
        like its inferred type."""
        lowered = self.vals.get(v.name)
        if isinstance(lowered, Scalar) or (lowered is None and v.type.shape == ()):
            dtype = lowered.expr.dtype if isinstance(lowered, Scalar) else v.type.dtype
            buf = self.local(f"{name}_carry", dtype, 1)
            return Scalar(L.Load(buf, c64(0)))  # the read; writes go through store_carried
        shaped = v.type if lowered is None else self.tile(v)  # dtype and layout of either
        buf = self.local(f"{name}_carry", shaped.dtype, shaped.layout.num_values)
        return RegTile(shaped.dtype, shaped.layout, buffer=buf)

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
            self.serial_for(op, prefetch=self.prefetch_plan(op))
            return
        carried = [
            self.carried_storage(a.name, init)
            for a, init in zip(op.body.args[1:], op.inits, strict=True)
        ]
        for c, init in zip(carried, op.inits, strict=True):
            self.store_carried(c, init)
        guard = self.pipeline_guard(plan)
        self.nest()
        specialized = self.pipelined_loop(op, plan, carried)
        fast = self.unnest()
        self.nest()
        if specialized:  # the producer has nothing to copy for the serial loop
            self.split_off_producer(None, self.producer_split)
        self.serial_for(op, carried)
        slow = self.unnest()
        self.emit(L.If(guard, fast, slow))
        for r, c in zip(op.results, carried, strict=True):
            self.vals[r.name] = self.read_carried(r.name, c)

    # ------------------------------------------------------------------ software pipelining

    def pipeline_plan(self, op: ForOp) -> list[_PipelinedLoad] | None:
        """The loads of this loop that can be pipelined: their only use is as a tensor-core
        operand (for B, also through a transpose: a slab stored [N, K]), and their window
        depends on scalars only. None if there are none."""
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
            for operand, role in ((o.a, "a"), (o.b, "b")):
                if len(uses.get(operand.name, [])) != 1:
                    continue
                load = producers.get(operand.name)
                transpose = None
                if (role == "b" and isinstance(load, TransposeOp) and load.perm == (1, 0)
                        and len(uses.get(load.source.name, [])) == 1):
                    transpose, load = load, producers.get(load.source.name)
                if not isinstance(load, LoadOp) or load.mask is not None or load.other is not None:
                    continue
                if load.result.tile.rank != 2:
                    continue
                if role == "b" and load.result.tile.dtype.itemsize == 1 and transpose is None:
                    # 8-bit B fragments want the tile n-major in shared memory (ldmatrix has
                    # no byte transpose, integer wgmma reads B K-major only); a k-major copy
                    # cannot give that. A B stored [N, K] and transposed can.
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
                plan.append(_PipelinedLoad(load, chain, chunk, o, role, transpose))
        # A transposed operand gets a ring only beside its product's other operand: with the
        # other one staged from registers, ptxas spilled on sm_80 (its default register
        # budget there), and such a loop gains less (it keeps its register staging anyway).
        ringed = {(id(p.dot), p.role) for p in plan}
        plan = [p for p in plan if p.transpose is None or (id(p.dot), "a") in ringed]
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

    def pipelined_loop(self, op: ForOp, plan: list[_PipelinedLoad], carried: list[Lowered]
                       ) -> bool:
        """The loop with its operand loads ``stages - 1`` iterations ahead, through a ring of
        shared-memory buffers filled by ``cp.async`` (or, asked for, by TMA: ``TmaCopies``):

            prologue: issue iterations 0 .. S-2
            for each iteration i:  wait for i's copies; barrier;
                                   issue iteration i + S - 1 into the buffer i - 1 used;
                                   compute on buffer i % S
            drain:    wait for everything; barrier

        The barrier after the wait both publishes iteration ``i``'s data and tells every
        thread that iteration ``i - 1``'s buffer is no longer read, so it may be refilled.

        Warp-specialized (asked for, and :meth:`warp_specialization_blocker` finds nothing
        against it), a producer warp past the kernel's own issues every copy
        (:meth:`TmaCopies.producer_warps`; a warpgroup that hands its registers to the consumers
        where that gains them some) and leaves; the kernel's warps only wait for each
        slot's data, compute and release the slot, and barriers after the split are named
        ones of their threads. Returns whether the loop was split so.
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
            nbytes = numel * stages * dtype.itemsize
            staged = self.staged_operand(p.dot, p.role, buf, c64(0), n_major=p.n_major)
            align = WGMMA_SMEM_ALIGN if staged.wgmma is not None else 16
            self.shared_allocs.append(SharedAlloc(name, nbytes, align, ring=True))
            rings.append((buf, numel))
        # wgmma reads the rings through the async proxy: each thread fences its copies.
        async_readers = any(self.wgmma_atom(p.dot) is not None for p in plan)
        # A lone wgmma product whose operands both come from the rings and whose result
        # only feeds the next iteration may still run when the next iteration starts (its
        # accumulator is not read before): the tensor cores then never wait for the
        # barrier. Its buffer is refilled one iteration later, so copies run one fewer
        # iteration ahead.
        overlapped = self.overlapped_wgmma(op, plan) if stages >= 3 else None
        ahead = stages - 2 if overlapped is not None else stages - 1

        def staged(p: _PipelinedLoad, buf: L.Buffer, stage: L.Expr, numel: int) -> StagedTile:
            return self.staged_operand(p.dot, p.role, buf, mul(stage, c64(numel)),
                                       n_major=p.n_major)

        tma = None
        if op.pipeline_tma:
            tma = self.tma_operands(plan, [staged(p, buf, c64(0), n) for p, (buf, n) in
                                           zip(plan, rings, strict=True)])
        barriers = self.slot_barriers(stages) if tma is not None else None
        # With TMA, a loop whose one product reads both operands from the rings needs no
        # block barrier: each warp releases a slot on an empty barrier once its products
        # that read it are complete, and the lanes that refill a slot wait for that.
        dots = {id(p.dot) for p in plan}
        released = barriers is not None and self.sole_ring_product(op, plan)
        empty = self.slot_barriers(stages, "empty") if released else None

        def issue(iteration: L.Expr) -> None:
            k_value = add(start, mul(iteration, step))
            live = L.Binary(BIN.LT, k_value, stop)
            stage = L.Binary(BIN.MOD, iteration, c64(stages))
            if tma is not None and barriers is not None:
                self.issue_tma_loads(plan, tma, loop_var, k_value, live,
                                     [(buf, mul(stage, c64(numel))) for buf, numel in rings],
                                     L.Address(barriers, stage),
                                     None if empty is None else (empty, iteration))
                return
            for p, (buf, numel) in zip(plan, rings, strict=True):
                self.issue_async_load(p, loop_var, k_value, live, staged(p, buf, stage, numel))
            self.emit(L.Asm(CP_ASYNC_COMMIT, memory=True))

        # The loads that are not tensor-core operands go through registers, as in a plain
        # pipelined loop (serial_for).
        planned = {id(p.load) for p in plan}
        in_registers = [p for p in self.prefetch_plan(op) if id(p.load) not in planned]
        specialized = False
        if op.pipeline_warp_specialize and self.gpu:
            blocker = self.warp_specialization_blocker(op, tma, released, in_registers)
            if blocker is not None:
                where = f" at line {op.loc.line}" if op.loc is not None else ""
                self.notes.append(f"warp_specialize not applied to the loop{where}: {blocker}")
            specialized = blocker is None
        if barriers is not None:
            self.init_slot_barriers(barriers, empty)
        if self.scratch_bytes or barriers is not None:
            # The rings may share bytes with the scratch area code before the loop read;
            # the barriers must be initialised before any thread waits on them.
            self.barrier()
        if specialized:
            assert tma is not None and barriers is not None and empty is not None
            self.producer_split = self.producer_registers()
            self.producer_warps(plan, tma, loop_var, (start, stop, step), rings, barriers,
                                empty, self.producer_split)
            self.producer_threads = (WARPGROUP_THREADS if self.producer_split is not None
                                     else self.target.warp_size)
            self.barrier_threads = self.threads
        for s in range(0 if specialized else ahead):
            issue(c64(s))
        ring = self.ring_prologue(in_registers, loop_var, start, step, stages)
        var = L.Var(self.unique(loop_var.name), i64)
        self.in_pipeline += 1
        self.nest()
        it = self.let("iteration", L.Binary(BIN.FLOORDIV, L.Binary(BIN.SUB, var, start), step))
        self.ring_issue(in_registers, ring, loop_var, var, step, stages)
        if barriers is not None:
            self.wait_for_slot(barriers, it)
        else:
            self.emit(L.Asm(cp_async_wait(ahead - 1), memory=True))
            if async_readers:
                self.emit(L.Asm(PROXY_FENCE_ASYNC_SHARED, memory=True))
        if empty is not None:
            # The products of the previous iteration (left running) or of this one are
            # complete after the dot's wait: their slot is released there.
            done = add(it, c64(-1)) if overlapped is not None else it
            first = L.Binary(BIN.GE, it, c64(1)) if overlapped is not None else None
            self.products_done = (frozenset(dots),
                                  lambda: self.release_slot(empty, done, first))
        else:
            # (With TMA the barrier no longer publishes the slot, which its mbarrier did,
            # but still tells the issuing threads that the slot they refill next is no
            # longer read.)
            self.barrier()
        if specialized:
            pass  # the producer warp refills the slots
        elif async_readers:
            # The refill waits until the first wgmma of this iteration is issued, so the
            # copies' address arithmetic overlaps the tensor cores' work.
            planned_dots = frozenset(id(p.dot) for p in plan)
            self.deferred_issue = (planned_dots, lambda: issue(add(it, c64(ahead))))
        else:
            issue(add(it, c64(ahead)))
        if overlapped is not None:
            self.wgmma_left_running = overlapped
            self.pipeline_parity = L.Binary(BIN.MOD, it, c64(2))
        stage = self.let("stage", L.Binary(BIN.MOD, it, c64(stages)))
        self.vals[loop_var.name] = Scalar(cast(var, loop_var.tile.dtype))
        for a, c in zip(op.body.args[1:], carried, strict=True):
            self.vals[a.name] = self.read_carried(a.name, c)
        skip = planned | {id(p.load) for p in in_registers} | {
            id(p.transpose) for p in plan if p.transpose is not None}
        for p, (buf, numel) in zip(plan, rings, strict=True):
            self.vals[p.operand.name] = staged(p, buf, stage, numel)
        for o in op.body.ops:
            if isinstance(o, YieldOp) or id(o) in skip:
                continue
            self.comment(o)
            self.op(o)
        if self.deferred_issue is not None:
            self.deferred_issue[1]()
            self.deferred_issue = None
        if op.body.terminator is not None:
            self.yield_into(carried, op.body.terminator.values)
        self.ring_shift(ring)
        body = self.unnest()
        self.in_pipeline -= 1
        self.products_done = None
        self.wgmma_left_running = None
        self.pipeline_parity = None
        # Not unrolled, unlike serial_for's ring: here the ring holds side loads (scales)
        # of a tensor-core body, and S copies of that body cost registers (unrolled 3
        # times, quant_gemm_w8a8 spilled).
        self.emit(L.For(var, start, stop, step, body, L.LoopKind.SERIAL))
        if overlapped is not None:
            self.emit(L.Asm(wgmma_wait(0), memory=True))
        if barriers is None:
            self.emit(L.Asm(cp_async_wait(0), memory=True))
        self.barrier()
        if barriers is not None:
            self.invalidate_slot_barriers(barriers, empty)
        return specialized

    def warp_specialization_blocker(self, op: ForOp, tma: list[TmaOperand] | None,
                                    released: bool, in_registers: list[_PrefetchedLoad]
                                    ) -> str | None:
        """Why the loop cannot be warp-specialized, or None. The producer warp runs the
        kernel's code up to the loop too (the windows' starts come from it), so that code
        may only compute values in registers; the loop's copies must all be TMA's, and its
        one product must read both rings (its warps then release slots on empty barriers,
        which is what the producer waits for)."""
        if tma is None:
            return "its operands are not copied by TMA here (sm_90 and wgmma operands only)"
        if not released:
            return "it has other tensor-core products than one that reads both rings"
        if in_registers:
            return "it has loads that are not tensor-core operands"
        top = self.kernel.body.ops
        position = next((i for i, o in enumerate(top) if o is op), None)
        if position is None:
            return "it is nested in another loop or a branch"
        unsafe = [o for o in top[:position] if not isinstance(o, _REGISTER_ONLY_OPS)]
        if unsafe:
            return (f"the producer warp would run {type(unsafe[0]).__name__} before it, "
                    "which touches memory")
        if self.threads + self.target.warp_size > self.target.max_block_threads:
            return f"{self.threads} threads leave no room for a producer warp"
        return None

    def producer_registers(self) -> tuple[int, int] | None:
        """The register split of a producer warpgroup (sm_90a, consumers in whole
        warpgroups, room in the block), or None for a lone producer warp."""
        if not self.target.has_wgmma:
            return None
        if self.threads + WARPGROUP_THREADS > self.target.max_block_threads:
            return None
        return register_split(self.threads)

    def sole_ring_product(self, op: ForOp, plan: list[_PipelinedLoad]) -> bool:
        """Whether the loop's only tensor-core dot reads both its operands from the rings
        (so nothing in the body stages operands through scratch)."""
        dots = [o for o in op.body.ops if isinstance(o, DotOp) and self.mma_atom(o) is not None]
        return len(dots) == 1 and sorted((id(p.dot), p.role) for p in plan) == [
            (id(dots[0]), "a"), (id(dots[0]), "b")]

    def overlapped_wgmma(self, op: ForOp, plan: list[_PipelinedLoad]) -> int | None:
        """The id of the loop's one wgmma ``dot`` that may stay in flight across iterations:
        the accumulator a loop-carried value it alone reads, the result only yielded (its
        operands come from the rings, or are staged through a doubled scratch area). None if
        there is no such dot, or other tensor-core dots."""
        body = op.body
        dots = [o for o in body.ops if isinstance(o, DotOp) and self.mma_atom(o) is not None]
        if len(dots) != 1 or self.wgmma_atom(dots[0]) is None:
            return None
        dot = dots[0]
        uses: dict[str, int] = {}
        for o in body.ops:  # the yield among them
            for v in o.operands():
                uses[v.name] = uses.get(v.name, 0) + 1
        carried = {a.name for a in body.args[1:]}
        yielded = {v.name for v in body.terminator.values} if body.terminator else set()
        if dot.acc.name not in carried or uses.get(dot.acc.name) != 1:
            return None
        if dot.result.name not in yielded or uses.get(dot.result.name) != 1:
            return None
        return id(dot)

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
                # The ring is in the operand's coordinates: (k, n) for a transposed B.
                at = coords[::-1] if p.n_major else coords
                ok = self.let("chunk_ok", land(land(ok_first, ok_last), live))  # type: ignore[arg-type]
                src = L.Address(tensor.buffer, L.Select(ok, offset, c64(0)))
                nbytes = L.Select(ok, L.Const(16, u32), L.Const(0, u32))
                self.emit(
                    L.Asm(
                        atom.ptx,
                        (),
                        (),
                        (L.Address(dst.buffer, dst.offset(at)), src, nbytes),
                        ("r", "l", "r"),
                        memory=True,
                    )
                )

            self.loop(f"c{fast}", lay.spt[fast] // p.chunk, one, L.LoopKind.UNROLL)

        self.for_positions(lay, chunks, innermost_run=True)
        self.vals = saved

    def prefetch_plan(self, op: ForOp) -> list[_PrefetchedLoad]:
        """The loads of a ``pipeline(...)`` loop on CUDA that can be issued ``stages - 1``
        iterations early into registers: tiles whose window depends on scalars only and
        that have no mask (a mask may depend on the iteration's other values)."""
        if not self.gpu or op.pipeline_stages < 2:
            return []
        producers = {v.name: o for o in op.body.ops for v in o.results}
        plan = []
        for o in op.body.ops:
            if not isinstance(o, LoadOp) or o.mask is not None or o.result.tile.is_scalar:
                continue
            if not isinstance(self.vals.get(o.tensor.name), Tensor):
                continue
            chain = _scalar_chain(o.window.starts, producers)
            if chain is not None:
                plan.append(_PrefetchedLoad(o, chain))
        return plan

    @contextlib.contextmanager
    def at_iteration(self, plan: list[_PrefetchedLoad], loop_var: Value, k_value: L.Expr
                     ) -> Iterator[None]:
        """For the duration, the loop variable at ``k_value`` and the scalars ``plan``'s
        windows start at computed from it, once, where the caller is."""
        saved = dict(self.vals)
        self.vals[loop_var.name] = Scalar(cast(k_value, loop_var.tile.dtype))
        for p in plan:
            for dep in p.chain:
                self.op(dep)
        try:
            yield
        finally:
            self.vals = saved

    def issue_loads(self, plan: list[_PrefetchedLoad]) -> list[RegTile]:
        """``plan``'s loads (inside ``at_iteration``); their tiles."""
        tiles = []
        for p in plan:
            self.load(p.load)
            tile = self.vals[p.load.result.name]
            assert isinstance(tile, RegTile) and tile.buffer is not None
            tiles.append(tile)
        return tiles

    def prefetch(self, plan: list[_PrefetchedLoad], loop_var: Value, k_value: L.Expr
                 ) -> list[RegTile]:
        """Issue ``plan``'s loads with the loop variable at ``k_value``; their tiles. The
        loads test their windows against the tensors' bounds, so prefetching past the loop's
        end reads nothing it should not."""
        with self.at_iteration(plan, loop_var, k_value):
            return self.issue_loads(plan)

    def ring_prologue(self, plan: list[_PrefetchedLoad], loop_var: Value, start: L.Expr,
                      step: L.Expr, stages: int) -> list[list[RegTile]]:
        """Before the loop: ``plan``'s tiles of its first ``stages - 1`` iterations."""
        if not plan:
            return []
        return [
            self.prefetch(plan, loop_var, add(start, mul(c64(s), step))) for s in range(stages - 1)
        ]

    def ring_issue(self, plan: list[_PrefetchedLoad], ring: list[list[RegTile]],
                   loop_var: Value, var: L.Var, step: L.Expr, stages: int,
                   streaming: bool = False) -> None:
        """At the top of iteration ``var``: issue iteration ``var + stages - 1``'s loads into
        the ring's newest slot, and bind the loads to the oldest, this iteration's.
        ``streaming``: the loop has no tensor-core product (see :meth:`prefetch_tested`)."""
        if not plan:
            return
        ring.append(self.prefetch_tested(plan, loop_var, add(var, mul(c64(stages - 1), step)),
                                         streaming))
        for p, tile in zip(plan, ring[0], strict=True):
            self.vals[p.load.result.name] = tile

    def prefetch_tested(self, plan: list[_PrefetchedLoad], loop_var: Value, k_value: L.Expr,
                        streaming: bool = False) -> list[RegTile]:
        """``prefetch`` in two versions that fill the same registers: where every window of
        the iteration lies inside its tensor (one test for the block, on scalars), the loads
        skip their elements' bounds tests; elsewhere (the last iterations' prefetches past
        the loop's end, edge blocks) they keep them. The per-element tests are most of what
        a streaming loop issues besides its arithmetic: a GEMV slab of 16 codes a thread
        spent about a third of its time in them. In a ``streaming`` loop (no tensor-core
        product) the test also asks that every row of those tensors start on a vector
        boundary, so the runs' alignment tests fold too (another tenth of the GEMV's time,
        both measured by removing the tests by hand); a tensor-core loop's operand loads
        are a small part of its slab, and there the unguarded loads' longer live ranges
        made ptxas spill (the 4-bit integer dot on sm_80)."""
        with self.at_iteration(plan, loop_var, k_value):
            inside: L.Expr | None = None
            for p in plan:
                tensor = self.vals[p.load.tensor.name]
                assert isinstance(tensor, Tensor)
                inside = land(inside, self.window_test(p.load, tensor))
            if inside is not None and streaming:
                inside = land(inside, self.rows_aligned([p.load for p in plan]))
            if inside is None:
                return self.issue_loads(plan)
            self.nest()
            self.window_inside = True
            try:
                tiles = self.issue_loads(plan)
            finally:
                self.window_inside = False
            tested = self.unnest()
            self.nest()
            guarded = self.issue_loads(plan)
            same = {g.buffer: t.buffer for g, t in zip(guarded, tiles, strict=True)}
            self.buffers = [b for b in self.buffers if b not in same]
            self.emit(L.If(inside, tested, L.replace_buffers(self.unnest(), same)))  # type: ignore[arg-type]
            return tiles

    def ring_shift(self, ring: list[list[RegTile]]) -> None:
        """At the bottom of an iteration: every slot takes the next one's registers."""
        for older, newer in itertools.pairwise(ring):
            for dst, src in zip(older, newer, strict=True):
                self.copy_storage(dst, src)

    def copy_storage(self, dst: RegTile, src: RegTile) -> None:
        """Copy a tile's registers (its values, or a packed tile's bytes) into another's."""
        assert dst.buffer is not None and src.buffer is not None and dst.buffer.size is not None
        self.loop(
            "r",
            dst.buffer.size,
            lambda i: self.emit(L.Store(dst.buffer, i, L.Load(src.buffer, i))),  # type: ignore[arg-type]
            L.LoopKind.UNROLL,
        )

    def serial_for(
        self,
        op: ForOp,
        carried: list[Lowered] | None = None,
        prefetch: list[_PrefetchedLoad] | None = None,
    ) -> None:
        """A loop run in order. With ``prefetch`` (a ``pipeline(...)`` loop on CUDA), those
        loads run ``stages - 1`` iterations ahead, into a ring of register tiles that
        shifts by one each iteration, so a thread has that many iterations' loads in
        flight while it computes on the oldest."""
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
        loop_var = op.body.args[0]
        prefetch = prefetch or []
        ring = self.ring_prologue(prefetch, loop_var, start, step, op.pipeline_stages)

        streaming = not any(isinstance(o, DotOp) and self.mma_atom(o) is not None
                            for o in walk_ops(op.body))

        def lower_body(var: L.Var, hoisted: frozenset[int]) -> None:
            self.ring_issue(prefetch, ring, loop_var, var, step, op.pipeline_stages, streaming)
            self.vals[loop_var.name] = Scalar(
                cast(var, loop_var.tile.dtype) if loop_var.tile.dtype is not i64 else var
            )
            for a, c in zip(op.body.args[1:], carried, strict=True):
                self.vals[a.name] = self.read_carried(a.name, c)
            skip = {id(p.load) for p in prefetch} | hoisted
            self.prefetch_ahead(op, var, frozenset(skip))
            self.block(Block(op.body.args, tuple(o for o in op.body.ops if id(o) not in skip)))
            term = op.body.terminator
            if term is not None:
                self.yield_into(carried, term.values)
            self.ring_shift(ring)

        plan = self.group_plan(op)
        if plan is not None:
            self.grouped_loop(op, plan, lower_body)
        else:
            var = L.Var(self.unique(loop_var.name), i64)
            self.nest()
            lower_body(var, frozenset())
            body = self.unnest()
            # Unrolled by the ring's length, the ring's rotation is register renaming.
            unroll = op.pipeline_stages if ring else 1
            self.emit(L.For(var, start, stop, step, body, L.LoopKind.SERIAL, unroll))
        if own:
            for r, c in zip(op.results, carried, strict=True):
                self.vals[r.name] = self.read_carried(r.name, c)

    def yield_into(self, carried: list[Lowered], values: tuple[Value, ...]) -> None:
        # Materialize everything first: a yielded expression may read a carried buffer that
        # an earlier copy in this same yield overwrites.
        staged: list[Value] = []
        for c, v in zip(carried, values, strict=True):
            lv = self.vals[v.name]
            if self.updates_in_place(c, lv, carried, [o for o in values if o is not v]):
                staged.append(v)
                continue
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

    def updates_in_place(
        self, dst: Lowered, value: Lowered, carried: list[Lowered], others: list[Value]
    ) -> bool:
        """Whether a carried tile may be overwritten by its next value position by
        position, without a staging copy: on the CPU (on CUDA the copy is register renaming
        after unrolling; on the CPU it is a pass over memory each iteration), when the next
        value reads its own carried buffer only at the position it writes and no other
        carried buffer (an earlier one in this yield may be written already), and no other
        yielded value reads this buffer at all (its loop may run after this one)."""
        if self.gpu or not isinstance(dst, RegTile) or not isinstance(value, RegTile):
            return False
        if dst.buffer is None or value.element is None or value.layout != dst.layout:
            return False
        probe = self.probe_position(dst.layout)
        same_index = value_index(dst.layout, probe)
        for c in carried:
            if not isinstance(c, RegTile | Scalar) or c is dst:
                continue
            buffer = c.buffer if isinstance(c, RegTile) else getattr(c.expr, "buffer", None)
            if buffer is not None and self.probe_loads(value, probe, buffer) != []:
                return False
        reads = self.probe_loads(value, probe, dst.buffer)
        if reads is None or any(index != same_index for index in reads):
            return False
        for other in others:
            lv = self.vals.get(other.name)
            if isinstance(lv, RegTile) and lv.buffer is dst.buffer:
                return False
            if isinstance(lv, RegTile) and lv.element is not None:
                other_reads = self.probe_loads(lv, self.probe_position(lv.layout), dst.buffer)
                if other_reads is None or other_reads:
                    return False
        return True

    def if_op(self, op: IfOp) -> None:
        cond = self.scalar(op.cond)
        carried = [self.branch_result_storage(op, i, r) for i, r in enumerate(op.results)]
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

    def branch_result_storage(self, op: IfOp, index: int, result: Value) -> Lowered:
        """Where the ``index``-th result of ``op`` is kept. A value from before the branch
        that one branch passes through unchanged (``acc`` in ``if c { acc = acc + t }``) lends
        its registers when nothing reads it after the ``if``: that branch then copies
        nothing, and the other updates it in place where it may (``yield_into``)."""
        made_inside = {r for blk in op.blocks() for o in walk_ops(blk) for r in o.results}
        for blk in op.blocks():
            if blk.terminator is None:
                continue
            kept = blk.terminator.values[index]
            if kept in made_inside:
                continue
            lowered = self.vals.get(kept.name)
            if (isinstance(lowered, RegTile) and lowered.buffer is not None
                    and lowered.element is None and lowered.dtype == result.type.dtype
                    and lowered.layout == result.type.layout
                    and not self.buffer_read_after(lowered.buffer, op)):
                return lowered
        return self.carried_storage(result.name, result)


@dataclass(frozen=True)
class _PrefetchedLoad:
    load: LoadOp
    chain: list[Op]  # the scalar ops in the loop body its window starts depend on


@dataclass(frozen=True)
class _PipelinedLoad:
    load: LoadOp
    chain: list[Op]  # the scalar ops in the loop body its window starts depend on
    chunk: int  # elements per 16-byte cp.async
    dot: DotOp  # the tensor-core product it feeds
    role: str  # as its operand "a" or "b"
    # A B operand loaded as stored, [N, K], and transposed in registers: its ring holds the
    # slab n-major (K contiguous), which is the stored order, so copies keep their chunks.
    transpose: TransposeOp | None = None

    @property
    def n_major(self) -> bool:
        """Whether the ring holds the operand n-major (the load's tile, transposed)."""
        return self.transpose is not None

    @property
    def operand(self) -> Value:
        """The value the product reads: the transposed tile, or the load's."""
        return self.transpose.result if self.transpose is not None else self.load.result
