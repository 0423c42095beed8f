"""The builtins of the kernel language: one table.

The front end binds every call against its entry (arity, keywords, "did you mean"), then
dispatches on :attr:`Builtin.rule` — the typing rule that builds its Tile IR. The language
reference's table is :func:`markdown_table` of this one, so the checker, the messages and
the docs cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from . import syntax as ast
from .diagnostics import DSLError, did_you_mean, error_at


@dataclass(frozen=True)
class Arg:
    """A builtin's argument. ``keyword_only`` ones are written ``name=value``."""

    name: str
    required: bool = True
    keyword_only: bool = False


@dataclass(frozen=True)
class Builtin:
    """One builtin: its signature, the rule that types it, and what the docs say.

    ``fn`` is the :class:`~tegula.ir.tile.ElementwiseOp` function of elementwise math;
    ``fold`` evaluates it on a compile-time constant.
    """

    name: str
    rule: str
    args: tuple[Arg, ...]
    summary: str
    typing: str
    fn: str | None = None
    fold: Callable[[float], float] | None = None
    has_value: bool = True

    @property
    def signature(self) -> str:
        parts: list[str] = []
        star = False
        for a in self.args:
            if a.keyword_only and not star:
                parts.append("*")
                star = True
            parts.append(a.name if a.required else f"{a.name}=…")
        return f"{self.name}({', '.join(parts)})"


def _math(name: str, summary: str, fold: Callable[[float], float]) -> Builtin:
    return Builtin(
        name,
        "math",
        (Arg("x"),),
        summary,
        "float tile → same type; an int tile is an error",
        fn=name,
        fold=fold,
    )


def _rsqrt(x: float) -> float:
    return 1.0 / math.sqrt(x)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


# Activations are definitions over the core ops (the front end expands them, so every
# back end runs them and the Tile IR shows what they compute).
ACTIVATIONS: Mapping[str, tuple[str, Callable[[float], float]]] = {
    "relu": ("max(x, 0)", lambda x: max(x, 0.0)),
    "sigmoid": ("1 / (1 + exp(-x))", _sigmoid),
    "silu": ("x * sigmoid(x) (swish)", lambda x: x * _sigmoid(x)),
    "gelu": ("0.5 x (1 + erf(x / sqrt(2))), the exact form", lambda x: 0.5 * x * (
        1.0 + math.erf(x / math.sqrt(2.0)))),
}


def _activation(name: str) -> Builtin:
    summary, fold = ACTIVATIONS[name]
    return Builtin(name, "activation", (Arg("x"),), summary,
                   "float tile → same type; an int tile is an error", fold=fold)


