"""Compile-time arithmetic: the one definition of what a constant expression computes.

The front end folds constants over the syntax tree (and reports errors at the offending
node); a kernel specialized at call time evaluates its params' defaults from a JSON form
of the same expressions, kept in the module index so that no parse is needed. Both go
through the folds below, so the two can never disagree.

The JSON form is a nested list: ``["int", 3]``, ``["float", 0.5]``, ``["bool", true]``,
``["dtype", "i4"]``, ``["name", "N"]``, ``["unary", "-", x]``, ``["binary", "+", a, b]``,
``["call", "min", [a, b]]``.

A dtype is a constant too (the value of a param such as ``params WT = i4 in (i2, i4)``),
held as its canonical name so that configs and cache keys stay JSON. Dtypes are not
numbers: only ``==``, ``!=`` and ``select`` take them.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from tegula.ir import dtypes

from . import syntax as ast

# A constant's value; a str is a dtype, by its canonical name ("i4", "bf16").
Scalar = int | float | bool | str
ConstJSON = list[Any]

__all__ = [
    "FUNCTIONS",
    "ConstEvalError",
    "cdiv",
    "dtype_constant",
    "evaluate_json",
    "fold_binary",
    "fold_call",
    "fold_unary",
    "is_int",
    "names_in",
    "pow2ceil",
    "pow2floor",
    "to_json",
]


class ConstEvalError(ValueError):
    """A constant expression has no value (division by zero, a bad operand...)."""


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def dtype_constant(name: str) -> str | None:
    """The canonical name of dtype ``name`` (an alias such as ``half`` included), or None
    when ``name`` names no dtype."""
    return dtypes.dtype(name).name if dtypes.is_dtype_name(name) else None


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def pow2ceil(n: int) -> int:
    """The smallest power of two ≥ ``n`` (1 for ``n`` ≤ 1)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def pow2floor(n: int) -> int:
    """The largest power of two ≤ ``n`` (1 for ``n`` ≤ 1)."""
    return 1 if n <= 1 else 1 << (n.bit_length() - 1)


FOLD_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "&": operator.and_,
    "|": operator.or_,
    "^": operator.xor,
    "<<": operator.lshift,
    ">>": operator.rshift,
    "and": lambda a, b: a and b,
    "or": lambda a, b: a or b,
}

# The functions a constant expression may call, with their arity.
FUNCTIONS: Mapping[str, int] = {
    "min": 2, "max": 2, "cdiv": 2, "pow2ceil": 1, "pow2floor": 1, "select": 3,
}


def fold_binary(op: str, a: Scalar, b: Scalar) -> Scalar:
    if isinstance(a, str) or isinstance(b, str):
        return _fold_dtypes(op, a, b)
    if op in ("and", "or") and not (isinstance(a, bool) and isinstance(b, bool)):
        raise ConstEvalError(f"'{op}' expects bool operands")
    try:
        return FOLD_BINARY[op](a, b)
    except ZeroDivisionError:
        raise ConstEvalError("division by zero in a constant expression") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConstEvalError(f"cannot evaluate '{a!r} {op} {b!r}': {exc}") from None


def _fold_dtypes(op: str, a: Scalar, b: Scalar) -> bool:
    """A binary operator with a dtype operand: dtypes only compare, and only with dtypes
    (``WT == 4`` is a mistake, not False)."""
    if op not in ("==", "!="):
        raise ConstEvalError(f"'{op}' does not take a dtype ({_dtype_operand(a, b)}); "
                             "dtypes only compare with == and !=")
    if not (isinstance(a, str) and isinstance(b, str)):
        raise ConstEvalError(f"'{op}' compares a dtype with a number ({a!r} {op} {b!r})")
    return (a == b) == (op == "==")


def _dtype_operand(*values: Scalar) -> str:
    return next(v for v in values if isinstance(v, str))


def fold_unary(op: str, a: Scalar) -> Scalar:
    if isinstance(a, str):
        raise ConstEvalError(f"'{op}' does not take a dtype ({a})")
    if op == "not":
        if not isinstance(a, bool):
            raise ConstEvalError("'not' expects a bool operand")
        return not a
    if op == "~":
        if isinstance(a, bool):
            return not a
        if not isinstance(a, int):
            raise ConstEvalError("'~' expects an integer operand")
        return ~a
    if isinstance(a, bool):
        raise ConstEvalError(f"'{op}' does not take a bool operand")
    return -a if op == "-" else a


