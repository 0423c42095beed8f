"""Grid expressions: the allowed language evaluates like Python; anything else is refused."""

import pytest
from tegula.runtime.errors import ExprError
from tegula.runtime.exprs import cdiv, compile_grid, evaluate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cdiv(M, 128)", -(-1000 // 128)),
        ("M * N // 7 + 3", 1000 * 33 // 7 + 3),
        ("(M - N) % 17", (1000 - 33) % 17),
        ("min(M, N) + max(M, 2)", 33 + 1000),
        ("-N + +M", 967),
        ("cdiv(cdiv(M, 8), min(N, 4))", 32),  # cdiv(125, 4)
        ("42", 42),
    ],
)
def test_evaluates_like_python(text: str, expected: int) -> None:
    assert evaluate(text, {"M": 1000, "N": 33}) == expected


def test_cdiv_rounds_up() -> None:
    assert [cdiv(n, 4) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


def test_compiled_grid_takes_symbols_in_order() -> None:
    grid = compile_grid(["cdiv(N, 64)", "M", "1"], ["M", "N"])
    assert grid(3, 130) == (3, 3, 1)


def test_symbol_named_like_a_function_does_not_shadow_it() -> None:
    grid = compile_grid(["min(min, 4)", "max", "1"], ["min", "max"])
    assert grid(9, 5) == (4, 5, 1)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("M / 2", "Div"),
        ("M ** 2", "Pow"),
        ("M.__class__", "Attribute"),
        ("__import__('os')", "call of '__import__'"),
        ("abs(M)", "call of 'abs'"),
        ("min(M)", "other than two"),
        ("cdiv(M, b=2)", "other than two"),
        ("1.5", "literal 1.5"),
        ("'a'", "literal 'a'"),
        ("M if N else 1", "IfExp"),
        ("[M][0]", "Subscript"),
        ("M < N", "Compare"),
        ("lambda: 1", "Lambda"),
        ("True", "literal True"),
    ],
)
def test_refuses_everything_else(text: str, fragment: str) -> None:
    with pytest.raises(ExprError, match="not allowed") as info:
        compile_grid([text], ["M", "N"])
    assert fragment in str(info.value)


def test_unknown_symbol_is_named() -> None:
    with pytest.raises(ExprError, match="unknown symbol 'K'"):
        compile_grid(["cdiv(K, 2)"], ["M", "N"])


def test_syntax_error_is_reported() -> None:
    with pytest.raises(ExprError, match="does not parse"):
        compile_grid(["cdiv(M,"], ["M"])
