"""Vectorizable elementary functions for the LLVM back end.

LLVM's ``llvm.exp.f32`` becomes a call to the C library's scalar ``expf``, which stops the
loop vectorizer: a softmax would run one ``exp`` at a time. So ``exp`` and ``exp2`` of f32
are emitted as small always-inline functions made only of arithmetic, compares and bit
moves, which vectorize to full SIMD width.

The method is the classic one (Cody and Waite range reduction, Cephes' minimax polynomial):
``exp(x) = 2**n * exp(r)`` with ``n = round(x / ln 2)`` and ``r = x - n ln 2`` (``ln 2`` split
in two parts, so ``r`` is exact), ``exp(r)`` by a degree-6 polynomial on ``|r| <= ln2/2``,
and ``2**n`` built in two halves straight in the exponent bits, so results down to the
subnormal range and up to overflow come out right. The error is within 2 ulp of the true
value; NaN, ±inf, overflow to inf and underflow to 0 are handled explicitly.
"""

from __future__ import annotations

from llvmlite import ir

F32 = ir.FloatType()
I32 = ir.IntType(32)

_LN2_HI = 0.693359375
_LN2_LO = -2.12194440e-4
_LOG2E = 1.44269504088896341
# Cephes expf: exp(r) ~ 1 + r + r^2 * P(r), |r| <= ln2/2.
_EXP_POLY = (
    1.9875691500e-4,
    1.3981999507e-3,
    8.3334519073e-3,
    4.1665795894e-2,
    1.6666665459e-1,
    5.0000001201e-1,
)
# Outside [_LOW, _HIGH] exp is 0 or inf in f32; clamping keeps 2**n's halves normal.
_EXP_LOW, _EXP_HIGH = -104.0, 89.0


def _intrinsic(module: ir.Module, name: str, n_args: int) -> ir.Function:
    existing = module.globals.get(name)
    if isinstance(existing, ir.Function):
        return existing
    return ir.Function(module, ir.FunctionType(F32, [F32] * n_args), name=name)


def _define_exp_core(module: ir.Module, name: str, base2: bool) -> ir.Function:
    """``float name(float)``: e**x, or 2**x when ``base2``."""
    existing = module.globals.get(name)
    if isinstance(existing, ir.Function):
        return existing
    fn = ir.Function(module, ir.FunctionType(F32, [F32]), name=name)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    fn.attributes.add("nounwind")
    (x,) = fn.args
    x.name = "x"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    c = lambda v: ir.Constant(F32, v)  # noqa: E731 - a one-line constant maker

    low, high = (_EXP_LOW * _LOG2E, _EXP_HIGH * _LOG2E) if base2 else (_EXP_LOW, _EXP_HIGH)
    clamped = b.select(b.fcmp_ordered("<", x, c(low)), c(low), x, name="lo_clamped")
    clamped = b.select(b.fcmp_ordered(">", clamped, c(high)), c(high), clamped, name="clamped")
    t = clamped if base2 else b.fmul(clamped, c(_LOG2E), name="t")
    n = b.call(_intrinsic(module, "llvm.rint.f32", 1), [t], name="n")
    if base2:
        r = b.fmul(b.fsub(clamped, n), c(0.6931471805599453), name="r")
    else:
        r = b.fsub(clamped, b.fmul(n, c(_LN2_HI)), name="r_hi")
        r = b.fsub(r, b.fmul(n, c(_LN2_LO)), name="r")
    p = c(_EXP_POLY[0])
    for coeff in _EXP_POLY[1:]:
        p = b.fadd(b.fmul(p, r), c(coeff))
    r2 = b.fmul(r, r, name="r2")
    p = b.fadd(b.fadd(b.fmul(p, r2), r), c(1.0), name="exp_r")
    # 2**n in two halves, each a normal float built in the exponent field.
    ni = b.fptosi(n, I32, name="ni")
    half = b.ashr(ni, ir.Constant(I32, 1), name="n_half")
    rest = b.sub(ni, half, name="n_rest")
    scale1 = b.bitcast(b.shl(b.add(half, ir.Constant(I32, 127)), ir.Constant(I32, 23)), F32)
    scale2 = b.bitcast(b.shl(b.add(rest, ir.Constant(I32, 127)), ir.Constant(I32, 23)), F32)
    value = b.fmul(b.fmul(p, scale1), scale2, name="value")
    is_nan = b.fcmp_unordered("uno", x, x, name="is_nan")
    b.ret(b.select(is_nan, x, value))
    return fn


def exp_f32(module: ir.Module) -> ir.Function:
    return _define_exp_core(module, "tegula.exp.f32", base2=False)


def exp2_f32(module: ir.Module) -> ir.Function:
    return _define_exp_core(module, "tegula.exp2.f32", base2=True)