def fold_call(func: str, args: tuple[Scalar, ...]) -> Scalar:
    """``func(*args)`` for a function of :data:`FUNCTIONS` (arity already checked)."""
    # select chooses between dtypes as between numbers; nothing else computes with them.
    computed = args[:1] if func == "select" else args
    if dtype_args := [a for a in computed if isinstance(a, str)]:
        raise ConstEvalError(f"{func} does not take a dtype ({dtype_args[0]})")
    if func in ("min", "max"):
        return min(args) if func == "min" else max(args)
    if func == "select":
        if not isinstance(args[0], bool):
            raise ConstEvalError(f"select expects a bool condition; got {args[0]!r}")
        return args[1] if args[0] else args[2]
    if not all(is_int(a) for a in args):
        raise ConstEvalError(f"{func} expects integers; got {', '.join(map(repr, args))}")
    if func == "cdiv":
        if args[1] == 0:
            raise ConstEvalError("division by zero in a constant expression")
        return cdiv(int(args[0]), int(args[1]))
    return pow2ceil(int(args[0])) if func == "pow2ceil" else pow2floor(int(args[0]))


# ----------------------------------------------------------------------------- JSON form


def to_json(node: ast.Expr) -> ConstJSON | None:
    """``node`` in the JSON form, or None when it is not a constant-expression shape."""
    match node:
        case ast.BoolLit(value=v):
            return ["bool", v]
        case ast.IntLit(value=v):
            return ["int", v]
        case ast.FloatLit(value=v):
            # JSON has no inf/nan; their text round-trips through float().
            return ["float", v if math.isfinite(v) else repr(v)]
        case ast.Name(id=name) if (canonical := dtype_constant(name)) is not None:
            return ["dtype", canonical]
        case ast.Name(id=name):
            return ["name", name]
        case ast.Unary(op=op, operand=x):
            inner = to_json(x)
            return None if inner is None else ["unary", op, inner]
        case ast.Binary(op=op, left=a, right=b):
            left, right = to_json(a), to_json(b)
            return None if left is None or right is None else ["binary", op, left, right]
        case ast.Call(func=func, args=args, keywords=()) if FUNCTIONS.get(func) == len(args):
            items = [to_json(x) for x in args]
            return None if any(i is None for i in items) else ["call", func, items]
    return None


def names_in(node: ast.Expr) -> set[str]:
    """The names a constant expression refers to."""
    match node:
        case ast.Name(id=name):
            return {name}
        case ast.Unary(operand=x):
            return names_in(x)
        case ast.Binary(left=a, right=b):
            return names_in(a) | names_in(b)
        case ast.Call(args=args, keywords=keywords):
            out: set[str] = set()
            for x in (*args, *(k.value for k in keywords)):
                out |= names_in(x)
            return out
    return set()


def evaluate_json(tree: Any, env: Mapping[str, Scalar]) -> Scalar:
    """The value of a JSON-form constant expression over ``env``.

    Raises :class:`ConstEvalError` when it has none, including for malformed input (the
    form is read back from a cache file and is therefore checked, not trusted).
    """
    if not isinstance(tree, list) or not tree or not isinstance(tree[0], str):
        raise ConstEvalError(f"malformed constant expression {tree!r}")
    kind, rest = tree[0], tree[1:]
    if kind == "bool" and len(rest) == 1 and isinstance(rest[0], bool):
        return rest[0]
    if kind == "int" and len(rest) == 1 and is_int(rest[0]):
        return rest[0]
    if kind == "float" and len(rest) == 1 and isinstance(rest[0], float | int | str):
        try:
            return float(rest[0])
        except ValueError:
            raise ConstEvalError(f"malformed float {rest[0]!r}") from None
    if kind == "dtype" and len(rest) == 1 and isinstance(rest[0], str):
        if dtype_constant(rest[0]) != rest[0]:
            raise ConstEvalError(f"malformed dtype {rest[0]!r}")
        return rest[0]
    if kind == "name" and len(rest) == 1 and isinstance(rest[0], str):
        if rest[0] not in env:
            raise ConstEvalError(f"'{rest[0]}' has no value here")
        return env[rest[0]]
    if kind == "unary" and len(rest) == 2 and isinstance(rest[0], str):
        return fold_unary(rest[0], evaluate_json(rest[1], env))
    if kind == "binary" and len(rest) == 3 and rest[0] in FOLD_BINARY:
        return fold_binary(rest[0], evaluate_json(rest[1], env), evaluate_json(rest[2], env))
    if (
        kind == "call"
        and len(rest) == 2
        and isinstance(rest[1], list)
        and FUNCTIONS.get(rest[0]) == len(rest[1])
    ):
        return fold_call(rest[0], tuple(evaluate_json(a, env) for a in rest[1]))
    raise ConstEvalError(f"malformed constant expression {tree!r}")
