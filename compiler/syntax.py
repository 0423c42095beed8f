"""The syntax tree of the kernel language: immutable nodes, each with its source span.

Spans never take part in equality (``compare=False``), so two nodes are equal when they are
the same program text up to layout: the front end uses that to see that ``i*BN : i*BN + BN``
has a constant size.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SourceText:
    """A source file: its name and text, for diagnostics."""

    filename: str
    text: str

    def line(self, number: int) -> str:
        """Line ``number`` (1-based) without its newline; ``""`` past the end."""
        lines = self.text.splitlines()
        return lines[number - 1] if 1 <= number <= len(lines) else ""

    def snippet(self, span: Span) -> str:
        """The text ``span`` covers, on its first line."""
        text = self.line(span.line)
        end = span.end_column if span.end_line == span.line else len(text) + 1
        return text[span.column - 1 : end - 1]


@dataclass(frozen=True)
class Span:
    """1-based start line/column; end column is one past the last character."""

    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


NO_SPAN = Span(0, 0, 0, 0)  # nodes built by hand (tests, desugaring) may leave it out


# ----------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Name:
    id: str
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class IntLit:
    value: int
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class FloatLit:
    value: float
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class BoolLit:
    value: bool
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class NoneLit:
    """``None`` in a subscript of a register tile: insert a size-1 dim."""

    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class Attribute:
    """``value.attr``, as in ``bid.x``."""

    value: Expr
    attr: str
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class Unary:
    """``op operand`` with ``op`` one of ``- + ~ not``."""

    op: str
    operand: Expr
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class Binary:
    """``left op right``; ``op`` is the operator as written (``+``, ``//``, ``<=``, ``and``…)."""

    op: str
    left: Expr
    right: Expr
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class Keyword:
    name: str
    value: Expr
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[Expr, ...]
    keywords: tuple[Keyword, ...]
    span: Span = field(default=NO_SPAN, compare=False, repr=False)
    func_span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class Index:
    """An integer index (drops the dim) — or ``None`` (inserts one) on a register tile."""

    value: Expr
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class SizedSlice:
    """``start : +size``."""

    start: Expr
    size: Expr
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class RangeSlice:
    """``start : stop``."""

    start: Expr
    stop: Expr
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class FullSlice:
    """``:``."""

    span: Span = field(default=NO_SPAN, compare=False, repr=False)


SubscriptItem = Index | SizedSlice | RangeSlice | FullSlice


@dataclass(frozen=True)
class Subscript:
    value: Expr
    items: tuple[SubscriptItem, ...]
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class TupleExpr:
    items: tuple[Expr, ...]
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class ListExpr:
    items: tuple[Expr, ...]
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


Expr = (
    Name
    | IntLit
    | FloatLit
    | BoolLit
    | NoneLit
    | Attribute
    | Unary
    | Binary
    | Call
    | Subscript
    | TupleExpr
    | ListExpr
)


# ----------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class Assign:
    """``target = value`` (``x += v`` is parsed as ``x = x + v``)."""

    target: str
    value: Expr
    span: Span = field(default=NO_SPAN, compare=False, repr=False)
    target_span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class ExprStmt:
    expr: Expr
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class Block:
    stmts: tuple[Stmt, ...]
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class For:
    """``for var in iterator(args, keywords) body``; ``iterator`` is ``range`` or ``pipeline``."""

    var: str
    iterator: str
    args: tuple[Expr, ...]
    keywords: tuple[Keyword, ...]
    body: Block
    span: Span = field(default=NO_SPAN, compare=False, repr=False)
    var_span: Span = field(default=NO_SPAN, compare=False, repr=False)
    iterator_span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class If:
    """``if cond then else orelse``; ``elif`` chains nest in ``orelse``."""

    cond: Expr
    then: Block
    orelse: Block | None
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


Stmt = Assign | ExprStmt | For | If | Block


# ----------------------------------------------------------------------------- kernels


@dataclass(frozen=True)
class Dim:
    """A tensor dim or stride as written: an int or a name (size symbol or compile-time
    param)."""

    value: int | str
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class ParamDecl:
    """A kernel parameter: a tensor (``shape`` set) or a scalar (``shape`` None)."""

    name: str
    dtype: str
    shape: tuple[Dim, ...] | None
    strides: tuple[Dim, ...] | None
    span: Span = field(default=NO_SPAN, compare=False, repr=False)
    dtype_span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class ConstParamDecl:
    """A compile-time parameter: a default, candidates for the tuner, or both."""

    name: str
    default: Expr | None
    candidates: tuple[Expr, ...]
    span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class KernelDef:
    name: str
    params: tuple[ParamDecl, ...]
    const_params: tuple[ConstParamDecl, ...]
    grid: tuple[Expr, ...]
    warps: Expr | None
    body: Block
    source: SourceText = field(default=SourceText("<string>", ""), compare=False, repr=False)
    span: Span = field(default=NO_SPAN, compare=False, repr=False)
    grid_span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class Program:
    kernels: tuple[KernelDef, ...]
    source: SourceText = field(default=SourceText("<string>", ""), compare=False, repr=False)

    def kernel(self, name: str) -> KernelDef | None:
        return next((k for k in self.kernels if k.name == name), None)
