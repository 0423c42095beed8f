"""CuTe-style layouts: functions from coordinates to indices, and their algebra.

A :class:`Layout` is a pair ``shape:stride`` of congruent :data:`IntTuple` s. It maps a
coordinate to the inner product of the coordinate with the stride; an integer ``i`` in
``range(size)`` stands for the coordinate it has colexicographically (the leftmost mode
varies fastest), so every layout is also a function on ``range(size)``. Written in CuTe
notation: ``(4,(2,3)):(1,(4,8))``.

The algebra (all pure functions on immutable values):

* :func:`coalesce` — the same function with the fewest modes;
* :func:`composition` (``a.compose(b)``) — functional composition ``(a∘b)(i) = a(b(i))``;
* :func:`complement` — the layout that fills the gaps of a layout up to a cotarget;
* :func:`right_inverse`, :func:`left_inverse`;
* :func:`logical_divide` and :func:`logical_product`, with their zipped, tiled, blocked and
  raked variants, which split a layout into tiles and repeat a tile over a layout.

Two layouts are ``==`` when shape and stride are equal; :meth:`Layout.equivalent` compares
them as functions.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from .inttuple import (
    IntTuple,
    LayoutError,
    ceil_div,
    congruent,
    crd2idx,
    idx2crd,
    normalize,
    prefix_product,
    product,
    shape_div,
    to_str,
    unflatten,
)
from .inttuple import depth as _depth
from .inttuple import flatten as _flatten_tuple
from .inttuple import rank as _rank

__all__ = [
    "IntTuple",
    "Layout",
    "LayoutError",
    "Tiler",
    "blocked_product",
    "coalesce",
    "col_major",
    "complement",
    "composition",
    "crd2idx",
    "filter_layout",
    "flatten",
    "idx2crd",
    "left_inverse",
    "logical_divide",
    "logical_product",
    "make_layout",
    "make_ordered_layout",
    "parse_layout",
    "prefix_product",
    "product",
    "raked_product",
    "right_inverse",
    "row_major",
    "shape_div",
    "tiled_divide",
    "tiled_product",
    "zipped_divide",
    "zipped_product",
]


@dataclass(frozen=True, init=False)
class Layout:
    """A function from coordinates to indices, ``shape:stride``.

    ``Layout(shape)`` has compact column-major strides; ``Layout(4, 2)`` is ``4:2``.
    Extents must be positive; strides may be any integers (0 broadcasts).
    """

    shape: IntTuple
    stride: IntTuple

    def __init__(self, shape: object, stride: object = None) -> None:
        shape = normalize(shape, "layout shape")
        stride = prefix_product(shape) if stride is None else normalize(stride, "layout stride")
        if not congruent(shape, stride):
            raise LayoutError(
                f"shape {to_str(shape)} and stride {to_str(stride)} have different profiles"
            )
        if any(s < 1 for s in _flatten_tuple(shape)):
            raise LayoutError(f"shape {to_str(shape)} has an extent below 1")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "stride", stride)

    # -- basic queries ---------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Number of coordinates (the domain is ``range(size)``)."""
        return product(self.shape)

    @property
    def cosize(self) -> int:
        """One past the largest index the layout produces (for non-negative strides, the
        extent of memory it touches)."""
        return 1 + sum((s - 1) * d for s, d in self._flat_modes() if d > 0)

    @property
    def rank(self) -> int:
        """Number of top-level modes (1 for an int shape)."""
        return _rank(self.shape)

    @property
    def depth(self) -> int:
        return _depth(self.shape)

    def __getitem__(self, i: int) -> Layout:
        """Top-level mode ``i``; an int-shaped layout is its own only mode."""
        if not isinstance(self.shape, tuple):
            if i in (0, -1):
                return self
            raise LayoutError(f"layout {self} has one mode; mode {i} does not exist")
        if not -len(self.shape) <= i < len(self.shape):
            raise LayoutError(f"layout {self} has {len(self.shape)} modes; mode {i} does not exist")
        return Layout(self.shape[i], self.stride[i])  # type: ignore[index]

    def modes(self) -> tuple[Layout, ...]:
        return tuple(self[i] for i in range(self.rank))

    def _flat_modes(self) -> list[tuple[int, int]]:
        return list(zip(_flatten_tuple(self.shape), _flatten_tuple(self.stride), strict=True))

    # -- evaluation ------------------------------------------------------------------------

    def __call__(self, *coord: object) -> int:
        """The index of a coordinate.

        Accepts a flat integer in ``range(size)``, a (nested) coordinate whose integers may
        stand for whole sub-modes, or the top-level coordinates as separate arguments:
        ``L(5)``, ``L((1, 2))``, ``L(1, 2)``.
        """
        c = normalize(coord[0] if len(coord) == 1 else coord, "coordinate")
        self._check_coord(c, self.shape, c)
        return crd2idx(c, self.shape, self.stride)

    def _check_coord(self, c: IntTuple, shape: IntTuple, whole: IntTuple) -> None:
        if isinstance(c, tuple):
            if not isinstance(shape, tuple) or len(c) != len(shape):
                raise LayoutError(f"coordinate {to_str(whole)} does not fit layout {self}")
            for ci, si in zip(c, shape, strict=True):
                self._check_coord(ci, si, whole)
        elif not 0 <= c < product(shape):
            raise LayoutError(f"coordinate {to_str(whole)} is out of range for layout {self}")

    def values(self) -> np.ndarray:
        """``[L(i) for i in range(size)]`` as an int64 NumPy array (vectorized)."""
        index = np.arange(self.size, dtype=np.int64)
        out = np.zeros(self.size, dtype=np.int64)
        for s, d in self._flat_modes():
            out += (index % s) * d
            index //= s
        return out

    def equivalent(self, other: Layout) -> bool:
        """Whether both layouts are the same function on ``range(size)``."""
        return self.size == other.size and bool(np.array_equal(self.values(), other.values()))

    def is_injective(self) -> bool:
        values = self.values()
        return len(np.unique(values)) == len(values)

    # -- algebra as methods ----------------------------------------------------------------

    def coalesce(self) -> Layout:
        return coalesce(self)

    def compose(self, other: Layout | IntTuple) -> Layout:
        """Functional composition ``self ∘ other``."""
        return composition(self, other)

    def flatten(self) -> Layout:
        return flatten(self)

    def with_shape(self, shape: IntTuple) -> Layout:
        """This function re-indexed by a compact column-major ``shape`` of the same size."""
        shape = normalize(shape, "shape")
        if product(shape) != self.size:
            raise LayoutError(
                f"with_shape: shape {to_str(shape)} has size {product(shape)}, "
                f"layout {self} has size {self.size}"
            )
        return composition(self, Layout(shape))

    # -- printing --------------------------------------------------------------------------

    def __str__(self) -> str:
        return f"{to_str(self.shape)}:{to_str(self.stride)}"

    def __repr__(self) -> str:
        return f"Layout({to_str(self.shape)}, {to_str(self.stride)})"