_TABLE: tuple[Builtin, ...] = (
    Builtin(
        "load",
        "load",
        (Arg("src"), Arg("mask", False, True), Arg("other", False, True)),
        "Read a window `x[...]` of a global tensor (masked at the tensor's bounds), or a "
        "shared tile into registers.",
        "window of `T[...]` → register `T[window shape]`; `mask`: bool, broadcast to it; "
        "`other`: scalar for masked-off elements (default 0)",
    ),
    Builtin(
        "store",
        "store",
        (Arg("dst"), Arg("value"), Arg("mask", False, True)),
        "Write a tile to a window of a global tensor (masked at the tensor's bounds).",
        "value must have the window's shape (a scalar is broadcast); cast to the tensor's dtype",
        has_value=False,
    ),
    Builtin(
        "atomic_add",
        "atomic_add",
        (Arg("dst"), Arg("value"), Arg("mask", False, True)),
        "`dst[window] += value`, atomically per element.",
        "as `store`",
        has_value=False,
    ),
    Builtin(
        "zeros",
        "zeros",
        (Arg("dtype"), Arg("shape")),
        "A tile of zeros; shape `[]` is a scalar.",
        "`dtype`, constant shape → `dtype[shape]`",
    ),
    Builtin(
        "full",
        "full",
        (Arg("dtype"), Arg("shape"), Arg("value")),
        "A tile with every element `value`.",
        "`dtype`, constant shape, scalar value → `dtype[shape]`",
    ),
    Builtin(
        "arange",
        "arange",
        (Arg("n"),),
        "`[0, 1, …, n-1]`.",
        "constant int n → `i32[n]`",
    ),
    Builtin(
        "cast",
        "cast",
        (Arg("x"), Arg("dtype")),
        "Convert elements to another dtype; of a low-bit tile (`u4`, `f4e2m1`, `nf4`, …), "
        "decode its codes exactly.",
        "`T[s]` → `dtype[s]`; low-bit types are cast from, never to",
    ),
    _math("exp", "e**x", math.exp),
    _math("exp2", "2**x", lambda x: 2.0**x),
    _math("log", "natural logarithm", math.log),
    _math("log2", "base-2 logarithm", math.log2),
    _math("sqrt", "square root", math.sqrt),
    _math("rsqrt", "1 / sqrt(x)", _rsqrt),
    _math("tanh", "hyperbolic tangent", math.tanh),
    _math("erf", "error function", math.erf),
    _math("sin", "sine", math.sin),
    _math("cos", "cosine", math.cos),
    _math("floor", "round down", lambda x: float(math.floor(x))),
    _math("ceil", "round up", lambda x: float(math.ceil(x))),
    *(_activation(name) for name in ACTIVATIONS),
    Builtin(
        "abs",
        "abs",
        (Arg("x"),),
        "absolute value",
        "numeric tile → same type",
        fn="abs",
        fold=abs,
    ),
    Builtin(
        "max",
        "minmax",
        (Arg("a"), Arg("b", False), Arg("axis", False, True)),
        "`max(a, b)`: elementwise maximum; `max(t, axis=k)`: reduction along k (all axes "
        "without `axis`).",
        "elementwise: broadcast and promote; reduction: drops the axis, keeps the dtype",
        fn="max",
        fold=max,
    ),
    Builtin(
        "min",
        "minmax",
        (Arg("a"), Arg("b", False), Arg("axis", False, True)),
        "`min(a, b)`: elementwise minimum; `min(t, axis=k)`: reduction along k.",
        "as `max`",
        fn="min",
        fold=min,
    ),
    Builtin(
        "sum",
        "sum",
        (Arg("x"), Arg("axis", False, True), Arg("dtype", False, True)),
        "Sum along `axis` (negative counts from the end; all axes without it); `dtype=T` "
        "converts the elements to `T` and accumulates in `T` itself, as NumPy's "
        "`sum(dtype=)`.",
        "numeric `T[s]` → `T[s without axis]` (f16/bf16 keep their dtype in Tile IR; "
        "code generators accumulate in f32 unless `dtype` is given)",
    ),
    Builtin(
        "where",
        "where",
        (Arg("cond"), Arg("a"), Arg("b")),
        "Elementwise choice: `a` where `cond`, else `b`.",
        "bool cond; a, b promoted; all three broadcast together",
    ),
    Builtin(
        "dot",
        "dot",
        (Arg("a"), Arg("b"), Arg("acc", False)),
        "Matrix product `a @ b + acc` of register tiles.",
        "`T[M, K]`, `T[K, N]`, `A[M, N]` → `A[M, N]`; without acc, a zero f32 (i32 for int "
        "operands) accumulator",
    ),
    Builtin(
        "transpose",
        "transpose",
        (Arg("x"),),
        "Swap the dims of a 2-D register or shared tile.",
        "`T[M, N]` → `T[N, M]` in the same memory",
    ),
    Builtin(
        "shared",
        "shared",
        (Arg("x"), Arg("swizzle", False, True), Arg("pad", False, True)),
        "Copy a register tile to shared memory, row-major; `swizzle=(B, M, S)` applies "
        "CuTe's `Swizzle<B,M,S>`, `pad=P` adds P elements after each row.",
        "register `T[s]` → shared `T[s]`",
    ),
    Builtin(
        "convert",
        "convert",
        (Arg("x"), Arg("layout")),
        "Pin the register layout of a tile, e.g. `convert(t, spatial(4, 8) * local(2, 2))`.",
        "`T[s]` → `T[s]` with that layout; the layout's tile shape must be `s`",
    ),
    Builtin(
        "cdiv",
        "cdiv",
        (Arg("a"), Arg("b")),
        "Ceiling division `(a + b - 1) // b`.",
        "integers",
    ),
    Builtin(
        "pow2ceil",
        "constexpr",
        (Arg("n"),),
        "The smallest power of two ≥ n (1 for n ≤ 1), as in `params BN = pow2ceil(N)`.",
        "compile-time int → int (in params' defaults, size symbols count as compile-time)",
    ),
    Builtin(
        "pow2floor",
        "constexpr",
        (Arg("n"),),
        "The largest power of two ≤ n (1 for n ≤ 1).",
        "as `pow2ceil`",
    ),
    Builtin(
        "range",
        "loop",
        (Arg("start"), Arg("stop"), Arg("step", False)),
        "Only as `for i in range(start, stop[, step])`.",
        "integer scalars; the loop variable takes their promoted type",
    ),
    Builtin(
        "pipeline",
        "loop",
        (Arg("start"), Arg("stop"), Arg("step", False), Arg("stages", False, True),
         Arg("tma", False, True), Arg("warp_specialize", False, True)),
        "Only as `for k in pipeline(start, stop, step, stages=S)`: a `range` whose loads the "
        "compiler issues S - 1 iterations ahead on CUDA (tensor-core operands through shared "
        "memory, other unmasked loads through registers); a plain `range` on the CPU. With "
        "`tma=true`, sm_90+ copies wgmma operands by TMA instead of `cp.async`; with "
        "`warp_specialize=true` too, extra producer warps (on sm_90a a warpgroup that hands "
        "its registers to the others) issue every copy while the kernel's warps only compute.",
        "as `range`; `stages` a constant int ≥ 1; `tma`, `warp_specialize` constant bools",
    ),
)

