"""Index simplification: exact rewrites, a semantic property test against Python and sympy,
and kernel-level clean-up that keeps what the kernel computes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st
from tegula.ir.dtypes import DType, Kind, boolean, f32, i32, i64, u32
from tegula.ir.loop import (
    Binary,
    BinaryOp,
    BlockIdx,
    Buffer,
    Cast,
    Comment,
    Const,
    Expr,
    For,
    If,
    Let,
    Load,
    LoopKernel,
    LoopParam,
    Scope,
    Select,
    Seq,
    Stmt,
    Store,
    ThreadIdx,
    Unary,
    UnaryOp,
    Var,
    walk_exprs,
    walk_stmts,
)
from tegula.ir.printer_loop import format_expr
from tegula.ir.verify_loop import verify_loop_kernel
from tegula.passes.analysis.int_range import THREAD_IDX, IntRange, block_idx_name, int_range
from tegula.passes.simplify import simplify_expr, simplify_kernel

# ----------------------------------------------------------------------------- building


@dataclass(frozen=True)
class E:
    """An expression with Python operators, so test inputs read like the index they are."""

    e: Expr

    def _bin(self, op: BinaryOp, other: E | int, swap: bool = False) -> E:
        o = lift(other, self.e.dtype)
        return E(Binary(op, o, self.e) if swap else Binary(op, self.e, o))

    def __add__(self, o: E | int) -> E:
        return self._bin(BinaryOp.ADD, o)

    def __radd__(self, o: int) -> E:
        return self._bin(BinaryOp.ADD, o, swap=True)

    def __sub__(self, o: E | int) -> E:
        return self._bin(BinaryOp.SUB, o)

    def __rsub__(self, o: int) -> E:
        return self._bin(BinaryOp.SUB, o, swap=True)

    def __mul__(self, o: E | int) -> E:
        return self._bin(BinaryOp.MUL, o)

    def __rmul__(self, o: int) -> E:
        return self._bin(BinaryOp.MUL, o, swap=True)

    def __floordiv__(self, o: E | int) -> E:
        return self._bin(BinaryOp.FLOORDIV, o)

    def __mod__(self, o: E | int) -> E:
        return self._bin(BinaryOp.MOD, o)

    def __neg__(self) -> E:
        return E(Unary(UnaryOp.NEG, self.e))

    def __lt__(self, o: E | int) -> E:  # type: ignore[override]
        return self._bin(BinaryOp.LT, o)

    def __le__(self, o: E | int) -> E:  # type: ignore[override]
        return self._bin(BinaryOp.LE, o)

    def __ge__(self, o: E | int) -> E:  # type: ignore[override]
        return self._bin(BinaryOp.GE, o)

    def __gt__(self, o: E | int) -> E:  # type: ignore[override]
        return self._bin(BinaryOp.GT, o)

    def eq(self, o: E | int) -> E:
        return self._bin(BinaryOp.EQ, o)


def lift(v: E | int, dt: DType = i64) -> Expr:
    return v.e if isinstance(v, E) else Const(v, dt)


def mn(a: E | int, b: E | int) -> E:
    return E(Binary(BinaryOp.MIN, lift(a), lift(b)))


def mx(a: E | int, b: E | int) -> E:
    return E(Binary(BinaryOp.MAX, lift(a), lift(b)))


def select(c: E, a: E | int, b: E | int) -> E:
    return E(Select(c.e, lift(a), lift(b)))


def both(a: E, b: E) -> E:
    return E(Binary(BinaryOp.AND, a.e, b.e))


x, y, n, v = (E(Var(name, i64)) for name in "xynv")
tid = E(Cast(i64, ThreadIdx()))
bid = E(Cast(i64, BlockIdx(0)))
TRUE, FALSE = Const(True, boolean), Const(False, boolean)

RANGES: dict[str, IntRange] = {
    "x": IntRange(-20, 20),
    "y": IntRange(0, 15),
    "n": IntRange(1, 9),
    "v": IntRange(0, 3),
    THREAD_IDX: IntRange(0, 127),
}


def simp(e: E, ranges: Mapping[str, IntRange] | None = None) -> str:
    return format_expr(simplify_expr(e.e, RANGES if ranges is None else ranges))


def node_count(e: Expr) -> int:
    return sum(1 for _ in walk_exprs(e))


# ----------------------------------------------------------------------------- evaluation


def _wrap(value: int, dt: DType) -> int:
    span = 1 << dt.bits
    if dt.kind is Kind.UNSIGNED:
        return value % span
    return (value + span // 2) % span - span // 2


def evaluate(e: Expr, env: Mapping[str, int]) -> int | bool:
    """Exact Python evaluation: floor semantics for ``//`` and ``%``."""
    match e:
        case Const(value=value):
            return value  # type: ignore[return-value]
        case Var(name=name):
            return env[name]
        case ThreadIdx():
            return env[THREAD_IDX]
        case BlockIdx(axis=axis):
            return env[block_idx_name(axis)]
        case Cast(type=dt, operand=a):
            value = evaluate(a, env)
            return bool(value) if dt.is_bool else _wrap(int(value), dt)
        case Unary(op=UnaryOp.NEG, operand=a):
            return -evaluate(a, env)
        case Unary(op=UnaryOp.NOT, operand=a):
            return not evaluate(a, env)
        case Select(cond=c, if_true=a, if_false=b):
            return evaluate(a, env) if evaluate(c, env) else evaluate(b, env)
        case Binary(op=op, lhs=lhs, rhs=rhs):
            a, b = evaluate(lhs, env), evaluate(rhs, env)
            return _PYTHON_OPS[op](a, b)
    raise TypeError(f"cannot evaluate {e!r}")