Tiler: TypeAlias = "Layout | Sequence[Layout | int]"
"""What a layout is divided by or multiplied with: one layout, or one per mode (an int
``n`` standing for ``n:1``)."""


# -- construction ----------------------------------------------------------------------------


def make_layout(*layouts: Layout) -> Layout:
    """The layout whose modes are ``layouts`` (concatenation)."""
    return Layout(tuple(m.shape for m in layouts), tuple(m.stride for m in layouts))


def make_ordered_layout(shape: IntTuple, order: IntTuple) -> Layout:
    """A compact layout whose modes get strides in increasing ``order``.

    ``order`` is congruent to ``shape``; the mode with the smallest order gets stride 1.
    ``make_ordered_layout((4, 8), (1, 0)) == (4,8):(8,1)``.
    """
    shape = normalize(shape, "shape")
    order = normalize(order, "order")
    if not congruent(shape, order):
        raise LayoutError(f"order {to_str(order)} does not match shape {to_str(shape)}")
    flat_shape = _flatten_tuple(shape)
    flat_order = _flatten_tuple(order)
    if len(set(flat_order)) != len(flat_order):
        raise LayoutError(f"order {to_str(order)} repeats a value")
    strides = [0] * len(flat_shape)
    current = 1
    for i in sorted(range(len(flat_shape)), key=lambda j: flat_order[j]):
        strides[i] = current
        current *= flat_shape[i]
    return Layout(shape, unflatten(strides, shape))


