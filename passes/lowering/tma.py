"""TMA copies for ``pipeline(..., tma=true)`` loops on sm_90 and later.

A stage of a ring in a wgmma layout is filled by ``cp.async.bulk.tensor`` boxes whose bytes
land on the slot's ``mbarrier``: the first thread says how many bytes to expect, the boxes
are dealt to the first lane of every warp, and every thread waits on the barrier's phase.
Each operand has boxes of the tile itself (exact at any edge: parts outside the tensor arrive
as zeros) and, for a 2-d tensor, the few boxes of a view of it (``StagedTile.tma_view``) for
stages that lie inside it. The kernel takes a tensor map per tensor and view, after its
symbols (``LoopKernel.tensor_maps``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tegula.ir import loop as L
from tegula.ir.atoms import (
    MBARRIER_ARRIVE,
    MBARRIER_ARRIVE_EXPECT_TX,
    MBARRIER_INIT,
    MBARRIER_INIT_FENCE,
    MBARRIER_INVALIDATE,
    MBARRIER_WAIT_PARITY,
    SETMAXNREG_DEC,
    SETMAXNREG_INC,
    TENSOR_MAP_PREFETCH,
    TmaLoadAtom,
)
from tegula.ir.dtypes import i32, i64, u32, u64
from tegula.ir.tile import Value

from .base import LoweringBase, SharedAlloc
from .values import BIN, Scalar, StagedTile, Tensor, TmaPlan, add, c64, cast, land, mul

if TYPE_CHECKING:
    from .control import _PipelinedLoad


class TmaCopies(LoweringBase):
    @staticmethod
    def is_thread(index: int) -> L.Expr:
        """Whether this is thread ``index`` of the block (the first lane of warp
        ``index // 32`` where ``index`` is a multiple of 32)."""
        return L.Binary(BIN.EQ, L.ThreadIdx(), L.Const(index, i32))

    def is_producer(self) -> L.Expr:
        """Whether this thread is of the producer, past the kernel's own warps."""
        return L.Binary(BIN.GE, L.ThreadIdx(), L.Const(self.threads, i32))

    def slot_barriers(self, stages: int, role: str = "full") -> L.Buffer:
        """One mbarrier (a 64-bit shared word) per ring slot: ``full`` ones complete when a
        slot's copies have landed, ``empty`` ones when every warp has stopped reading it.
        Only the loop uses them, so they may share bytes with scratch that code outside it
        uses, as rings do."""
        name = self.unique(f"slot_{role}")
        barriers = L.Buffer(name, u64, L.Scope.SHARED, stages, 0)
        self.buffers.append(barriers)
        self.shared_allocs.append(SharedAlloc(name, 8 * stages, 8, ring=True))
        return barriers

    def init_slot_barriers(self, full: L.Buffer, empty: L.Buffer | None) -> None:
        """The first thread sets each full barrier up for one arrival (its own, with the
        bytes to expect), each empty one for one a warp, and fetches the tensor maps; a
        block barrier must follow."""
        assert full.size is not None
        counts = [(full, 1)] + ([(empty, self.kernel.num_warps)] if empty is not None else [])
        self.emit(L.If(self.is_thread(0), L.seq(
            *(L.Asm(MBARRIER_INIT, inputs=(L.Address(b, c64(slot)), L.Const(count, u32)),
                    input_constraints=("r", "r"), memory=True)
              for b, count in counts for slot in range(full.size)),
            L.Asm(MBARRIER_INIT_FENCE, memory=True),
            *(L.Asm(TENSOR_MAP_PREFETCH, inputs=(L.Address(m.buffer, c64(0)),),
                    input_constraints=("l",), memory=True)
              for m in self.tensor_maps),
        )))

    def wait_for_slot(self, barriers: L.Buffer, iteration: L.Expr, behind: int = 0) -> None:
        """Wait for the phase of ``iteration``'s slot that use number ``iteration // stages
        - behind`` of it completes (phase ``n`` has parity ``n % 2``): for a full barrier
        the fill of ``iteration``'s copies; for an empty one (``behind`` 1) the release of
        the slot by the iteration a refill for ``iteration`` replaces."""
        stages = c64(barriers.size)  # type: ignore[arg-type]
        slot = L.Binary(BIN.MOD, iteration, stages)
        use = L.Binary(BIN.SUB, L.Binary(BIN.FLOORDIV, iteration, stages), c64(behind))
        parity = cast(L.Binary(BIN.MOD, use, c64(2)), u32)
        self.emit(L.Asm(MBARRIER_WAIT_PARITY, inputs=(L.Address(barriers, slot), parity),
                        input_constraints=("r", "r"), memory=True))

    def wait_for_release(self, empty: L.Buffer, iteration: L.Expr) -> None:
        """Before refilling ``iteration``'s slot: wait until every warp has released it from
        the iteration the refill replaces (the first ``stages`` fills wait for nothing)."""
        self.nest()
        self.wait_for_slot(empty, iteration, behind=1)
        refill = L.Binary(BIN.GE, iteration, c64(empty.size))  # type: ignore[arg-type]
        self.emit(L.If(refill, self.unnest()))

    def expect_bytes(self, barrier: L.Address, nbytes: int) -> None:
        """Arrive on a slot's full barrier, telling it how many bytes the stage brings."""
        self.emit(L.Asm(MBARRIER_ARRIVE_EXPECT_TX, inputs=(barrier, L.Const(nbytes, u32)),
                        input_constraints=("r", "r"), memory=True))

    def release_slot(self, empty: L.Buffer, iteration: L.Expr, first: L.Expr | None) -> None:
        """The first lane of each warp says the warp no longer reads ``iteration``'s slot
        (its products that read it are complete); not before ``first``, where given."""
        stages = c64(empty.size)  # type: ignore[arg-type]
        lane_zero = L.Binary(BIN.EQ, L.Binary(BIN.MOD, L.ThreadIdx(), L.Const(32, i32)),
                             L.Const(0, i32))
        arrive = L.Asm(MBARRIER_ARRIVE,
                       inputs=(L.Address(empty, L.Binary(BIN.MOD, iteration, stages)),),
                       input_constraints=("r",), memory=True)
        self.emit(L.If(land(lane_zero, first), arrive))  # type: ignore[arg-type]

    def invalidate_slot_barriers(self, *barriers: L.Buffer | None) -> None:
        """After the loop (every issued copy was waited for in it): the barriers' bytes may
        be scratch again, which an mbarrier must be invalidated for first."""
        self.emit(L.If(self.is_thread(0), L.seq(*(
            L.Asm(MBARRIER_INVALIDATE, inputs=(L.Address(b, c64(slot)),),
                  input_constraints=("r",), memory=True)
            for b in barriers if b is not None for slot in range(b.size or 0)
        ))))
        self.barrier()

    def tma_operands(self, plan: list[_PipelinedLoad], stages: list[StagedTile]
                     ) -> list[TmaOperand] | None:
        """How the tensor-memory accelerator fills one stage of each ring, or None where it
        cannot: before sm_90, or an operand that is not in a wgmma layout. Each operand has
        boxes of the tile itself (:meth:`StagedTile.tma_boxes`), exact at any edge: parts
        outside the tensor arrive as zeros, as cp.async's zero-byte copies did; a 2-d
        operand also has the few boxes of a view (:meth:`StagedTile.tma_view`) for stages
        that lie inside the tensor."""
        if not self.target.has_tma:
            return None
        operands = []
        for p, tile in zip(plan, stages, strict=True):
            tensor = self.vals[p.load.tensor.name]
            if p.n_major:
                # Its n-major ring is the load's tile row-major: boxes in the tensor's frame.
                tile = replace(tile, shape=tile.shape[::-1], column_major=False)
            lay = tile.wgmma
            if lay is None or tile.column_major or not isinstance(tensor, Tensor):
                return None
            rank = len(tensor.shape)
            if rank > 5 or tensor.packed_bits or not tensor.contiguous_last:
                return None
            edge = tile.tma_boxes()
            edge_map = self.tensor_map(tensor.buffer, edge.box + (1,) * (rank - 2),
                                       lay.swizzle_bytes)
            inside = tile.tma_view() if rank == 2 else None
            inside_map = None
            if inside is not None:
                inside_map = self.tensor_map(tensor.buffer, inside.box, lay.swizzle_bytes,
                                             inside.dims)
            rows, cols = tile.shape
            operands.append(TmaOperand(edge_map, edge, inside_map, inside,
                                        rows * cols * tile.dtype.itemsize))
        return operands

    def issue_tma_loads(
        self, plan: list[_PipelinedLoad], operands: list[TmaOperand], loop_var: Value,
        k_value: L.Expr, live: L.Expr, slots: list[tuple[L.Buffer, L.Expr]],
        barrier: L.Address, release: tuple[L.Buffer, L.Expr] | None = None,
    ) -> None:
        """Start the copies of a stage. The first thread tells the slot's barrier how many
        bytes will arrive; the boxes are dealt round-robin to the first lane of every warp,
        so no warp spends long issuing them (a box's bytes may land before the barrier is
        told to expect them: its transaction count may go below zero meanwhile). An operand
        whose stage lies inside its tensor takes its view's few boxes, else its own. With
        ``release`` (the empty barriers and the iteration), each issuing lane first waits
        until every warp has released the slot it refills (no wait for a first fill)."""
        warps = self.kernel.num_warps
        total = sum(o.stage_bytes for o in operands)

        def dealt(boxes: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
            return [boxes[w::warps] for w in range(warps)]

        # (operand, box) pairs, dealt separately for the two cases.
        edge_dealt = dealt([(i, b) for i, o in enumerate(operands)
                            for b in range(len(o.edge.boxes))])
        inside_dealt = dealt([(i, b) for i, o in enumerate(operands) if o.inside is not None
                              for b in range(len(o.inside.boxes))])
        for warp in range(warps):
            if warp and not edge_dealt[warp] and not inside_dealt[warp]:
                continue  # nothing to issue
            saved = dict(self.vals)
            self.vals[loop_var.name] = Scalar(cast(k_value, loop_var.tile.dtype))
            self.nest()
            if release is not None:
                self.wait_for_release(*release)
            if warp == 0:
                self.expect_bytes(barrier, total)
            for i, (p, o, slot) in enumerate(zip(plan, operands, slots, strict=True)):
                self.operand_copies(p, o, [b for j, b in edge_dealt[warp] if j == i],
                                    [b for j, b in inside_dealt[warp] if j == i], slot, barrier)
            body = self.unnest()
            self.vals = saved
            if body != L.seq():
                self.emit(L.If(land(self.is_thread(32 * warp), live), body))  # type: ignore[arg-type]

    def operand_copies(self, p: _PipelinedLoad, o: TmaOperand, edge_boxes: list[int],
                       inside_boxes: list[int], slot: tuple[L.Buffer, L.Expr],
                       barrier: L.Address) -> None:
        """Boxes ``edge_boxes`` of the operand's own map, or where its stage lies inside the
        tensor, boxes ``inside_boxes`` of its view, into ring ``slot`` (buffer, offset),
        counted on ``barrier``. The loop variable must have its value in ``self.vals``."""
        if not edge_boxes and not inside_boxes:
            return
        ring, offset = slot
        for dep in p.chain:
            self.op(dep)
        tensor = self.vals[p.load.tensor.name]
        assert isinstance(tensor, Tensor)
        starts = self.window_geometry(tensor, p.load, None)[0]
        edge = self.box_copies(o.edge_map, o.edge, edge_boxes, starts, ring, offset, barrier)
        if o.inside is None or o.inside_map is None:
            self.emit(edge)
            return
        inside = self.box_copies(o.inside_map, o.inside, inside_boxes, starts, ring, offset,
                                 barrier)
        self.emit(L.If(self.view_is_exact(o.inside, p.load.window.sizes, tensor, starts),
                       inside, edge))

    def producer_warps(self, plan: list[_PipelinedLoad], operands: list[TmaOperand],
                       loop_var: Value, bounds: tuple[L.Expr, L.Expr, L.Expr],
                       rings: list[tuple[L.Buffer, int]], full: L.Buffer, empty: L.Buffer,
                       registers: tuple[int, int] | None) -> None:
        """A warp-specialized loop's producer: the warps past the kernel's own (one, or a
        warpgroup where ``registers`` moves registers to the consumers), whose first lane
        fills every stage in order. For iteration ``i`` it waits until the consumers have
        released the slot iteration ``i - S`` used (from ``i = S`` on), tells the slot's
        full barrier how many bytes will land, and issues all the boxes; then the producer
        leaves the kernel. The consumers only wait on full barriers and release slots on
        empty ones, so copies run as far ahead as the ring allows, not one fixed distance.
        With ``registers = (p, c)`` the producer warpgroup first shrinks to ``p`` registers
        a thread and the consumers grow to ``c`` (``ir/atoms.register_split``)."""
        start, stop, step = bounds
        stages = full.size
        assert stages is not None
        first = self.threads  # the producer's first thread
        total = sum(o.stage_bytes for o in operands)
        var = L.Var(self.unique(f"{loop_var.name}_copied"), i64)
        saved = dict(self.vals)
        self.vals[loop_var.name] = Scalar(cast(var, loop_var.tile.dtype))
        self.nest()
        iteration = self.let("copied", L.Binary(BIN.FLOORDIV, L.Binary(BIN.SUB, var, start), step))
        stage = self.let("copied_stage", L.Binary(BIN.MOD, iteration, c64(stages)))
        self.wait_for_release(empty, iteration)
        barrier = L.Address(full, stage)
        self.expect_bytes(barrier, total)
        for p, o, (ring, numel) in zip(plan, operands, rings, strict=True):
            inside = list(range(len(o.inside.boxes))) if o.inside is not None else []
            self.operand_copies(p, o, list(range(len(o.edge.boxes))), inside,
                                (ring, mul(stage, c64(numel))), barrier)
        body = self.unnest()
        self.vals = saved
        lane = L.If(self.is_thread(first), L.For(var, start, stop, step, body, L.LoopKind.SERIAL))
        self.split_off_producer(lane, registers)

    def split_off_producer(self, work: L.Stmt | None, registers: tuple[int, int] | None
                           ) -> None:
        """The producer's branch: it gives registers back (``registers = (p, c)``: down to
        ``p`` a thread), does ``work`` and leaves; then the consumers take theirs (up to
        ``c``). Every path to the code after a warp-specialized loop goes through one, so
        that code always runs with the consumers' count."""
        producer = [L.Asm(SETMAXNREG_DEC.format(count=registers[0]), memory=True)
                    ] if registers is not None else []
        self.emit(L.If(self.is_producer(), L.seq(
            *producer, *([work] if work is not None else []), L.Return())))
        if registers is not None:
            self.emit(L.Asm(SETMAXNREG_INC.format(count=registers[1]), memory=True))

    def box_copies(self, tensor_map: L.TensorMap, tile_plan: TmaPlan, chosen: list[int],
                   starts: list[L.Expr], ring: L.Buffer, offset: L.Expr, barrier: L.Address
                   ) -> L.Stmt:
        """The copies of boxes ``chosen`` of ``tile_plan`` into the stage at ``offset``."""
        self.nest()
        for b in chosen:
            first_row, first_col, at = tile_plan.boxes[b]
            coords = _box_coords(tensor_map, starts, first_row, first_col)
            self.emit(L.Asm(
                TmaLoadAtom(len(coords)).ptx,
                inputs=(L.Address(ring, add(offset, c64(at))),
                        L.Address(tensor_map.buffer, c64(0)), *coords, barrier),
                input_constraints=("r", "l", *("r",) * len(coords), "r"),
                memory=True,
            ))
        return self.unnest()

    @staticmethod
    def view_is_exact(view: TmaPlan, sizes: tuple[int, ...], tensor: Tensor,
                      starts: list[L.Expr]) -> L.Expr:
        """Where a view's boxes read exactly the window: inside the tensor along the tile
        dims the view cuts into pieces (A's rows, B's columns), and with the starts it
        carries on whole steps (A's rows on 32, B's columns on blocks)."""
        test: L.Expr | None = None
        for tile_dim, extent, step in view.dims:
            d = len(starts) - 2 + tile_dim
            if extent:
                within = land(L.Binary(BIN.GE, starts[d], c64(0)),
                              L.Binary(BIN.LE, add(starts[d], c64(sizes[d])), tensor.shape[d]))
                test = land(test, within)
            elif step > 1:
                whole = L.Binary(BIN.MOD, starts[d], c64(step))
                test = land(test, L.Binary(BIN.EQ, whole, c64(0)))
        assert test is not None
        return test


@dataclass(frozen=True)
class TmaOperand:
    edge_map: L.TensorMap  # of the tensor itself: exact at any edge
    edge: TmaPlan
    inside_map: L.TensorMap | None  # of a view: fewer boxes, for stages inside the tensor
    inside: TmaPlan | None
    stage_bytes: int


def _box_coords(tensor_map: L.TensorMap, starts: list[L.Expr], first_row: int,
                first_col: int) -> list[L.Expr]:
    """A box's coordinates in ``tensor_map``, innermost first: a dimension that walks a
    whole tensor dimension carries the window's start there plus the box's offset, in its
    steps; the others start at 0. Plain maps walk every tensor dimension (the batch ones
    with the window's index)."""
    rank = len(starts)
    firsts = [c64(0)] * (rank - 2) + [c64(first_row), c64(first_col)]
    coords: list[L.Expr] = []
    for d, extent, step in tensor_map.view(rank):
        if extent:
            coords.append(L.Const(0, i32))
            continue
        at = add(starts[d], firsts[d])
        if step > 1:
            at = L.Binary(BIN.FLOORDIV, at, c64(step))
        coords.append(cast(at, i32))
    return coords
