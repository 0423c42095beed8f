"""Register layouts: how a register tile is spread over the threads of a block.

Three kinds, all immutable values:

* :class:`BlockedLayout` — the workhorse. Along each *base* dim ``d`` a thread holds
  ``spt[d]`` contiguous elements; ``tpw[d]`` lanes of a warp and ``wpc[d]`` warps of the block
  sit side by side; the pattern repeats to cover the tile. ``order`` lists dims fastest
  first (row-major tiles: last dim first). A dim listed in ``removed`` has been reduced
  away (the tile does not have it; the threads along it hold copies); a dim in ``unit`` is
  kept with extent 1 (the same copies, as a size-1 dim ready to broadcast). This is the
  "slice" of the base layout, so ``reduce`` and ``broadcast`` need no data movement.
  ``interleave`` (the CPU's packed low-bit tiles) reorders the values of a thread's run
  along the fastest dim: with ``interleave = n`` element ``s = l * n + i`` of the run is
  value ``i * (spt / n) + l``, so the ``n`` codes one 32-bit word packs sit ``spt / n``
  values apart and the words line up as vector lanes (each code one shift from its word).
* :class:`UniformLayout` — a scalar every thread holds.
* :class:`TVRegisterLayout` — any thread-value layout of the layout algebra, written by a
  user; elementwise ops, loads and stores take it as it is; other ops convert it first.

Coordinates split into a part that depends only on the thread and a part that depends only
on the value index, so generated code computes the thread part once and the value part is a
constant in unrolled code: ``coord[d] = thread_offset(t)[d] + value_offset(v)[d]`` (modulo
the extent, where threads replicate a dim smaller than they cover).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any


def _prod(xs: tuple[int, ...] | list[int]) -> int:
    return math.prod(xs)


@dataclass(frozen=True)
class UniformLayout:
    """A scalar held by every thread."""

    def __str__(self) -> str:
        return "uniform"

    @property
    def num_values(self) -> int:
        return 1


@dataclass(frozen=True)
class BlockedLayout:
    """See the module docstring. ``base_shape`` is the shape before ``removed``/``unit``."""

    base_shape: tuple[int, ...]
    spt: tuple[int, ...]
    tpw: tuple[int, ...]
    wpc: tuple[int, ...]
    order: tuple[int, ...]
    removed: tuple[int, ...] = ()
    unit: tuple[int, ...] = ()
    interleave: int = 1

    def __post_init__(self) -> None:
        r = len(self.base_shape)
        if not (len(self.spt) == len(self.tpw) == len(self.wpc) == len(self.order) == r):
            raise ValueError(f"blocked layout fields disagree in rank: {self!r}")
        if sorted(self.order) != list(range(r)):
            raise ValueError(f"order {self.order} is not a permutation of {r} dims")
        for d in range(r):
            if self.spt[d] < 1 or self.base_shape[d] % self.spt[d]:
                raise ValueError(f"spt {self.spt} does not divide shape {self.base_shape}")
        if self.interleave < 1 or self.spt[self.order[0]] % self.interleave:
            raise ValueError(f"interleave {self.interleave} does not divide spt {self.spt}")

    # ------------------------------------------------------------------ derived sizes

    @property
    def rank(self) -> int:
        return len(self.base_shape) - len(self.removed)

    @property
    def tile_dims(self) -> tuple[int, ...]:
        """The base dims that are dims of the tile, in order."""
        return tuple(d for d in range(len(self.base_shape)) if d not in self.removed)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(1 if d in self.unit else self.base_shape[d] for d in self.tile_dims)

    @property
    def live_dims(self) -> tuple[int, ...]:
        """Base dims along which values differ (neither removed nor unit)."""
        return tuple(d for d in self.tile_dims if d not in self.unit)

    @property
    def warp_size(self) -> int:
        return _prod(self.tpw)

    @property
    def num_warps(self) -> int:
        return _prod(self.wpc)

    @property
    def num_threads(self) -> int:
        return self.warp_size * self.num_warps

    def coverage(self, d: int) -> int:
        return self.spt[d] * self.tpw[d] * self.wpc[d]

    def reps(self, d: int) -> int:
        """How many times the thread pattern repeats along base dim ``d``."""
        return max(1, -(-self.base_shape[d] // self.coverage(d)))

    def replicated(self, d: int) -> bool:
        """Threads cover more than the extent of dim ``d``: some hold copies."""
        return self.coverage(d) > self.base_shape[d]

    def value_extent(self, d: int) -> int:
        """How many distinct values a thread holds along base dim ``d``."""
        if d not in self.live_dims:
            return 1
        return self.spt[d] * self.reps(d)

    @property
    def num_values(self) -> int:
        return _prod([self.value_extent(d) for d in range(len(self.base_shape))])

    # ------------------------------------------------------------------ coordinates

    def value_position(self, v: int) -> dict[int, tuple[int, int]]:
        """Value index ``v`` → per live base dim ``(rep, s)``: which repeat, which element."""
        out: dict[int, tuple[int, int]] = {}
        rest = v
        live = [d for d in self.order if d in self.live_dims]
        for d in live:  # element within the thread's contiguous run, fastest dims first
            out[d] = (0, self._run_element(d, rest % self.spt[d]))
            rest //= self.spt[d]
        for d in live:
            out[d] = (rest % self.reps(d), out[d][1])
            rest //= self.reps(d)
        return out

    def value_index(self, position: dict[int, tuple[int, int]]) -> int:
        """Inverse of :meth:`value_position` (dims missing from ``position`` count as 0)."""
        live = [d for d in self.order if d in self.live_dims]
        v, scale = 0, 1
        for d in live:
            v += self._run_slot(d, position.get(d, (0, 0))[1]) * scale
            scale *= self.spt[d]
        for d in live:
            v += position.get(d, (0, 0))[0] * scale
            scale *= self.reps(d)
        return v

    @property
    def interleaved_dim(self) -> int | None:
        """The live base dim whose runs are word-interleaved, if any."""
        if self.interleave == 1 or self.order[0] not in self.live_dims:
            return None
        return self.order[0]

    def _run_element(self, d: int, slot: int) -> int:
        """The element of the run along ``d`` that run slot ``slot`` holds (interleave)."""
        if d != self.interleaved_dim:
            return slot
        words = self.spt[d] // self.interleave
        return (slot % words) * self.interleave + slot // words

    def _run_slot(self, d: int, element: int) -> int:
        """Inverse of :meth:`_run_element`."""
        if d != self.interleaved_dim:
            return element
        words = self.spt[d] // self.interleave
        return (element % self.interleave) * words + element // self.interleave

    def value_offset(self, v: int) -> dict[int, int]:
        """The value's contribution to each live base dim's coordinate."""
        return {d: rep * self.coverage(d) + s for d, (rep, s) in self.value_position(v).items()}

    def lane_stride(self, d: int) -> int:
        """Lane-index stride between neighbouring lanes along base dim ``d``."""
        s = 1
        for e in self.order:
            if e == d:
                return s
            s *= self.tpw[e]
        raise AssertionError

    def warp_stride(self, d: int) -> int:
        s = 1
        for e in self.order:
            if e == d:
                return s
            s *= self.wpc[e]
        raise AssertionError

    def thread_offset(self, t: int) -> dict[int, int]:
        """Thread ``t``'s contribution to each base dim's coordinate (concrete ``t``)."""
        lane, warp = t % self.warp_size, t // self.warp_size
        out = {}
        for d in range(len(self.base_shape)):
            ld = (lane // self.lane_stride(d)) % self.tpw[d]
            wd = (warp // self.warp_stride(d)) % self.wpc[d]
            out[d] = (wd * self.tpw[d] + ld) * self.spt[d]
        return out

    def coords(self, t: int, v: int) -> tuple[int, ...]:
        """The tile coordinate of thread ``t``'s value ``v`` (concrete; for tests and views)."""
        to, vo = self.thread_offset(t), self.value_offset(v)
        out = []
        for d in self.tile_dims:
            if d in self.unit:
                out.append(0)
            else:
                out.append((to[d] + vo[d]) % self.base_shape[d])
        return tuple(out)

    # ------------------------------------------------------------------ transformations

    def reduce(self, axis: int) -> BlockedLayout:
        """The layout after reducing tile dim ``axis`` away."""
        d = self.tile_dims[axis]
        return replace(
            self,
            removed=tuple(sorted((*self.removed, d))),
            unit=tuple(u for u in self.unit if u != d),
        )

    def expand(self, axis: int) -> BlockedLayout | None:
        """The layout after inserting a size-1 tile dim at ``axis``, when it is a removed dim
        landing back in its place (the slice becomes a broadcastable unit dim)."""
        candidates = [d for d in self.removed]
        for d in candidates:
            trial = replace(
                self,
                removed=tuple(x for x in self.removed if x != d),
                unit=tuple(sorted((*self.unit, d))),
            )
            if trial.tile_dims.index(d) == axis:
                return trial
        return None

    def broadcast(self, shape: tuple[int, ...]) -> BlockedLayout | None:
        """The layout of this tile broadcast to ``shape`` (unit dims grow), if representable."""
        if len(shape) != self.rank:
            return None
        unit = []
        for axis, d in enumerate(self.tile_dims):
            if d in self.unit and shape[axis] != 1:
                if self.base_shape[d] != shape[axis]:
                    return None
            elif d in self.unit:
                unit.append(d)
            elif self.base_shape[d] != shape[axis]:
                return None
        return replace(self, unit=tuple(unit))

    def transpose(self, perm: tuple[int, ...]) -> BlockedLayout:
        """Permute tile dims (only for layouts with no removed dims)."""
        if self.removed:
            raise ValueError("cannot transpose a sliced layout")
        r = len(self.base_shape)
        inv = [0] * r
        for new, old in enumerate(perm):
            inv[old] = new
        return BlockedLayout(
            base_shape=tuple(self.base_shape[p] for p in perm),
            spt=tuple(self.spt[p] for p in perm),
            tpw=tuple(self.tpw[p] for p in perm),
            wpc=tuple(self.wpc[p] for p in perm),
            order=tuple(inv[o] for o in self.order),
            unit=tuple(sorted(inv[u] for u in self.unit)),
            interleave=self.interleave,  # order[0] still names the same dim
        )

    def contiguous_run(self) -> int:
        """Elements a thread holds contiguously along the last tile dim (vector width)."""
        if self.rank == 0:
            return 1
        d = self.tile_dims[-1]
        if d not in self.live_dims or self.order[0] != d or self.interleaved_dim == d:
            return 1  # an interleaved run is not in element order in the registers
        return self.spt[d]

    def __str__(self) -> str:
        s = (
            f"blocked<shape={list(self.base_shape)}, spt={list(self.spt)}, tpw={list(self.tpw)},"
            f" wpc={list(self.wpc)}, order={list(self.order)}"
        )
        if self.removed:
            s += f", removed={list(self.removed)}"
        if self.unit:
            s += f", unit={list(self.unit)}"
        if self.interleave > 1:
            s += f", interleave={self.interleave}"
        return s + ">"