def col_major(shape: IntTuple) -> Layout:
    """Compact layout, leftmost mode fastest: ``col_major((4, 8)) == (4,8):(1,4)``."""
    return Layout(shape)


def row_major(shape: IntTuple) -> Layout:
    """Compact layout, rightmost mode fastest: ``row_major((4, 8)) == (4,8):(8,1)``."""
    shape = normalize(shape, "shape")
    n = len(_flatten_tuple(shape))
    return make_ordered_layout(shape, unflatten(range(n - 1, -1, -1), shape))


# -- parsing ---------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(-?\d+)|(\S))")


def parse_layout(text: str) -> Layout:
    """Read CuTe notation back: ``"(4,(2,3)):(1,(4,8))"``; a bare shape is column-major.

    ``parse_layout(str(L)) == L`` for every layout.
    """
    tokens = [(m.group(1) or m.group(2), m.start(1) if m.group(1) else m.start(2))
              for m in _TOKEN.finditer(text) if m.group(1) or m.group(2)]
    pos = 0

    def fail(expected: str) -> LayoutError:
        got, column = tokens[pos] if pos < len(tokens) else ("end of text", len(text))
        return LayoutError(
            f"bad layout at column {column + 1}: expected {expected}, got {got!r}\n"
            f"  {text}\n  {' ' * column}^"
        )

    def int_tuple() -> IntTuple:
        nonlocal pos
        if pos < len(tokens) and tokens[pos][0] == "(":
            pos += 1
            items = [int_tuple()]
            while pos < len(tokens) and tokens[pos][0] == ",":
                pos += 1
                items.append(int_tuple())
            if pos >= len(tokens) or tokens[pos][0] != ")":
                raise fail("',' or ')'")
            pos += 1
            return tuple(items)
        if pos < len(tokens) and re.fullmatch(r"-?\d+", tokens[pos][0]):
            pos += 1
            return int(tokens[pos - 1][0])
        raise fail("an integer or '('")

    shape = int_tuple()
    stride = None
    if pos < len(tokens) and tokens[pos][0] == ":":
        pos += 1
        stride = int_tuple()
    if pos < len(tokens):
        raise fail("':' or end of text" if stride is None else "end of text")
    try:
        return Layout(shape, stride)
    except LayoutError as e:
        raise LayoutError(f"bad layout {text!r}: {e}") from None


# -- coalesce, flatten, filter -----------------------------------------------------------


def _from_flat_modes(modes: Sequence[tuple[int, int]]) -> Layout:
    if not modes:
        return Layout(1, 0)
    if len(modes) == 1:
        return Layout(*modes[0])
    return Layout(tuple(s for s, _ in modes), tuple(d for _, d in modes))


def _coalesced_modes(layout: Layout) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for s, d in layout._flat_modes():
        if s == 1:
            continue  # a size-1 mode contributes nothing to the function
        if merged and merged[-1][0] * merged[-1][1] == d:
            merged[-1] = (merged[-1][0] * s, merged[-1][1])
        else:
            merged.append((s, d))
    return merged


def coalesce(layout: Layout, by_mode: bool = False) -> Layout:
    """The same function on ``range(size)`` with the fewest, flat modes.

    Size-1 modes are dropped and neighbours ``s0:d0, s1:d1`` with ``d1 == s0*d0`` merge.
    With ``by_mode``, each top-level mode is coalesced on its own and the rank is kept.
    """
    if by_mode:
        return make_layout(*(coalesce(m) for m in layout.modes()))
    return _from_flat_modes(_coalesced_modes(layout))


