"""Thread-value layouts: which thread holds which element of a register tile.

A register tile of shape ``tile_shape`` held by ``T`` threads with ``V`` values each is
described by a :class:`TVLayout`: a core :class:`~tegula.ir.layout.Layout` of shape
``(T, V)`` (each mode possibly nested) whose value is the **row-major** linear index of the
element in the tile — tegula tiles are row-major, like NumPy arrays, so element ``(r, c)``
of an ``(R, C)`` tile has index ``r*C + c``. Thread ``t`` 's value ``v`` is element
``layout((t, v))``.

Readable primitives build the common layouts:

* ``local(2, 2)`` — one thread holds a whole ``2x2`` tile: 1 thread, 4 values (row-major);
* ``spatial(4, 8)`` — a ``4x8`` tile spread over 32 threads, one value each (row-major);
* ``outer * inner`` — stack ``outer`` over ``inner``: the tile is ``inner`` 's tile
  repeated in the pattern of ``outer``, tile shapes multiply elementwise, and threads and
  values are numbered outer-major (``t = t_outer * T_inner + t_inner``, likewise ``v``).
  ``spatial(4,8) * local(2,2)`` maps ``(t, v) ↦ (2·(t//8) + v//2, 2·(t%8) + v%2)``.
  This product is not functional composition (that is ``Layout.compose``);
* :func:`blocked` — the coalesced default a code generator wants.

Replication (the same element held by several threads, as after a reduction or for a
broadcast operand) is a stride-0 thread mode; a stride-0 value mode would make one thread
hold an element twice, which the primitives never produce.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .inttuple import LayoutError, as_int, flatten, to_str
from .layout import Layout, coalesce, composition, filter_layout, make_layout

__all__ = ["TVLayout", "blocked", "from_layout", "local", "spatial"]


def _row_major_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides = [1] * len(shape)
    for k in range(len(shape) - 2, -1, -1):
        strides[k] = strides[k + 1] * shape[k + 1]
    return tuple(strides)


def _reindex(tile_shape: Sequence[int], strides: Sequence[int]) -> Layout:
    """The layout taking a row-major index of ``tile_shape`` to ``Σ coord[k]*strides[k]``.

    A row-major index is colexicographic over the reversed shape, hence the reversals.
    """
    if not tile_shape:
        return Layout(1, 0)
    return Layout(tuple(reversed(tile_shape)), tuple(reversed(strides)))


def _tile_shape(shape: Sequence[object], what: str) -> tuple[int, ...]:
    dims = tuple(as_int(s, f"{what} extent") for s in shape)
    if any(d < 1 for d in dims):
        raise LayoutError(f"{what}: tile shape {to_str(dims)} has an extent below 1")
    return dims


def _parenthesized(expr: str) -> str:
    return f"({expr})" if "*" in expr else expr


@dataclass(frozen=True)
class TVLayout:
    """A register-tile layout: ``layout`` maps ``(thread, value)`` to the row-major index of
    an element of a ``tile_shape`` tile.

    ``expr`` is how the layout was built (what ``str`` prints); equality ignores it.
    """

    layout: Layout
    tile_shape: tuple[int, ...]
    expr: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.layout.rank != 2:
            raise LayoutError(f"a TV layout needs a (thread, value) layout, got {self.layout}")
        shape = _tile_shape(self.tile_shape, "TV layout")
        object.__setattr__(self, "tile_shape", shape)
        if not self.expr:
            object.__setattr__(self, "expr", f"from_layout({self.layout}, {to_str(shape)})")
        modes = zip(flatten(self.layout.shape), flatten(self.layout.stride), strict=True)
        lowest = highest = 0
        for s, d in modes:
            lowest += min(0, (s - 1) * d)
            highest += max(0, (s - 1) * d)
        if lowest < 0 or highest >= self.num_elements:
            raise LayoutError(
                f"layout {self.layout} reaches indices {lowest}..{highest}, outside the "
                f"{self.num_elements} elements of a {to_str(shape)} tile"
            )

    # -- sizes -------------------------------------------------------------------------------

    @property
    def num_threads(self) -> int:
        return self.layout[0].size

    @property
    def num_values(self) -> int:
        return self.layout[1].size

    @property
    def num_elements(self) -> int:
        return int(np.prod(self.tile_shape, dtype=np.int64))

    @property
    def thread_layout(self) -> Layout:
        """Mode 0: the element index of value 0 of each thread."""
        return self.layout[0]

    @property
    def value_layout(self) -> Layout:
        """Mode 1: each value's element index, relative to the thread's value 0."""
        return self.layout[1]

    # -- evaluation --------------------------------------------------------------------------

    def __call__(self, thread: int, value: int) -> tuple[int, ...]:
        """The tile coordinate of ``thread`` 's value ``value``."""
        thread, value = as_int(thread, "thread"), as_int(value, "value")
        if not 0 <= thread < self.num_threads:
            raise LayoutError(f"thread {thread} out of range for {self} ({self.num_threads})")
        if not 0 <= value < self.num_values:
            raise LayoutError(f"value {value} out of range for {self} ({self.num_values})")
        index = self.layout((thread, value))
        return tuple(int(i) for i in np.unravel_index(index, self.tile_shape))

    def element_indices(self) -> np.ndarray:
        """A ``(num_threads, num_values)`` array of row-major element indices."""
        flat = self.layout.values()  # colexicographic: i = t + T*v
        return flat.reshape(self.num_values, self.num_threads).T

    def owner_count(self) -> np.ndarray:
        """How many (thread, value) pairs hold each element, as an array of the tile shape."""
        counts = np.bincount(self.layout.values(), minlength=self.num_elements)
        return counts.reshape(self.tile_shape)

    def element_owners(self) -> np.ndarray:
        """Who holds each element: an int64 array of shape ``tile_shape + (2,)`` whose entry
        ``[..., 0]`` is the thread and ``[..., 1]`` the value, ``-1`` for an element no
        thread holds. Where several threads hold an element (replication) this is the
        lowest thread, and its lowest value; :meth:`owner_count` says how many there are.
        """
        t, v = np.meshgrid(
            np.arange(self.num_threads), np.arange(self.num_values), indexing="ij"
        )
        keys = (t * self.num_values + v).ravel()
        elements = self.element_indices().ravel()
        unowned = self.num_threads * self.num_values
        best = np.full(self.num_elements, unowned, dtype=np.int64)
        np.minimum.at(best, elements, keys)
        owners = np.stack([best // self.num_values, best % self.num_values], axis=-1)
        owners[best == unowned] = -1
        return owners.reshape((*self.tile_shape, 2))

    # -- operations --------------------------------------------------------------------------

    def __mul__(self, inner: TVLayout) -> TVLayout:
        """Stack ``self`` (outer) over ``inner``; see the module docstring."""
        if not isinstance(inner, TVLayout):
            return NotImplemented
        if len(self.tile_shape) != len(inner.tile_shape):
            raise LayoutError(
                f"cannot stack {self} (rank {len(self.tile_shape)}) over {inner} "
                f"(rank {len(inner.tile_shape)}): tile ranks differ"
            )
        shape = tuple(o * i for o, i in zip(self.tile_shape, inner.tile_shape, strict=True))
        strides = _row_major_strides(shape)
        outer_to_full = _reindex(
            self.tile_shape, [i * s for i, s in zip(inner.tile_shape, strides, strict=True)]
        )
        inner_to_full = _reindex(inner.tile_shape, strides)
        try:
            outer = composition(outer_to_full, self.layout)
            inner_ = composition(inner_to_full, inner.layout)
        except LayoutError as e:
            raise LayoutError(f"cannot stack {self} over {inner}: {e}") from None
        layout = make_layout(
            coalesce(make_layout(inner_[0], outer[0])),
            coalesce(make_layout(inner_[1], outer[1])),
        )
        return TVLayout(layout, shape, f"{self.expr}*{inner.expr}")

    def transpose(self) -> TVLayout:
        """The same threads and values on the transposed 2-D tile: what held ``(r, c)`` now
        holds ``(c, r)``."""
        if len(self.tile_shape) != 2:
            raise LayoutError(f"transpose needs a 2-D tile; {self} has shape {self.tile_shape}")
        rows, cols = self.tile_shape
        try:
            layout = composition(Layout((cols, rows), (rows, 1)), self.layout)
        except LayoutError as e:
            raise LayoutError(f"cannot transpose {self}: {e}") from None
        return TVLayout(
            coalesce(layout, by_mode=True), (cols, rows), f"{_parenthesized(self.expr)}.transpose()"
        )

    def slice(self, axis: int) -> TVLayout:
        """The layout of the tile left when ``axis`` is reduced away.

        Thread ``t`` of the result holds the elements whose coordinates are those of the
        elements it held here with ``axis`` dropped, so a reduction along ``axis`` needs no
        data movement to land in it, and broadcasting it back along ``axis`` gives each
        thread exactly what it needs. Values that differed only along ``axis`` merge into
        one (the value count shrinks); threads that differed only along ``axis`` become
        replicas of each other (stride-0 thread modes). The thread count is unchanged.
        """
        rank = len(self.tile_shape)
        if not -rank <= axis < rank:
            raise LayoutError(f"slice: axis {axis} out of range for a rank-{rank} tile")
        axis %= rank
        kept = self.tile_shape[:axis] + self.tile_shape[axis + 1 :]
        kept_strides = list(_row_major_strides(kept))
        projection = _reindex(self.tile_shape, [*kept_strides[:axis], 0, *kept_strides[axis:]])
        try:
            layout = composition(projection, self.layout)
        except LayoutError as e:
            raise LayoutError(f"cannot slice {self} along axis {axis}: {e}") from None
        layout = make_layout(coalesce(layout[0]), filter_layout(layout[1]))
        return TVLayout(layout, kept, f"{_parenthesized(self.expr)}.slice({axis})")

    def __str__(self) -> str:
        return self.expr


# -- primitives ----------------------------------------------------------------------------


def local(*shape: int) -> TVLayout:
    """One thread holds the whole ``shape`` tile, its values in row-major order."""
    dims = _tile_shape(shape, "local")
    n = int(np.prod(dims, dtype=np.int64))
    return TVLayout(Layout((1, n), (0, 1)), dims, f"local({','.join(map(str, dims))})")


def spatial(*shape: int) -> TVLayout:
    """The ``shape`` tile spread over ``prod(shape)`` threads, one element each, threads in
    row-major order."""
    dims = _tile_shape(shape, "spatial")
    n = int(np.prod(dims, dtype=np.int64))
    return TVLayout(Layout((n, 1), (1, 0)), dims, f"spatial({','.join(map(str, dims))})")


def blocked(tile_shape: Sequence[int], num_threads: int, vector: int = 1) -> TVLayout:
    """The coalesced default layout for a tile of any rank.

    Cut the row-major tile into chunks of ``vector`` contiguous elements along the last
    dimension and deal them to threads in order: thread ``t`` holds chunks ``t``,
    ``t + T``, ``t + 2T``… as its values (``vector`` values per chunk). When there are fewer
    chunks than threads, the threads wrap around and replicate: thread ``t`` holds chunk
    ``t % chunks``. Either count must divide the other.
    """
    shape = _tile_shape(tile_shape, "blocked")
    threads = as_int(num_threads, "num_threads")
    vector = as_int(vector, "vector")
    expr = f"blocked({to_str(shape)},{threads},{vector})"
    if not shape or threads < 1 or vector < 1:
        raise LayoutError(f"{expr}: needs a non-empty tile, threads >= 1 and vector >= 1")
    if shape[-1] % vector != 0:
        raise LayoutError(f"{expr}: vector {vector} does not divide the last extent {shape[-1]}")
    chunks = int(np.prod(shape, dtype=np.int64)) // vector
    if chunks >= threads:
        if chunks % threads != 0:
            raise LayoutError(
                f"{expr}: {chunks} chunks of {vector} elements do not divide evenly "
                f"over {threads} threads"
            )
        layout = Layout((threads, (vector, chunks // threads)), (vector, (1, threads * vector)))
    else:
        if threads % chunks != 0:
            raise LayoutError(
                f"{expr}: {threads} threads do not replicate evenly over {chunks} chunks "
                f"of {vector} elements"
            )
        layout = Layout(((chunks, threads // chunks), vector), ((vector, 0), 1))
    return TVLayout(coalesce(layout, by_mode=True), shape, expr)


def from_layout(layout: Layout, tile_shape: Sequence[int]) -> TVLayout:
    """Wrap a raw ``(thread, value)`` layout whose values are row-major element indices of a
    ``tile_shape`` tile."""
    return TVLayout(layout, _tile_shape(tile_shape, "from_layout"))
