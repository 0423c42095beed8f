"""Loop IR expressions as LLVM instructions (llvmlite's builder).

Semantics match the CUDA back end: floor division and modulo of signed integers are exact
(plain ``udiv``/``urem`` where both operands are proved non-negative); float ``min``/``max``
are ``llvm.minnum``/``llvm.maxnum`` (``fminf``'s NaN rule); ``!=`` on floats is unordered
(true for NaN), the other comparisons ordered, as in C; ``f16``/``bf16`` arithmetic rounds
after each operation; a product and a sum may fuse into one multiply-add (``contract``, as
CUDA compiles by default). Math maps onto LLVM intrinsics, except ``tanh`` and ``erf`` (the C
library's ``tanhf``/``erff``, which the JIT resolves in the process) and ``rsqrt``
(``1 / sqrt``).
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir
from tegula.ir.dtypes import DType, Kind, f32, f64
from tegula.ir.loop import (
    Binary,
    BinaryOp,
    Bitcast,
    BlockIdx,
    Buffer,
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
from tegula.ir.verify_loop import LoopIRError

from . import llvm_math
from .llvm_types import (
    I1,
    I8,
    I32,
    convert,
    declare,
    from_float,
    is_low_precision,
    memory_type,
    to_float,
    value_type,
)
from .nonnegative import NonNegative

_FLOAT_OPS = {
    BinaryOp.ADD: "fadd",
    BinaryOp.SUB: "fsub",
    BinaryOp.MUL: "fmul",
    BinaryOp.DIV: "fdiv",
}
# A product feeding a sum may become one fused multiply-add, as nvcc and NVRTC contract by
# default: the CUDA back end's arithmetic, one rounding fewer.
_CONTRACT = ("contract",)
_INT_OPS = {
    BinaryOp.ADD: "add",
    BinaryOp.SUB: "sub",
    BinaryOp.MUL: "mul",
    BinaryOp.BITAND: "and_",
    BinaryOp.BITOR: "or_",
    BinaryOp.BITXOR: "xor",
    BinaryOp.AND: "and_",
    BinaryOp.OR: "or_",
    BinaryOp.SHL: "shl",
}
_VALUE_NAMES = {
    BinaryOp.ADD: "add",
    BinaryOp.SUB: "sub",
    BinaryOp.MUL: "mul",
    BinaryOp.DIV: "div",
    BinaryOp.FLOORDIV: "floordiv",
    BinaryOp.MOD: "mod",
}
_FLOAT_INTRINSICS = {
    UnaryOp.ABS: "llvm.fabs",
    UnaryOp.EXP: "llvm.exp",
    UnaryOp.EXP2: "llvm.exp2",
    UnaryOp.LOG: "llvm.log",
    UnaryOp.LOG2: "llvm.log2",
    UnaryOp.SQRT: "llvm.sqrt",
    UnaryOp.SIN: "llvm.sin",
    UnaryOp.COS: "llvm.cos",
    UnaryOp.FLOOR: "llvm.floor",
    UnaryOp.CEIL: "llvm.ceil",
}
# f32 functions emitted as inline arithmetic, so loops that use them still vectorize.
_VECTOR_MATH = {UnaryOp.EXP: llvm_math.exp_f32, UnaryOp.EXP2: llvm_math.exp2_f32}
_LIBM = {UnaryOp.TANH: ("tanhf", "tanh"), UnaryOp.ERF: ("erff", "erf")}


class LlvmExprLowering:
    """Lowers expressions at the builder's position; ``value_of`` gives Vars' values."""

    def __init__(
        self,
        builder: ir.IRBuilder,
        value_of: Callable[[Var], ir.Value],
        pointer_of: Callable[[Buffer], ir.Value],
        block_index: Callable[[int], ir.Value],
        nonnegative: NonNegative,
    ) -> None:
        self.b = builder
        self.value_of = value_of
        self.pointer_of = pointer_of
        self.block_index = block_index
        self.nonnegative = nonnegative

    @property
    def module(self) -> ir.Module:
        return self.b.module

    # ------------------------------------------------------------------ memory

    def address(self, buf: Buffer, index: ir.Value, name: str = "") -> ir.Value:
        return self.b.gep(
            self.pointer_of(buf),
            [index],
            name=name or f"{buf.name}.at",
            source_etype=memory_type(buf.dtype),
        )

    def load(self, buf: Buffer, index: ir.Value) -> ir.Value:
        raw = self.b.load(
            self.address(buf, index), typ=memory_type(buf.dtype), name=f"{buf.name}.load"
        )
        if buf.dtype.is_bool:
            return self.b.icmp_unsigned("!=", raw, ir.Constant(I8, 0))
        return raw

    def store(self, buf: Buffer, index: ir.Value, value: ir.Value) -> None:
        if buf.dtype.is_bool:
            value = self.b.zext(value, I8)
        self.b.store(value, self.address(buf, index))

    # ------------------------------------------------------------------ expressions

    def __call__(self, e: Expr, name: str = "") -> ir.Value:
        b = self.b
        match e:
            case Const(value=value, type=dt):
                return self.const(value, dt)
            case Var():
                return self.value_of(e)
            case ThreadIdx():
                return ir.Constant(I32, 0)  # one thread per block on the CPU
            case BlockIdx(axis=axis):
                return self.block_index(axis)
            case Binary():
                return self.binary(e, name)
            case Unary():
                return self.unary(e, name)
            case Select(cond=c, if_true=t, if_false=f):
                return b.select(self(c), self(t), self(f), name=name or "select")
            case Bitcast(type=dt, operand=x):
                return b.bitcast(self(x), value_type(dt), name=name or "bits")
            case Cast(type=dt, operand=x):
                value = convert(b, self(x), x.dtype, dt)
                if isinstance(value, ir.Instruction) and value.name.startswith("."):
                    value.name = name or "cast"
                return value
            case Load(buffer=buf, index=index):
                return self.load(buf, self(index))
            case ShuffleXor():
                raise LoopIRError("ShuffleXor has no CPU lowering (a CPU block has one thread)")
        raise LoopIRError(f"cannot lower expression {type(e).__name__} to LLVM")

    def const(self, value: object, dt: DType) -> ir.Value:
        if is_low_precision(dt):
            return from_float(self.b, ir.Constant(value_type(f32), float(value)), dt)  # type: ignore[arg-type]
        if dt.is_float:
            return ir.Constant(value_type(dt), float(value))  # type: ignore[arg-type]
        return ir.Constant(value_type(dt), int(value))  # type: ignore[call-overload]

    def intrinsic(self, name: str, dt: DType, args: list[ir.Value], extra: list[ir.Value] = ()):  # type: ignore[assignment]
        t = value_type(dt)
        suffix = {f32: "f32", f64: "f64"}.get(dt, f"i{dt.bits}")
        fn = declare(self.module, f"{name}.{suffix}", t, [t] * len(args) + [a.type for a in extra])
        return self.b.call(fn, [*args, *extra])

    def binary(self, e: Binary, name: str) -> ir.Value:
        op, dt = e.op, e.lhs.dtype
        name = name or _VALUE_NAMES.get(op, "cmp" if op.is_comparison else op.name.lower())
        lhs, rhs = self(e.lhs), self(e.rhs)
        if is_low_precision(dt):
            result = self.float_binary(
                op, f32, to_float(self.b, lhs, dt), to_float(self.b, rhs, dt), name
            )
            return result if op.is_comparison else from_float(self.b, result, dt)
        if dt.is_float:
            return self.float_binary(op, dt, lhs, rhs, name)
        return self.int_binary(e, lhs, rhs, name)

    def float_binary(
        self, op: BinaryOp, dt: DType, lhs: ir.Value, rhs: ir.Value, name: str
    ) -> ir.Value:
        b = self.b
        if op in _FLOAT_OPS:
            return getattr(b, _FLOAT_OPS[op])(lhs, rhs, name=name, flags=_CONTRACT)
        if op.is_comparison:
            if op is BinaryOp.NE:
                return b.fcmp_unordered("!=", lhs, rhs, name=name)
            return b.fcmp_ordered(op.value, lhs, rhs, name=name)
        intrinsic = {
            BinaryOp.MIN: "llvm.minnum",
            BinaryOp.MAX: "llvm.maxnum",
            BinaryOp.POW: "llvm.pow",
        }
        if op in intrinsic:
            return self.intrinsic(intrinsic[op], dt, [lhs, rhs])
        raise LoopIRError(f"operator {op.value!r} on {dt} operands")

    def int_binary(self, e: Binary, lhs: ir.Value, rhs: ir.Value, name: str) -> ir.Value:
        b, op, dt = self.b, e.op, e.lhs.dtype
        signed = dt.kind is Kind.SIGNED
        if op in _INT_OPS:
            return getattr(b, _INT_OPS[op])(lhs, rhs, name=name)
        if op is BinaryOp.SHR:
            return (b.ashr if signed else b.lshr)(lhs, rhs, name=name)
        if op.is_comparison:
            compare = b.icmp_signed if signed else b.icmp_unsigned
            return compare(op.value, lhs, rhs, name=name)
        if op in (BinaryOp.MIN, BinaryOp.MAX):
            which = ("s" if signed else "u") + op.value
            return self.intrinsic(f"llvm.{which}", dt, [lhs, rhs])
        if op is BinaryOp.DIV:
            return (b.sdiv if signed else b.udiv)(lhs, rhs, name=name)
        plain = not signed or (self.nonnegative(e.lhs) and self.nonnegative(e.rhs))
        if op is BinaryOp.FLOORDIV:
            return b.udiv(lhs, rhs, name=name) if plain else self.floor_div(lhs, rhs, name)
        if op is BinaryOp.MOD:
            return b.urem(lhs, rhs, name=name) if plain else self.floor_mod(lhs, rhs, name)
        raise LoopIRError(f"operator {op.value!r} on {dt} operands")

    def _rounds_down(self, lhs: ir.Value, rhs: ir.Value) -> tuple[ir.Value, ir.Value]:
        """C's remainder, and whether floor division differs from C's (signs differ, r != 0)."""
        b = self.b
        rem = b.srem(lhs, rhs, name="rem")
        zero = ir.Constant(lhs.type, 0)
        signs_differ = b.icmp_signed("<", b.xor(rem, rhs), zero)
        inexact = b.icmp_signed("!=", rem, zero)
        return rem, b.and_(signs_differ, inexact, name="rounds_down")

    def floor_div(self, lhs: ir.Value, rhs: ir.Value, name: str) -> ir.Value:
        _, adjust = self._rounds_down(lhs, rhs)
        quotient = self.b.sdiv(lhs, rhs, name="quot")
        return self.b.sub(quotient, self.b.zext(adjust, lhs.type), name=name)

    def floor_mod(self, lhs: ir.Value, rhs: ir.Value, name: str) -> ir.Value:
        rem, adjust = self._rounds_down(lhs, rhs)
        return self.b.select(adjust, self.b.add(rem, rhs), rem, name=name)

    def unary(self, e: Unary, name: str) -> ir.Value:
        b, op, dt = self.b, e.op, e.operand.dtype
        x = self(e.operand)
        if is_low_precision(dt):
            wide = self.float_unary(op, f32, to_float(b, x, dt), name)
            return from_float(b, wide, dt)
        if dt.is_float:
            return self.float_unary(op, dt, x, name)
        if op is UnaryOp.NEG:
            return b.neg(x, name=name or "neg")
        if op in (UnaryOp.NOT, UnaryOp.BITNOT):
            return b.not_(x, name=name or "not")
        if op is UnaryOp.ABS:
            if dt.kind is Kind.UNSIGNED:
                return x
            return self.intrinsic("llvm.abs", dt, [x], [ir.Constant(I1, 0)])
        raise LoopIRError(f"{op.value!r} of a {dt} operand")

    def float_unary(self, op: UnaryOp, dt: DType, x: ir.Value, name: str) -> ir.Value:
        b = self.b
        if op is UnaryOp.NEG:
            return b.fneg(x, name=name or "neg")
        if dt is f32 and op in _VECTOR_MATH:
            return b.call(_VECTOR_MATH[op](self.module), [x], name=name or op.value)
        if op in _FLOAT_INTRINSICS:
            return self.intrinsic(_FLOAT_INTRINSICS[op], dt, [x])
        if op in _LIBM:
            t = value_type(dt)
            fn = declare(self.module, _LIBM[op][dt is f64], t, [t])
            return b.call(fn, [x], name=name or op.value)
        if op is UnaryOp.RSQRT:
            root = self.intrinsic("llvm.sqrt", dt, [x])
            return b.fdiv(ir.Constant(x.type, 1.0), root, name=name or "rsqrt")
        raise LoopIRError(f"{op.value!r} of a {dt} operand")