def flatten(layout: Layout) -> Layout:
    """All modes at the top level: ``flatten((4,(2,3)):(1,(4,8))) == (4,2,3):(1,4,8)``."""
    if not isinstance(layout.shape, tuple):
        return layout
    return Layout(_flatten_tuple(layout.shape), _flatten_tuple(layout.stride))


def filter_layout(layout: Layout) -> Layout:
    """Drop stride-0 (broadcast) and size-1 modes, then coalesce: the distinct values."""
    return _from_flat_modes(_coalesced_modes(_from_flat_modes(
        [(s, d) for s, d in layout._flat_modes() if d != 0])))


# -- composition ---------------------------------------------------------------------------


def _compose_mode(a_modes: list[tuple[int, int]], a: Layout, s: int, d: int) -> Layout:
    """``a ∘ s:d`` for one int-shaped mode, ``a`` given as its coalesced flat modes."""
    if s == 1:
        return Layout(1, 0)
    if d == 0:
        return Layout(s, 0)
    if d < 0:
        raise LayoutError(f"composition: stride {d} of the right operand is negative")
    if not a_modes:
        a_modes = [(1, 0)]
    result: list[tuple[int, int]] = []
    rest_stride, rest_shape = d, s
    for a_shape, a_stride in a_modes[:-1]:
        if rest_shape == 1:
            break
        # Skip the part of this mode that the stride steps over...
        if rest_stride % a_shape == 0:
            rest_stride //= a_shape
            continue
        if a_shape % rest_stride != 0:
            raise LayoutError(
                f"composition: stride {d} does not divide the shape of {a} "
                f"(mode {a_shape}:{a_stride} vs remaining stride {rest_stride})"
            )
        available = a_shape // rest_stride
        # ...then take as much of the rest as the shape asks for.
        if rest_shape % available != 0 and available % rest_shape != 0:
            raise LayoutError(
                f"composition: shape {s} (stride {d}) does not divide the shape of {a} "
                f"(mode {a_shape}:{a_stride} leaves {available}, {rest_shape} still wanted)"
            )
        taken = min(available, rest_shape)
        result.append((taken, a_stride * rest_stride))
        rest_shape //= taken
        rest_stride = 1
    if rest_shape > 1:
        # The last mode of `a` extends past its extent, as CuTe's last mode does.
        result.append((rest_shape, a_modes[-1][1] * rest_stride))
    return coalesce(_from_flat_modes(result))


def composition(a: Layout, b: Layout | IntTuple) -> Layout:
    """Functional composition ``a ∘ b``: ``composition(a, b)(i) == a(b(i))``.

    The result has ``b`` 's top-level modes, each of them possibly split into sub-modes
    (a shape ``b`` stands for the compact layout ``Layout(b)``). Each mode of ``b`` must
    divide cleanly into ``a`` 's (coalesced) modes — the stride first, then the shape — or a
    :class:`LayoutError` says where not.
    ``(6,2):(8,2) ∘ (4,3):(3,1) == ((2,2),3):((24,2),8)``.
    """
    if not isinstance(b, Layout):
        b = Layout(b)
    a_modes = _coalesced_modes(a)

    def compose(shape: IntTuple, stride: IntTuple) -> Layout:
        if isinstance(shape, tuple):
            return make_layout(*(compose(s, d) for s, d in zip(shape, stride, strict=True)))  # type: ignore[arg-type]
        return _compose_mode(a_modes, a, shape, stride)  # type: ignore[arg-type]

    result = compose(b.shape, b.stride)
    # Composing mode by mode is exact when b's modes occupy disjoint stride ranges
    # [d, d*s): their sum then never carries across a's modes. Otherwise check the values.
    spans = sorted((d, d * s) for s, d in b._flat_modes() if s > 1 and d > 0)
    disjoint = all(lo_next >= hi for (_, hi), (lo_next, _) in itertools.pairwise(spans))
    if not disjoint and not np.array_equal(result.values(), _evaluate(a_modes, b.values())):
        raise LayoutError(
            f"composition: {a} ∘ {b} is not a layout: the modes of {b} overlap and their "
            f"sums carry across the modes of {a}"
        )
    return result


