"""A small, conservative proof that an integer expression is never negative.

Floor division and modulo (``//``, ``%`` in Loop IR) differ from the hardware's truncating
division only when an operand is negative, so when both operands are provably non-negative
the code generators emit the plain, fast instruction; otherwise they emit exact floor
semantics. The analysis answers "surely non-negative" or "don't know", never guesses:

* constants ``>= 0``, ``threadIdx.x``, ``blockIdx.*``, and any unsigned value;
* a variable the caller vouches for (:class:`NonNegative` asks a callback): the code
  generators vouch for size symbols (extents are never negative, an ABI assumption), loop
  variables of loops with a non-negative start and a positive constant step, and ``Let``
  variables bound to a non-negative value;
* ``a + b``, ``a * b``, ``a / b``, ``a // b``, ``min(a, b)``, ``a >> b`` of non-negative
  operands; ``max(a, b)`` and ``a & b`` when either is; ``a % b`` when ``b`` is (floor
  modulo takes the divisor's sign); ``select`` of two non-negative branches (``abs`` is
  left out: the most negative value is its own absolute value);
* a cast of a non-negative operand to an integer type that holds all its values.
"""

from __future__ import annotations

from collections.abc import Callable

from tegula.ir.dtypes import Kind
from tegula.ir.loop import Binary, BinaryOp, BlockIdx, Cast, Const, Expr, Select, ThreadIdx, Var

_BOTH = frozenset(
    {BinaryOp.ADD, BinaryOp.MUL, BinaryOp.DIV, BinaryOp.FLOORDIV, BinaryOp.MIN, BinaryOp.BITOR}
)
_EITHER = frozenset({BinaryOp.MAX, BinaryOp.BITAND})


class NonNegative:
    """``NonNegative(var_is_nonnegative)(expr)`` is True when ``expr >= 0`` is proved."""

    def __init__(self, var_is_nonnegative: Callable[[Var], bool]) -> None:
        self.var_is_nonnegative = var_is_nonnegative

    def __call__(self, e: Expr) -> bool:
        if not e.dtype.is_int:
            return False
        if e.dtype.kind is Kind.UNSIGNED:
            return True
        match e:
            case Const(value=value):
                return value >= 0  # type: ignore[operator]
            case ThreadIdx() | BlockIdx():
                return True
            case Var():
                return self.var_is_nonnegative(e)
            case Binary(op=op, lhs=lhs, rhs=rhs) if op in _BOTH:
                return self(lhs) and self(rhs)
            case Binary(op=op, lhs=lhs, rhs=rhs) if op in _EITHER:
                return self(lhs) or self(rhs)
            case Binary(op=BinaryOp.MOD, rhs=rhs):
                return self(rhs)
            case Binary(op=BinaryOp.SHR, lhs=lhs):
                return self(lhs)
            case Select(if_true=a, if_false=b):
                return self(a) and self(b)
            case Cast(type=dt, operand=operand) if operand.dtype.is_int:
                src = operand.dtype
                widens = dt.bits > src.bits or (dt.bits == src.bits and dt.kind is src.kind)
                return widens and self(operand)
        return False


def is_positive_constant(e: Expr) -> bool:
    return isinstance(e, Const) and not isinstance(e.value, bool) and e.value > 0