@dataclass(frozen=True)
class TVRegisterLayout:
    """A register layout given as a thread-value layout of the algebra (``ir/tv_layout.py``)."""

    tv: Any  # TVLayout

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tv.tile_shape)

    @property
    def num_threads(self) -> int:
        return int(self.tv.num_threads)

    @property
    def num_values(self) -> int:
        return int(self.tv.num_values)

    def coords(self, t: int, v: int) -> tuple[int, ...]:
        return tuple(int(c) for c in self.tv(t, v))

    def __str__(self) -> str:
        return str(self.tv)


RegisterLayout = BlockedLayout | UniformLayout | TVRegisterLayout


def _pow2_floor(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


def _pow2_divisor(n: int) -> int:
    """The largest power of two dividing ``n`` (1 for 0)."""
    return n & -n if n > 0 else 1


def default_blocked(
    shape: tuple[int, ...], num_warps: int, warp_size: int, vector: int
) -> BlockedLayout:
    """The coalesced layout a global access wants: ``vector`` contiguous elements per thread
    along the last dim, lanes filling the last dim first, warps stacked along the first.

    On a one-thread target (``warp_size == num_warps == 1``) the one thread holds the whole
    tile, still listed fastest-last so the code generator sees long contiguous runs.
    """
    r = len(shape)
    if r == 0:
        raise ValueError("scalars use UniformLayout")
    order = tuple(range(r - 1, -1, -1))
    if warp_size == 1 and num_warps == 1:
        return BlockedLayout(shape, shape, (1,) * r, (1,) * r, order)
    spt = [1] * r
    last = shape[-1]
    vec = math.gcd(vector, last)
    spt[-1] = vec
    tpw = [1] * r
    lanes = warp_size
    # Lanes fill the fastest dim first, warps the slowest; each takes only a power of two
    # that divides what is left of the extent, so the pattern tiles the dim exactly (a
    # 96-wide dim gets 8 lanes of 4, repeated 3 times). Lanes or warps left over replicate.
    for d in order:
        take = math.gcd(lanes, _pow2_divisor(shape[d] // spt[d]))
        tpw[d] = take
        lanes //= take
    tpw[-1] *= lanes
    wpc = [1] * r
    warps = num_warps
    for d in reversed(order):
        take = math.gcd(warps, _pow2_divisor(max(1, shape[d] // (spt[d] * tpw[d]))))
        wpc[d] = take
        warps //= take
    wpc[0] *= warps
    return BlockedLayout(tuple(shape), tuple(spt), tuple(tpw), tuple(wpc), order)


def dot_accumulator_layout(shape: tuple[int, int], num_warps: int, warp_size: int) -> BlockedLayout:
    """A register-blocked layout for a CUDA-core ``dot`` accumulator: each thread owns a
    small square-ish sub-tile, so every operand element it reads feeds several products."""
    m, n = shape
    if warp_size == 1 and num_warps == 1:
        return BlockedLayout((m, n), (m, n), (1, 1), (1, 1), (1, 0))
    threads = warp_size * num_warps
    per_thread = max(1, (m * n) // threads)
    sm = 1
    while sm * sm < per_thread and m % (sm * 2) == 0 and sm * 2 <= 8:
        sm *= 2
    sn = max(1, min(per_thread // sm, n))
    while n % sn:
        sn -= 1
    tn = math.gcd(warp_size, max(1, n // sn))
    tm = warp_size // tn
    wm = math.gcd(num_warps, max(1, m // (sm * tm)))
    wn = num_warps // wm
    return BlockedLayout((m, n), (sm, sn), (tm, tn), (wm, wn), (1, 0))


def mma_accumulator_layout(
    shape: tuple[int, int], num_warps: int, atom_m: int = 16, atom_n: int = 8
) -> BlockedLayout | None:
    """The accumulator layout of a tensor-core ``dot``: the ``mma.sync`` C fragment
    (two neighbouring columns per thread, lanes 8 x 4 over rows x column pairs), with warps
    side by side and the pattern repeated over the tile. Two row repeats make one m16 atom, so
    the tile needs ``atom_m * warps_m`` rows and ``atom_n * warps_n`` columns per repeat.

    The warps are split so each warp's share of the tile is as square as possible (fewer
    operand fragments loaded per product). ``None`` when the tile cannot be divided so.
    """
    m, n = shape
    best: tuple[int, BlockedLayout] | None = None
    wm = 1
    while wm <= num_warps:
        wn = num_warps // wm
        if wm * wn == num_warps and m % (atom_m * wm) == 0 and n % (atom_n * wn) == 0:
            score = abs(m // wm - n // wn)
            lay = BlockedLayout((m, n), (1, 2), (8, 4), (wm, wn), (1, 0))
            if best is None or score < best[0]:
                best = (score, lay)
        wm *= 2
    return best[1] if best else None


def wgmma_accumulator_layout(shape: tuple[int, int], num_warps: int) -> BlockedLayout:
    """The accumulator layout of a ``dot`` on warpgroup tensor cores: the ``mma.sync`` one
    with every warp along M, so each warpgroup (four consecutive warps) owns whole rows and
    multiplies them by all of B; the instruction's own row order is restored by staging A's
    rows in warpgroup order (``docs/layouts.md``)."""
    return BlockedLayout(shape, (1, 2), (8, 4), (num_warps, 1), (1, 0))