_PYTHON_OPS = {
    BinaryOp.ADD: lambda a, b: a + b,
    BinaryOp.SUB: lambda a, b: a - b,
    BinaryOp.MUL: lambda a, b: a * b,
    BinaryOp.FLOORDIV: lambda a, b: a // b,
    BinaryOp.MOD: lambda a, b: a % b,
    BinaryOp.MIN: min,
    BinaryOp.MAX: max,
    BinaryOp.LT: lambda a, b: a < b,
    BinaryOp.LE: lambda a, b: a <= b,
    BinaryOp.GT: lambda a, b: a > b,
    BinaryOp.GE: lambda a, b: a >= b,
    BinaryOp.EQ: lambda a, b: a == b,
    BinaryOp.NE: lambda a, b: a != b,
    BinaryOp.AND: lambda a, b: a and b,
    BinaryOp.OR: lambda a, b: a or b,
}


def to_sympy(e: Expr, env: Mapping[str, int] | None = None) -> sympy.Basic:
    """The same expression in sympy, with ``floor`` and ``Mod`` for floor semantics.

    With ``env``, leaves become sympy Integers, so sympy evaluates the arithmetic on numbers
    (its symbolic rewriting of nested ``Mod`` has known wrong cases that are not ours).
    """
    if env is not None:
        match e:
            case Var(name=name) if name in env:
                return sympy.Integer(env[name])
            case ThreadIdx():
                return sympy.Integer(env[THREAD_IDX])
            case BlockIdx(axis=axis) if block_idx_name(axis) in env:
                return sympy.Integer(env[block_idx_name(axis)])
    match e:
        case Const(value=value):
            return (
                sympy.true
                if value is True
                else sympy.false
                if value is False
                else sympy.Integer(value)
            )
        case Var(name=name):
            return sympy.Symbol(name, integer=True)
        case ThreadIdx():
            return sympy.Symbol("tid", integer=True)
        case BlockIdx(axis=axis):
            return sympy.Symbol(f"bid{axis}", integer=True)
        case Cast(operand=a):
            return to_sympy(a, env)  # the tested values fit every type involved
        case Unary(op=UnaryOp.NEG, operand=a):
            return -to_sympy(a, env)
        case Unary(op=UnaryOp.NOT, operand=a):
            return sympy.Not(to_sympy(a, env))
        case Select(cond=c, if_true=a, if_false=b):
            return sympy.Piecewise((to_sympy(a, env), to_sympy(c, env)), (to_sympy(b, env), True))
        case Binary(op=op, lhs=lhs, rhs=rhs):
            return _SYMPY_OPS[op](to_sympy(lhs, env), to_sympy(rhs, env))
    raise TypeError(f"no sympy form for {e!r}")


