"""Syntax tree → Tile IR: names, types, shapes and SSA.

One :class:`_KernelBuilder` walks a kernel's statements with an environment of bindings
(names to IR values or compile-time constants), emitting operations into the innermost open
block. Every check that can fail on user input raises a :class:`DSLError` at the offending
expression.

Typing in brief (docs/dsl.md has the whole story):

* A literal or compile-time parameter is a :class:`Const`, folded in Python while every
  operand is constant, and *weak* when it meets a tile: ``x * 2.0`` keeps ``x``'s dtype; an
  int constant with a float tile takes the float type. A constant that must become a value
  on its own is ``i32``, ``f32`` or ``bool``.
* Broadcasting is NumPy's (right-aligned); the front end writes it out as
  ``ExpandDimsOp``/``BroadcastOp`` so Tile IR operands always have the result's shape.
* A name reassigned in a loop body that existed before the loop is loop-carried; names
  first assigned in a loop, branch or block are not visible after it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tegula.ir import dtypes
from tegula.ir import tile as ir
from tegula.ir.dtypes import DType
from tegula.ir.target import cpu_target
from tegula.passes.lowbit_codes import is_code_type

from . import builtins as bi
from . import constexpr as cx
from . import syntax as ast
from .constexpr import ConstEvalError
from .constexpr import cdiv as _cdiv
from .constexpr import is_int as _is_int
from .diagnostics import DSLError, did_you_mean, error_at, name_hint, one_of
from .headers import declares_dtype as _declares_dtype
from .headers import kernel_header

__all__ = [
    "build_tile_kernel",
    "declared_params",
    "dtype_params",
    "param_defaults",
    "param_space",
    "size_symbols",
    "specialization_symbols",
]

Scalar = cx.Scalar  # a str is a dtype, by its canonical name


@dataclass(frozen=True)
class Const:
    """A compile-time value: a literal, a compile-time parameter, or a fold of them."""

    value: Scalar


@dataclass(frozen=True)
class Hidden:
    """A name assigned only inside a ``for``/``if``/block that has ended."""

    construct: str
    line: int


Binding = ir.Value | Const | Hidden
Operand = ir.Value | Const

_SPECIAL_NAMES = frozenset({"bid", "tid"})


# ----------------------------------------------------------------------------- constants


def _const_dtype(value: Scalar) -> DType:
    if isinstance(value, bool):
        return dtypes.boolean
    return dtypes.i32 if isinstance(value, int) else dtypes.f32


# The Tile IR function of each operator; `&`, `|`, `^` and `~` on bools are logical.
_ARITH = {"+": "add", "-": "sub", "*": "mul", "//": "floordiv", "%": "mod", "**": "pow"}
_COMPARE = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}
_BITWISE = {"&": "bitand", "|": "bitor", "^": "bitxor", "<<": "shl", ">>": "shr"}
_LOGICAL_OF_BITWISE = {"&": "and", "|": "or", "^": "ne"}


# ----------------------------------------------------------------------------- naming


class _Namer:
    """Unique value names: the DSL name, then ``name.1``, ``name.2``…; else ``0``, ``1``…"""

    def __init__(self) -> None:
        self.used: set[str] = set()
        self.versions: dict[str, int] = {}
        self.counter = 0

    def fresh(self, hint: str | None = None) -> str:
        if hint is None:
            while str(self.counter) in self.used:
                self.counter += 1
            name = str(self.counter)
        elif hint not in self.used:
            name = hint
        else:
            n = self.versions.get(hint, 0)
            while f"{hint}.{n + 1}" in self.used:
                n += 1
            self.versions[hint] = n + 1
            name = f"{hint}.{n + 1}"
        self.used.add(name)
        return name


def _assigned_names(stmts: tuple[ast.Stmt, ...]) -> set[str]:
    """Names assigned anywhere in ``stmts`` (nested blocks included, loop variables not)."""
    out: set[str] = set()
    for s in stmts:
        if isinstance(s, ast.Assign):
            out.add(s.target)
        elif isinstance(s, ast.For):
            out |= _assigned_names(s.body.stmts)
        elif isinstance(s, ast.If):
            out |= _assigned_names(s.then.stmts)
            if s.orelse is not None:
                out |= _assigned_names(s.orelse.stmts)
        elif isinstance(s, ast.Block):
            out |= _assigned_names(s.stmts)
    return out


def _shape_str(dtype: DType, shape: tuple[int, ...]) -> str:
    return f"{dtype}[{', '.join(map(str, shape))}]" if shape else str(dtype)


# ----------------------------------------------------------------------------- compile-time


class _ConstEvaluator:
    """Evaluates constant expressions (params' defaults, warps, grid parts, sizes).

    ``unbound_symbols`` are size symbols a default may name but whose values were not
    given: naming one is an error that says so (rather than "not a constant").
    """

    def __init__(self, source: ast.SourceText, unbound_symbols: Collection[str] = ()) -> None:
        self.source = source
        self.unbound_symbols = frozenset(unbound_symbols)

    def fail(self, node: Any, message: str) -> DSLError:
        return error_at(self.source, node.span, message)

    def binary(self, node: ast.Binary, a: Scalar, b: Scalar) -> Scalar:
        if node.op not in ("==", "!="):
            self.no_dtypes((node.left, a), (node.right, b))
        try:
            return cx.fold_binary(node.op, a, b)
        except ConstEvalError as exc:
            raise self.fail(node, str(exc)) from None

    def unary(self, node: ast.Unary, a: Scalar) -> Scalar:
        self.no_dtypes((node.operand, a))
        try:
            return cx.fold_unary(node.op, a)
        except ConstEvalError as exc:
            raise self.fail(node, str(exc)) from None

    def no_dtypes(self, *operands: tuple[ast.Expr, Scalar]) -> None:
        """Refuse a dtype where a number is computed with, at the operand that is one."""
        for node, value in operands:
            if isinstance(value, str):
                raise self.fail(node, _not_a_value(node, value, self.source.snippet(node.span)))

    def number(self, node: ast.Expr, env: Mapping[str, Scalar], what: str) -> Scalar:
        """As :meth:`evaluate`, for a context that needs a number (a dim, warps...)."""
        value = self.evaluate(node, env, what)
        self.no_dtypes((node, value))
        return value

    def evaluate(self, node: ast.Expr, env: Mapping[str, Scalar], what: str) -> Scalar:
        """``node``'s value over the constants ``env``; ``what`` names the context."""
        match node:
            case ast.IntLit(value=v) | ast.FloatLit(value=v) | ast.BoolLit(value=v):
                return v
            case ast.Name(id=name):
                if name in env:
                    return env[name]
                if (canonical := cx.dtype_constant(name)) is not None:
                    return canonical
                if name in self.unbound_symbols:
                    raise self.fail(
                        node,
                        f"{what} depends on the size symbol '{name}', which has no value here; "
                        f"give one (symbols={{'{name}': ...}}, or --size {name}=... on the "
                        "command line) or set the parameter explicitly",
                    )
                raise self.fail(
                    node, f"{what} must be a compile-time constant; '{name}' is not one"
                )
            case ast.Unary():
                return self.unary(node, self.evaluate(node.operand, env, what))
            case ast.Binary():
                a = self.evaluate(node.left, env, what)
                b = self.evaluate(node.right, env, what)
                return self.binary(node, a, b)
            case ast.Call(func=func) if (
                cx.FUNCTIONS.get(func) == len(node.args) and not node.keywords
            ):
                args = tuple(self.evaluate(x, env, what) for x in node.args)
                # select may choose between dtypes; nothing computes with them.
                checked = 1 if func == "select" else len(args)
                self.no_dtypes(*zip(node.args[:checked], args[:checked], strict=True))
                try:
                    return cx.fold_call(func, args)
                except ConstEvalError as exc:
                    raise self.fail(node, str(exc)) from None
        raise self.fail(
            node,
            f"{what} must be a compile-time constant (literals, compile-time params, "
            "+ - * / // % **, min, max, cdiv, pow2ceil, pow2floor)",
        )


def _not_a_value(node: ast.Expr, value: str, text: str) -> str:
    """What is wrong with a dtype where a number is needed, in the user's words."""
    if isinstance(node, ast.Name):
        return _name_not_a_value(node.id)
    return f"'{text}' is the dtype {value}, not a value"


def _name_not_a_value(name: str) -> str:
    """The message for a name that stands for a dtype (a dtype's own, or a dtype param's)
    where a value is needed."""
    kind = "dtype" if cx.dtype_constant(name) is not None else "dtype parameter"
    return f"'{name}' is a {kind}, not a value"


def _kind_name(v: Scalar) -> str:
    if isinstance(v, str):
        return "a dtype"
    return "a bool" if isinstance(v, bool) else "an int" if isinstance(v, int) else "a float"


def size_symbols(kernel: ast.KernelDef) -> tuple[str, ...]:
    """The size symbols of ``kernel``'s header (names in tensor dims and strides that are
    neither compile-time nor scalar parameters), in order of first appearance."""
    return kernel_header(kernel).size_symbols


def _defaults(
    kernel: ast.KernelDef,
    overrides: Mapping[str, Scalar],
    symbols: Mapping[str, int] | None = None,
    target: Mapping[str, Scalar] | None = None,
) -> tuple[dict[str, Scalar], dict[str, tuple[Scalar, ...]]]:
    """Each compile-time param's value (the caller's, else its default) and candidates.

    Defaults may name the header's size symbols (``symbols`` gives their values) and the
    target's constants ``CUDA`` and ``SM`` (``target``; the CPU's when not given).
    """
    target = dict(target) if target is not None else cpu_target().constants()
    header_symbols = size_symbols(kernel)
    given = dict(symbols or {})
    if stray := [n for n in given if n not in header_symbols]:
        raise error_at(
            kernel.source,
            kernel.span,
            f"kernel {kernel.name} has no size symbol '{stray[0]}'"
            f"{name_hint(stray[0], header_symbols, 'it has')}",
        )
    unbound = frozenset(header_symbols) - given.keys()
    ev = _ConstEvaluator(kernel.source, unbound)
    values: dict[str, Scalar] = {}
    choices: dict[str, tuple[Scalar, ...]] = {}
    for decl in kernel.const_params:
        if decl.name in values:
            raise error_at(
                kernel.source, decl.span, f"compile-time parameter '{decl.name}' is declared twice"
            )
        if cx.dtype_constant(decl.name) is not None:
            raise error_at(
                kernel.source, decl.span, f"'{decl.name}' is a dtype; name the parameter otherwise"
            )
        if _declares_dtype(decl):
            values[decl.name] = _dtype_param(kernel, decl, overrides, header_symbols)
            continue
        env = {**target, **given, **values}
        if decl.name in overrides and _names_of(decl) & unbound:
            # Set by the caller, so its default is never needed; only its kind is checked.
            kind = _default_kind(decl, env, unbound)
            _no_computed_dtype(kernel, decl, kind)
            values[decl.name] = _check_override(kernel, decl, kind, overrides[decl.name])
            continue
        if _names_of(decl) & unbound:
            # Say that a computed dtype is the mistake, before that a size has no value.
            _no_computed_dtype(kernel, decl, _default_kind(decl, env, unbound))
        cands = tuple(
            ev.evaluate(c, env, f"a candidate of {decl.name}") for c in decl.candidates
        )
        what = f"the default of {decl.name}"
        default = ev.evaluate(decl.default, env, what) if decl.default else cands[0]
        _no_computed_dtype(kernel, decl, default, *cands)
        if cands and default not in cands:
            raise error_at(
                kernel.source,
                decl.span,
                f"the default {default!r} of {decl.name} is not among its candidates "
                f"({', '.join(map(repr, cands))})",
            )
        value = default
        if decl.name in overrides:
            value = _check_override(kernel, decl, default, overrides[decl.name])
        values[decl.name] = value
        if cands:
            choices[decl.name] = cands
    unknown = [n for n in overrides if n not in values]
    if unknown:
        raise error_at(
            kernel.source,
            kernel.span,
            f"kernel {kernel.name} has no compile-time parameter '{unknown[0]}'"
            f"{name_hint(unknown[0], values, 'it has')}",
        )
    return values, choices


def _dtype_param(
    kernel: ast.KernelDef,
    decl: ast.ConstParamDecl,
    overrides: Mapping[str, object],
    symbols: Collection[str],
) -> str:
    """The value of dtype param ``decl``: the caller's (checked against the candidates),
    else its default."""
    default, cands = _dtype_choices(kernel, decl, symbols)
    if cands and default not in cands:
        raise error_at(
            kernel.source,
            decl.span,
            f"the default {default} of {decl.name} is not among its types ({', '.join(cands)})",
        )
    if decl.name not in overrides:
        return default
    chosen = _given_dtype(overrides[decl.name])
    if chosen is None:
        given = overrides[decl.name]
        raise error_at(
            kernel.source,
            decl.span,
            f"compile-time parameter {decl.name} is a dtype (a name such as {default}, or a "
            f"tegula DType); got {given!r} ({type(given).__name__})",
        )
    if cands and chosen not in cands:
        raise error_at(
            kernel.source,
            decl.span,
            f"{decl.name} = {chosen} is not one of its types; it may be {one_of(cands)}",
        )
    return chosen


def _dtype_choices(
    kernel: ast.KernelDef, decl: ast.ConstParamDecl, symbols: Collection[str]
) -> tuple[str, tuple[str, ...]]:
    """A dtype param's default and candidates, as canonical names. Each must be a dtype
    name: the param is set per compile, so nothing it is may wait for the arguments' shapes
    or be computed."""
    names: list[str] = []
    for e in (*((decl.default,) if decl.default is not None else ()), *decl.candidates):
        canonical = cx.dtype_constant(e.id) if isinstance(e, ast.Name) else None
        if canonical is None:
            uses = sorted(n for n in cx.names_in(e) if n in symbols)
            why = f"it cannot depend on the size symbol '{uses[0]}'; " if uses else ""
            raise error_at(
                kernel.source,
                e.span,
                f"{decl.name} is a dtype parameter: {why}its default and candidates are "
                f"dtype names such as i4, and '{kernel.source.snippet(e.span)}' is not one",
            )
        names.append(canonical)
    if decl.default is None:
        return names[0], tuple(names)
    return names[0], tuple(names[1:])


def _given_dtype(given: object) -> str | None:
    """The canonical name of the dtype a caller gave (a name, an alias or a DType)."""
    if isinstance(given, DType):
        return given.name
    return cx.dtype_constant(given) if isinstance(given, str) else None


def _no_computed_dtype(kernel: ast.KernelDef, decl: ast.ConstParamDecl, *values: object) -> None:
    """A param whose value turns out a dtype without declaring one (``select(N > 16, i4,
    i8)``, ``2 in (i4, 4)``): a dtype param's default and candidates are dtype names."""
    if any(isinstance(v, str) for v in values):
        raise error_at(
            kernel.source,
            decl.span,
            f"{decl.name} computes a dtype or mixes dtypes with numbers: a dtype parameter's "
            "default and candidates are dtype names such as i4, fixed per compile (they "
            "cannot depend on size symbols)",
        )


def dtype_params(
    kernel: ast.KernelDef, constants: Mapping[str, object] | None = None
) -> dict[str, str]:
    """Each dtype param's value (``constants``' where it sets one, else the default)."""
    symbols = size_symbols(kernel)
    given = dict(constants or {})
    return {
        decl.name: _dtype_param(kernel, decl, given, symbols)
        for decl in kernel.const_params
        if _declares_dtype(decl)
    }


def _names_of(decl: ast.ConstParamDecl) -> set[str]:
    out: set[str] = set()
    for e in (decl.default, *decl.candidates):
        if e is not None:
            out |= cx.names_in(e)
    return out


def _default_kind(
    decl: ast.ConstParamDecl, env: Mapping[str, Scalar], unbound: Collection[str]
) -> Scalar | None:
    """A value of the kind ``decl``'s default has, found by evaluating it with every
    unbound size symbol set to 1; None when even that has no value."""
    probe = {**dict.fromkeys(unbound, 1), **env}
    expr = decl.default if decl.default is not None else decl.candidates[0]
    try:
        return _ConstEvaluator(ast.SourceText("", "")).evaluate(expr, probe, "")
    except DSLError:
        return None


def _check_override(
    kernel: ast.KernelDef, decl: ast.ConstParamDecl, default: Scalar | None, given: object
) -> Scalar:
    if default is None:  # the default's kind is unknown: any scalar will do
        default = given if isinstance(given, int | float) else None  # type: ignore[assignment]
    ok = default is not None and (
        (isinstance(default, bool) and isinstance(given, bool))
        or (_is_int(default) and _is_int(given))
        or (
            isinstance(default, float)
            and isinstance(given, int | float)
            and not isinstance(given, bool)
        )
    )
    if not ok:
        kind = _kind_name(default) if default is not None else "a number or bool"
        raise error_at(
            kernel.source,
            decl.span,
            f"compile-time parameter {decl.name} is {kind}; "
            f"got {given!r} ({type(given).__name__})",
        )
    return float(given) if isinstance(default, float) else given  # type: ignore[arg-type]


def declared_params(kernel: ast.KernelDef) -> tuple[str, ...]:
    """The names of the compile-time params ``kernel`` declares, in order."""
    return tuple(decl.name for decl in kernel.const_params)


def specialization_symbols(
    kernel: ast.KernelDef, pinned: Collection[str] = ()
) -> tuple[str, ...]:
    """The size symbols ``kernel``'s params' defaults depend on, directly or through other
    params, leaving out params the caller sets (``pinned``); empty for an ordinary kernel."""
    return kernel_header(kernel).specialization_symbols(pinned)


def param_space(
    kernel: ast.KernelDef, symbols: Mapping[str, int] | None = None
) -> dict[str, tuple[Scalar, ...]]:
    """The candidates each tunable compile-time param declares (``NAME in (...)``).

    ``symbols`` gives size symbols' values where defaults depend on them; values for names
    that are not the kernel's size symbols are ignored.
    """
    known = size_symbols(kernel)
    given = {k: v for k, v in (symbols or {}).items() if k in known}
    return _defaults(kernel, {}, given)[1]


def param_defaults(
    kernel: ast.KernelDef, symbols: Mapping[str, int] | None = None,
    target: Mapping[str, Scalar] | None = None,
) -> dict[str, Scalar]:
    """Each compile-time param's declared default at these size symbols on ``target`` (its
    constants: ``CUDA``, ``SM``, ``WGMMA``): what a compile that sets nothing builds."""
    known = size_symbols(kernel)
    given = {k: v for k, v in (symbols or {}).items() if k in known}
    return _defaults(kernel, {}, given, target)[0]


# ----------------------------------------------------------------------------- the builder


class _KernelBuilder:
    def __init__(
        self,
        kernel: ast.KernelDef,
        constants: Mapping[str, Scalar],
        symbols: Mapping[str, int] | None = None,
        target: Mapping[str, Scalar] | None = None,
    ) -> None:
        self.kdef = kernel
        self.source = kernel.source
        self.namer = _Namer()
        self.blocks: list[list[ir.Op]] = [[]]
        self.env: dict[str, Binding] = {}
        self.readonly: dict[str, str] = {}
        self.writes: set[str] = set()
        self.consts, _ = _defaults(kernel, constants, symbols, target)
        self.const_eval = _ConstEvaluator(self.source)
        self.num_warps = 4
        self.loop_vars: frozenset[str] = frozenset()
        self.rules: dict[str, Callable[[ast.Call, dict[str, ast.Expr], str | None], Any]] = {
            "load": self.rule_load,
            "store": self.rule_store,
            "atomic_add": self.rule_store,
            "zeros": self.rule_full,
            "full": self.rule_full,
            "arange": self.rule_arange,
            "cast": self.rule_cast,
            "math": self.rule_math,
            "activation": self.rule_activation,
            "abs": self.rule_math,
            "minmax": self.rule_minmax,
            "sum": self.rule_sum,
            "where": self.rule_where,
            "dot": self.rule_dot,
            "transpose": self.rule_transpose,
            "shared": self.rule_shared,
            "convert": self.rule_convert,
            "cdiv": self.rule_cdiv,
            "constexpr": self.rule_constexpr,
            "loop": self.rule_loop_outside_for,
        }

    # -- errors and small helpers

    def fail(self, node: Any, message: str) -> DSLError:
        return error_at(self.source, getattr(node, "span", None), message)

    def text(self, node: Any) -> str:
        return self.source.snippet(node.span)

    def loc(self, node: Any) -> ir.SourceLoc:
        span: ast.Span = node.span
        return ir.SourceLoc(
            self.source.filename,
            span.line,
            span.column,
            self.source.line(span.line),
            span.end_column if span.end_line == span.line else None,
        )

    def emit(
        self,
        cls: type[ir.Op],
        types: tuple[ir.Type, ...],
        hint: str | None,
        node: Any,
        names: list[str] | None = None,
        **fields: Any,
    ) -> tuple[ir.Value, ...]:
        """Append an op with results of ``types``, named ``names`` (else after ``hint``)."""
        hints = names if names is not None else [hint] * len(types)
        results = tuple(ir.Value(self.namer.fresh(h), t) for h, t in zip(hints, types, strict=True))
        self.blocks[-1].append(cls(results=results, loc=self.loc(node), **fields))
        return results

    def emit1(
        self, cls: type[ir.Op], t: ir.Type, hint: str | None, node: Any, **fields: Any
    ) -> ir.Value:
        return self.emit(cls, (t,), hint, node, **fields)[0]

    # -- kernel

    def build(self) -> ir.TileKernel:
        k = self.kdef
        params = self.declare_params()
        self.num_warps = self.warps()
        grid = self.grid()
        self.lower_block(k.body.stmts)
        body = ir.Block((), tuple(self.blocks[0]))
        params = tuple(
            ir.Param(p.name, p.value, p.loc, writes=p.name in self.writes) for p in params
        )
        return ir.TileKernel(
            name=k.name,
            params=params,
            symbols=tuple(self.symbols),
            grid=grid,
            num_warps=self.num_warps,
            body=body,
            constants=tuple(self.consts.items()),
            loc=self.loc(k),
            source_file=self.source.filename,
        )

    def declare_params(self) -> list[ir.Param]:
        for name, value in self.consts.items():
            self.env[name] = Const(value)
            self.readonly[name] = "a compile-time parameter"
        params: list[ir.Param] = []
        self.symbols: list[ir.Value] = []
        scalars = {p.name for p in self.kdef.params if p.shape is None}
        for decl in self.kdef.params:
            if decl.name in self.readonly:
                raise self.fail(decl, f"'{decl.name}' is already {self.readonly[decl.name]}")
            dtype = self.dtype_named(decl.dtype, decl.dtype_span)
            if decl.shape is None:
                value = ir.Value(self.namer.fresh(decl.name), ir.TileType(dtype, ()))
                self.readonly[decl.name] = "a kernel parameter"
            else:
                shape = tuple(self.dim(d, scalars) for d in decl.shape)
                strides = (
                    tuple(self.dim(d, scalars) for d in decl.strides)
                    if decl.strides is not None
                    else None
                )
                if strides is not None and len(strides) != len(shape):
                    raise self.fail(
                        decl, f"{decl.name} has {len(shape)} dims but {len(strides)} strides"
                    )
                value = ir.Value(self.namer.fresh(decl.name), ir.TensorType(dtype, shape, strides))
                self.readonly[decl.name] = "a kernel parameter"
            self.env[decl.name] = value
            params.append(ir.Param(decl.name, value, self.loc(decl)))
        return params

    def dim(self, d: ast.Dim, scalars: set[str]) -> ir.Dim:
        if isinstance(d.value, int):
            if d.value < 1:
                raise self.fail(d, f"a tensor dim must be positive; got {d.value}")
            return d.value
        name = d.value
        if name in self.consts:
            v = self.consts[name]
            if isinstance(v, str):
                raise self.fail(d, _name_not_a_value(name))
            if not _is_int(v) or v < 1:  # type: ignore[operator]
                raise self.fail(d, f"a tensor dim must be a positive integer; {name} is {v!r}")
            return int(v)
        if name in scalars:
            raise self.fail(
                d,
                f"'{name}' is a scalar parameter; a dim is an integer, a size symbol or a "
                "compile-time parameter",
            )
        if name in self.readonly and name not in {s.name for s in self.symbols}:
            raise self.fail(d, f"'{name}' is {self.readonly[name]}, not a size symbol")
        if name not in self.env:
            sym = ir.Value(self.namer.fresh(name), ir.TileType(dtypes.i64, ()))
            self.symbols.append(sym)
            self.env[name] = sym
            self.readonly[name] = "a size symbol"
        return name

    def warps(self) -> int:
        if self.kdef.warps is None:
            return 4
        v = self.const_eval.number(self.kdef.warps, self.consts, "warps")
        if not _is_int(v) or not 1 <= v <= 32:  # type: ignore[operator]
            raise self.fail(self.kdef.warps, f"warps must be an integer from 1 to 32; got {v!r}")
        return int(v)

    def grid(self) -> tuple[str, str, str]:
        exprs = self.kdef.grid
        if not 1 <= len(exprs) <= 3:
            raise error_at(
                self.source,
                self.kdef.grid_span,
                f"grid takes 1 to 3 expressions; got {len(exprs)}",
            )
        parts = [self.grid_text(e) for e in exprs]
        return tuple(parts + ["1"] * (3 - len(parts)))  # type: ignore[return-value]

    def grid_text(self, node: ast.Expr) -> str:
        """The grid expression in the runtime's grid language, constants folded."""
        rule = (
            "a grid expression may use integers, size symbols, compile-time params, "
            "+ - * // % and cdiv/min/max"
        )
        match node:
            case ast.IntLit(value=v):
                return str(v)
            case ast.Name(id=name):
                if name in self.consts:
                    v = self.consts[name]
                    if isinstance(v, str):
                        raise self.fail(node, _name_not_a_value(name))
                    if not _is_int(v):
                        raise self.fail(node, f"{rule}; {name} is {v!r}")
                    return str(v)
                if any(s.name == name for s in self.symbols):
                    return name
                if name in self.env:
                    raise self.fail(node, f"{rule}; '{name}' is a scalar parameter")
                raise self.fail(node, f"unknown name '{name}'{self.suggest(name)}")
            case ast.Binary(op="+" | "-" | "*" | "//" | "%" as op):
                a, b = self.grid_text(node.left), self.grid_text(node.right)
                if a.lstrip("-").isdigit() and b.lstrip("-").isdigit():
                    return str(self.const_eval.binary(node, int(a), int(b)))
                return f"({a} {op} {b})"
            case ast.Call(func="cdiv" | "min" | "max" as func) if len(node.args) == 2:
                a, b = (self.grid_text(x) for x in node.args)
                if a.lstrip("-").isdigit() and b.lstrip("-").isdigit():
                    x, y = int(a), int(b)
                    if func == "cdiv":
                        if y == 0:
                            raise self.fail(node, "division by zero in the grid")
                        return str(_cdiv(x, y))
                    return str(min(x, y) if func == "min" else max(x, y))
                return f"{func}({a}, {b})"
        raise self.fail(node, f"{rule}; got '{self.text(node)}'")

    # -- names, dtypes

    def visible_names(self) -> Iterator[str]:
        return (n for n, b in self.env.items() if not isinstance(b, Hidden))

    def suggest(self, name: str) -> str:
        return did_you_mean(name, [*self.visible_names(), *_SPECIAL_NAMES])

    def dtype_named(self, name: str, span: ast.Span) -> DType:
        if name in self.consts:
            value = self.consts[name]
            if isinstance(value, str):  # a dtype param: its value for this compile
                return dtypes.dtype(value)
            raise error_at(
                self.source, span, f"'{name}' is a compile-time parameter ({value!r}), not a dtype"
            )
        if not dtypes.is_dtype_name(name):
            names = [d.name for d in dtypes.all_dtypes() if d.bits >= 8]
            raise error_at(self.source, span, f"unknown dtype '{name}'{did_you_mean(name, names)}")
        return dtypes.dtype(name)

    def dtype_arg(self, node: ast.Expr) -> DType:
        if not isinstance(node, ast.Name):
            raise self.fail(node, f"expected a dtype such as f32; got '{self.text(node)}'")
        return self.dtype_named(node.id, node.span)

    def lookup(self, node: ast.Name) -> Binding:
        b = self.env.get(node.id)
        if b is None:
            if node.id in _SPECIAL_NAMES:
                if node.id == "tid":
                    return self.emit1(ir.ThreadIndexOp, ir.TileType(dtypes.i32, ()), None, node)
                raise self.fail(node, "'bid' needs an axis: bid.x, bid.y or bid.z")
            if dtypes.is_dtype_name(node.id):
                raise self.fail(node, _name_not_a_value(node.id))
            raise self.fail(node, f"unknown name '{node.id}'{self.suggest(node.id)}")
        if isinstance(b, Const) and isinstance(b.value, str):
            # Only a dtype argument (cast, zeros, full) or a tensor's type takes one.
            raise self.fail(node, _name_not_a_value(node.id))
        if isinstance(b, Hidden):
            where = "block" if b.construct == "block" else f"'{b.construct}'"
            raise self.fail(
                node, f"'{node.id}' is defined only inside the {where} at line {b.line}"
            )
        return b

    # -- statements

    def lower_block(self, stmts: tuple[ast.Stmt, ...]) -> None:
        for s in stmts:
            match s:
                case ast.Assign():
                    self.lower_assign(s)
                case ast.ExprStmt():
                    self.lower_expr_stmt(s)
                case ast.For():
                    self.lower_for(s)
                case ast.If():
                    self.lower_if(s)
                case ast.Block():
                    self.lower_scoped_block(s)

    def lower_assign(self, s: ast.Assign) -> None:
        target = s.target
        if target in self.readonly:
            raise error_at(
                self.source,
                s.target_span,
                f"cannot assign to '{target}': it is {self.readonly[target]}",
            )
        if target in _SPECIAL_NAMES or target in ("true", "false", "inf", "nan", "None"):
            raise error_at(self.source, s.target_span, f"cannot assign to '{target}'")
        if target in self.loop_vars:
            raise error_at(
                self.source, s.target_span, f"cannot assign to the loop variable '{target}'"
            )
        value = self.lower_expr(s.value, hint=target)
        if isinstance(value, ir.Value) and isinstance(value.type, ir.TensorType):
            raise self.fail(
                s.value,
                f"'{self.text(s.value)}' is a global tensor; it cannot be given another name",
            )
        self.env[target] = value

    def lower_expr_stmt(self, s: ast.ExprStmt) -> None:
        e = s.expr
        if isinstance(e, ast.Call):
            builtin = bi.BUILTINS.get(e.func)
            if builtin is not None and not builtin.has_value:
                self.lower_call(e, None)
                return
        raise self.fail(e, "this expression's value is unused; assign it to a name")

    def scoped(
        self, stmts: tuple[ast.Stmt, ...], env: dict[str, Binding]
    ) -> tuple[list[ir.Op], dict[str, Binding]]:
        """Lower ``stmts`` into a fresh op list, starting from ``env``; restore afterwards."""
        saved = self.env
        self.env = dict(env)
        self.blocks.append([])
        try:
            self.lower_block(stmts)
            return self.blocks[-1], self.env
        finally:
            self.blocks.pop()
            self.env = saved

    def hide_new_names(
        self, before: dict[str, Binding], inner: set[str], construct: str, line: int
    ) -> None:
        for name in inner:
            prior = before.get(name)
            if prior is None or isinstance(prior, Hidden):
                self.env[name] = Hidden(construct, line)

    def lower_scoped_block(self, s: ast.Block) -> None:
        before = dict(self.env)
        ops, env = self.scoped(s.stmts, self.env)
        self.blocks[-1].extend(ops)
        names = _assigned_names(s.stmts)
        for name in names:
            if name in before and not isinstance(before[name], Hidden):
                self.env[name] = env[name]
        self.hide_new_names(before, names, "block", s.span.line)

    def materialize(self, c: Const, t: ir.TileType, node: Any, hint: str | None = None) -> ir.Value:
        value = _convert_scalar(c.value, t.dtype)
        if value is None:
            raise self.fail(node, f"the constant {c.value!r} does not fit {t.dtype}")
        return self.emit1(ir.FullOp, ir.TileType(t.dtype, t.shape), hint, node, value=value)

    def as_value(self, x: Operand, node: Any, hint: str | None = None) -> ir.Value:
        if isinstance(x, Const):
            return self.materialize(x, ir.TileType(_const_dtype(x.value), ()), node, hint)
        return x

    def const_flag(self, args: Mapping[str, Any], name: str) -> bool:
        """A constant boolean keyword argument, False where it is not given."""
        if name not in args:
            return False
        value = self.const_value(args[name], name)
        if not isinstance(value, bool | int) or value not in (0, 1):
            raise self.fail(args[name], f"{name} must be true or false; got {value!r}")
        return bool(value)

    def lower_for(self, s: ast.For) -> None:
        builtin = bi.BUILTINS.get(s.iterator)
        if builtin is None or builtin.rule != "loop":
            raise error_at(
                self.source,
                s.iterator_span,
                f"a for loop runs over range(...) or pipeline(...); got '{s.iterator}'",
            )
        call = ast.Call(s.iterator, s.args, s.keywords, s.span, s.iterator_span)
        args = bi.bind(builtin, call, self.source)
        stages = 1
        if "stages" in args:
            stages = self.const_int(args["stages"], "stages")
        tma, warp_specialize = (self.const_flag(args, name) for name in ("tma", "warp_specialize"))
        bounds = [self.lower_expr(args["start"]), self.lower_expr(args["stop"])]
        bounds.append(self.lower_expr(args["step"]) if "step" in args else Const(1))
        nodes = [args["start"], args["stop"], args.get("step", args["start"])]
        index_type = self.index_dtype(bounds, nodes)
        if isinstance(bounds[2], Const) and bounds[2].value == 0:
            raise self.fail(args["step"], "the step of a loop must not be zero")
        start, stop, step = (
            self.coerce(b, index_type, (), n) for b, n in zip(bounds, nodes, strict=True)
        )
        if s.var in self.env and not isinstance(self.env[s.var], Hidden):
            raise error_at(
                self.source,
                s.var_span,
                f"the loop variable '{s.var}' would hide the value '{s.var}' defined before",
            )
        before = dict(self.env)
        assigned = _assigned_names(s.body.stmts)
        carried = [n for n in sorted(assigned) if n in before and not isinstance(before[n], Hidden)]
        inits = [self.as_value(before[n], s, n) for n in carried]  # type: ignore[arg-type]
        iv = ir.Value(self.namer.fresh(s.var), ir.TileType(index_type, ()))
        args_values = [
            ir.Value(self.namer.fresh(n), v.type) for n, v in zip(carried, inits, strict=True)
        ]
        body_env = dict(self.env)
        body_env[s.var] = iv
        body_env.update(zip(carried, args_values, strict=True))
        saved_loop_vars = self.loop_vars
        self.loop_vars = saved_loop_vars | {s.var}
        try:
            ops, env = self.scoped(s.body.stmts, body_env)
        finally:
            self.loop_vars = saved_loop_vars
        self.blocks.append(ops)
        yields = []
        for name, arg in zip(carried, args_values, strict=True):
            yields.append(self.carry(env[name], arg.tile, name, s, "loop"))
        if yields:
            self.emit(ir.YieldOp, (), None, s, values=tuple(yields))
        self.blocks.pop()
        results = self.emit(
            ir.ForOp,
            tuple(v.type for v in inits),
            None,
            s,
            names=carried,
            start=start,
            stop=stop,
            step=step,
            inits=tuple(inits),
            body=ir.Block((iv, *args_values), tuple(ops)),
            pipeline_stages=stages,
            pipeline_tma=tma,
            pipeline_warp_specialize=warp_specialize,
        )
        self.env.update(zip(carried, results, strict=True))
        self.hide_new_names(before, assigned | {s.var}, "for", s.span.line)

    def carry(self, b: Binding, t: ir.TileType, name: str, node: Any, construct: str) -> ir.Value:
        """The value ``name`` yields at the end of a loop body / branch, of type ``t``."""
        if isinstance(b, Const):
            return self.materialize(b, t, node)
        if isinstance(b, Hidden) or not isinstance(b.type, ir.TileType):
            raise self.fail(node, f"'{name}' has no value at the end of the {construct}")
        if b.type != t:
            where = "before the loop" if construct == "loop" else "in the other branch"
            raise self.fail(
                node,
                f"'{name}' is {t} {where} but {b.type} at the end of the "
                f"{'loop body' if construct == 'loop' else 'branch'}; "
                "a value keeps its type across control flow",
            )
        return b

    def lower_if(self, s: ast.If) -> None:
        cond = self.lower_expr(s.cond)
        before = dict(self.env)
        else_stmts = s.orelse.stmts if s.orelse is not None else ()
        assigned_then = _assigned_names(s.then.stmts)
        assigned_else = _assigned_names(else_stmts)
        assigned = assigned_then | assigned_else
        if isinstance(cond, Const):
            if not isinstance(cond.value, bool):
                raise self.fail(
                    s.cond, f"the condition of an 'if' must be a bool; got {cond.value!r}"
                )
            taken = s.then.stmts if cond.value else else_stmts
            ops, env = self.scoped(taken, self.env)
            self.blocks[-1].extend(ops)
            for name in assigned:
                if name in before and not isinstance(before[name], Hidden):
                    self.env[name] = env[name]
            self.hide_new_names(before, assigned, "if", s.span.line)
            return
        ct = self.tile_type(cond, s.cond)
        if ct.shape:
            raise self.fail(
                s.cond,
                f"the condition of an 'if' must be a scalar; got "
                f"{_shape_str(ct.dtype, ct.shape)} (where() chooses per element)",
            )
        if not ct.dtype.is_bool:
            raise self.fail(s.cond, f"the condition of an 'if' must be a bool; got {ct.dtype}")
        then_ops, then_env = self.scoped(s.then.stmts, self.env)
        else_ops, else_env = self.scoped(else_stmts, self.env)
        yielded = [n for n in sorted(assigned) if n in before and not isinstance(before[n], Hidden)]
        then_vals: list[ir.Value] = []
        else_vals: list[ir.Value] = []
        types: list[ir.TileType] = []
        for name in yielded:
            a, b = then_env[name], else_env[name]
            if isinstance(a, Const) and isinstance(b, Const):
                if a == b:
                    continue  # the same constant either way: no value to merge
                dt = (
                    dtypes.f32
                    if any(isinstance(c.value, float) for c in (a, b))
                    else (_const_dtype(a.value))
                )
                t = ir.TileType(dt, ())
            else:
                ref = a if isinstance(a, ir.Value) else b
                t = self.tile_type(ref, s)
                if t.shape and (isinstance(a, Const) or isinstance(b, Const)):
                    c = a if isinstance(a, Const) else b
                    raise self.fail(
                        s,
                        f"'{name}' is the constant {c.value!r} in one branch but {t} in the "
                        "other; a value keeps its type across control flow",
                    )  # type: ignore[arg-type]
            types.append(t)
            self.blocks.append(then_ops)
            then_vals.append(self.carry(a, t, name, s, "branch"))
            self.blocks[-1] = else_ops
            else_vals.append(self.carry(b, t, name, s, "branch"))
            self.blocks.pop()
        names = [
            n
            for n in yielded
            if not (isinstance(then_env[n], Const) and then_env[n] == else_env[n])
        ]
        for ops, vals in ((then_ops, then_vals), (else_ops, else_vals)):
            self.blocks.append(ops)
            if vals:
                self.emit(ir.YieldOp, (), None, s, values=tuple(vals))
            self.blocks.pop()
        results = self.emit(
            ir.IfOp,
            tuple(types),
            None,
            s,
            names=names,
            cond=cond,
            then=ir.Block((), tuple(then_ops)),
            otherwise=ir.Block((), tuple(else_ops)),
        )
        for name in yielded:
            if name not in names:
                self.env[name] = then_env[name]
        self.env.update(zip(names, results, strict=True))
        self.hide_new_names(before, assigned, "if", s.span.line)

    # -- expressions

    def tile_type(self, v: ir.Value, node: Any) -> ir.TileType:
        if isinstance(v.type, ir.TensorType):
            raise self.fail(
                node,
                f"'{self.text(node)}' is a global tensor; read a window of it with "
                f"load({self.text(node)}[...])",
            )
        return v.type

    def operand(self, node: ast.Expr) -> Operand:
        """A register tile or constant (not a tensor, not a shared tile)."""
        x = self.lower_expr(node)
        if isinstance(x, ir.Value):
            t = self.tile_type(x, node)
            if t.scope is ir.MemScope.SHARED:
                raise self.fail(
                    node, f"'{self.text(node)}' is a shared tile; read it with load(...) first"
                )
        return x

    def lower_expr(self, node: ast.Expr, hint: str | None = None) -> Operand:
        match node:
            case ast.IntLit(value=v) | ast.FloatLit(value=v) | ast.BoolLit(value=v):
                return Const(v)
            case ast.Name():
                b = self.lookup(node)
                return b  # type: ignore[return-value]
            case ast.Attribute(value=ast.Name(id="bid"), attr=attr):
                axes = {"x": 0, "y": 1, "z": 2}
                if attr not in axes:
                    raise self.fail(node, f"bid has axes x, y and z; got '{attr}'")
                return self.emit1(
                    ir.BlockIndexOp, ir.TileType(dtypes.i32, ()), hint, node, axis=axes[attr]
                )
            case ast.Attribute():
                raise self.fail(
                    node,
                    f"unknown attribute '{self.text(node)}' (only bid.x, "
                    "bid.y and bid.z have attributes)",
                )
            case ast.Unary():
                return self.lower_unary(node, hint)
            case ast.Binary():
                return self.lower_binary(node, hint)
            case ast.Call():
                return self.lower_call(node, hint)
            case ast.Subscript():
                return self.lower_tile_subscript(node, hint)
            case ast.NoneLit():
                raise self.fail(node, "None is only allowed in a subscript (t[:, None])")
        raise self.fail(node, f"'{self.text(node)}' is not a value here")

    def dtype_of(self, x: Operand) -> DType:
        return _const_dtype(x.value) if isinstance(x, Const) else x.tile.dtype

    def shape_of(self, x: Operand) -> tuple[int, ...]:
        return () if isinstance(x, Const) else x.tile.shape

    def describe(self, x: Operand) -> str:
        if isinstance(x, Const):
            return f"the constant {x.value!r}"
        return _shape_str(x.tile.dtype, x.tile.shape)

    def common_dtype(self, xs: list[Operand]) -> DType:
        """Promotion with weak constants."""
        values = [x for x in xs if isinstance(x, ir.Value)]
        consts = [x for x in xs if isinstance(x, Const)]
        if not values:
            result = _const_dtype(consts[0].value)
            for c in consts[1:]:
                result = dtypes.promote(result, _const_dtype(c.value))
            return result
        result = values[0].tile.dtype
        for v in values[1:]:
            result = dtypes.promote(result, v.tile.dtype)
        for c in consts:
            if isinstance(c.value, float) and not result.is_float:
                result = dtypes.f32
            elif _is_int(c.value) and result.is_bool:
                result = dtypes.i32
        return result

    def broadcast_shape(self, xs: list[Operand], nodes: list[Any], node: Any) -> tuple[int, ...]:
        shape: tuple[int, ...] = ()
        first: Operand | None = None
        for x in xs:
            s = self.shape_of(x)
            out = _broadcast(shape, s)
            if out is None:
                assert first is not None
                raise self.fail(
                    node, f"cannot broadcast {self.describe(first)} with {self.describe(x)}"
                )
            if s:
                first = first if first is not None and len(self.shape_of(first)) >= len(s) else x
            shape = out
        return shape

    def coerce(
        self, x: Operand, dtype: DType, shape: tuple[int, ...], node: Any, hint: str | None = None
    ) -> ir.Value:
        """``x`` as a ``dtype`` tile of ``shape`` (cast, then expand and broadcast)."""
        if isinstance(x, Const):
            return self.materialize(x, ir.TileType(dtype, shape), node, hint)
        v = x
        if v.tile.dtype is not dtype:
            v = self.emit1(ir.CastOp, ir.TileType(dtype, v.tile.shape), None, node, source=v)
        return self.broadcast_to(v, shape, node, hint)

    def broadcast_to(
        self, v: ir.Value, shape: tuple[int, ...], node: Any, hint: str | None = None
    ) -> ir.Value:
        if v.tile.shape == shape:
            return v
        if v.tile.shape:
            while v.tile.rank < len(shape):
                t = ir.TileType(v.tile.dtype, (1, *v.tile.shape))
                v = self.emit1(ir.ExpandDimsOp, t, None, node, source=v, axis=0)
            if v.tile.shape == shape:
                return v
        return self.emit1(ir.BroadcastOp, ir.TileType(v.tile.dtype, shape), hint, node, source=v)

    def integer_codes_as_i8(self, x: ir.Value, node: Any) -> ir.Value:
        """A sub-byte integer tile (``i1``..``i7``, ``u1``..``u7``) as the ``i8`` values its
        codes stand for, where an op computes with integers (``dot``: W4A4): every such value
        fits ``i8`` exactly, and the ``i8`` product is the one the integer tensor cores run.
        The widening is an ordinary ``cast`` in the IR, so dumps show where codes decode."""
        dt = x.tile.dtype
        if not (is_code_type(dt) and dt.is_int):
            return x
        return self.emit1(ir.CastOp, x.tile.with_dtype(dtypes.i8), None, node, source=x)

    def no_codes(self, x: Operand, node: Any, what: str) -> None:
        """Low-bit tiles hold codes, not numbers: only loads, casts and data movement take
        them (``cast(w, f16)`` decodes)."""
        if isinstance(x, ir.Value) and isinstance(x.type, ir.TileType) and is_code_type(
            x.tile.dtype
        ):
            raise self.fail(
                node,
                f"{what} does not take {self.describe(x)}: a {x.tile.dtype} tile holds packed "
                f"codes; decode it first, e.g. cast(t, f16)",
            )

    def elementwise(
        self,
        fn: str,
        args: list[Operand],
        dtype: DType,
        result: DType,
        node: Any,
        nodes: list[Any],
        hint: str | None,
    ) -> ir.Value:
        for a, n in zip(args, nodes, strict=True):
            self.no_codes(a, n, "arithmetic")
        shape = self.broadcast_shape(args, nodes, node)
        values = tuple(self.coerce(a, dtype, shape, n) for a, n in zip(args, nodes, strict=True))
        return self.emit1(
            ir.ElementwiseOp, ir.TileType(result, shape), hint, node, fn=fn, args=values
        )

    def lower_unary(self, node: ast.Unary, hint: str | None) -> Operand:
        x = self.operand(node.operand)
        if isinstance(x, Const):
            return Const(self.const_eval.unary(node, x.value))
        dt = x.tile.dtype
        if node.op == "+":
            if dt.is_bool:
                raise self.fail(node, f"unary '+' does not take {self.describe(x)}")
            return x
        if node.op == "not" or (node.op == "~" and dt.is_bool):
            if not dt.is_bool:
                raise self.fail(node, f"'not' expects a bool tile; got {self.describe(x)}")
            fn = "not"
        elif node.op == "~":
            if not dt.is_int:
                raise self.fail(node, f"'~' expects an integer tile; got {self.describe(x)}")
            fn = "bitnot"
        else:
            if dt.is_bool:
                raise self.fail(node, f"'-' does not take {self.describe(x)}")
            fn = "neg"
        return self.emit1(ir.ElementwiseOp, x.tile, hint, node, fn=fn, args=(x,))

    def lower_binary(self, node: ast.Binary, hint: str | None) -> Operand:
        a, b = self.operand(node.left), self.operand(node.right)
        op = node.op
        if isinstance(a, Const) and isinstance(b, Const):
            return Const(self.const_eval.binary(node, a.value, b.value))
        nodes = [node.left, node.right]
        dtype = self.common_dtype([a, b])
        operands = f"{self.describe(a)} and {self.describe(b)}"
        if op in ("and", "or"):
            if not (self.dtype_of(a).is_bool and self.dtype_of(b).is_bool):
                raise self.fail(node, f"'{op}' expects bool operands; got {operands}")
            return self.elementwise(op, [a, b], dtypes.boolean, dtypes.boolean, node, nodes, hint)
        if op in _COMPARE:
            return self.elementwise(_COMPARE[op], [a, b], dtype, dtypes.boolean, node, nodes, hint)
        if op in _BITWISE:
            if dtype.is_bool and op in _LOGICAL_OF_BITWISE:
                fn = _LOGICAL_OF_BITWISE[op]
                return self.elementwise(fn, [a, b], dtype, dtype, node, nodes, hint)
            if not dtype.is_int:
                raise self.fail(node, f"'{op}' expects integer operands; got {operands}")
            return self.elementwise(_BITWISE[op], [a, b], dtype, dtype, node, nodes, hint)
        if dtype.is_bool:
            raise self.fail(node, f"'{op}' does not take bool operands; got {operands}")
        if op == "/":
            if not dtype.is_float:
                dtype = dtypes.f32  # `/` is true division: ints divide as f32
            return self.elementwise("div", [a, b], dtype, dtype, node, nodes, hint)
        return self.elementwise(_ARITH[op], [a, b], dtype, dtype, node, nodes, hint)

    def lower_call(self, node: ast.Call, hint: str | None) -> Any:
        builtin = bi.lookup(node, self.source)
        args = bi.bind(builtin, node, self.source)
        return self.rules[builtin.rule](node, args, hint)

    def lower_tile_subscript(self, node: ast.Subscript, hint: str | None) -> Operand:
        base = self.lower_expr(node.value)
        if isinstance(base, ir.Value) and isinstance(base.type, ir.TensorType):
            raise self.fail(
                node,
                f"a window of {self.text(node.value)} can only be read with load(...) "
                "or written with store(...)/atomic_add(...)",
            )
        if isinstance(base, Const):
            raise self.fail(node, f"cannot index the constant '{self.text(node.value)}'")
        t = self.tile_type(base, node.value)
        slices = [i for i in node.items if isinstance(i, ast.FullSlice)]
        for item in node.items:
            if not (
                isinstance(item, ast.FullSlice)
                or (isinstance(item, ast.Index) and isinstance(item.value, ast.NoneLit))
            ):
                raise self.fail(
                    item,
                    "a tile can only be indexed with ':' (keep a dim) and "
                    "None (insert a size-1 dim)",
                )
        if len(slices) != t.rank:
            raise self.fail(
                node,
                f"{self.text(node.value)} has {t.rank} dim{'s' * (t.rank != 1)}; "
                f"the subscript keeps {len(slices)}",
            )
        v = base
        positions = [k for k, item in enumerate(node.items) if not isinstance(item, ast.FullSlice)]
        for k, axis in enumerate(positions):
            shape = list(v.tile.shape)
            shape.insert(axis, 1)
            last = k == len(positions) - 1
            v = self.emit1(
                ir.ExpandDimsOp,
                ir.TileType(t.dtype, tuple(shape), t.scope),
                hint if last else None,
                node,
                source=v,
                axis=axis,
            )
        return v

    # -- compile-time arguments

    def const_value(self, node: ast.Expr, what: str) -> Scalar:
        x = self.lower_expr(node)
        if not isinstance(x, Const):
            raise self.fail(
                node, f"{what} must be a compile-time constant; '{self.text(node)}' is not"
            )
        return x.value

    def const_int(self, node: ast.Expr, what: str, minimum: int = 1) -> int:
        v = self.const_value(node, what)
        if not _is_int(v) or v < minimum:  # type: ignore[operator]
            bound = "positive" if minimum == 1 else f"at least {minimum}"
            shown = self.text(node)
            detail = f"{shown} is {v!r}" if shown != repr(v) else f"got {v!r}"
            raise self.fail(node, f"{what} must be a {bound} integer; {detail}")
        return int(v)

    def shape_arg(self, node: ast.Expr) -> tuple[int, ...]:
        if not isinstance(node, ast.ListExpr):
            raise self.fail(node, f"expected a shape such as [64, 32]; got '{self.text(node)}'")
        return tuple(self.const_int(item, "a tile dim") for item in node.items)

    def register_tile(self, node: ast.Expr, fn: str) -> ir.Value:
        x = self.operand(node)
        if isinstance(x, Const):
            raise self.fail(node, f"{fn} expects a tile; got {self.describe(x)}")
        return x

    # -- builtin rules (dispatched from the table's `rule`)

    def rule_loop_outside_for(self, node: ast.Call, args: dict, hint: str | None) -> Operand:
        raise self.fail(node, f"{node.func}(...) can only be used as 'for i in {node.func}(...)'")

    def window(self, node: ast.Expr, fn: str) -> tuple[ir.Value, ir.SliceSpec]:
        if not isinstance(node, ast.Subscript) or not isinstance(node.value, ast.Name):
            raise self.fail(
                node,
                f"{fn} expects a window of a tensor, such as x[i, j : +64]; "
                f"got '{self.text(node)}'",
            )
        tensor = self.lookup(node.value)
        if not (isinstance(tensor, ir.Value) and isinstance(tensor.type, ir.TensorType)):
            raise self.fail(
                node.value,
                f"{fn} expects a window of a global tensor; "
                f"'{node.value.id}' is not a tensor parameter",
            )
        tt = tensor.type
        name = node.value.id
        if len(node.items) != tt.rank:
            raise self.fail(
                node,
                f"{name} has {tt.rank} dim{'s' * (tt.rank != 1)}; the window has {len(node.items)}",
            )
        starts: list[ir.Value] = []
        sizes: list[int] = []
        squeeze: list[bool] = []
        for d, item in enumerate(node.items):
            match item:
                case ast.Index(value=ast.NoneLit()):
                    raise self.fail(item, "None cannot appear in a window of a tensor")
                case ast.Index(value=value):
                    starts.append(self.index_value(value))
                    sizes.append(1)
                    squeeze.append(True)
                    continue
                case ast.SizedSlice(start=start, size=size):
                    sizes.append(self.const_int(size, "the size of a window slice"))
                    starts.append(self.index_value(start))
                case ast.RangeSlice(start=start):
                    sizes.append(self.range_size(item))
                    starts.append(self.index_value(start))
                case ast.FullSlice():
                    dim = tt.shape[d]
                    if isinstance(dim, str):
                        raise self.fail(
                            item,
                            f"':' needs a static dim, but dim {d} of {name} "
                            f"is the size symbol {dim}; write 'start : +SIZE'",
                        )
                    sizes.append(dim)
                    starts.append(self.as_value(Const(0), item))
            squeeze.append(False)
        spec = ir.SliceSpec(starts=tuple(starts), sizes=tuple(sizes), squeeze=tuple(squeeze))
        return tensor, spec

    def index_value(self, node: ast.Expr) -> ir.Value:
        x = self.operand(node)
        dt = self.dtype_of(x)
        if not dt.is_int or self.shape_of(x):
            raise self.fail(
                node, f"a window start must be an integer scalar; got {self.describe(x)}"
            )
        if isinstance(x, Const) and x.value < 0:  # type: ignore[operator]
            raise self.fail(node, f"a window start must not be negative; got {x.value}")
        return self.as_value(x, node)

    def range_size(self, item: ast.RangeSlice) -> int:
        size: Scalar | None = None
        try:
            a = self.const_eval.evaluate(item.start, self.consts_in_scope(), "")
            b = self.const_eval.evaluate(item.stop, self.consts_in_scope(), "")
            size = b - a  # type: ignore[operator]
        except DSLError:
            # `i*BN : i*BN + BN`: the stop is the start plus a constant.
            stop = item.stop
            if isinstance(stop, ast.Binary) and stop.op == "+":
                for base, offset in ((stop.left, stop.right), (stop.right, stop.left)):
                    if base == item.start:
                        try:
                            size = self.const_eval.evaluate(offset, self.consts_in_scope(), "")
                        except DSLError:
                            size = None
                        break
        if size is None:
            raise self.fail(
                item,
                f"the slice '{self.text(item)}' must have a constant size; write 'start : +SIZE'",
            )
        if not _is_int(size) or size < 1:  # type: ignore[operator]
            raise self.fail(
                item,
                f"the slice '{self.text(item)}' must have a positive integer size; it has {size!r}",
            )
        return int(size)

    def consts_in_scope(self) -> dict[str, Scalar]:
        return {n: b.value for n, b in self.env.items() if isinstance(b, Const)}

    def rule_load(self, node: ast.Call, args: dict[str, ast.Expr], hint: str | None) -> ir.Value:
        src = args["src"]
        if not isinstance(src, ast.Subscript):
            x = self.lower_expr(src)
            if (
                isinstance(x, ir.Value)
                and isinstance(x.type, ir.TileType)
                and (x.tile.scope is ir.MemScope.SHARED)
            ):
                for kw in ("mask", "other"):
                    if kw in args:
                        raise self.fail(args[kw], f"load of a shared tile takes no '{kw}'")
                t = ir.TileType(x.tile.dtype, x.tile.shape)
                return self.emit1(ir.FromSharedOp, t, hint, node, source=x)
            raise self.fail(
                src,
                "load expects a window of a tensor (x[i, j : +64]) or a "
                f"shared tile; got '{self.text(src)}'",
            )
        tensor, spec = self.window(src, "load")
        dtype = tensor.type.dtype
        shape = spec.tile_shape
        mask = self.mask(args, shape)
        other = None
        if "other" in args:
            o = self.operand(args["other"])
            if self.shape_of(o):
                raise self.fail(args["other"], f"'other' must be a scalar; got {self.describe(o)}")
            if is_code_type(dtype) and not isinstance(o, Const):
                raise self.fail(
                    args["other"],
                    f"the 'other' of a load of {dtype} codes must be a compile-time constant "
                    f"(it is encoded when the kernel is compiled); got {self.describe(o)}",
                )
            other = self.coerce(o, dtype, (), args["other"])
        return self.emit1(
            ir.LoadOp,
            ir.TileType(dtype, shape),
            hint,
            node,
            tensor=tensor,
            window=spec,
            mask=mask,
            other=other,
        )

    def mask(self, args: dict[str, ast.Expr], shape: tuple[int, ...]) -> ir.Value | None:
        if "mask" not in args:
            return None
        m = self.operand(args["mask"])
        if not self.dtype_of(m).is_bool:
            raise self.fail(args["mask"], f"a mask must be bool; got {self.describe(m)}")
        if _broadcast(self.shape_of(m), shape) != shape:
            raise self.fail(
                args["mask"],
                f"the mask {self.describe(m)} does not broadcast to "
                f"the window's shape [{', '.join(map(str, shape))}]",
            )
        return self.coerce(m, dtypes.boolean, shape, args["mask"])

    def rule_store(self, node: ast.Call, args: dict[str, ast.Expr], hint: str | None) -> None:
        tensor, spec = self.window(args["dst"], node.func)
        shape = spec.tile_shape
        if is_code_type(tensor.type.dtype):
            raise self.fail(
                args["dst"],
                f"{node.func} to a {tensor.type.dtype} tensor: kernels read low-bit codes but "
                "do not encode them; quantize on the host (tegula.runtime.quant.quantize)",
            )
        value = self.operand(args["value"])
        self.no_codes(value, args["value"], node.func)
        vshape = self.shape_of(value)
        if vshape and vshape != shape:
            raise self.fail(
                args["value"],
                f"{node.func}: the value is {self.describe(value)} but the window "
                f"{self.text(args['dst'])} is [{', '.join(map(str, shape))}]",
            )
        v = self.coerce(value, tensor.type.dtype, shape, args["value"])
        mask = self.mask(args, shape)
        cls = ir.StoreOp if node.func == "store" else ir.AtomicAddOp
        self.writes.add(args["dst"].value.id)  # type: ignore[attr-defined]
        self.emit(cls, (), None, node, tensor=tensor, window=spec, value=v, mask=mask)

    def rule_full(self, node: ast.Call, args: dict[str, ast.Expr], hint: str | None) -> ir.Value:
        dtype = self.dtype_arg(args["dtype"])
        shape = self.shape_arg(args["shape"])
        if is_code_type(dtype):
            raise self.fail(
                args["dtype"], f"{node.func}: {dtype} tiles come only from loads of {dtype} tensors"
            )
        fill = self.operand(args["value"]) if "value" in args else Const(0)
        if isinstance(fill, Const):
            return self.materialize(fill, ir.TileType(dtype, shape), node, hint)
        if fill.tile.shape:
            raise self.fail(
                args["value"], f"full: the value must be a scalar; got {self.describe(fill)}"
            )
        return self.coerce(fill, dtype, shape, node, hint)

    def rule_arange(self, node: ast.Call, args: dict[str, ast.Expr], hint: str | None) -> ir.Value:
        n = self.const_int(args["n"], "the length of arange")
        return self.emit1(ir.ArangeOp, ir.TileType(dtypes.i32, (n,)), hint, node)

    def rule_cast(self, node: ast.Call, args: dict[str, ast.Expr], hint: str | None) -> ir.Value:
        dtype = self.dtype_arg(args["dtype"])
        x = self.operand(args["x"])
        if is_code_type(dtype) and not (isinstance(x, ir.Value) and x.tile.dtype is dtype):
            raise self.fail(
                args["dtype"],
                f"cast to {dtype}: kernels decode low-bit codes (cast(t, f16)) but do not "
                "encode them; quantize on the host (tegula.runtime.quant.quantize)",
            )
        if isinstance(x, Const):
            return self.materialize(x, ir.TileType(dtype, ()), node, hint)
        return self.emit1(ir.CastOp, x.tile.with_dtype(dtype), hint, node, source=x)

    def rule_math(self, node: ast.Call, args: dict[str, ast.Expr], hint: str | None) -> Operand:
        builtin = bi.BUILTINS[node.func]
        assert builtin.fn is not None and builtin.fold is not None
        x = self.operand(args["x"])
        if isinstance(x, Const):
            if isinstance(x.value, bool):
                raise self.fail(node, f"{node.func} does not take a bool")
            try:
                return Const(builtin.fold(x.value))
            except (ValueError, OverflowError):
                raise self.fail(node, f"{node.func}({x.value!r}) is undefined") from None
        dt = x.tile.dtype
        if builtin.rule == "math" and not dt.is_float:
            raise self.fail(node, f"{node.func} expects a float tile; got {self.describe(x)}")
        if dt.is_bool:
            raise self.fail(node, f"{node.func} expects a numeric tile; got {self.describe(x)}")
        return self.emit1(ir.ElementwiseOp, x.tile, hint, node, fn=builtin.fn, args=(x,))

    def rule_activation(
        self, node: ast.Call, args: dict[str, ast.Expr], hint: str | None
    ) -> Operand:
        """An activation, expanded into the core elementwise ops it is defined by
        (:data:`~tegula.compiler.builtins.ACTIVATIONS`); ``x`` is computed once."""
        x = self.operand(args["x"])
        if isinstance(x, Const):
            if isinstance(x.value, bool):
                raise self.fail(node, f"{node.func} does not take a bool")
            _, fold = bi.ACTIVATIONS[node.func]
            return Const(fold(float(x.value)))
        dt = x.tile.dtype
        if not dt.is_float:
            raise self.fail(node, f"{node.func} expects a float tile; got {self.describe(x)}")
        where = args["x"]

        def op(fn: str, *operands: Operand, name: str | None = None) -> ir.Value:
            return self.elementwise(fn, list(operands), dt, dt, node, [where] * len(operands),
                                    name)

        def sigmoid(v: ir.Value, name: str | None) -> ir.Value:
            return op("div", Const(1.0), op("add", Const(1.0), op("exp", op("neg", v))),
                      name=name)

        match node.func:
            case "relu":
                return op("max", x, Const(0.0), name=hint)
            case "sigmoid":
                return sigmoid(x, hint)
            case "silu":
                return op("mul", x, sigmoid(x, None), name=hint)
            case "gelu":
                inner = op("erf", op("mul", x, Const(1.0 / math.sqrt(2.0))))
                return op("mul", op("mul", x, Const(0.5)), op("add", Const(1.0), inner),
                          name=hint)
        raise AssertionError(f"activation {node.func} has no expansion")

    def rule_minmax(self, node: ast.Call, args: dict[str, ast.Expr], hint: str | None) -> Operand:
        if "b" not in args:
            return self.reduce(node, args, ir.ReduceKind(node.func), hint)
        if "axis" in args:
            raise self.fail(
                args["axis"],
                f"{node.func}(a, b) is elementwise and takes no axis; "
                f"use {node.func}(t, axis=k) to reduce",
            )
        a, b = self.operand(args["a"]), self.operand(args["b"])
        if isinstance(a, Const) and isinstance(b, Const):
            return Const(min(a.value, b.value) if node.func == "min" else max(a.value, b.value))
        dtype = self.common_dtype([a, b])
        if dtype.is_bool:
            raise self.fail(node, f"{node.func} does not take bool tiles")
        return self.elementwise(node.func, [a, b], dtype, dtype, node, [args["a"], args["b"]], hint)

    def rule_sum(self, node: ast.Call, args: dict[str, ast.Expr], hint: str | None) -> Operand:
        exact = None
        if "dtype" in args:
            exact = self.dtype_arg(args["dtype"])
            if not (exact.is_float or exact.is_int) or is_code_type(exact):
                raise self.fail(args["dtype"], f"sum accumulates in a float or integer type; "
                                f"got {exact}")
        return self.reduce(node, {"a": args["x"], **args}, ir.ReduceKind.SUM, hint, exact)

    def reduce(
        self, node: ast.Call, args: dict[str, ast.Expr], kind: ir.ReduceKind, hint: str | None,
        exact: DType | None = None,
    ) -> ir.Value:
        x = self.operand(args["a"])
        if isinstance(x, Const) or not x.tile.shape:
            raise self.fail(
                node, f"{node.func} reduces a tile, but its operand is {self.describe(x)}, a scalar"
            )
        if x.tile.dtype.is_bool:
            raise self.fail(node, f"{node.func} expects a numeric tile; got {self.describe(x)}")
        self.no_codes(x, args["a"], node.func)
        rank = x.tile.rank
        if "axis" in args:
            axis = self.const_value(args["axis"], "axis")
            if not _is_int(axis) or not -rank <= axis < rank:  # type: ignore[operator]
                raise self.fail(
                    args["axis"],
                    f"axis {axis!r} is out of range for {self.describe(x)} (rank {rank})",
                )
            axes = [int(axis) % rank]  # type: ignore[operator]
        else:
            axes = list(range(rank - 1, -1, -1))
        v = x
        if exact is not None and exact is not x.tile.dtype:
            v = self.emit1(ir.CastOp, x.tile.with_dtype(exact), None, node, source=x)
        for k, axis in enumerate(axes):
            shape = v.tile.shape[:axis] + v.tile.shape[axis + 1 :]
            last = k == len(axes) - 1
            v = self.emit1(
                ir.ReduceOp,
                ir.TileType(v.tile.dtype, shape),
                hint if last else None,
                node,
                source=v,
                axis=axis,
                kind=kind,
                exact_type=exact is not None,
            )
        return v

    def rule_where(self, node: ast.Call, args: dict[str, ast.Expr], hint: str | None) -> ir.Value:
        c, a, b = (self.operand(args[k]) for k in ("cond", "a", "b"))
        if not self.dtype_of(c).is_bool:
            raise self.fail(args["cond"], f"where expects a bool condition; got {self.describe(c)}")
        nodes = [args["cond"], args["a"], args["b"]]
        shape = self.broadcast_shape([c, a, b], nodes, node)
        dtype = self.common_dtype([a, b])
        cv = self.coerce(c, dtypes.boolean, shape, args["cond"])
        av = self.coerce(a, dtype, shape, args["a"])
        bv = self.coerce(b, dtype, shape, args["b"])
        return self.emit1(
            ir.ElementwiseOp, ir.TileType(dtype, shape), hint, node, fn="where", args=(cv, av, bv)
        )

    def rule_dot(self, node: ast.Call, args: dict[str, ast.Expr], hint: str | None) -> ir.Value:
        a = self.register_tile(args["a"], "dot")
        b = self.register_tile(args["b"], "dot")
        if a.tile.rank != 2 or b.tile.rank != 2:
            raise self.fail(
                node, f"dot expects 2-D tiles; got {self.describe(a)} and {self.describe(b)}"
            )
        a = self.integer_codes_as_i8(a, args["a"])
        b = self.integer_codes_as_i8(b, args["b"])
        self.no_codes(a, args["a"], "dot")
        self.no_codes(b, args["b"], "dot")
        (m, k), (k2, n) = a.tile.shape, b.tile.shape
        if k != k2:
            raise self.fail(
                node, f"dot: the inner dims differ: {self.describe(a)} @ {self.describe(b)}"
            )
        if a.tile.dtype is not b.tile.dtype:
            raise self.fail(
                node,
                f"dot expects operands of one dtype; got {self.describe(a)} "
                f"and {self.describe(b)} (cast one)",
            )
        if "acc" in args:
            acc = self.register_tile(args["acc"], "dot")
            if acc.tile.shape != (m, n):
                raise self.fail(
                    args["acc"],
                    f"dot: the accumulator is {self.describe(acc)} "
                    f"but {self.describe(a)} @ {self.describe(b)} is "
                    f"{_shape_str(acc.tile.dtype, (m, n))}",
                )
        else:
            acc_dtype = dtypes.f32 if a.tile.dtype.is_float else dtypes.i32
            acc = self.materialize(Const(0), ir.TileType(acc_dtype, (m, n)), node)
        return self.emit1(
            ir.DotOp, ir.TileType(acc.tile.dtype, (m, n)), hint, node, a=a, b=b, acc=acc
        )

    def rule_transpose(
        self, node: ast.Call, args: dict[str, ast.Expr], hint: str | None
    ) -> ir.Value:
        x = self.lower_expr(args["x"])
        if isinstance(x, Const) or x.tile.rank != 2:  # type: ignore[union-attr]
            raise self.fail(node, f"transpose expects a 2-D tile; got {self.describe(x)}")  # type: ignore[arg-type]
        t = x.tile  # type: ignore[union-attr]
        layout = _transposed_layout(t.layout) if t.scope is ir.MemScope.SHARED else None
        rt = ir.TileType(t.dtype, (t.shape[1], t.shape[0]), t.scope, layout)
        return self.emit1(ir.TransposeOp, rt, hint, node, source=x, perm=(1, 0))

    def rule_shared(self, node: ast.Call, args: dict[str, ast.Expr], hint: str | None) -> ir.Value:
        x = self.register_tile(args["x"], "shared")
        t = x.tile
        if not t.shape:
            raise self.fail(node, "shared expects a tile; got a scalar")
        if "swizzle" in args and "pad" in args:
            raise self.fail(node, "shared takes swizzle= or pad=, not both")
        swizzle = None
        pad = 0
        if "swizzle" in args:
            sw = args["swizzle"]
            if not (isinstance(sw, ast.TupleExpr) and len(sw.items) == 3):
                raise self.fail(sw, f"swizzle expects (B, M, S); got '{self.text(sw)}'")
            swizzle = tuple(self.const_int(i, "a swizzle parameter", 0) for i in sw.items)
        if "pad" in args:
            pad = self.const_int(args["pad"], "pad", 0)
        layout = self.shared_layout(t.shape, swizzle, pad, args.get("swizzle", node))
        rt = ir.TileType(t.dtype, t.shape, ir.MemScope.SHARED, layout)
        return self.emit1(ir.ToSharedOp, rt, hint, node, source=x)

    def shared_layout(
        self, shape: tuple[int, ...], swizzle: tuple[int, ...] | None, pad: int, node: Any
    ) -> Any:
        """Row-major element index → shared offset: rows of ``shape[-1] + pad`` elements,
        optionally swizzled."""
        from tegula.ir.inttuple import LayoutError
        from tegula.ir.layout import Layout
        from tegula.ir.swizzle import Swizzle, SwizzledLayout

        strides = [1] * len(shape)
        pitch = shape[-1] + pad
        for d in range(len(shape) - 2, -1, -1):
            strides[d] = pitch if d == len(shape) - 2 else strides[d + 1] * shape[d + 1]
        # A row-major index is colexicographic over the reversed shape.
        base = Layout(tuple(reversed(shape)), tuple(reversed(strides)))
        if swizzle is None:
            return base
        try:
            layout = SwizzledLayout(Swizzle(*swizzle), base)
        except LayoutError as exc:
            raise self.fail(node, f"bad swizzle: {exc}") from None
        numel = math.prod(shape)
        if layout.cosize > numel:
            raise self.fail(
                node,
                f"swizzle {layout.swizzle} moves elements past the end of a {numel}-element tile",
            )
        return layout

    def rule_convert(self, node: ast.Call, args: dict[str, ast.Expr], hint: str | None) -> ir.Value:
        x = self.register_tile(args["x"], "convert")
        layout = self.layout_expr(args["layout"])
        if tuple(layout.tile_shape) != x.tile.shape:
            raise self.fail(
                args["layout"],
                f"the layout {layout} covers a "
                f"[{', '.join(map(str, layout.tile_shape))}] tile, but the tile is "
                f"{self.describe(x)}",
            )
        threads = 32 * self.num_warps
        if layout.num_threads != threads:
            raise self.fail(
                args["layout"],
                f"the layout {layout} spreads over "
                f"{layout.num_threads} threads, but the kernel has "
                f"{self.num_warps} warps ({threads} threads)",
            )
        return self.emit1(
            ir.ConvertLayoutOp, x.tile.with_layout(layout), hint, node, source=x, pinned=True
        )

    def layout_expr(self, node: ast.Expr) -> Any:
        from tegula.ir import tv_layout
        from tegula.ir.inttuple import LayoutError

        makers = {"spatial": tv_layout.spatial, "local": tv_layout.local}
        if isinstance(node, ast.Binary) and node.op == "*":
            return self.layout_expr(node.left) * self.layout_expr(node.right)
        if isinstance(node, ast.Call) and node.func in makers and not node.keywords:
            dims = [self.const_int(a, f"a {node.func} extent") for a in node.args]
            try:
                return makers[node.func](*dims)
            except LayoutError as exc:
                raise self.fail(node, str(exc)) from None
        raise self.fail(
            node, f"expected a layout such as spatial(4, 8) * local(2, 2); got '{self.text(node)}'"
        )

    def rule_cdiv(self, node: ast.Call, args: dict[str, ast.Expr], hint: str | None) -> Operand:
        a, b = self.operand(args["a"]), self.operand(args["b"])
        for x, n in ((a, args["a"]), (b, args["b"])):
            if not self.dtype_of(x).is_int:
                raise self.fail(n, f"cdiv expects integers; got {self.describe(x)}")
        if isinstance(a, Const) and isinstance(b, Const):
            if b.value == 0:
                raise self.fail(node, "division by zero in a constant expression")
            return Const(_cdiv(int(a.value), int(b.value)))
        dtype = self.common_dtype([a, b])
        nodes = [args["a"], args["b"]]
        one = Const(1)
        bm1 = self.elementwise("sub", [b, one], dtype, dtype, node, [args["b"], node], None)
        num = self.elementwise("add", [a, bm1], dtype, dtype, node, nodes, None)
        return self.elementwise("floordiv", [num, b], dtype, dtype, node, nodes, hint)

    def rule_constexpr(self, node: ast.Call, args: dict[str, ast.Expr], hint: str | None) -> Const:
        """``pow2ceil``/``pow2floor``: compile-time only (a tile has no single value)."""
        n = self.const_value(args["n"], f"the argument of {node.func}")
        try:
            return Const(cx.fold_call(node.func, (n,)))
        except ConstEvalError as exc:
            raise self.fail(node, str(exc)) from None

    def index_dtype(self, bounds: list[Operand], nodes: list[ast.Expr]) -> DType:
        for x, n in zip(bounds, nodes, strict=True):
            if not self.dtype_of(x).is_int or self.shape_of(x):
                raise self.fail(n, f"loop bounds must be integer scalars; got {self.describe(x)}")
        return self.common_dtype(bounds)


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    out: list[int] = []
    for k in range(1, max(len(a), len(b)) + 1):
        x = a[-k] if k <= len(a) else 1
        y = b[-k] if k <= len(b) else 1
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y) if 1 in (x, y) else x)
    return tuple(reversed(out))


