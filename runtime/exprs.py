"""Grid expressions: a tiny, safe integer language over size symbols.

A code generator describes the launch grid as three strings such as ``"cdiv(M, 128)"`` over
the kernel's size symbols. They are parsed with :mod:`ast`, checked against a whitelist
(``+ - * // %``, unary ``+ -``, parentheses, int literals, symbol names, and calls to
``cdiv``, ``min`` and ``max`` with two arguments), and then compiled once into a Python
function of the symbol values. Only whitelisted nodes reach :func:`compile`, and the
function runs with no builtins, so nothing but integer arithmetic can happen; evaluating a
grid per call costs one Python call.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence

from .errors import ExprError

GridFunction = Callable[..., tuple[int, ...]]

_BINARY_OPS = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod)
_UNARY_OPS = (ast.UAdd, ast.USub)
_FUNCTIONS = ("cdiv", "min", "max")


def cdiv(a: int, b: int) -> int:
    """Ceiling division of integers: ``cdiv(7, 2) == 4``."""
    return -(-a // b)


_ENVIRONMENT: dict[str, object] = {"__builtins__": {}, "cdiv": cdiv, "min": min, "max": max}


class _Checker(ast.NodeTransformer):
    """Rejects anything outside the grid language and renames symbols to argument slots.

    Renaming (``M`` → ``_s0``) keeps a symbol that happens to be called ``min`` from
    shadowing the function of that name.
    """

    def __init__(self, text: str, slots: dict[str, str]) -> None:
        self.text = text
        self.slots = slots

    def _fail(self, what: str) -> ExprError:
        return ExprError(
            f"grid expression {self.text!r}: {what} is not allowed "
            "(allowed: ints, symbols, + - * // %, cdiv/min/max)"
        )

    def visit_Expression(self, node: ast.Expression) -> ast.AST:
        node.body = self.visit(node.body)
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        if not isinstance(node.op, _BINARY_OPS):
            raise self._fail(f"operator {type(node.op).__name__}")
        node.left = self.visit(node.left)
        node.right = self.visit(node.right)
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        if not isinstance(node.op, _UNARY_OPS):
            raise self._fail(f"operator {type(node.op).__name__}")
        node.operand = self.visit(node.operand)
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if type(node.value) is not int:
            raise self._fail(f"literal {node.value!r}")
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        slot = self.slots.get(node.id)
        if slot is None:
            known = ", ".join(self.slots) or "none"
            raise ExprError(
                f"grid expression {self.text!r}: unknown symbol {node.id!r} (symbols: {known})"
            )
        return ast.copy_location(ast.Name(id=slot, ctx=ast.Load()), node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if not (isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS):
            raise self._fail(f"call of {ast.unparse(node.func)!r}")
        if node.keywords or len(node.args) != 2:
            raise self._fail(f"{node.func.id} with other than two positional arguments")
        node.args = [self.visit(arg) for arg in node.args]
        return node

    def generic_visit(self, node: ast.AST) -> ast.AST:
        raise self._fail(f"{type(node).__name__}")


def parse_expr(text: str, symbols: Sequence[str]) -> ast.expr:
    """Parse and check one expression; return its body with symbols renamed to slots."""
    if not isinstance(text, str):
        raise ExprError(f"grid expression must be a string, got {type(text).__name__}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"grid expression {text!r} does not parse: {exc.msg}") from None
    slots = {name: f"_s{i}" for i, name in enumerate(symbols)}
    checked = _Checker(text, slots).visit(tree)
    return checked.body


def compile_grid(exprs: Sequence[str], symbols: Sequence[str]) -> GridFunction:
    """Compile grid expressions into ``f(*symbol_values) -> (gx, gy, gz, ...)``.

    ``symbols`` fixes the order of the function's arguments.
    """
    bodies = [parse_expr(text, symbols) for text in exprs]
    args = ast.arguments(
        posonlyargs=[],
        args=[ast.arg(arg=f"_s{i}") for i in range(len(symbols))],
        kwonlyargs=[],
        kw_defaults=[],
        defaults=[],
    )
    lam = ast.Lambda(args=args, body=ast.Tuple(elts=bodies, ctx=ast.Load()))
    module = ast.fix_missing_locations(ast.Expression(body=lam))
    code = compile(module, filename=f"<grid {', '.join(exprs)}>", mode="eval")
    return eval(code, dict(_ENVIRONMENT))


def evaluate(text: str, values: dict[str, int]) -> int:
    """Evaluate one expression once (for tests and tools; launches use :func:`compile_grid`)."""
    names = tuple(values)
    return compile_grid([text], names)(*(values[n] for n in names))[0]
