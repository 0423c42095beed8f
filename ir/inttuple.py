"""Integer tuples: the shapes, strides and coordinates of layouts.

An ``IntTuple`` is an ``int`` or a tuple of ``IntTuple`` s, so ``4``, ``(4, 8)`` and
``(4, (2, 3))`` are all IntTuples. Two IntTuples are *congruent* when they have the same
nesting profile. Coordinates map to indices **colexicographically** (generalized
column-major: the leftmost mode varies fastest), as in CuTe.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import TypeAlias

IntTuple: TypeAlias = "int | tuple[IntTuple, ...]"


class LayoutError(ValueError):
    """A layout, shape, stride or coordinate that does not fit what an operation needs."""


def is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def as_int(x: object, what: str = "value") -> int:
    """``x`` as a Python ``int`` (NumPy integers included); a clear error otherwise."""
    if isinstance(x, bool):
        raise LayoutError(f"{what} must be an integer, got {x!r}")
    try:
        return operator.index(x)  # type: ignore[arg-type]
    except TypeError:
        raise LayoutError(f"{what} must be an integer, got {x!r}") from None


def normalize(x: object, what: str = "int tuple") -> IntTuple:
    """``x`` (ints, NumPy ints, lists or tuples, nested) as a canonical IntTuple."""
    if isinstance(x, tuple | list):
        return tuple(normalize(e, what) for e in x)
    return as_int(x, what)


def to_str(x: IntTuple) -> str:
    """CuTe notation without spaces: ``(4,(2,3))``."""
    if isinstance(x, tuple):
        return "(" + ",".join(to_str(e) for e in x) + ")"
    return str(x)


def rank(x: IntTuple) -> int:
    """Number of top-level modes (an int has rank 1)."""
    return len(x) if isinstance(x, tuple) else 1


def depth(x: IntTuple) -> int:
    """Nesting depth: 0 for an int, 1 for a flat tuple, and so on."""
    if isinstance(x, tuple):
        return 1 + max((depth(e) for e in x), default=0)
    return 0


def product(x: IntTuple) -> int:
    """Product of all the integers in ``x`` (1 for an empty tuple)."""
    if isinstance(x, tuple):
        result = 1
        for e in x:
            result *= product(e)
        return result
    return x


def flatten(x: IntTuple) -> tuple[int, ...]:
    """The integers of ``x`` in order, as a flat tuple (an int becomes a 1-tuple)."""
    if isinstance(x, tuple):
        return tuple(i for e in x for i in flatten(e))
    return (x,)


def unflatten(flat: Iterable[int], profile: IntTuple) -> IntTuple:
    """Rebuild a tuple of ``profile`` 's nesting from the integers in ``flat``."""
    items = iter(flat)

    def build(p: IntTuple) -> IntTuple:
        if isinstance(p, tuple):
            return tuple(build(e) for e in p)
        return next(items)

    result = build(profile)
    if next(items, None) is not None:
        raise LayoutError(f"too many integers to unflatten into profile {to_str(profile)}")
    return result


def congruent(a: IntTuple, b: IntTuple) -> bool:
    """Whether ``a`` and ``b`` have the same nesting profile."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(congruent(x, y) for x, y in zip(a, b, strict=True))
    return not isinstance(a, tuple) and not isinstance(b, tuple)


def prefix_product(shape: IntTuple, init: int = 1) -> IntTuple:
    """Exclusive prefix products, congruent to ``shape``: the compact column-major strides.

    ``prefix_product((4, (2, 3))) == (1, (4, 8))``.
    """
    if not isinstance(shape, tuple):
        return init
    result = []
    for mode in shape:
        result.append(prefix_product(mode, init))
        init *= product(mode)
    return tuple(result)


def crd2idx(coord: IntTuple, shape: IntTuple, stride: IntTuple) -> int:
    """Index of ``coord`` under ``shape``:``stride``.

    ``coord`` may be congruent to ``shape`` or coarser: an int standing for a tuple mode is
    first split colexicographically over that mode. No range check is made, so the last
    mode of an int coordinate absorbs any overflow (as in CuTe).
    """
    if isinstance(coord, tuple):
        if not isinstance(shape, tuple) or len(coord) != len(shape):
            raise LayoutError(
                f"coordinate {to_str(coord)} does not match shape {to_str(shape)}"
            )
        return sum(crd2idx(c, s, d) for c, s, d in zip(coord, shape, stride, strict=True))
    if isinstance(shape, tuple):
        if not shape:
            return 0
        index = 0
        for s, d in zip(shape[:-1], stride[:-1], strict=True):  # type: ignore[index]
            extent = product(s)
            index += crd2idx(coord % extent, s, d)
            coord //= extent
        return index + crd2idx(coord, shape[-1], stride[-1])  # type: ignore[index]
    return coord * stride  # type: ignore[operator]


def idx2crd(index: int, shape: IntTuple) -> IntTuple:
    """The natural coordinate (congruent to ``shape``) of a colexicographic ``index``.

    The inverse of ``crd2idx(coord, shape, prefix_product(shape))`` on ``range(product(shape))``.
    """
    if isinstance(shape, tuple):
        if not shape:
            return ()
        coord = []
        for s in shape[:-1]:
            extent = product(s)
            coord.append(idx2crd(index % extent, s))
            index //= extent
        coord.append(idx2crd(index, shape[-1]))
        return tuple(coord)
    return index


def shape_div(a: IntTuple, b: int) -> IntTuple:
    """``a`` divided by ``b`` mode by mode, from the left, as in CuTe.

    For ints: ``a // b`` when ``b`` divides ``a``, ``1`` when ``a`` divides ``b``; anything
    else is an error. For tuples, ``b`` is divided out of the leading modes in turn:
    ``shape_div((4, 6), 8) == (1, 3)``.
    """
    if isinstance(a, tuple):
        result = []
        for mode in a:
            result.append(shape_div(mode, b))
            b = shape_div(b, product(mode))  # type: ignore[assignment]
        return tuple(result)
    if a % b == 0:
        return a // b
    if b % a == 0:
        return 1
    raise LayoutError(f"shape {a} and divisor {b}: neither divides the other")


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)
