"""Source text → :mod:`syntax` tree, with lark (LALR(1)); every failure is a DSLError."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lark
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError
from lark.lexer import PatternStr

from . import syntax as ast
from .diagnostics import DSLError, error_at, one_of
from .syntax import SourceText, Span

__all__ = ["kernel_names", "parse"]

_GRAMMAR = Path(__file__).with_name("grammar.lark")


# ----------------------------------------------------------------------------- newlines


class _Newlines:
    """Post-lexer: keep a newline only where it ends a statement.

    A newline counts inside a ``{ }`` block (not inside parentheses or brackets there), and
    not right after ``{``, before ``}``, before ``else``/``elif``, after another newline, or
    while a ``for``/``if``/``elif``/``else`` header is still waiting for its ``{``.
    """

    always_accept = ("_NL",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        brackets: list[str] = []
        header_open = False
        pending: Token | None = None
        previous = ""
        for tok in stream:
            kind = tok.type
            if kind == "_NL":
                if brackets and brackets[-1] == "{" and not header_open and previous != "{":
                    pending = pending or tok
                continue
            if pending is not None:
                if kind not in ("RBRACE", "ELSE", "ELIF"):
                    yield pending
                pending = None
            if kind in ("LPAR", "LSQB", "LBRACE"):
                brackets.append("{" if kind == "LBRACE" else "(")
                header_open = header_open and kind != "LBRACE"
            elif kind in ("RPAR", "RSQB", "RBRACE") and brackets:
                brackets.pop()
            elif kind in ("FOR", "IF", "ELIF", "ELSE"):
                header_open = True
            previous = "{" if kind == "LBRACE" else kind
            yield tok


def _build_lark(grammar_text: str) -> Lark:
    return Lark(
        grammar_text,
        parser="lalr",
        lexer="basic",
        postlex=_Newlines(),
        propagate_positions=True,
        maybe_placeholders=False,
    )


@functools.cache
def _lark() -> Lark:
    """The parser: from the shipped LALR tables when they match the grammar (fast), else
    built from the grammar."""
    from .parse_tables import build_or_load

    text = _GRAMMAR.read_text()
    return build_or_load(text, _Newlines(), lambda: _build_lark(text))


# ----------------------------------------------------------------------------- tree → AST


def _tok_span(tok: Token) -> Span:
    return Span(tok.line, tok.column, tok.end_line, tok.end_column)


def _meta_span(meta: Any) -> Span:
    if getattr(meta, "empty", True):
        return Span(0, 0, 0, 0)
    return Span(meta.line, meta.column, meta.end_line, meta.end_column)


class _SyntaxFailure(Exception):
    """Raised inside the transformer; carries a span and message out of lark's VisitError."""

    def __init__(self, span: Span, message: str) -> None:
        super().__init__(message)
        self.span = span
        self.message = message


@v_args(meta=True)
class _ToAST(Transformer):
    def __init__(self, source: SourceText) -> None:
        super().__init__()
        self.source = source

    # -- kernel header

    def start(self, meta: Any, kernels: list[ast.KernelDef]) -> ast.Program:
        return ast.Program(tuple(kernels), self.source)

    def kernel(self, meta: Any, children: list[Any]) -> ast.KernelDef:
        name = children[0]
        params = tuple(c for c in children if isinstance(c, ast.ParamDecl))
        consts: tuple[ast.ConstParamDecl, ...] = ()
        grid: tuple[ast.Expr, ...] = ()
        grid_span = _tok_span(name)
        warps = None
        for c in children:
            if isinstance(c, tuple) and c and c[0] == "params":
                consts = c[1]
            elif isinstance(c, tuple) and c and c[0] == "grid":
                grid, grid_span = c[1], c[2]
            elif isinstance(c, tuple) and c and c[0] == "warps":
                warps = c[1]
        return ast.KernelDef(
            str(name),
            params,
            consts,
            grid,
            warps,
            children[-1],
            self.source,
            _meta_span(meta),
            grid_span,
        )

    def param(self, meta: Any, children: list[Any]) -> ast.ParamDecl:
        name, dtype = children[0], children[1]
        shape, strides = children[2] if len(children) > 2 else (None, None)
        return ast.ParamDecl(
            str(name), str(dtype), shape, strides, _meta_span(meta), _tok_span(dtype)
        )

    def shape(self, meta: Any, children: list[Any]) -> tuple[Any, Any]:
        strides = None
        if children and isinstance(children[-1], tuple) and children[-1][0] == "strides":
            strides = children.pop()[1]
        return tuple(children), strides

    def strides(self, meta: Any, dims: list[ast.Dim]) -> tuple[str, tuple[ast.Dim, ...]]:
        return "strides", tuple(dims)

    def dim(self, meta: Any, children: list[Token]) -> ast.Dim:
        tok = children[0]
        value: int | str = int(tok) if tok.type == "INT" else str(tok)
        return ast.Dim(value, _tok_span(tok))

    def const_params(self, meta: Any, decls: list[ast.ConstParamDecl]) -> tuple[Any, ...]:
        return "params", tuple(decls)

    def const_default(self, meta: Any, children: list[Any]) -> ast.ConstParamDecl:
        return ast.ConstParamDecl(str(children[0]), children[1], (), _meta_span(meta))

    def const_choices(self, meta: Any, children: list[Any]) -> ast.ConstParamDecl:
        return ast.ConstParamDecl(str(children[0]), None, tuple(children[1:]), _meta_span(meta))

    def const_default_choices(self, meta: Any, children: list[Any]) -> ast.ConstParamDecl:
        return ast.ConstParamDecl(
            str(children[0]), children[1], tuple(children[2:]), _meta_span(meta)
        )

    def grid_clause(self, meta: Any, exprs: list[ast.Expr]) -> tuple[Any, ...]:
        return "grid", tuple(exprs), _meta_span(meta)

    def warps_clause(self, meta: Any, children: list[ast.Expr]) -> tuple[Any, ...]:
        return "warps", children[0]

    # -- statements

    def block(self, meta: Any, stmts: list[ast.Stmt]) -> ast.Block:
        return ast.Block(tuple(stmts), _meta_span(meta))

    def assign(self, meta: Any, children: list[Any]) -> ast.Assign:
        target, value = children
        return ast.Assign(str(target), value, _meta_span(meta), _tok_span(target))

    def aug_assign(self, meta: Any, children: list[Any]) -> ast.Assign:
        target, op, value = children
        span = _meta_span(meta)
        current = ast.Name(str(target), _tok_span(target))
        combined = ast.Binary(str(op)[:-1], current, value, span)
        return ast.Assign(str(target), combined, span, _tok_span(target))

    def expr_stmt(self, meta: Any, children: list[ast.Expr]) -> ast.ExprStmt:
        return ast.ExprStmt(children[0], _meta_span(meta))

    def for_stmt(self, meta: Any, children: list[Any]) -> ast.For:
        var, iterator, *rest = children
        body = rest.pop()
        args, keywords = rest[0] if rest else ((), ())
        return ast.For(
            str(var),
            str(iterator),
            args,
            keywords,
            body,
            _meta_span(meta),
            _tok_span(var),
            _tok_span(iterator),
        )

    def if_stmt(self, meta: Any, children: list[Any]) -> ast.If:
        cond, then, *clauses = children
        orelse: ast.Block | None = None
        # Fold `elif`s from the last one up, each nesting the rest in its `else`.
        for clause in reversed(clauses):
            if isinstance(clause, ast.Block):
                orelse = clause
            else:
                c_cond, c_then, c_span = clause
                nested = ast.If(c_cond, c_then, orelse, c_span)
                orelse = ast.Block((nested,), c_span)
        return ast.If(cond, then, orelse, _meta_span(meta))

    def elif_clause(self, meta: Any, children: list[Any]) -> tuple[Any, ...]:
        return children[0], children[1], _meta_span(meta)

    def else_clause(self, meta: Any, children: list[ast.Block]) -> ast.Block:
        return children[0]

    # -- expressions

    def binary(self, meta: Any, children: list[Any]) -> ast.Binary:
        left, op, right = children
        return ast.Binary(str(op), left, right, _meta_span(meta))

    def unary(self, meta: Any, children: list[Any]) -> ast.Unary:
        op, operand = children
        return ast.Unary(str(op), operand, _meta_span(meta))

    def call(self, meta: Any, children: list[Any]) -> ast.Call:
        func = children[0]
        args, keywords = children[1] if len(children) > 1 else ((), ())
        return ast.Call(str(func), args, keywords, _meta_span(meta), _tok_span(func))

    def arguments(self, meta: Any, items: list[Any]) -> tuple[Any, ...]:
        args: list[ast.Expr] = []
        keywords: list[ast.Keyword] = []
        for item in items:
            if isinstance(item, ast.Keyword):
                if any(k.name == item.name for k in keywords):
                    raise _SyntaxFailure(item.span, f"keyword '{item.name}' given twice")
                keywords.append(item)
            elif keywords:
                raise _SyntaxFailure(
                    _span_of(item), "a positional argument cannot follow a keyword argument"
                )
            else:
                args.append(item)
        return tuple(args), tuple(keywords)

    def keyword(self, meta: Any, children: list[Any]) -> ast.Keyword:
        name, value = children
        return ast.Keyword(str(name), value, _meta_span(meta))

    def subscript(self, meta: Any, children: list[Any]) -> ast.Subscript:
        return ast.Subscript(children[0], tuple(children[1:]), _meta_span(meta))

    def attribute(self, meta: Any, children: list[Any]) -> ast.Attribute:
        return ast.Attribute(children[0], str(children[1]), _meta_span(meta))

    def index(self, meta: Any, children: list[Any]) -> ast.Index:
        return ast.Index(children[0], _meta_span(meta))

    def sized_slice(self, meta: Any, children: list[Any]) -> ast.SizedSlice:
        return ast.SizedSlice(children[0], children[2], _meta_span(meta))

    def range_slice(self, meta: Any, children: list[Any]) -> ast.RangeSlice:
        return ast.RangeSlice(children[0], children[1], _meta_span(meta))

    def full_slice(self, meta: Any, children: list[Any]) -> ast.FullSlice:
        return ast.FullSlice(_meta_span(meta))

    def name(self, meta: Any, children: list[Token]) -> ast.Expr:
        tok = children[0]
        span = _tok_span(tok)
        if str(tok) == "None":
            return ast.NoneLit(span)
        if str(tok) in ("true", "false"):
            return ast.BoolLit(str(tok) == "true", span)
        if str(tok) in ("inf", "nan"):
            return ast.FloatLit(float(str(tok)), span)
        return ast.Name(str(tok), span)

    def int_lit(self, meta: Any, children: list[Token]) -> ast.IntLit:
        return ast.IntLit(int(children[0]), _tok_span(children[0]))

    def float_lit(self, meta: Any, children: list[Token]) -> ast.FloatLit:
        return ast.FloatLit(float(children[0]), _tok_span(children[0]))

    def tuple_expr(self, meta: Any, items: list[ast.Expr]) -> ast.TupleExpr:
        return ast.TupleExpr(tuple(items), _meta_span(meta))

    def list_expr(self, meta: Any, items: list[ast.Expr]) -> ast.ListExpr:
        return ast.ListExpr(tuple(items), _meta_span(meta))


def _span_of(node: Any) -> Span:
    return getattr(node, "span", Span(0, 0, 0, 0))


# ----------------------------------------------------------------------------- errors

# What a terminal is called in a message. Terminals that are plain strings are quoted.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "DTYPE": "a dtype such as f32",
    "INT": "an integer",
    "FLOAT": "a number",
    "_NL": "a line break",
    "$END": "the end of the file",
    "AUG_OP": "'+='",
    "SIZED": "':+'",
}
_EXPRESSION_START = {"NAME", "INT", "FLOAT", "LPAR", "LSQB", "MINUS", "PLUS", "TILDE", "NOT"}
# Tokens that continue a complete expression; when one is expected, the expression could
# simply have gone on, which is rarely what a mistake means.
_CONTINUATIONS = frozenset(
    {"OR", "AND", "EQ", "NE", "LE", "GE", "LT", "GT", "BAR", "CARET", "AMP", "LSHIFT", "RSHIFT"}
    | {"PLUS", "MINUS", "STAR", "SLASH", "DSLASH", "PERCENT", "POW", "LPAR", "LSQB", "DOT"}
    | {"SIZED", "AUG_OP"}
)
_ORDER = {"RPAR": 0, "RSQB": 1, "RBRACE": 2, "COMMA": 3}