_SYMPY_OPS = {
    BinaryOp.ADD: lambda a, b: a + b,
    BinaryOp.SUB: lambda a, b: a - b,
    BinaryOp.MUL: lambda a, b: a * b,
    BinaryOp.FLOORDIV: lambda a, b: sympy.floor(a / b),
    BinaryOp.MOD: sympy.Mod,
    BinaryOp.MIN: sympy.Min,
    BinaryOp.MAX: sympy.Max,
    BinaryOp.LT: sympy.Lt,
    BinaryOp.LE: sympy.Le,
    BinaryOp.GT: sympy.Gt,
    BinaryOp.GE: sympy.Ge,
    BinaryOp.EQ: sympy.Eq,
    BinaryOp.NE: sympy.Ne,
    BinaryOp.AND: sympy.And,
    BinaryOp.OR: sympy.Or,
}


def sympy_value(e: Expr, env: Mapping[str, int]) -> int:
    return int(to_sympy(e, env))


# ----------------------------------------------------------------------------- exact rewrites


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        # folding and identities
        (E(Const(7, i64)) // -2 + E(Const(7, i64)) % -2, "-5"),
        (E(Const(-7, i64)) // 2 * 10 + E(Const(-7, i64)) % 2, "-39"),
        (x + 0, "x"),
        (x * 1, "x"),
        (x * 0, "0"),
        (x // 1, "x"),
        (x % 1, "0"),
        (x - x, "0"),
        # canonical sums and products
        ((x + 3) + 4, "x + 7"),
        (4 * (x * 2), "x * 8"),
        (3 + x - 5, "x - 2"),
        (5 - x, "5 - x"),
        (-x - y, "-x - y"),
        ((x + 1) * 4 - 4, "x * 4"),
        (x * y + y * x, "x * y * 2"),
        # written back with few multiplications
        ((x + 1) * n, "(x + 1) * n"),
        (x * n * 4 + (y + 2) * n - n * 2, "(x * 4 + y) * n"),
        ((x + y) * 32 + 5 - y * 32, "x * 32 + 5"),
        (x * 32 + 5 + y * 32, "(x + y) * 32 + 5"),
        (E(Var("C", i64)) * y + 1, "y * C + 1"),
        # division and modulo
        ((x * 8 + y % 8) // 8, "x"),
        ((x * 8 + y % 8) % 8, "y % 8"),
        ((x * 8 + 9) // 8, "x + 1"),
        ((x * 6 + y) // 3, "x * 2 + y // 3"),
        ((x * 4) // 8, "x // 2"),
        ((x * 4) % 8, "x % 2 * 4"),
        ((x * 3 + 1) % 3, "1"),
        (x // 4 // 8, "x // 32"),
        (x % 32 // 8, "x // 8 % 4"),
        (x % 32 % 8, "x % 8"),
        (y % 16, "y"),
        (y // 16, "0"),
        ((y + 16) % 16, "y"),
        ((x + 40) // 64, "0"),
        ((x - 1) % 4, "(x - 1) % 4"),
        (tid // 8 * 8 + tid % 8, "i64(threadIdx.x)"),
        (tid // 8 % 4 * 8 + tid % 8, "i64(threadIdx.x) % 32"),
        (x - x // 8 * 8, "x % 8"),
        ((v * n + 2) // n, "2 // n + v"),
        ((v * n + v) % n, "v % n"),
        # comparisons, logic, selects
        (tid < 128, "true"),
        (tid < 100, "i64(threadIdx.x) < 100"),
        (v * 32 + tid // 4 < 128, "true"),
        (x + 1 < 5, "x < 4"),
        (x * 64 + y < x * 64 + 16, "true"),
        (x * 64 + y < x * 64 + n, "y < n"),
        ((x % 4).eq(4), "false"),
        (both(tid < 128, x < 5), "x < 5"),
        (both(both(x < 5, y < n), both(x < 5, tid < 128)), "x < 5 && y < n"),
        (both(x < n, x + 3 < n), "x + 3 < n"),
        (both(x + 3 < n, x >= 0 - y), "x + 3 < n && x >= -y"),
        (both(both(x >= 0, x + 3 < n), x >= 2), "x + 3 < n && x >= 2"),
        (select(tid >= 0, x, y), "x"),
        (select(x < 0, y, y), "y"),
        # min and max
        (mn(x, x + 1), "x"),
        (mx(x, x + 1), "x + 1"),
        (mn(y, 20), "y"),
        (mx(y, -1), "y"),
        (mn(mn(x, 8), 3), "min(x, 3)"),
        (mn(8, x), "min(x, 8)"),
    ],
)
def test_rewrites_to(expr: E, expected: str) -> None:
    assert simp(expr) == expected


def test_a_bound_guarding_a_load_stays() -> None:
    table = Buffer("table", i64, Scope.GLOBAL, read_only=True)
    guarded = both(both(x < n, E(Load(table, x.e)) > 0), x + 3 < n)
    assert simp(guarded) == "x < n && table[x] > 0 && x + 3 < n"
    checked_after = both(both(x + 3 < n, E(Load(table, x.e)) > 0), x < n)
    assert simp(checked_after) == "x + 3 < n && table[x] > 0"


def test_typical_lowering_index_gets_shorter() -> None:
    b0 = E(BlockIdx(0))
    t = E(ThreadIdx())
    w = E(Var("v", i32))
    index = ((t // 8) % 4) * 1024 + (w * 4 + (t % 8)) * 1 + b0 * 65536 + 0
    ranges = {THREAD_IDX: IntRange(0, 127), "v": IntRange(0, 3)}
    out = simplify_expr(index.e, ranges)
    assert format_expr(out) == (
        "blockIdx.x * i32(65536) + threadIdx.x // i32(8) % i32(4) * i32(1024)"
        " + v * i32(4) + threadIdx.x % i32(8)"
    )
    assert node_count(out) < node_count(index.e)
    assert all(sub.dtype is i32 for sub in walk_exprs(out))


def test_ranges_of_named_thread_and_block_indices() -> None:
    r = {THREAD_IDX: IntRange(0, 255), block_idx_name(1): IntRange(0, 0)}
    assert simp(tid // 256 + E(Cast(i64, BlockIdx(1))), r) == "0"
    # Without ranges only the type bounds are known: nothing is assumed.
    assert simp(x // 64, {}) == "x // 64"
    assert simp(tid < 128, {}) == "i64(threadIdx.x) < 128"


def test_unsigned_arithmetic_is_not_reassociated() -> None:
    # u32 wraps: (a - 1) + 1 is a, but (a - 1) // 2 with a = 0 is not -1 // 2.
    a = E(Var("a", u32))
    assert format_expr(simplify_expr(((a + 3) + 4).e)) == "a + u32(3) + u32(4)"
    assert format_expr(simplify_expr((a % 16).e, {"a": IntRange(0, 9)})) == "a"
    assert format_expr(simplify_expr((E(Const(5, u32)) - 7).e)) == f"u32({2**32 - 2})"


def test_floats_fold_only_when_exact() -> None:
    def f(value: float) -> Expr:
        return Const(value, f32)

    z = Var("z", f32)
    add = BinaryOp.ADD
    assert simplify_expr(Binary(add, f(0.5), f(0.25))) == f(0.75)
    # 0.1 is not an f32 value: folding in double precision would change the result.
    kept = Binary(add, f(0.1), f(0.2))
    assert simplify_expr(kept) == kept
    # 2**24 + 1 is not an f32 value either.
    assert simplify_expr(Binary(add, f(2.0**24), f(1.0))) == Binary(add, f(2.0**24), f(1.0))
    assert simplify_expr(Binary(BinaryOp.MUL, z, f(1.0))) == z
    # z + 0.0 turns -0.0 into 0.0: not an identity.
    assert simplify_expr(Binary(add, z, f(0.0))) == Binary(add, z, f(0.0))
    assert simplify_expr(Cast(f32, Const(3, i64))) == f(3.0)
    assert simplify_expr(Cast(i32, f(-2.75))) == Const(-2, i32)
    assert simplify_expr(Binary(BinaryOp.LT, f(0.5), f(0.25))) == FALSE


def test_casts_and_logic_of_constants() -> None:
    assert simplify_expr(Cast(i32, Const(2**31 + 5, i64))) == Const(-(2**31) + 5, i32)
    assert simplify_expr(Binary(BinaryOp.OR, (x < 0).e, TRUE)) == TRUE
    assert simplify_expr(Unary(UnaryOp.NOT, (x < 0).e)) == (x >= 0).e
    assert simplify_expr(Select(Var("p", boolean), TRUE, FALSE)) == Var("p", boolean)


# ----------------------------------------------------------------------------- range analysis


def test_int_range_arithmetic() -> None:
    r = IntRange(-3, 5)
    assert r + IntRange(1, 2) == IntRange(-2, 7)
    assert r * IntRange(-2, 1) == IntRange(-10, 6)
    assert r.floordiv(IntRange.point(2)) == IntRange(-2, 2)
    assert r.floordiv(IntRange.point(-2)) == IntRange(-3, 1)
    assert r.mod(IntRange.point(4)) == IntRange(0, 3)
    assert IntRange(9, 11).mod(IntRange.point(8)) == IntRange(1, 3)
    assert IntRange(0, None).floordiv(IntRange(2, None)) == IntRange(0, None)
    assert IntRange(None, 4) * IntRange(0, 0) == IntRange(0, 0)
    assert IntRange(0, None).mod(IntRange(1, 9)) == IntRange(0, 8)
    with pytest.raises(ValueError, match="lo=3 > hi=2"):
        IntRange(3, 2)


def test_int_range_of_expressions() -> None:
    assert int_range(((tid // 8) % 4 * 1024 + v * 4).e, RANGES) == IntRange(0, 3084)
    assert int_range(mn(x, y).e, RANGES) == IntRange(-20, 15)
    assert int_range(E(Cast(u32, Var("x", i64))).e, RANGES) == IntRange(0, 2**32 - 1)
    assert int_range(Var("q", i32)) == IntRange(-(2**31), 2**31 - 1)
    with pytest.raises(TypeError, match="f32"):
        int_range(Var("z", f32))


# ----------------------------------------------------------------------------- property test

_LEAVES = [x, y, n, tid]
_COMPARISONS = [BinaryOp.LT, BinaryOp.LE, BinaryOp.GT, BinaryOp.GE, BinaryOp.EQ, BinaryOp.NE]


def _grow(children: st.SearchStrategy[E]) -> st.SearchStrategy[E]:
    arithmetic = st.builds(
        lambda op, a, b: E(Binary(op, a.e, b.e)),
        st.sampled_from([BinaryOp.ADD, BinaryOp.SUB, BinaryOp.MUL, BinaryOp.MIN, BinaryOp.MAX]),
        children,
        children,
    )
    by_constant = st.builds(
        lambda op, a, c: E(Binary(op, a.e, Const(c, i64))),
        st.sampled_from([BinaryOp.FLOORDIV, BinaryOp.MOD]),
        children,
        st.sampled_from([1, 2, 3, 4, 6, 8, 12, 16, 32]),
    )
    by_symbol = st.builds(
        lambda op, a: E(Binary(op, a.e, n.e)),
        st.sampled_from([BinaryOp.FLOORDIV, BinaryOp.MOD]),
        children,
    )
    comparisons = st.builds(
        lambda op, a, b: Binary(op, a.e, b.e), st.sampled_from(_COMPARISONS), children, children
    )
    conditions = comparisons | st.builds(
        lambda op, p, q: Binary(op, p, q),
        st.sampled_from([BinaryOp.AND, BinaryOp.OR]),
        comparisons,
        comparisons,
    )
    selects = st.builds(lambda c, t, f: E(Select(c, t.e, f.e)), conditions, children, children)
    return arithmetic | by_constant | by_symbol | selects


_EXPRESSIONS = st.recursive(
    st.sampled_from(_LEAVES) | st.integers(-10, 10).map(lambda c: E(Const(c, i64))),
    _grow,
    max_leaves=10,
)


@settings(max_examples=150, deadline=None)
@given(expr=_EXPRESSIONS, data=st.data())
def test_simplified_expressions_keep_their_values(expr: E, data: st.DataObject) -> None:
    simplified = simplify_expr(expr.e, RANGES)
    assert simplify_expr(simplified, RANGES) == simplified, "not a fixed point"
    for _ in range(3):
        env = {name: data.draw(st.integers(r.lo, r.hi)) for name, r in RANGES.items()}
        expected = evaluate(expr.e, env)
        assert evaluate(simplified, env) == expected, format_expr(simplified)
        assert sympy_value(expr.e, env) == expected
        assert sympy_value(simplified, env) == expected


# ----------------------------------------------------------------------------- kernels


def _i64(e: Expr) -> Expr:
    return Cast(i64, e)


def _demo_kernel() -> tuple[LoopKernel, Buffer, Buffer]:
    """out[i] = 2 * a[i] for i < N; four elements per thread, two blocks of 128 threads."""
    a = Buffer("a", f32, Scope.GLOBAL, read_only=True)
    out = Buffer("out", f32, Scope.GLOBAL)
    big_n = Var("N", i64)
    i, j, k = Var("i", i64), Var("j", i64), Var("k", i64)
    elem = (E(i) * 4 + E(j)) * 1 + 0
    body = Seq(
        (
            Comment("out = a * 2"),
            Let(i, (bid * 128 + tid).e),
            If(
                (tid < 128).e,  # always true in a 128-thread block
                Seq(
                    (
                        For(
                            j,
                            Const(0, i64),
                            Const(4, i64),
                            Const(1, i64),
                            If(
                                (elem < E(big_n)).e,
                                Store(
                                    out,
                                    elem.e,
                                    Binary(BinaryOp.MUL, Load(a, elem.e), Const(2.0, f32)),
                                ),
                            ),
                        ),
                    )
                ),
            ),
            For(k, Const(0, i64), Const(0, i64), Const(1, i64), Store(out, k, Const(0.0, f32))),
            If((bid >= 2).e, Store(out, Const(0, i64), Const(-1.0, f32))),  # past the grid
        )
    )
    kernel = LoopKernel(
        name="scale",
        params=(LoopParam("a", buffer=a), LoopParam("out", buffer=out)),
        symbols=(big_n,),
        grid=(Const(2, i64), Const(1, i64), Const(1, i64)),
        block_threads=128,
        buffers=(),
        smem_bytes=0,
        body=body,
    )
    return kernel, a, out


class _Interpreter:
    """Runs a kernel's body for every thread of every block, with NumPy buffers."""

    def __init__(self, k: LoopKernel, symbols: Mapping[str, int], arrays: dict[str, np.ndarray]):
        self.k, self.symbols, self.arrays = k, symbols, arrays

    def run(self) -> None:
        blocks = [int(evaluate(g, self.symbols)) for g in self.k.grid]
        for b in range(blocks[0]):
            for t in range(self.k.block_threads):
                env = {**self.symbols, THREAD_IDX: t, block_idx_name(0): b}
                self.stmt(self.k.body, env)

    def value(self, e: Expr, env: dict[str, int]) -> float | int | bool:
        match e:
            case Load(buffer=buf, index=index):
                return self.arrays[buf.name][int(self.value(index, env))]
            case Binary(op=BinaryOp.MUL, lhs=lhs, rhs=rhs) if e.dtype.is_float:
                return np.float32(self.value(lhs, env)) * np.float32(self.value(rhs, env))
            case Const(value=value) if e.dtype.is_float:
                return np.float32(value)
        return evaluate(e, env)

    def stmt(self, s: Stmt, env: dict[str, int]) -> None:
        match s:
            case Seq(body=body):
                for child in body:
                    self.stmt(child, env)
            case Let(var=var, value=value):
                env[var.name] = int(self.value(value, env))
            case Store(buffer=buf, index=index, value=value):
                self.arrays[buf.name][int(self.value(index, env))] = self.value(value, env)
            case For(var=var, start=start, stop=stop, step=step, body=body):
                lo, hi, st_ = (int(self.value(e, env)) for e in (start, stop, step))
                for val in range(lo, hi, st_):
                    self.stmt(body, {**env, var.name: val})
            case If(cond=cond, then_body=then_body, else_body=else_body):
                if self.value(cond, env):
                    self.stmt(then_body, dict(env))
                elif else_body is not None:
                    self.stmt(else_body, dict(env))
            case Comment():
                pass
            case _:
                raise TypeError(f"interpreter: {type(s).__name__}")


def _run(k: LoopKernel, size: int, a_values: np.ndarray) -> np.ndarray:
    out = np.full(1024, np.nan, dtype=np.float32)  # poisoned
    _Interpreter(k, {"N": size}, {"a": a_values, "out": out}).run()
    return out


def test_simplify_kernel_removes_dead_code_and_keeps_results() -> None:
    kernel, _, _ = _demo_kernel()
    simplified = simplify_kernel(kernel)
    verify_loop_kernel(simplified)

    ifs = [s for s in walk_stmts(simplified.body) if isinstance(s, If)]
    assert [format_expr(s.cond) for s in ifs] == ["i * 4 + j < N"]
    loops = [s for s in walk_stmts(simplified.body) if isinstance(s, For)]
    assert [s.var.name for s in loops] == ["j"]  # the empty loop is gone
    assert isinstance(simplified.body, Seq)
    assert not any(isinstance(s, Seq) for s in simplified.body.body)

    rng = np.random.default_rng()
    a_values = rng.standard_normal(1024).astype(np.float32)
    size = int(rng.integers(700, 1024))
    expected = _run(kernel, size, a_values)
    got = _run(simplified, size, a_values)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got[:size], a_values[:size] * np.float32(2))
    assert np.isnan(got[size:]).all()


def test_simplify_kernel_unrolls_single_trip_loops_and_refines_branches() -> None:
    kernel, _, out = _demo_kernel()
    j = Var("j", i64)
    body = Seq(
        (
            For(
                j,
                Const(2, i64),
                Const(3, i64),
                Const(1, i64),
                Store(out, (tid * 4 + E(j)).e, Const(1.0, f32)),
            ),
            If(
                (tid < 64).e,
                If((tid < 100).e, Store(out, tid.e, Const(2.0, f32))),  # implied by the outer
                If((tid >= 32).e, Store(out, tid.e, Const(3.0, f32))),  # tid >= 64 here
            ),
        )
    )
    simplified = simplify_kernel(LoopKernel(**{**kernel.__dict__, "body": body}))
    verify_loop_kernel(simplified)
    assert isinstance(simplified.body, Seq)
    first, second = simplified.body.body
    assert isinstance(first, Store) and format_expr(first.index) == "i64(threadIdx.x) * 4 + 2"
    assert isinstance(second, If)
    assert isinstance(second.then_body, Store) and isinstance(second.else_body, Store)


def test_simplify_kernel_keeps_a_block_whose_let_would_shadow() -> None:
    kernel, _, out = _demo_kernel()
    i = Var("i", i64)
    body = Seq(
        (
            Let(i, tid.e),
            If((tid < 128).e, Seq((Let(i, Const(5, i64)), Store(out, i, Const(1.0, f32))))),
            Store(out, i, Const(2.0, f32)),  # reads the outer i
        )
    )
    simplified = simplify_kernel(LoopKernel(**{**kernel.__dict__, "body": body}))
    verify_loop_kernel(simplified)
    assert isinstance(simplified.body, Seq)
    kept = simplified.body.body[1]
    assert isinstance(kept, If) and kept.cond == TRUE


def test_grid_and_block_ranges_come_from_the_kernel() -> None:
    kernel, _, out = _demo_kernel()
    body = Store(out, (bid // 2 + E(Cast(i64, BlockIdx(1))) * 7).e, Const(1.0, f32))
    simplified = simplify_kernel(LoopKernel(**{**kernel.__dict__, "body": body}))
    assert simplified.body == Store(out, Const(0, i64), Const(1.0, f32))


def test_one_thread_blocks_fold_the_thread_index() -> None:
    kernel, _, out = _demo_kernel()
    body = Store(out, (bid * 4 + tid).e, Const(1.0, f32))
    cpu = LoopKernel(**{**kernel.__dict__, "body": body, "block_threads": 1})
    assert format_expr(simplify_kernel(cpu).body.index) == "i64(blockIdx.x) * 4"  # type: ignore[attr-defined]


def test_unknown_statements_are_refused_by_name() -> None:
    @dataclass(frozen=True)
    class Fence(Stmt):
        pass

    kernel, _, _ = _demo_kernel()
    with pytest.raises(TypeError, match="Fence"):
        simplify_kernel(LoopKernel(**{**kernel.__dict__, "body": Fence()}))


def test_strides_of_loops_and_lets_fold_modulo_tests() -> None:
    """A loop variable stepping by 128 from 0 and a Let of ``(tid % 8) * 16`` are even:
    ``(k + t) % 2 == 0`` folds to true; ``(k + tid) % 2`` keeps its test, reduced to the
    thread index's part. The kernel computes the same either way."""
    kernel, _, out = _demo_kernel()
    k, t = Var("k", i64), Var("t", i64)
    slot = (E(k) // 128 * 4 + tid % 4).e  # distinct per iteration and thread, below 1024
    body = For(
        k, Const(0, i64), Const(1024, i64), Const(128, i64),
        Seq((
            Let(t, (tid % 8 * 16).e),
            If(((E(k) + E(t)) % 2).eq(0).e, Store(out, slot, Const(1.0, f32)),
               Store(out, slot, Const(2.0, f32))),
            If(((E(k) + tid) % 2).eq(0).e, Store(out, (E(slot) + 512).e, Const(3.0, f32))),
        )),
    )
    original = LoopKernel(**{**kernel.__dict__, "body": body})
    simplified = simplify_kernel(original)
    verify_loop_kernel(simplified)
    conds = [format_expr(s.cond) for s in walk_stmts(simplified.body) if isinstance(s, If)]
    assert conds == ["i64(threadIdx.x) % 2 == 0"], conds
    a_values = np.random.default_rng().standard_normal(1024).astype(np.float32)
    np.testing.assert_array_equal(_run(simplified, 1000, a_values), _run(original, 1000, a_values))


MULTIPLES = {"x": 4, "y": 3}  # x in -20..20 and y in 0..15 taking only such values


@settings(max_examples=150, deadline=None)
@given(expr=_EXPRESSIONS, data=st.data())
def test_simplified_expressions_keep_their_values_given_multiples(
    expr: E, data: st.DataObject
) -> None:
    simplified = simplify_expr(expr.e, RANGES, MULTIPLES)
    for _ in range(3):
        env = {name: data.draw(st.integers(r.lo, r.hi)) for name, r in RANGES.items()}
        for name, m in MULTIPLES.items():
            env[name] -= env[name] % m  # the multiple at or below, still in range
        assert evaluate(simplified, env) == evaluate(expr.e, env), format_expr(simplified)


def test_a_branch_knows_the_divisibility_its_condition_tests() -> None:
    """Inside ``if N % 16 == 0 && ...``, a test that follows from it folds (a row of N
    elements starting where a multiple of 8 would); outside, and in the else branch, it
    stays. The kernel computes the same either way."""
    kernel, _, out = _demo_kernel()
    big_n = Var("N", i64)
    row = Var("row", i64)

    def store_if_aligned() -> Stmt:
        aligned = Binary(BinaryOp.EQ, (E(row) % 8).e, Const(0, i64))
        return Seq((Let(row, (E(big_n) * bid).e),
                    If(aligned, Store(out, tid.e, Const(1.0, f32)),
                       Store(out, tid.e, Const(2.0, f32)))))

    divisible = Binary(BinaryOp.EQ, (E(big_n) % 16).e, Const(0, i64))
    body = Seq((
        If(Binary(BinaryOp.AND, divisible, (tid < 64).e), store_if_aligned(),
           store_if_aligned()),
        store_if_aligned(),
    ))
    original = LoopKernel(**{**kernel.__dict__, "body": body})
    simplified = simplify_kernel(original)
    verify_loop_kernel(simplified)
    branch = next(s for s in walk_stmts(simplified.body) if isinstance(s, If))
    tests = [s for s in walk_stmts(simplified.body) if isinstance(s, If)]
    assert not any(isinstance(s, If) for s in walk_stmts(branch.then_body))  # folded
    assert len(tests) == 3  # the branch, and the test in its else and after it
    rng = np.random.default_rng()
    a_values = rng.standard_normal(1024).astype(np.float32)
    for size in (int(rng.integers(1, 64)) * 16, int(rng.integers(1, 64)) * 16 + 8,
                 int(rng.integers(1, 1000)) * 2 + 1):
        np.testing.assert_array_equal(_run(simplified, size, a_values),
                                      _run(original, size, a_values))