BUILTINS: Mapping[str, Builtin] = {b.name: b for b in _TABLE}


def lookup(call: ast.Call, source: ast.SourceText) -> Builtin:
    """The builtin ``call`` names; an error with a suggestion when there is none."""
    builtin = BUILTINS.get(call.func)
    if builtin is None:
        raise error_at(
            source,
            call.func_span,
            f"unknown function '{call.func}'{did_you_mean(call.func, BUILTINS)}",
        )
    return builtin


def bind(builtin: Builtin, call: ast.Call, source: ast.SourceText) -> dict[str, ast.Expr]:
    """Match ``call``'s arguments to ``builtin``'s, by position then keyword."""
    positional = [a for a in builtin.args if not a.keyword_only]
    if len(call.args) > len(positional):
        most = len(positional)
        raise error_at(
            source,
            call.span,
            f"{builtin.name} takes at most {most} positional argument{'s' * (most != 1)} "
            f"({builtin.signature}); got {len(call.args)}",
        )
    bound: dict[str, ast.Expr] = {a.name: e for a, e in zip(positional, call.args, strict=False)}
    names = [a.name for a in builtin.args]
    for kw in call.keywords:
        if kw.name not in names:
            hint = did_you_mean(kw.name, names)
            raise error_at(
                source,
                kw.span,
                f"{builtin.name} has no argument '{kw.name}'{hint or f' ({builtin.signature})'}",
            )
        if kw.name in bound:
            raise error_at(source, kw.span, f"{builtin.name}: '{kw.name}' is given twice")
        bound[kw.name] = kw.value
    for a in builtin.args:
        if a.required and a.name not in bound:
            raise error_at(
                source,
                call.span,
                f"{builtin.name} is missing its argument '{a.name}' ({builtin.signature})",
            )
    return bound


def markdown_table() -> str:
    """The builtins as a Markdown table, for the language reference."""
    rows = ["| builtin | what it does | typing |", "|---|---|---|"]
    for b in _TABLE:
        rows.append(f"| `{b.signature}` | {b.summary} | {b.typing} |")
    return "\n".join(rows) + "\n"


__all__ = ["BUILTINS", "Arg", "Builtin", "DSLError", "bind", "lookup", "markdown_table"]
