"""LLVM types for tegula dtypes, and the conversions between them that LLVM lacks.

Registers hold ``bool`` as ``i1`` and memory as ``i8``; ``f16`` is LLVM's ``half``;
``bf16`` is kept as its ``i16`` bit pattern (llvmlite has no ``bfloat`` type), widened to
``float`` by a shift and narrowed by round-to-nearest-even on the bits. Half-precision
arithmetic happens in ``float`` with a rounding after each operation, as on CUDA.

Narrowing to ``f16``/``bf16`` is exact from every source: a ``double`` is first rounded
*to odd* into a ``float`` (so the second rounding cannot double-round), and integers go
through ``double``. On an x86 CPU without F16C, LLVM lowers ``half`` conversions to the
``__extendhfsf2``/``__truncsfhf2`` runtime calls, which the JIT must then resolve.
"""

from __future__ import annotations

from llvmlite import ir
from tegula.ir.dtypes import DType, Kind, f32, f64
from tegula.ir.verify_loop import LoopIRError

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I16 = ir.IntType(16)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
HALF = ir.HalfType()
FLOAT = ir.FloatType()
DOUBLE = ir.DoubleType()
PTR = ir.PointerType()


def declare(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    """The function ``name`` of ``module``, declared on first use."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(ret, args), name)


def is_low_precision(dt: DType) -> bool:
    return dt.name in ("f16", "bf16")


def value_type(dt: DType) -> ir.Type:
    """The type a value of ``dt`` has in a register."""
    if dt.is_bool:
        return I1
    if dt.name == "bf16":
        return I16
    if dt.name == "f16":
        return HALF
    if dt is f32:
        return FLOAT
    if dt is f64:
        return DOUBLE
    if dt.is_int and dt.llvm is not None:
        return ir.IntType(dt.bits)
    raise LoopIRError(f"dtype {dt} has no LLVM type")


def memory_type(dt: DType) -> ir.Type:
    """The type an element of ``dt`` has in memory."""
    return I8 if dt.is_bool else value_type(dt)


def compute_type(dt: DType) -> DType:
    """The dtype arithmetic on ``dt`` happens in (``float`` for the half types)."""
    return f32 if is_low_precision(dt) else dt


def bf16_to_float(b: ir.IRBuilder, bits: ir.Value) -> ir.Value:
    wide = b.shl(b.zext(bits, I32), ir.Constant(I32, 16))
    return b.bitcast(wide, FLOAT)


def float_to_bf16(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Round a float to the nearest bf16 (ties to even); NaNs stay NaN (made quiet)."""
    bits = b.bitcast(x, I32)
    odd = b.and_(b.lshr(bits, ir.Constant(I32, 16)), ir.Constant(I32, 1))
    rounded = b.lshr(b.add(b.add(bits, ir.Constant(I32, 0x7FFF)), odd), ir.Constant(I32, 16))
    quiet_nan = b.or_(b.lshr(bits, ir.Constant(I32, 16)), ir.Constant(I32, 0x40))
    is_nan = b.fcmp_unordered("uno", x, x)
    return b.trunc(b.select(is_nan, quiet_nan, rounded), I16)


def double_to_float_odd(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """``x`` rounded to float *to odd*: toward zero, then the last bit set when inexact."""
    nearest = b.fptrunc(x, FLOAT)
    back = b.fpext(nearest, DOUBLE)
    bits = b.bitcast(nearest, I32)
    fabs = declare(b.module, "llvm.fabs.f64", DOUBLE, [DOUBLE])
    went_away = b.fcmp_ordered(">", b.call(fabs, [back]), b.call(fabs, [x]))
    toward_zero = b.select(went_away, b.sub(bits, ir.Constant(I32, 1)), bits)
    inexact = b.fcmp_ordered("!=", back, x)
    odd = b.select(inexact, b.or_(toward_zero, ir.Constant(I32, 1)), bits)
    return b.bitcast(odd, FLOAT)


def to_float(b: ir.IRBuilder, v: ir.Value, dt: DType) -> ir.Value:
    """A half-precision value widened to ``float`` (exact)."""
    if dt.name == "bf16":
        return bf16_to_float(b, v)
    return b.fpext(v, FLOAT)


def from_float(b: ir.IRBuilder, v: ir.Value, dt: DType) -> ir.Value:
    """A ``float`` rounded to the half-precision ``dt`` (nearest, ties to even)."""
    if dt.name == "bf16":
        return float_to_bf16(b, v)
    return b.fptrunc(v, HALF)


def convert(b: ir.IRBuilder, v: ir.Value, src: DType, dst: DType) -> ir.Value:
    """Value conversion with C's rules (float → int truncates, int → float rounds)."""
    if src == dst:
        return v
    if dst.is_bool:
        if src.is_float:
            x = to_float(b, v, src) if is_low_precision(src) else v
            return b.fcmp_unordered("!=", x, ir.Constant(x.type, 0.0))
        return b.icmp_unsigned("!=", v, ir.Constant(v.type, 0))
    if is_low_precision(dst):
        return _to_low_precision(b, v, src, dst)
    if is_low_precision(src):
        return convert(b, to_float(b, v, src), f32, dst)
    target = value_type(dst)
    if src.is_bool:
        return b.uitofp(v, target) if dst.is_float else b.zext(v, target)
    if src.is_float and dst.is_float:
        return b.fpext(v, target) if dst.bits > src.bits else b.fptrunc(v, target)
    if src.is_float:
        return b.fptosi(v, target) if dst.kind is Kind.SIGNED else b.fptoui(v, target)
    if dst.is_float:
        return b.sitofp(v, target) if src.kind is Kind.SIGNED else b.uitofp(v, target)
    if dst.bits < src.bits:
        return b.trunc(v, target)
    if dst.bits > src.bits:
        return b.sext(v, target) if src.kind is Kind.SIGNED else b.zext(v, target)
    return v  # same width, other signedness: the same bits


def _to_low_precision(b: ir.IRBuilder, v: ir.Value, src: DType, dst: DType) -> ir.Value:
    if is_low_precision(src):
        as_float = to_float(b, v, src)
    elif src is f32:
        as_float = v
    elif src is f64:
        as_float = double_to_float_odd(b, v)
    elif src.is_bool:
        as_float = b.uitofp(v, FLOAT)
    elif src.bits <= 16:  # exact in float
        as_float = b.sitofp(v, FLOAT) if src.kind is Kind.SIGNED else b.uitofp(v, FLOAT)
    else:  # exact (or innocuously rounded) in double, then one rounding to odd
        wide = b.sitofp(v, DOUBLE) if src.kind is Kind.SIGNED else b.uitofp(v, DOUBLE)
        as_float = double_to_float_odd(b, wide)
    return from_float(b, as_float, dst)
