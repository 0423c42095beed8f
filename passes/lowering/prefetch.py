"""Software prefetch on the CPU: a loop whose loads step across rows of a tensor (a column
strip walked down ``k``) asks for the rows it reads some iterations ahead.

A CPU block is one thread, and a strip of a few cache lines per row, a whole row pitch apart,
is what hardware prefetchers follow worst: every other row starts a new page, and a strip
that is not line-aligned touches one line more than its bytes fill. Without help each row's
lines are demand misses, one iteration's worth at a time. So the loop issues ``Prefetch``es
for the lines of the rows ``distance`` iterations on, where ``distance`` keeps about
``_AHEAD_BYTES`` of each such load in flight. Loads along a tensor's contiguous dim are left
alone: those are streams the hardware already follows. CUDA kernels never get these (they
keep loads in flight with ``pipeline(...)``).
"""

from __future__ import annotations

from tegula.ir import loop as L
from tegula.ir.distributed import BlockedLayout
from tegula.ir.dtypes import i64
from tegula.ir.tile import ForOp, LoadOp, Op, Value

from .base import LoweringBase
from .values import Pos, Scalar, Tensor, add, c64, cast, mul, scalar_chain

_LINE = 64  # bytes of a cache line
# Bytes of each strided load to have requested ahead of the iteration that reads them: enough
# for the lines of a few dozen rows to be in flight (measured on a Zen 4 GEMV: 2 KB).
_AHEAD_BYTES = 2048
_MAX_DISTANCE = 64  # iterations
_MAX_RUN_BYTES = 512  # longer runs are streams the hardware prefetcher follows


class Prefetches(LoweringBase):
    def strided_loads(self, op: ForOp, skip: frozenset[int]) -> list[tuple[LoadOp, list[Op]]]:
        """The loads of a CPU loop's body (those not in ``skip``) whose window moves along a
        dim other than the tensor's last as the loop variable does, with the scalar ops
        their window starts need."""
        if self.gpu:
            return []
        loop_var = op.body.args[0]
        producers = {v.name: o for o in op.body.ops for v in o.results}
        found = []
        for o in op.body.ops:
            if not isinstance(o, LoadOp) or id(o) in skip or o.result.tile.is_scalar:
                continue
            tensor = self.vals.get(o.tensor.name)
            if not isinstance(tensor, Tensor):
                continue
            chain = scalar_chain(o.window.starts, producers)
            moving = [_depends_on(s, loop_var, producers) for s in o.window.starts]
            if chain is None or not any(moving[:-1]):
                continue
            found.append((o, chain))
        return found

    def prefetch_ahead(self, op: ForOp, var: L.Var, skip: frozenset[int]) -> None:
        """Emit prefetches of the strided loads' runs ``distance`` iterations after ``var``."""
        loop_var = op.body.args[0]
        step = cast(self.scalar(op.step), i64)
        for load, chain in self.strided_loads(op, skip):
            tensor = self.vals[load.tensor.name]
            assert isinstance(tensor, Tensor)
            run_bytes = self.run_bytes(load, tensor)
            if run_bytes > _MAX_RUN_BYTES:
                continue
            distance = min(_MAX_DISTANCE, max(1, -(-_AHEAD_BYTES // (run_bytes * self.runs(load)))))
            saved = dict(self.vals)
            self.vals[loop_var.name] = Scalar(
                cast(add(var, mul(c64(distance), step)), loop_var.tile.dtype)
            )
            for dep in chain:
                self.op(dep)
            self.prefetch_runs(load, tensor, run_bytes)
            self.vals = saved

    def run_elements(self, load: LoadOp) -> int:
        """Elements of one run: a thread's contiguous values along the last dim."""
        lay: BlockedLayout = load.result.tile.layout
        live = [d for d in lay.order if d in lay.live_dims]
        return lay.spt[live[0]] if live else 1

    def runs(self, load: LoadOp) -> int:
        """Runs of ``load``'s tile (rows of its window, on the CPU)."""
        return max(1, load.result.tile.layout.num_values // self.run_elements(load))

    def run_bytes(self, load: LoadOp, tensor: Tensor) -> int:
        """Bytes of one run."""
        run = self.run_elements(load)
        if tensor.packed_bits:
            return -(-run * tensor.packed_bits // 8)
        return run * tensor.buffer.dtype.itemsize

    def prefetch_runs(self, load: LoadOp, tensor: Tensor, run_bytes: int) -> None:
        """A prefetch per cache line of each run of ``load``'s window: every line from the
        run's first byte, and the line of its last byte (a run that is not line-aligned
        ends in one line more than its bytes fill)."""
        starts, axes = self.window_geometry(tensor, load, None)
        lay: BlockedLayout = load.result.tile.layout
        live = [d for d in lay.order if d in lay.live_dims]
        fast = live[0] if live else None
        itemsize = _itemsize(tensor)

        def one_run(pos: Pos) -> None:
            coords = self.coords(lay, pos)
            if tensor.packed_bits:
                row, col, _ = self.packed_address(tensor, starts, axes, coords)
                first = add(row, L.Binary(L.BinaryOp.SHR, mul(col, c64(tensor.packed_bits)),
                                          c64(3)))
            else:
                first, _ = self.element_address(tensor, starts, axes, coords)
            at = self.let("ahead", first)
            for offset in sorted({*range(0, run_bytes, _LINE), run_bytes - 1}):
                self.emit(L.Prefetch(tensor.buffer, add(at, c64(offset // itemsize))))

        if fast is None:
            one_run({})
            return
        self.for_positions(lay, one_run, innermost_run=True)


def _itemsize(tensor: Tensor) -> int:
    """Bytes per element of the tensor's buffer (1 for a packed tensor's bytes)."""
    return 1 if tensor.packed_bits else tensor.buffer.dtype.itemsize


def _depends_on(v: Value, target: Value, producers: dict[str, Op]) -> bool:
    """Whether ``v`` is ``target`` or computed from it inside the loop body."""
    if v.name == target.name:
        return True
    o = producers.get(v.name)
    return o is not None and any(_depends_on(a, target, producers) for a in o.operands())