def _describe_expected(expected: set[str]) -> tuple[str, ...]:
    names = set(expected)
    if names - _CONTINUATIONS and "NAME" not in names:
        names -= _CONTINUATIONS
    words: list[str] = []
    if {"NAME", "INT", "FLOAT"} <= names:
        names -= _EXPRESSION_START
        words.append("an expression")
    for name in sorted(names, key=lambda n: (_ORDER.get(n, 9), n)):
        words.append(_terminal_word(name))
    return tuple(dict.fromkeys(words))


def _terminal_word(name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    try:
        pattern = _lark().get_terminal(name).pattern
    except KeyError:
        return name.lower()
    if isinstance(pattern, PatternStr):
        return f"'{pattern.value}'"
    return name.lower()


def _acceptable(exc: UnexpectedToken) -> set[str]:
    """The terminals the parser would take here (exact, unlike LALR's merged lookaheads)."""
    parser = exc.interactive_parser
    if parser is None:
        return set(exc.expected)
    accepted = set(parser.accepts())
    stack = parser.parser_state.value_stack
    in_header = not any(isinstance(v, Token) and v.type == "LBRACE" for v in stack)
    if accepted == {"NAME"} and in_header and stack and getattr(stack[-1], "type", "") == "COLON":
        return {"DTYPE"}  # `name: ` in a kernel header: the parameter's type comes next
    return accepted or set(exc.expected)


def _found_word(tok: Token) -> str:
    if tok.type == "$END":
        return "the end of the file"
    if tok.type == "_NL":
        return "the end of the line"
    return f"'{tok}'"


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+(\.[0-9]*)?|\S")


def _syntax_error(source: SourceText, exc: UnexpectedInput) -> DSLError:
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        expected = _describe_expected(_acceptable(exc))
        if tok.type == "$END":
            lines = source.text.rstrip().splitlines() or [""]
            line = len(lines)
            span = Span(line, len(lines[-1]) + 1, line, len(lines[-1]) + 2)
        elif tok.type == "_NL":
            span = Span(tok.line, tok.column, tok.line, tok.column + 1)
        else:
            span = _tok_span(tok)
        message = f"expected {one_of(expected)} but found {_found_word(tok)}"
        return error_at(source, span, message, expected)
    if isinstance(exc, UnexpectedCharacters):
        line_text = source.line(exc.line)
        match = _WORD.match(line_text, exc.column - 1)
        word = match.group(0) if match else exc.char
        span = Span(exc.line, exc.column, exc.line, exc.column + len(word))
        allowed = set(exc.allowed or ())
        if not (word[0].isalnum() or word[0] == "_" or _is_token(word)):
            return error_at(source, span, f"unexpected character '{exc.char}'")
        expected = _describe_expected(allowed)
        message = f"expected {one_of(expected)} but found '{word}'"
        return error_at(source, span, message, expected)
    return error_at(source, None, f"syntax error: {exc}")


def _is_token(word: str) -> bool:
    return any(
        isinstance(t.pattern, PatternStr) and t.pattern.value.startswith(word)
        for t in _lark().terminals
    )


# ----------------------------------------------------------------------------- entry points


def parse(source: str, filename: str = "<string>") -> ast.Program:
    """Parse DSL source holding any number of kernels."""
    text = SourceText(filename, source)
    try:
        tree = _lark().parse(source)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    try:
        return _ToAST(text).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, _SyntaxFailure):
            raise error_at(text, exc.orig_exc.span, exc.orig_exc.message) from None
        raise
    except lark.exceptions.LarkError as exc:  # pragma: no cover - grammar bug
        raise error_at(text, None, f"syntax error: {exc}") from None


def kernel_names(program: ast.Program) -> tuple[str, ...]:
    """The names of the kernels ``program`` defines, in order."""
    return tuple(k.name for k in program.kernels)