def _convert_scalar(value: Scalar, dtype: DType) -> Scalar | None:
    """``value`` as an element of ``dtype``; None when it has no exact equal there."""
    if dtype.is_bool:
        return value if isinstance(value, bool) else None
    if dtype.is_float:
        return float(value)
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value)


def _transposed_layout(layout: Any) -> Any:
    """A 2-D shared layout for the transposed tile: swap its two modes."""
    if layout is None:
        return None
    from tegula.ir.layout import Layout, make_layout
    from tegula.ir.swizzle import SwizzledLayout

    if isinstance(layout, SwizzledLayout):
        return SwizzledLayout(layout.swizzle, _transposed_layout(layout.layout))
    if isinstance(layout, Layout) and layout.rank == 2:
        return make_layout(layout[1], layout[0])
    return None


def build_tile_kernel(
    program: ast.Program,
    kernel_name: str,
    constants: Mapping[str, Scalar] | None = None,
    symbols: Mapping[str, int] | None = None,
    target: Mapping[str, Scalar] | None = None,
) -> ir.TileKernel:
    """Type-check kernel ``kernel_name`` of ``program`` and build its Tile IR.

    ``constants`` override compile-time params' defaults (by name). ``symbols`` gives size
    symbols' values for defaults that depend on them (``params BN = pow2ceil(N)``); such a
    default without its symbol's value is a :class:`DSLError` naming the symbol. The Tile IR
    itself keeps every size symbol a run-time value: ``symbols`` only choose constants.
    """
    kernel = program.kernel(kernel_name)
    if kernel is None:
        names = [k.name for k in program.kernels]
        listed = one_of(f"'{n}'" for n in names) if names else "none"
        raise DSLError(
            f"no kernel named '{kernel_name}' in {program.source.filename}"
            f"{name_hint(kernel_name, names, 'kernels', listed)}",
            file=program.source.filename,
        )
    return _KernelBuilder(kernel, dict(constants or {}), symbols, target).build()
