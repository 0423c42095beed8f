"""The parser: every construct reaches the syntax tree, with its source place."""

import pytest
from tegula.compiler import syntax as ast
from tegula.compiler.diagnostics import DSLError
from tegula.compiler.parser import kernel_names, parse

HEADER = "kernel k(x: f32[M, 64] strides(S, 1), a: f16[N], eps: f32)\n"


def body_of(src: str) -> tuple[ast.Stmt, ...]:
    program = parse(HEADER + "    grid (M)\n{\n" + src + "\n}\n", "t.tg")
    return program.kernels[0].body.stmts


def expr_of(src: str) -> ast.Expr:
    (stmt,) = body_of(f"    v = {src}")
    assert isinstance(stmt, ast.Assign)
    return stmt.value


def test_header() -> None:
    src = (
        "# a comment\n"
        "kernel k(x: f32[M, 64] strides(S, 1), eps: f32)\n"
        "    params BN = 64, WARPS in (4, 8), BK = 32 in (16, 32)\n"
        "    grid (cdiv(M, BN), 2) warps WARPS\n"
        "{\n}\n"
        "kernel second(y: i8[3]) grid (1) { }\n"
    )
    program = parse(src, "h.tg")
    assert kernel_names(program) == ("k", "second")
    k = program.kernels[0]
    x, eps = k.params
    assert (x.name, x.dtype) == ("x", "f32")
    assert [d.value for d in x.shape] == ["M", 64]
    assert [d.value for d in x.strides] == ["S", 1]
    assert (eps.shape, eps.strides) == (None, None)
    assert x.span == ast.Span(2, 10, 2, 37)
    assert x.dtype_span == ast.Span(2, 13, 2, 16)
    bn, warps, bk = k.const_params
    assert bn == ast.ConstParamDecl("BN", ast.IntLit(64), ())
    assert warps == ast.ConstParamDecl("WARPS", None, (ast.IntLit(4), ast.IntLit(8)))
    assert bk == ast.ConstParamDecl("BK", ast.IntLit(32), (ast.IntLit(16), ast.IntLit(32)))
    assert k.grid == (ast.Call("cdiv", (ast.Name("M"), ast.Name("BN")), ()), ast.IntLit(2))
    assert k.warps == ast.Name("WARPS")
    assert k.span.line == 2


def test_statements_and_locations() -> None:
    stmts = body_of(
        "    row = bid.x\n"
        "    acc += 1\n"
        "    for j in pipeline(0, N, 64, stages=3) {\n"
        "        store(x[row, j : +64], acc)\n"
        "    }\n"
        "    if row > 0 { a = 1 }\n"
        "    elif row < 0 {\n"
        "        a = 2\n"
        "    } else { a = 3 }\n"
        "    { b = 4 }"
    )
    assign, aug, loop, branch, block = stmts
    assert assign == ast.Assign("row", ast.Attribute(ast.Name("bid"), "x"))
    assert assign.span == ast.Span(4, 5, 4, 16)
    assert assign.value.span == ast.Span(4, 11, 4, 16)
    assert aug == ast.Assign("acc", ast.Binary("+", ast.Name("acc"), ast.IntLit(1)))
    assert isinstance(loop, ast.For)
    assert (loop.var, loop.iterator) == ("j", "pipeline")
    assert loop.keywords == (ast.Keyword("stages", ast.IntLit(3)),)
    (store,) = loop.body.stmts
    assert isinstance(store, ast.ExprStmt) and store.span.line == 7
    window = store.expr.args[0]
    assert window.items == (
        ast.Index(ast.Name("row")),
        ast.SizedSlice(ast.Name("j"), ast.IntLit(64)),
    )
    assert window.items[1].span == ast.Span(7, 22, 7, 29)
    assert isinstance(branch, ast.If)
    nested = branch.orelse.stmts[0]
    assert isinstance(nested, ast.If) and nested.span.line == 10
    assert nested.orelse.stmts == (ast.Assign("a", ast.IntLit(3)),)
    assert block == ast.Block((ast.Assign("b", ast.IntLit(4)),))


