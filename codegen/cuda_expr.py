"""Loop IR expressions as CUDA C++ expressions.

Each expression is printed with the fewest parentheses C's precedence allows, plus a few
that compilers ask for (``&``/``|``/``^``/shifts mixed with other operators, ``&&`` inside
``||``). Semantics the printer keeps exact:

* ``//`` and ``%`` are floor division and modulo: plain ``/`` and ``%`` when both operands
  are proved non-negative (:mod:`tegula.codegen.nonnegative`), otherwise the
  ``floordiv``/``floormod`` helpers the kernel file defines.
* ``f16``/``bf16`` arithmetic goes through ``float`` and rounds back after every operation,
  which equals native half-precision arithmetic (``float`` has more than twice the bits).
* Integers narrower than 32 bits wrap after ``+ - * << ~ neg`` (C would widen them to int).
* Constants print exactly: the shortest decimal that reads back to the same float, or the
  bit pattern for infinities and NaNs. A 64-bit constant carries ``LL`` where its type is not
  pinned by the other operand (function arguments, both operands constant).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from tegula.ir.dtypes import DType, Kind, f32, f64
from tegula.ir.loop import (
    Address,
    Binary,
    BinaryOp,
    Bitcast,
    BlockIdx,
    Buffer,
    Cast,
    Const,
    Expr,
    Load,
    Scope,
    Select,
    ShuffleXor,
    ThreadIdx,
    Unary,
    UnaryOp,
    Var,
)
from tegula.ir.printer_loop import C_PRECEDENCE
from tegula.ir.verify_loop import LoopIRError

from .nonnegative import NonNegative

ATOM = 16
UNARY = 15
CONDITIONAL = 3

_C_OPERATOR = {BinaryOp.FLOORDIV: "/"}
# Operators whose operands read badly without parentheses when they are other operators.
_FUSSY = frozenset({BinaryOp.BITAND, BinaryOp.BITOR, BinaryOp.BITXOR, BinaryOp.SHL, BinaryOp.SHR})
_WRAPS = frozenset({BinaryOp.ADD, BinaryOp.SUB, BinaryOp.MUL, BinaryOp.SHL})
_FLOAT_ARITHMETIC = frozenset({BinaryOp.ADD, BinaryOp.SUB, BinaryOp.MUL, BinaryOp.DIV})
# f16/bf16 arithmetic with an instruction of its own (cuda_fp16.h, cuda_bf16.h on sm_80+)
_NATIVE_HALF = {BinaryOp.ADD: "__hadd", BinaryOp.SUB: "__hsub", BinaryOp.MUL: "__hmul"}

# Float math by result type: f32 name, f64 name.
_MATH: dict[UnaryOp, tuple[str, str]] = {
    UnaryOp.ABS: ("fabsf", "fabs"),
    UnaryOp.EXP: ("expf", "exp"),
    UnaryOp.EXP2: ("exp2f", "exp2"),
    UnaryOp.LOG: ("logf", "log"),
    UnaryOp.LOG2: ("log2f", "log2"),
    UnaryOp.SQRT: ("sqrtf", "sqrt"),
    UnaryOp.RSQRT: ("rsqrtf", "rsqrt"),
    UnaryOp.TANH: ("tanhf", "tanh"),
    UnaryOp.ERF: ("erff", "erf"),
    UnaryOp.SIN: ("sinf", "sin"),
    UnaryOp.COS: ("cosf", "cos"),
    UnaryOp.FLOOR: ("floorf", "floor"),
    UnaryOp.CEIL: ("ceilf", "ceil"),
}
_BINARY_MATH: dict[BinaryOp, tuple[str, str]] = {
    BinaryOp.MIN: ("fminf", "fmin"),
    BinaryOp.MAX: ("fmaxf", "fmax"),
    BinaryOp.POW: ("powf", "pow"),
}
_TO_FLOAT = {"f16": "__half2float", "bf16": "__bfloat162float"}
_FROM_FLOAT = {"f16": "__float2half_rn", "bf16": "__float2bfloat16_rn"}
_BITS_TO_FLOAT = {  # (float, integer signed?, integer bits) -> intrinsic
    ("f32", False, 32): "__uint_as_float", ("f32", True, 32): "__int_as_float",
    ("f64", False, 64): "__longlong_as_double", ("f64", True, 64): "__longlong_as_double",
    ("f16", False, 16): "__ushort_as_half", ("f16", True, 16): "__short_as_half",
    ("bf16", False, 16): "__ushort_as_bfloat16", ("bf16", True, 16): "__short_as_bfloat16",
}  # fmt: skip
_FLOAT_TO_BITS = {  # (float, integer signed?) -> intrinsic
    ("f32", False): "__float_as_uint", ("f32", True): "__float_as_int",
    ("f64", False): "__double_as_longlong", ("f64", True): "__double_as_longlong",
    ("f16", False): "__half_as_ushort", ("f16", True): "__half_as_short",
    ("bf16", False): "__bfloat16_as_ushort", ("bf16", True): "__bfloat16_as_short",
}  # fmt: skip
_FROM_DOUBLE = {"f16": "__double2half", "bf16": "__double2bfloat16"}
_FROM_INT = {  # (low-precision float, integer kind, 64-bit?) -> intrinsic
    ("f16", Kind.SIGNED, False): "__int2half_rn",
    ("f16", Kind.SIGNED, True): "__ll2half_rn",
    ("f16", Kind.UNSIGNED, False): "__uint2half_rn",
    ("f16", Kind.UNSIGNED, True): "__ull2half_rn",
    ("bf16", Kind.SIGNED, False): "__int2bfloat16_rn",
    ("bf16", Kind.SIGNED, True): "__ll2bfloat16_rn",
    ("bf16", Kind.UNSIGNED, False): "__uint2bfloat16_rn",
    ("bf16", Kind.UNSIGNED, True): "__ull2bfloat16_rn",
}
_SPECIAL_F32 = {"inf": "0x7f800000", "-inf": "0xff800000", "nan": "0x7fffffff"}
_SPECIAL_F64 = {
    "inf": "0x7ff0000000000000LL",
    "-inf": "0xfff0000000000000ULL",
    "nan": "0x7fffffffffffffffLL",
}

FLOOR_HELPERS = "floordiv", "floormod"


def ctype(dt: DType) -> str:
    if dt.cuda is None:
        raise LoopIRError(f"dtype {dt} has no CUDA C type")
    return dt.cuda


def is_low_precision(dt: DType) -> bool:
    return dt.name in _TO_FLOAT


def format_float(value: float, dt: DType) -> str:
    """A float literal of type ``dt`` (f32 or f64) that reads back to exactly ``value``."""
    if math.isinf(value) or math.isnan(value):
        key = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        if dt is f64:
            return f"__longlong_as_double({_SPECIAL_F64[key]})"
        return f"__int_as_float({_SPECIAL_F32[key]})"
    text = repr(value) if dt is f64 else str(np.float32(value))
    if not any(c in text for c in ".e"):
        text += ".0"
    return text if dt is f64 else text + "f"


def format_int(value: int, dt: DType, *, pinned: bool, hexadecimal: bool = False) -> str:
    """An integer literal of type ``dt``; ``pinned`` when the context fixes its type."""
    if dt.kind is Kind.SIGNED and value == -(1 << (dt.bits - 1)) and dt.bits >= 32:
        suffix = "LL" if dt.bits == 64 else ""
        return f"(-{(1 << (dt.bits - 1)) - 1}{suffix} - 1)"
    text = hex(value) if hexadecimal and value >= 16 else str(value)
    fits_int = -(1 << 31) <= value < (1 << 31)
    if dt.kind is Kind.UNSIGNED and dt.bits >= 32:
        return text + ("u" if dt.bits == 32 or (pinned and value < (1 << 32)) else "ull")
    if dt.bits == 64 and not (pinned and fits_int):
        return text + "LL"
    return text


class CudaExprPrinter:
    """Prints expressions; ``name_of`` and ``buffer_name`` give the C names in scope."""

    def __init__(
        self,
        name_of: Callable[[Var], str],
        buffer_name: Callable[[Buffer], str],
        nonnegative: NonNegative,
        special_names: dict[Expr, str],
    ) -> None:
        self.name_of = name_of
        self.buffer_name = buffer_name
        self.nonnegative = nonnegative
        self.special_names = special_names  # threadIdx / blockIdx as signed locals
        self.helpers_used: set[str] = set()

    # ------------------------------------------------------------------ entry points

    def __call__(self, e: Expr, *, pinned: bool = True) -> str:
        return self.expr(e, pinned)[0]

    def operand(self, e: Expr, min_prec: int, *, pinned: bool = True) -> str:
        text, prec = self.expr(e, pinned)
        return text if prec >= min_prec else f"({text})"

    # ------------------------------------------------------------------ expressions

    def expr(self, e: Expr, pinned: bool = True) -> tuple[str, int]:
        match e:
            case Const():
                return self.const(e, pinned)
            case Var():
                return self.name_of(e), ATOM
            case ThreadIdx() | BlockIdx():
                return self.special_names[e], ATOM
            case Binary():
                return self.binary(e)
            case Unary():
                return self.unary(e)
            case Select(cond=c, if_true=a, if_false=b):
                both_const = isinstance(a, Const) and isinstance(b, Const)
                text = (
                    f"{self.operand(c, CONDITIONAL + 1)} ? "
                    f"{self.operand(a, CONDITIONAL + 1, pinned=not both_const)} : "
                    f"{self.operand(b, CONDITIONAL + 1, pinned=not both_const)}"
                )
                return text, CONDITIONAL
            case Cast(type=dt, operand=operand):
                return self.cast(dt, operand)
            case Bitcast(type=dt, operand=operand):
                return self.bitcast(dt, operand)
            case Load(buffer=buf, index=index):
                return f"{self.buffer_name(buf)}[{self(index)}]", ATOM
            case Address(buffer=buf, index=index) if buf.scope is Scope.SHARED:
                element = f"{self.buffer_name(buf)}[{self(index)}]"
                return f"(unsigned)__cvta_generic_to_shared(&{element})", UNARY
            case Address(buffer=buf) if buf.scope is Scope.PARAM:
                return f"(unsigned long long)&{self.buffer_name(buf)}", UNARY
            case Address(buffer=buf, index=index):
                return f"(unsigned long long)&{self.buffer_name(buf)}[{self(index)}]", UNARY
            case ShuffleXor(value=value, lane_mask=mask):
                dt = value.dtype
                if dt.is_bool or (dt.is_int and dt.bits < 32):
                    word = "int" if dt.is_bool or dt.is_signed else "unsigned int"
                    word_value = f"({word}){self.operand(value, UNARY)}"
                    inner = f"__shfl_xor_sync(0xffffffffu, {word_value}, {mask})"
                    return f"({ctype(dt)}){inner}", UNARY
                return f"__shfl_xor_sync(0xffffffffu, {self(value)}, {mask})", ATOM
        raise LoopIRError(f"cannot print expression {type(e).__name__} as CUDA C")

    def const(self, c: Const, pinned: bool) -> tuple[str, int]:
        dt = c.type
        if dt.is_bool:
            return ("true" if c.value else "false"), ATOM
        if dt.is_int:
            text = format_int(int(c.value), dt, pinned=pinned)
        elif is_low_precision(dt):
            return f"{_FROM_FLOAT[dt.name]}({self.float_value(c)})", ATOM
        else:
            text = format_float(float(c.value), dt)
        return text, (UNARY if text.startswith("-") else ATOM)

    def float_value(self, e: Expr) -> str:
        """A low-precision float expression as a ``float`` expression (exact)."""
        if isinstance(e, Const):
            rounded = float(np.asarray(float(e.value), dtype=e.type.to_numpy()))
            return format_float(rounded, f32)
        return f"{_TO_FLOAT[e.dtype.name]}({self(e)})"

    def binary(self, e: Binary) -> tuple[str, int]:
        op, lhs, rhs, dt = e.op, e.lhs, e.rhs, e.lhs.dtype
        if is_low_precision(dt):
            return self.low_precision_binary(op, lhs, rhs)
        if op in _BINARY_MATH and dt.is_float:
            name = _BINARY_MATH[op][dt is f64]
            return f"{name}({self(lhs)}, {self(rhs)})", ATOM
        if op in (BinaryOp.MIN, BinaryOp.MAX):
            return f"{op.value}({self(lhs, pinned=False)}, {self(rhs, pinned=False)})", ATOM
        if op is BinaryOp.FLOORDIV and dt.is_signed and not self.both_nonnegative(lhs, rhs):
            return self.helper("floordiv", lhs, rhs)
        if op is BinaryOp.MOD and dt.is_signed and not self.both_nonnegative(lhs, rhs):
            return self.helper("floormod", lhs, rhs)
        prec = C_PRECEDENCE[op]
        pinned = not (isinstance(lhs, Const) and isinstance(rhs, Const))
        text = (
            f"{self.infix_operand(lhs, op, prec, pinned)} {_C_OPERATOR.get(op, op.value)} "
            f"{self.infix_operand(rhs, op, prec + 1, pinned)}"
        )
        if op in _WRAPS and dt.is_int and dt.bits < 32:
            return f"({ctype(dt)})({text})", UNARY
        return text, prec

    def infix_operand(self, e: Expr, parent: BinaryOp, min_prec: int, pinned: bool) -> str:
        if parent in _FUSSY and isinstance(e, Binary) and e.op is not parent:
            min_prec = ATOM
        if parent is BinaryOp.OR and isinstance(e, Binary) and e.op is BinaryOp.AND:
            min_prec = ATOM
        if isinstance(e, Const) and not e.type.is_bool and e.value < 0:  # type: ignore[operator]
            min_prec = ATOM  # `a - (-1)`, never `a - -1`
        if parent in _FUSSY and isinstance(e, Const) and e.type.is_int:
            text = format_int(int(e.value), e.type, pinned=pinned, hexadecimal=True)
            return text if not text.startswith("-") else f"({text})"
        return self.operand(e, min_prec, pinned=pinned)

    def both_nonnegative(self, lhs: Expr, rhs: Expr) -> bool:
        return self.nonnegative(lhs) and self.nonnegative(rhs)

    def helper(self, name: str, lhs: Expr, rhs: Expr) -> tuple[str, int]:
        self.helpers_used.add(name)
        return f"{name}({self(lhs, pinned=False)}, {self(rhs, pinned=False)})", ATOM

    def low_precision_binary(self, op: BinaryOp, lhs: Expr, rhs: Expr) -> tuple[str, int]:
        dt = lhs.dtype
        if op in _NATIVE_HALF:
            # The half-precision instruction rounds the exact result once, as the f32
            # operation and the conversion back do (f32 carries more than twice the bits, so
            # the second rounding never differs); it is one instruction (unrolled loops of
            # them run two lanes at a time: codegen/cuda_pairs.py).
            return f"{_NATIVE_HALF[op]}({self(lhs)}, {self(rhs)})", ATOM
        a, b = self.float_value(lhs), self.float_value(rhs)
        if op.is_comparison:
            return f"{a} {op.value} {b}", C_PRECEDENCE[op]
        if op in _FLOAT_ARITHMETIC:
            return f"{_FROM_FLOAT[dt.name]}({a} {op.value} {b})", ATOM
        if op in _BINARY_MATH:
            return f"{_FROM_FLOAT[dt.name]}({_BINARY_MATH[op][0]}({a}, {b}))", ATOM
        raise LoopIRError(f"operator {op.value!r} on {dt} operands")

    def unary(self, e: Unary) -> tuple[str, int]:
        op, x, dt = e.op, e.operand, e.operand.dtype
        if is_low_precision(dt):
            inner = self.float_value(x)
            if op is UnaryOp.NEG:
                return f"{_FROM_FLOAT[dt.name]}(-{inner})", ATOM
            return f"{_FROM_FLOAT[dt.name]}({_MATH[op][0]}({inner}))", ATOM
        if op is UnaryOp.NEG or op is UnaryOp.BITNOT:
            sign = "-" if op is UnaryOp.NEG else "~"
            text = f"{sign}{self.operand(x, UNARY)}"
            if dt.is_int and dt.bits < 32:
                return f"({ctype(dt)})({text})", UNARY
            return text, UNARY
        if op is UnaryOp.NOT:
            return f"!{self.operand(x, UNARY)}", UNARY
        if op is UnaryOp.ABS and dt.is_int:
            if dt.kind is Kind.UNSIGNED:
                return self.expr(x)
            return f"{'llabs' if dt.bits == 64 else 'abs'}({self(x)})", ATOM
        return f"{_MATH[op][dt is f64]}({self(x)})", ATOM

    def bitcast(self, dt: DType, x: Expr) -> tuple[str, int]:
        """Reinterpreted bits, through CUDA's intrinsics for each pair of types."""
        src = x.dtype
        if dt.is_float:
            name = _BITS_TO_FLOAT.get((dt.name, src.is_signed, src.bits))
        else:
            name = _FLOAT_TO_BITS.get((src.name, dt.is_signed))
            name = name if name is not None and dt.bits == src.bits else None
        if name is None:
            raise LoopIRError(f"no CUDA bitcast from {src} to {dt}")
        return f"{name}({self(x)})", ATOM

    def cast(self, dt: DType, x: Expr) -> tuple[str, int]:
        src = x.dtype
        if src == dt:
            return self.expr(x)
        if is_low_precision(src):
            as_float = self.float_value(x)
            if is_low_precision(dt):
                return f"{_FROM_FLOAT[dt.name]}({as_float})", ATOM
            if dt is f32:
                return as_float, ATOM
            return f"({ctype(dt)}){as_float}", UNARY
        if is_low_precision(dt):
            if src is f32:
                return f"{_FROM_FLOAT[dt.name]}({self(x)})", ATOM
            if src is f64:
                return f"{_FROM_DOUBLE[dt.name]}({self(x)})", ATOM
            if src.is_bool:
                as_float = f"{self.operand(x, CONDITIONAL + 1)} ? 1.0f : 0.0f"
                return f"{_FROM_FLOAT[dt.name]}({as_float})", ATOM
            return f"{_FROM_INT[dt.name, src.kind, src.bits == 64]}({self(x)})", ATOM
        return f"({ctype(dt)}){self.operand(x, UNARY)}", UNARY
