"""Integer range analysis for Loop IR expressions.

:class:`IntRange` is an inclusive interval of integers with optional unbounded ends;
:class:`IntRangeAnalysis` gives every integer (or bool) expression a range that holds for
all values the expression can take, given ranges for the names it reads.

Names are the ``Var`` names, plus two reserved spellings that no DSL identifier can take:
``threadIdx.x`` (:data:`THREAD_IDX`) and ``blockIdx.x``/``.y``/``.z`` (:func:`block_idx_name`).
A name without a range gets the range of its dtype; thread and block indices default to
``[0, max of i32]``.

Signed arithmetic is taken to be exact (index arithmetic never overflows: signed overflow is
undefined in C, and the lowering picks index types wide enough), so a signed value's range is
also clipped to its dtype. Unsigned arithmetic wraps, so a result whose exact range leaves
the dtype's values falls back to the whole dtype.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from tegula.ir.dtypes import DType, Kind
from tegula.ir.loop import (
    Address,
    Binary,
    BinaryOp,
    Bitcast,
    BlockIdx,
    Cast,
    Const,
    Expr,
    Load,
    Select,
    ShuffleXor,
    ThreadIdx,
    Unary,
    UnaryOp,
    Var,
)

THREAD_IDX = "threadIdx.x"
"""The name under which a ranges mapping gives the range of :class:`ThreadIdx`."""


def block_idx_name(axis: int) -> str:
    """The name under which a ranges mapping gives the range of ``BlockIdx(axis)``."""
    return f"blockIdx.{'xyz'[axis]}"


# An end of an interval: an int, or ±math.inf for an unbounded end. Finite arithmetic stays in
# Python ints (exact); only unbounded ends pass through floats.
_End = int | float


@dataclass(frozen=True)
class IntRange:
    """The integers ``lo <= v <= hi``; ``None`` leaves that end unbounded."""

    lo: int | None = None
    hi: int | None = None

    def __post_init__(self) -> None:
        if self.lo is not None and self.hi is not None and self.lo > self.hi:
            raise ValueError(f"empty IntRange: lo={self.lo} > hi={self.hi}")

    # ------------------------------------------------------------------ constructors

    @staticmethod
    def point(value: int) -> IntRange:
        return IntRange(value, value)

    @staticmethod
    def of_dtype(dt: DType) -> IntRange:
        """Every value of an integer or bool dtype."""
        if dt.is_bool:
            return IntRange(0, 1)
        if dt.kind is Kind.UNSIGNED:
            return IntRange(0, (1 << dt.bits) - 1)
        if dt.kind is Kind.SIGNED:
            return IntRange(-(1 << (dt.bits - 1)), (1 << (dt.bits - 1)) - 1)
        raise TypeError(f"no integer range for dtype {dt}")

    @staticmethod
    def _from_ends(lo: _End, hi: _End) -> IntRange:
        return IntRange(None if lo == -math.inf else int(lo), None if hi == math.inf else int(hi))

    # ------------------------------------------------------------------ queries

    @property
    def _lo(self) -> _End:
        return -math.inf if self.lo is None else self.lo

    @property
    def _hi(self) -> _End:
        return math.inf if self.hi is None else self.hi

    @property
    def is_point(self) -> bool:
        return self.lo is not None and self.lo == self.hi

    @property
    def is_bounded(self) -> bool:
        return self.lo is not None and self.hi is not None

    def contains(self, value: int) -> bool:
        return self._lo <= value <= self._hi

    def within(self, other: IntRange) -> bool:
        """Whether every value of ``self`` lies in ``other``."""
        return other._lo <= self._lo and self._hi <= other._hi

    def below(self, value: int) -> bool:
        """Whether every value is ``< value``."""
        return self._hi < value

    def above(self, value: int) -> bool:
        """Whether every value is ``> value``."""
        return self._lo > value

    def is_nonnegative(self) -> bool:
        return self._lo >= 0

    def is_positive(self) -> bool:
        return self._lo >= 1

    def hull(self, other: IntRange) -> IntRange:
        """The smallest range holding both."""
        return IntRange._from_ends(min(self._lo, other._lo), max(self._hi, other._hi))

    def intersect(self, other: IntRange) -> IntRange | None:
        """The common values, or None when there are none."""
        lo, hi = max(self._lo, other._lo), min(self._hi, other._hi)
        return None if lo > hi else IntRange._from_ends(lo, hi)

    # ------------------------------------------------------------------ arithmetic

    def __neg__(self) -> IntRange:
        return IntRange._from_ends(-self._hi, -self._lo)

    def __add__(self, other: IntRange) -> IntRange:
        return IntRange._from_ends(self._lo + other._lo, self._hi + other._hi)

    def __sub__(self, other: IntRange) -> IntRange:
        return self + (-other)

    def __mul__(self, other: IntRange) -> IntRange:
        products = [_mul_ends(a, b) for a in (self._lo, self._hi) for b in (other._lo, other._hi)]
        return IntRange._from_ends(min(products), max(products))

    def scale(self, factor: int) -> IntRange:
        return self * IntRange.point(factor)

    def floordiv(self, divisor: IntRange) -> IntRange:
        """Values of ``x // d`` (floor), for ``x`` in self and ``d`` in ``divisor``."""
        if divisor.is_positive():
            return self._floordiv_positive(divisor)
        if (-divisor).is_positive():  # x // d == (-x) // (-d)
            return (-self)._floordiv_positive(-divisor)
        return IntRange()  # the divisor may be zero or change sign

    def _floordiv_positive(self, divisor: IntRange) -> IntRange:
        # For d > 0, x // d is monotone in x, and monotone in d for fixed sign of x, so the
        # extremes sit at the corners.
        quotients = [
            _floordiv_ends(x, d) for x in (self._lo, self._hi) for d in (divisor._lo, divisor._hi)
        ]
        return IntRange._from_ends(min(quotients), max(quotients))

    def mod(self, divisor: IntRange) -> IntRange:
        """Values of ``x % d`` (floor modulo: the sign of the divisor)."""
        if divisor.is_point and divisor.lo != 0:
            d = divisor.lo
            assert d is not None
            if self.is_bounded and self._lo // d == self._hi // d:
                # Within one period the modulo is a shift.
                base = (self._lo // d) * d
                return IntRange._from_ends(self._lo - base, self._hi - base)
        if divisor.is_positive():
            top = divisor._hi - 1
            if self.is_nonnegative():
                top = min(top, self._hi)
            return IntRange._from_ends(0, top)
        if (-divisor).is_positive():
            bottom = divisor._lo + 1
            if self._hi <= 0:
                bottom = max(bottom, self._lo)
            return IntRange._from_ends(bottom, 0)
        return IntRange()

    def min_with(self, other: IntRange) -> IntRange:
        return IntRange._from_ends(min(self._lo, other._lo), min(self._hi, other._hi))

    def max_with(self, other: IntRange) -> IntRange:
        return IntRange._from_ends(max(self._lo, other._lo), max(self._hi, other._hi))

    def __str__(self) -> str:
        lo = "-inf" if self.lo is None else str(self.lo)
        hi = "+inf" if self.hi is None else str(self.hi)
        return f"[{lo}, {hi}]"


def _mul_ends(a: _End, b: _End) -> _End:
    # An end at exactly 0 stays 0 whatever the other factor: the limit of interval arithmetic.
    if a == 0 or b == 0:
        return 0
    return a * b


def _floordiv_ends(x: _End, d: _End) -> _End:
    """``x // d`` for ``d > 0`` with unbounded ends."""
    if d == math.inf:
        return 0 if x >= 0 else -1 if x != -math.inf else -math.inf
    if x in (math.inf, -math.inf):
        return x
    return int(x) // int(d)


# ----------------------------------------------------------------------------- the analysis


def dtype_range(dt: DType) -> IntRange:
    """The range of a value known only by its dtype."""
    return IntRange.of_dtype(dt)


_DEFAULT_INDEX = IntRange(0, (1 << 31) - 1)


class IntRangeAnalysis:
    """Ranges of integer and bool expressions, given ranges for the names they read.

    Results are cached per expression object, so asking again about a node (or a tree that
    shares it) costs a dictionary look-up; keep one analysis per set of ranges.
    """

    def __init__(self, ranges: Mapping[str, IntRange] | None = None) -> None:
        self.ranges: Mapping[str, IntRange] = ranges if ranges is not None else {}
        # Keyed by id(): the expression itself is kept alive beside its range.
        self._cache: dict[int, tuple[Expr, IntRange]] = {}

    def __call__(self, e: Expr) -> IntRange:
        hit = self._cache.get(id(e))
        if hit is not None and hit[0] is e:
            return hit[1]
        result = self._compute(e)
        self._cache[id(e)] = (e, result)
        return result

    def _compute(self, e: Expr) -> IntRange:
        dt = e.dtype
        if not (dt.is_int or dt.is_bool):
            raise TypeError(f"integer range asked of a {dt} expression: {e!r}")
        exact = self._exact(e)
        if dt.kind is Kind.SIGNED:
            # No overflow: a signed value stays within its type (which also bounds ranges
            # the caller left open at one end).
            return exact.intersect(IntRange.of_dtype(dt)) or exact
        if dt.kind is Kind.UNSIGNED and not exact.within(IntRange.of_dtype(dt)):
            return IntRange.of_dtype(dt)  # it may wrap
        return exact

    def _exact(self, e: Expr) -> IntRange:
        match e:
            case Const(value=value):
                return IntRange.point(int(value))
            case Var(name=name):
                return self.ranges.get(name) or IntRange.of_dtype(e.dtype)
            case ThreadIdx():
                return self.ranges.get(THREAD_IDX) or _DEFAULT_INDEX
            case BlockIdx(axis=axis):
                return self.ranges.get(block_idx_name(axis)) or _DEFAULT_INDEX
            case Binary(op=op, lhs=lhs, rhs=rhs):
                if op.is_comparison or op.is_logical or e.dtype.is_bool:
                    return IntRange(0, 1)
                return self._binary(op, self(lhs), self(rhs), e.dtype)
            case Unary(op=UnaryOp.NEG, operand=x):
                return -self(x)
            case Unary(op=UnaryOp.ABS, operand=x):
                r = self(x)
                if r.is_nonnegative():
                    return r
                if (-r).is_nonnegative():
                    return -r
                return IntRange(0, None if r.lo is None or r.hi is None else max(-r.lo, r.hi))
            case Unary(op=UnaryOp.BITNOT, operand=x) if e.dtype.kind is Kind.SIGNED:
                return -self(x) - IntRange.point(1)
            case Select(if_true=a, if_false=b):
                return self(a).hull(self(b))
            case Cast(operand=x) if x.dtype.is_int or x.dtype.is_bool:
                r = self(x)
                return r if r.within(IntRange.of_dtype(e.dtype)) else IntRange.of_dtype(e.dtype)
            case Load() | ShuffleXor() | Cast() | Bitcast() | Unary() | Address():
                # A loaded value, another lane's value, a converted float: only the type
                # bounds it (a shuffled value may come from a lane outside a refined range).
                return IntRange.of_dtype(e.dtype)
        raise TypeError(f"integer range of unknown expression {type(e).__name__}")

    @staticmethod
    def _binary(op: BinaryOp, a: IntRange, b: IntRange, dt: DType) -> IntRange:
        match op:
            case BinaryOp.ADD:
                return a + b
            case BinaryOp.SUB:
                return a - b
            case BinaryOp.MUL:
                return a * b
            case BinaryOp.FLOORDIV:
                return a.floordiv(b)
            case BinaryOp.DIV if a.is_nonnegative() and b.is_positive():
                return a.floordiv(b)  # truncation is floor here
            case BinaryOp.MOD:
                return a.mod(b)
            case BinaryOp.MIN:
                return a.min_with(b)
            case BinaryOp.MAX:
                return a.max_with(b)
            case BinaryOp.BITAND if a.is_nonnegative() or b.is_nonnegative():
                tops = [r._hi for r in (a, b) if r.is_nonnegative()]
                return IntRange._from_ends(0, min(tops))
            case BinaryOp.BITOR | BinaryOp.BITXOR if (
                a.is_nonnegative() and b.is_nonnegative() and a.is_bounded and b.is_bounded
            ):
                assert a.hi is not None and b.hi is not None
                return IntRange(0, (1 << max(a.hi, b.hi).bit_length()) - 1)
            case BinaryOp.SHL if b.is_point and b.is_nonnegative():
                assert b.lo is not None
                return a.scale(1 << b.lo)
            case BinaryOp.SHR if b.is_point and b.is_nonnegative():
                assert b.lo is not None
                return a.floordiv(IntRange.point(1 << b.lo))  # arithmetic shift floors
        return IntRange.of_dtype(dt)


def int_range(e: Expr, ranges: Mapping[str, IntRange] | None = None) -> IntRange:
    """The range of integer or bool expression ``e`` given ranges for the names it reads."""
    return IntRangeAnalysis(ranges)(e)