@pytest.mark.parametrize(
    ("src", "tree"),
    [
        (
            "1 + 2 * 3",
            ast.Binary("+", ast.IntLit(1), ast.Binary("*", ast.IntLit(2), ast.IntLit(3))),
        ),
        ("-2 ** 2", ast.Unary("-", ast.Binary("**", ast.IntLit(2), ast.IntLit(2)))),
        (
            "a // b % c",
            ast.Binary("%", ast.Binary("//", ast.Name("a"), ast.Name("b")), ast.Name("c")),
        ),
        (
            "not a and b or c",
            ast.Binary(
                "or",
                ast.Binary("and", ast.Unary("not", ast.Name("a")), ast.Name("b")),
                ast.Name("c"),
            ),
        ),
        ("a < b == c", None),  # no chained comparisons
        (
            "a & b | c ^ d",
            ast.Binary(
                "|",
                ast.Binary("&", ast.Name("a"), ast.Name("b")),
                ast.Binary("^", ast.Name("c"), ast.Name("d")),
            ),
        ),
        (
            "1 << 2 >> 3",
            ast.Binary(">>", ast.Binary("<<", ast.IntLit(1), ast.IntLit(2)), ast.IntLit(3)),
        ),
        ("~a", ast.Unary("~", ast.Name("a"))),
        ("1e-5", ast.FloatLit(1e-5)),
        ("2.", ast.FloatLit(2.0)),
        ("inf", ast.FloatLit(float("inf"))),
        ("true", ast.BoolLit(True)),
        ("false", ast.BoolLit(False)),
        ("t[:, None]", ast.Subscript(ast.Name("t"), (ast.FullSlice(), ast.Index(ast.NoneLit())))),
        (
            "x[i : i + 4]",
            ast.Subscript(
                ast.Name("x"),
                (ast.RangeSlice(ast.Name("i"), ast.Binary("+", ast.Name("i"), ast.IntLit(4))),),
            ),
        ),
        ("f(1, k=2)", ast.Call("f", (ast.IntLit(1),), (ast.Keyword("k", ast.IntLit(2)),))),
        ("(1, 2)", ast.TupleExpr((ast.IntLit(1), ast.IntLit(2)))),
        ("[]", ast.ListExpr(())),
        ("[a, 4,]", ast.ListExpr((ast.Name("a"), ast.IntLit(4)))),
        ("(a)", ast.Name("a")),
    ],
)
def test_expressions(src: str, tree: ast.Expr | None) -> None:
    if tree is None:
        with pytest.raises(DSLError):
            expr_of(src)
    else:
        assert expr_of(src) == tree


def test_nan_is_a_float_literal() -> None:
    value = expr_of("nan")
    assert isinstance(value, ast.FloatLit) and value.value != value.value


def test_newlines_inside_brackets_and_headers_are_whitespace() -> None:
    stmts = body_of(
        "    v = f(1,\n          2)\n    if v\n    {\n        w = 1\n    }\n    else\n    {\n    }"
    )
    assert stmts[0] == ast.Assign("v", ast.Call("f", (ast.IntLit(1), ast.IntLit(2)), ()))
    assert isinstance(stmts[1], ast.If)


def test_a_line_break_ends_a_statement() -> None:
    a, b = body_of("    a = 1\n    -2")
    assert a == ast.Assign("a", ast.IntLit(1))
    assert b == ast.ExprStmt(ast.Unary("-", ast.IntLit(2)))


def test_syntax_error_fields() -> None:
    with pytest.raises(DSLError) as info:
        parse("kernel k(x: f32[M])\n    grid (M warps 4\n{\n}\n", "s.tg")
    e = info.value
    assert (e.file, e.line, e.column, e.end_column) == ("s.tg", 2, 13, 18)
    assert e.expected == ("')'", "','")
    assert e.message == "expected ')' or ',' but found 'warps'"