def _evaluate(modes: list[tuple[int, int]], index: np.ndarray) -> np.ndarray:
    """A layout given by flat ``modes`` at each index, its last mode extended past its
    extent as composition assumes."""
    if not modes:
        return np.zeros_like(index)
    out = np.zeros_like(index)
    for s, d in modes[:-1]:
        out += (index % s) * d
        index = index // s
    return out + index * modes[-1][1]


# -- complement and inverses ---------------------------------------------------------------


def complement(layout: Layout, cotarget: IntTuple | None = None) -> Layout:
    """The layout that fills the gaps of ``layout`` up to ``cotarget``.

    The result ``c`` has increasing strides, ``make_layout(layout, c)`` is injective, and its
    image covers ``range(cotarget)`` (exactly, when ``cotarget`` is a multiple of the
    layout's span). ``cotarget`` defaults to ``layout.cosize``.
    ``complement(4:2, 24) == (2,3):(1,8)``.
    """
    target = layout.cosize if cotarget is None else product(normalize(cotarget, "cotarget"))
    modes = sorted(
        ((s, d) for s, d in layout._flat_modes() if s != 1 and d != 0), key=lambda m: (m[1], m[0])
    )
    result: list[tuple[int, int]] = []
    current = 1
    for s, d in modes:
        if d < 0 or d % current != 0:
            raise LayoutError(
                f"complement: layout {layout} is not complementable "
                f"(stride {d} is not a multiple of the span {current} below it)"
            )
        result.append((d // current, current))
        current = s * d
    result.append((ceil_div(target, current), current))
    return coalesce(_from_flat_modes(result))


def right_inverse(layout: Layout) -> Layout:
    """A layout ``r`` with ``layout(r(i)) == i`` for ``i`` in ``range(r.size)``, as large
    as the contiguous prefix ``0, 1, 2…`` of ``layout`` 's image allows."""
    flat = layout._flat_modes()
    coord_strides = _flatten_tuple(prefix_product(tuple(s for s, _ in flat)))
    order = sorted(
        (i for i, (s, d) in enumerate(flat) if s != 1 and d > 0), key=lambda i: flat[i][1]
    )
    result: list[tuple[int, int]] = []
    current = 1
    for i in order:
        s, d = flat[i]
        if d != current:
            break
        result.append((s, coord_strides[i]))
        current *= s
    return coalesce(_from_flat_modes(result))


def left_inverse(layout: Layout) -> Layout:
    """A layout ``l`` with ``l(layout(i)) == i`` for every ``i`` in ``range(size)``
    (``layout`` must be injective and complementable)."""
    return right_inverse(make_layout(layout, complement(layout)))


# -- divide and product --------------------------------------------------------------------


def _as_tiler_layout(t: Layout | int) -> Layout:
    return t if isinstance(t, Layout) else Layout(normalize(t, "tile size"), 1)


def _by_mode(layout: Layout, tiler: Sequence[Layout | int], name: str) -> list[Layout]:
    if len(tiler) > layout.rank:
        raise LayoutError(
            f"{name}: tiler has {len(tiler)} modes but layout {layout} has rank {layout.rank}"
        )
    return [_as_tiler_layout(t) for t in tiler]


def logical_divide(layout: Layout, tiler: Tiler) -> Layout:
    """Split ``layout`` into (tile, rest): ``layout ∘ (tiler, complement(tiler, size))``.

    Mode 0 of the result is the tile ``tiler`` selects, mode 1 enumerates the tiles. With a
    tuple of tilers, each mode of ``layout`` is divided by its own one.
    ``logical_divide((4,2,3):(2,1,8), 4:2) == ((2,2),(2,3)):((4,1),(2,8))``.
    """
    if not isinstance(tiler, Layout):
        tilers = _by_mode(layout, tiler, "logical_divide")
        divided = [logical_divide(layout[i], t) for i, t in enumerate(tilers)]
        return make_layout(*divided, *layout.modes()[len(tilers):])
    if layout.size % tiler.size != 0:
        raise LayoutError(
            f"logical_divide: tile {tiler} (size {tiler.size}) does not divide "
            f"layout {layout} (size {layout.size})"
        )
    return composition(layout, make_layout(tiler, complement(tiler, layout.size)))


def zipped_divide(layout: Layout, tiler: Tiler) -> Layout:
    """Like :func:`logical_divide`, with all tile modes gathered in mode 0 and all rest modes
    in mode 1: ``((tile0, tile1…), (rest0, rest1…))``."""
    divided = logical_divide(layout, tiler)
    if isinstance(tiler, Layout):
        return divided
    n = len(tiler)
    tiles = [divided[i][0] for i in range(n)]
    rests = [divided[i][1] for i in range(n)] + list(divided.modes()[n:])
    return make_layout(make_layout(*tiles), make_layout(*rests))


def tiled_divide(layout: Layout, tiler: Tiler) -> Layout:
    """Like :func:`zipped_divide`, with the rest modes at the top level:
    ``((tile0, tile1…), rest0, rest1…)``."""
    zipped = zipped_divide(layout, tiler)
    return make_layout(zipped[0], *zipped[1].modes())


def logical_product(layout: Layout, tiler: Tiler) -> Layout:
    """Repeat ``layout`` as arranged by ``tiler``:
    ``(layout, complement(layout, size(layout) * cosize(tiler)) ∘ tiler)``."""
    if not isinstance(tiler, Layout):
        tilers = _by_mode(layout, tiler, "logical_product")
        products = [logical_product(layout[i], t) for i, t in enumerate(tilers)]
        return make_layout(*products, *layout.modes()[len(tilers):])
    rest = complement(layout, layout.size * tiler.cosize)
    return make_layout(layout, composition(rest, tiler))


def zipped_product(layout: Layout, tiler: Tiler) -> Layout:
    """:func:`logical_product` with the tile modes gathered in mode 0 and the repetition
    modes in mode 1."""
    result = logical_product(layout, tiler)
    if isinstance(tiler, Layout):
        return result
    n = len(tiler)
    return make_layout(
        make_layout(*(result[i][0] for i in range(n)), *result.modes()[n:]),
        make_layout(*(result[i][1] for i in range(n))),
    )


def tiled_product(layout: Layout, tiler: Tiler) -> Layout:
    """:func:`zipped_product` with the repetition modes at the top level."""
    zipped = zipped_product(layout, tiler)
    return make_layout(zipped[0], *zipped[1].modes())


def _padded_modes(layout: Layout, r: int) -> list[Layout]:
    return list(layout.modes()) + [Layout(1, 0)] * (r - layout.rank)


def _zip_product(block: Layout, tiler: Layout, block_first: bool) -> Layout:
    r = max(block.rank, tiler.rank)
    padded_block = make_layout(*_padded_modes(block, r))
    padded_tiler = make_layout(*_padded_modes(tiler, r))
    product_ = logical_product(padded_block, padded_tiler)
    inner, outer = product_[0], product_[1]
    pairs = [
        make_layout(inner[i], outer[i]) if block_first else make_layout(outer[i], inner[i])
        for i in range(r)
    ]
    return coalesce(make_layout(*pairs), by_mode=True)


def blocked_product(block: Layout, tiler: Layout) -> Layout:
    """Repeat ``block`` over ``tiler``, mode by mode, block index fastest.

    Mode ``i`` of the result enumerates ``(block_i, tiler_i)``: a rank-2 ``block`` of
    ``(2,2)`` repeated over a ``(3,4)`` tiler gives a ``(6,8)`` layout made of whole blocks.
    """
    return _zip_product(block, tiler, block_first=True)


def raked_product(block: Layout, tiler: Layout) -> Layout:
    """Like :func:`blocked_product` with the tiler index fastest, so the elements of each
    block are spread (raked) across the result rather than kept together."""
    return _zip_product(block, tiler, block_first=False)

