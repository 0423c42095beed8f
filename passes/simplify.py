"""Index simplification on Loop IR.

The lowering writes index arithmetic the way layouts compose it, e.g.
``((tid // 8) % 4) * 1024 + (v * 4 + tid % 8) * 1 + bid * 65536 + 0``; this pass rewrites it
into a short canonical form, folds bounds checks that the ranges of threads, blocks and loop
variables decide, and removes the code those checks guard. It is a plain term rewriter, fast
enough to run on every index of every kernel.

Signed integer expressions are normalized as polynomials: a sum of terms, each an integer
coefficient times a product of *atoms* (anything that is not ``+ - *``: variables, thread and
block indices, divisions, min/max, loads, casts). Constants are gathered, like terms
combined, constant factors distributed over sums, and the terms written back in a canonical
order (largest coefficient first, constant last). Floor division and modulo by a constant
split the polynomial into the multiple of the divisor and the rest, and the integer range
analysis (:mod:`tegula.passes.analysis.int_range`) decides what the rest contributes.

Unsigned integers wrap, so they get constant folding, identities and range-decided rewrites
only. Floats are folded only where the result is exact in the dtype, so the rewritten code
computes bit for bit what the original did. Everything else is rebuilt with its operands
simplified. Integer arithmetic is taken not to overflow (see the analysis module).

:func:`simplify_kernel` applies the rewriter to every expression of a kernel with the ranges
in scope, and removes branches and loops that the ranges show never run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from fractions import Fraction

from tegula.ir.dtypes import DType, Kind, boolean
from tegula.ir.loop import (
    Address,
    Asm,
    AtomicAdd,
    Barrier,
    Binary,
    BinaryOp,
    Bitcast,
    BlockIdx,
    Cast,
    Comment,
    Const,
    Copy,
    Expr,
    For,
    If,
    Let,
    Load,
    LoopKernel,
    Prefetch,
    Return,
    Select,
    Seq,
    ShuffleXor,
    Stmt,
    Store,
    ThreadIdx,
    Unary,
    UnaryOp,
    Var,
    walk_exprs,
)
from tegula.ir.printer_loop import format_expr

from .analysis.int_range import (
    THREAD_IDX,
    IntRange,
    IntRangeAnalysis,
    block_idx_name,
    int_range,
)

__all__ = ["simplify_expr", "simplify_kernel"]

# A product of atoms, sorted; () is the empty product, whose coefficient is the constant term.
Monomial = tuple[Expr, ...]
# A polynomial: monomial -> non-zero integer coefficient.
Poly = dict[Monomial, int]

_CONST: Monomial = ()

_NEGATED_COMPARISON = {
    BinaryOp.LT: BinaryOp.GE,
    BinaryOp.LE: BinaryOp.GT,
    BinaryOp.GT: BinaryOp.LE,
    BinaryOp.GE: BinaryOp.LT,
    BinaryOp.EQ: BinaryOp.NE,
    BinaryOp.NE: BinaryOp.EQ,
}
_SWAPPED_COMPARISON = {
    BinaryOp.LT: BinaryOp.GT,
    BinaryOp.LE: BinaryOp.GE,
    BinaryOp.GT: BinaryOp.LT,
    BinaryOp.GE: BinaryOp.LE,
    BinaryOp.EQ: BinaryOp.EQ,
    BinaryOp.NE: BinaryOp.NE,
}


def simplify_expr(
    e: Expr,
    ranges: Mapping[str, IntRange] | None = None,
    multiples: Mapping[str, int] | None = None,
) -> Expr:
    """``e`` rewritten into a simpler equivalent, given ranges for the names it reads.

    ``ranges`` maps ``Var`` names, and ``threadIdx.x`` / ``blockIdx.x|y|z``, to the values
    they may take; unlisted names are bounded by their dtype only. ``multiples`` maps names
    to a number their values are all multiples of (a loop variable stepping by 128 from 0):
    terms that are multiples of a modulus drop out of ``% c``.
    """
    return _ExprSimplifier(ranges, multiples).simplify(e)


def multiple_of(e: Expr, ranges: Mapping[str, IntRange], multiples: Mapping[str, int]) -> int:
    """The largest number ``e`` (a simplified signed integer expression) is known to be a
    multiple of, from its terms' coefficients and the ``multiples`` of the names in them (0
    for the constant 0)."""
    if not _is_polynomial(e.dtype):
        return 1
    simplifier = _ExprSimplifier(ranges, multiples)
    g = 0
    for mono, coef in simplifier._as_poly(e).items():
        g = math.gcd(g, coef * simplifier.atoms_multiple(mono))
    return g


# ----------------------------------------------------------------------------- polynomials


def _is_polynomial(dt: DType) -> bool:
    return dt.kind is Kind.SIGNED


def _const_poly(value: int) -> Poly:
    return {_CONST: value} if value else {}


def _add(p: Poly, q: Poly) -> Poly:
    out = dict(p)
    for mono, coef in q.items():
        total = out.get(mono, 0) + coef
        if total:
            out[mono] = total
        else:
            out.pop(mono, None)
    return out


def _scale(p: Poly, factor: int) -> Poly:
    return {mono: coef * factor for mono, coef in p.items()} if factor else {}


def _constant_of(p: Poly) -> int | None:
    """The value of a constant polynomial, or None when it has other terms."""
    if not p:
        return 0
    if len(p) == 1 and _CONST in p:
        return p[_CONST]
    return None


def _single_atom(p: Poly) -> Expr | None:
    """``a`` when ``p`` is exactly ``1 * a`` for one atom."""
    if len(p) == 1:
        ((mono, coef),) = p.items()
        if coef == 1 and len(mono) == 1:
            return mono[0]
    return None


def _positive_const(e: Expr) -> int | None:
    if isinstance(e, Const) and not isinstance(e.value, bool) and e.value > 0:
        return int(e.value)
    return None


def _wrap(value: int, dt: DType) -> int:
    """``value`` reduced to the dtype's width, as the hardware would hold it."""
    if dt.is_bool:
        return int(bool(value))
    span = 1 << dt.bits
    if dt.kind is Kind.UNSIGNED:
        return value % span
    return (value + span // 2) % span - span // 2


def _int_const(value: int, dt: DType) -> Const:
    return Const(_wrap(value, dt), dt)


def _bool_const(value: bool) -> Const:
    return Const(bool(value), boolean)


def _is_bool_const(e: Expr, value: bool) -> bool:
    return isinstance(e, Const) and e.dtype.is_bool and bool(e.value) is value


# ----------------------------------------------------------------------------- exact floats


def _exact_float(value: float | int, dt: DType) -> Fraction | None:
    """``value`` as an exact fraction when it is finite and representable in ``dt``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    exact = Fraction(value)
    as_double = float(exact) if abs(exact) < 2**1000 else math.inf
    if not math.isfinite(as_double) or Fraction(as_double) != exact:
        return None
    if dt.bits == 64:
        return exact
    if dt.numpy is None:
        return None  # no reference rounding for this type: do not fold
    narrowed = float(dt.to_numpy().type(as_double))
    return exact if narrowed == as_double else None


def _float_const(exact: Fraction, dt: DType) -> Const | None:
    """A Const holding ``exact`` when ``dt`` represents it exactly."""
    checked = _exact_float(float(exact), dt) if abs(exact) < 2**1000 else None
    return Const(float(exact), dt) if checked == exact else None


# ----------------------------------------------------------------------------- the rewriter


class _ExprSimplifier:
    """Simplifies expressions under one fixed set of ranges (caches by node)."""

    def __init__(
        self, ranges: Mapping[str, IntRange] | None, multiples: Mapping[str, int] | None = None
    ) -> None:
        self.range_of = IntRangeAnalysis(ranges)
        self.multiples: Mapping[str, int] = multiples or {}
        self._keys: dict[int, tuple[Expr, tuple[bool, str, str]]] = {}

    def atoms_multiple(self, mono: Monomial) -> int:
        """What the product of ``mono``'s atoms is known to be a multiple of."""
        m = 1
        for atom in mono:
            m *= self.atom_multiple(atom)
        return m

    def atom_multiple(self, atom: Expr) -> int:
        """What one atom is known to be a multiple of: a name's recorded multiple (also
        through a widening cast), and for a floor division by a constant ``c`` of a sum
        whose non-constant terms are all multiples of ``c``, what its exact quotient is:
        ``(Q + r) // c == Q / c + r // c`` (so ``(K * 4 + 7) // 8`` is a multiple of 8
        where ``K`` is one of 16)."""
        match atom:
            case Var(name=name):
                return self.multiples.get(name, 1)
            case Cast() if (name := _named_atom_key(atom)) is not None:  # widening: same value
                return self.multiples.get(name, 1)
            case Binary(op=BinaryOp.FLOORDIV, lhs=lhs, rhs=Const(value=c)) if (
                    isinstance(c, int) and c > 0 and _is_polynomial(lhs.dtype)):
                g, rest = 0, 0
                for mono, coef in self._as_poly(lhs).items():
                    if mono == _CONST:
                        rest = coef
                    else:
                        g = math.gcd(g, coef * self.atoms_multiple(mono))
                if g == 0 or g % c:
                    return 1
                return math.gcd(g // c, rest // c) or 1
        return 1

    # ------------------------------------------------------------------ entry

    def simplify(self, e: Expr) -> Expr:
        if _is_polynomial(e.dtype):
            return self._emit(self._poly(e), e.dtype)
        s = self._node(e)
        if s.dtype.is_int and not isinstance(s, Const):
            r = self.range_of(s)
            if r.is_point:
                assert r.lo is not None
                return Const(r.lo, s.dtype)
        return s

    # ------------------------------------------------------------------ signed: polynomials

    def _poly(self, e: Expr) -> Poly:
        """The polynomial of signed integer expression ``e``, simplified on the way."""
        match e:
            case Const(value=value):
                return _const_poly(int(value))
            case Binary(op=BinaryOp.ADD, lhs=lhs, rhs=rhs):
                return _add(self._poly(lhs), self._poly(rhs))
            case Binary(op=BinaryOp.SUB, lhs=lhs, rhs=rhs):
                return _add(self._poly(lhs), _scale(self._poly(rhs), -1))
            case Binary(op=BinaryOp.MUL, lhs=lhs, rhs=rhs):
                return self._mul(self._poly(lhs), self._poly(rhs), e.dtype)
            case Unary(op=UnaryOp.NEG, operand=x):
                return _scale(self._poly(x), -1)
            case Binary(op=BinaryOp.FLOORDIV | BinaryOp.MOD | BinaryOp.DIV):
                return self._division(e)
        return self._as_poly(self._node(e))

    def _as_poly(self, s: Expr) -> Poly:
        """The polynomial of an already simplified signed expression."""
        match s:
            case Const(value=value):
                return _const_poly(int(value))
            case Binary(op=BinaryOp.ADD, lhs=lhs, rhs=rhs):
                return _add(self._as_poly(lhs), self._as_poly(rhs))
            case Binary(op=BinaryOp.SUB, lhs=lhs, rhs=rhs):
                return _add(self._as_poly(lhs), _scale(self._as_poly(rhs), -1))
            case Binary(op=BinaryOp.MUL, lhs=lhs, rhs=rhs):
                return self._mul(self._as_poly(lhs), self._as_poly(rhs), s.dtype)
            case Unary(op=UnaryOp.NEG, operand=x):
                return _scale(self._as_poly(x), -1)
        return self._atom_poly(s)

    def _atom_poly(self, atom: Expr) -> Poly:
        r = self.range_of(atom)
        if r.is_point:
            assert r.lo is not None
            return _const_poly(r.lo)
        return {(atom,): 1}

    def _mul(self, p: Poly, q: Poly, dt: DType) -> Poly:
        if (c := _constant_of(p)) is not None:
            return _scale(q, c)
        if (c := _constant_of(q)) is not None:
            return _scale(p, c)
        if len(p) == 1 or len(q) == 1:
            # A single term distributes over a sum, so that like terms meet (writing back
            # factors it out again); a product of two sums stays a product, as expanding it
            # multiplies the terms.
            out: Poly = {}
            for m1, c1 in p.items():
                for m2, c2 in q.items():
                    out = _add(out, {self._sorted(m1 + m2): c1 * c2})
            return out
        factors = sorted((self._emit(p, dt), self._emit(q, dt)), key=self._key)
        return {(Binary(BinaryOp.MUL, factors[0], factors[1]),): 1}

    def _poly_range(self, p: Poly) -> IntRange:
        total = IntRange.point(0)
        for mono, coef in p.items():
            term = IntRange.point(coef)
            for atom in mono:
                term = term * self.range_of(atom)
            total = total + term
        return total

    # ------------------------------------------------------------------ division and modulo

    def _division(self, e: Binary) -> Poly:
        dt = e.dtype
        num = self._recombine(self._poly(e.lhs), dt)
        divisor = self.simplify(e.rhs)
        op = e.op
        if op is BinaryOp.DIV:
            # C division truncates; it is floor division when the quotient is non-negative.
            if not (
                self._poly_range(num).is_nonnegative() and self.range_of(divisor).is_positive()
            ):
                return self._opaque_division(op, num, divisor, dt)
            op = BinaryOp.FLOORDIV
        if isinstance(divisor, Const) and divisor.value != 0:
            c = int(divisor.value)
            if op is BinaryOp.FLOORDIV:
                return self._floordiv_const(num, c, dt)
            return self._mod_const(num, c, dt)
        return self._divide_symbolic(op, num, divisor, dt)

    def _opaque_division(self, op: BinaryOp, num: Poly, divisor: Expr, dt: DType) -> Poly:
        n = _constant_of(num)
        if n is not None and isinstance(divisor, Const):
            folded = _fold_int(op, n, int(divisor.value), dt)
            if folded is not None:
                return _const_poly(_wrap(folded, dt))
        if isinstance(divisor, Const) and divisor.value == 1:
            return num
        return self._atom_poly(Binary(op, self._emit(num, dt), divisor))

    @staticmethod
    def _split(num: Poly, c: int) -> tuple[Poly, Poly]:
        """``num = c * quotient + rest``: the terms whose coefficient ``c`` divides.

        The constant stays in the rest: ``(x + 9) // 8`` is cheaper than ``(x + 1) // 8 + 1``,
        and the range test on the rest is blind to whole periods anyway.
        """
        quotient: Poly = {}
        rest: Poly = {}
        for mono, coef in num.items():
            if mono != _CONST and coef % c == 0:
                quotient[mono] = coef // c
            else:
                rest[mono] = coef
        return quotient, rest

    def _floordiv_const(self, num: Poly, c: int, dt: DType) -> Poly:
        if c < 0:  # x // -c == (-x) // c
            num, c = _scale(num, -1), -c
        if c == 1:
            return num
        quotient, rest = self._split(self._recombine(num, dt), c)
        if not rest:
            return quotient
        g = math.gcd(c, *rest.values())  # (g*r) // (g*c) == r // c
        rest, c = {mono: coef // g for mono, coef in rest.items()}, c // g
        if c == 1:
            return _add(quotient, rest)
        r = self._poly_range(rest)
        if r.is_bounded:
            assert r.lo is not None and r.hi is not None
            if r.lo // c == r.hi // c:
                return _add(quotient, _const_poly(r.lo // c))
        atom = _single_atom(rest)
        if isinstance(atom, Binary) and (inner := _positive_const(atom.rhs)) is not None:
            if atom.op is BinaryOp.FLOORDIV:  # (x // a) // c == x // (a*c)
                return _add(quotient, self._floordiv_const(self._as_poly(atom.lhs), inner * c, dt))
            if atom.op is BinaryOp.MOD and inner % c == 0:  # (x % (c*b)) // c == (x // c) % b
                digit = self._floordiv_const(self._as_poly(atom.lhs), c, dt)
                return _add(quotient, self._mod_const(digit, inner // c, dt))
        return _add(
            quotient, self._atom_poly(_div_atom(BinaryOp.FLOORDIV, self._emit(rest, dt), c))
        )

    def _mod_const(self, num: Poly, c: int, dt: DType) -> Poly:
        if c < 0:  # x % -c == -((-x) % c)
            return _scale(self._mod_const(_scale(num, -1), -c, dt), -1)
        if c == 1:
            return {}
        _, rest = self._split(self._recombine(num, dt), c)
        # Terms whose atoms are multiples (a loop variable's stride) are whole periods too.
        rest = {mono: coef for mono, coef in rest.items()
                if mono == _CONST or coef * self.atoms_multiple(mono) % c}
        if _CONST in rest:  # whole periods of the constant drop out; keep it small
            k = rest[_CONST] % c
            rest = _add(rest, _const_poly((k if 2 * k <= c else k - c) - rest[_CONST]))
        if not rest:
            return {}
        g = math.gcd(c, *rest.values())  # (g*r) % (g*c) == g * (r % c)
        rest, c = {mono: coef // g for mono, coef in rest.items()}, c // g
        if c == 1:
            return {}
        r = self._poly_range(rest)
        if r.is_bounded:
            assert r.lo is not None and r.hi is not None
            if r.lo // c == r.hi // c:  # one period: the modulo is a shift
                return _scale(_add(rest, _const_poly(-(r.lo // c) * c)), g)
        atom = _single_atom(rest)
        if isinstance(atom, Binary) and atom.op is BinaryOp.MOD:
            inner = _positive_const(atom.rhs)
            if inner is not None and inner % c == 0:  # (x % (c*b)) % c == x % c
                return _scale(self._mod_const(self._as_poly(atom.lhs), c, dt), g)
        return _scale(self._atom_poly(_div_atom(BinaryOp.MOD, self._emit(rest, dt), c)), g)

    def _divide_symbolic(self, op: BinaryOp, num: Poly, divisor: Expr, dt: DType) -> Poly:
        d_range = self.range_of(divisor)
        if d_range.is_positive():
            quotient: Poly = {}
            rest = num
            d_atom = _single_atom(self._as_poly(divisor))
            if d_atom is not None:
                # Terms holding the divisor as a factor are whole multiples of it.
                quotient, rest = {}, {}
                for mono, coef in num.items():
                    if d_atom in mono:
                        quotient[_without(mono, d_atom)] = coef
                    else:
                        rest[mono] = coef
            r = self._poly_range(rest)
            assert d_range.lo is not None
            below_divisor = r.is_nonnegative() and r.below(d_range.lo)
            if op is BinaryOp.FLOORDIV:
                if below_divisor or not rest:
                    return quotient
                return _add(quotient, self._atom_poly(Binary(op, self._emit(rest, dt), divisor)))
            if below_divisor or not rest:
                return rest
            return self._atom_poly(Binary(op, self._emit(rest, dt), divisor))
        return self._opaque_division(op, num, divisor, dt)

    # ------------------------------------------------------------------ recombination

    def _recombine(self, p: Poly, dt: DType) -> Poly:
        """Put split digits back together.

        ``a*c*(x // c) + a*(x % c) -> a*x``, ``a*c*((x // c) % d) + a*(x % c) -> a*(x % (c*d))``
        and ``a*x - a*c*(x // c) -> a*(x % c)``: what is left of a layout's coordinate split
        once its pieces land back next to each other.
        """
        changed = True
        while changed:
            changed = False
            for mono, coef in p.items():
                if len(mono) != 1 or not isinstance(mono[0], Binary):
                    continue
                merged = self._merge_digit(p, mono[0], coef, dt)
                if merged is not None:
                    p, changed = merged, True
                    break
        return p

    def _merge_digit(self, p: Poly, atom: Binary, coef: int, dt: DType) -> Poly | None:
        c = _positive_const(atom.rhs)
        if c is None:
            return None
        x = atom.lhs
        if atom.op is BinaryOp.MOD:
            high = (Binary(BinaryOp.FLOORDIV, x, atom.rhs),)
            if p.get(high) == coef * c:
                without = _add(p, {(atom,): -coef, high: -coef * c})
                return _add(without, _scale(self._as_poly(x), coef))
            for mono, high_coef in p.items():
                if high_coef != coef * c or len(mono) != 1:
                    continue
                digit = mono[0]
                if (
                    isinstance(digit, Binary)
                    and digit.op is BinaryOp.MOD
                    and isinstance(digit.lhs, Binary)
                    and digit.lhs.op is BinaryOp.FLOORDIV
                    and digit.lhs.lhs == x
                    and digit.lhs.rhs == atom.rhs
                    and (d := _positive_const(digit.rhs)) is not None
                ):
                    without = _add(p, {(atom,): -coef, mono: -high_coef})
                    return _add(without, _scale(self._mod_const(self._as_poly(x), c * d, dt), coef))
        elif atom.op is BinaryOp.FLOORDIV and coef % c == 0:
            a = -coef // c
            x_poly = self._as_poly(x)
            if len(x_poly) == 1 and _CONST not in x_poly:
                ((x_mono, x_coef),) = x_poly.items()
                if p.get(x_mono) == a * x_coef:
                    without = _add(p, {(atom,): -coef, x_mono: -a * x_coef})
                    return _add(without, _scale(self._mod_const(x_poly, c, dt), a))
        return None

    # ------------------------------------------------------------------ writing back

    def _key(self, e: Expr) -> tuple[bool, str, str]:
        """The canonical order of atoms: by their text, capitalized names last.

        Capitalized names are sizes and strides by convention, so ``row * C`` reads as the
        index times the stride.
        """
        hit = self._keys.get(id(e))
        if hit is not None and hit[0] is e:
            return hit[1]
        text = format_expr(e)
        key = (text[:1].isupper(), text.lower(), text)
        self._keys[id(e)] = (e, key)
        return key

    def _sorted(self, mono: Monomial) -> Monomial:
        return tuple(sorted(mono, key=self._key))

    def _emit(self, p: Poly, dt: DType) -> Expr:
        """The expression of polynomial ``p``, factored so that it multiplies little.

        Pieces come by falling coefficient, the constant last; see :meth:`_pieces`.
        """
        p = self._recombine(p, dt)
        constant = p.get(_CONST, 0)
        pieces = sorted(self._pieces(p, dt), key=lambda piece: piece[2])
        positive = [e for e, sign, _ in pieces if sign > 0]
        negative = [e for e, sign, _ in pieces if sign < 0]
        if positive:
            out = positive[0]
            for term in positive[1:]:
                out = Binary(BinaryOp.ADD, out, term)
        elif constant > 0 and negative:
            out, constant = _int_const(constant, dt), 0
        elif negative:
            out = Unary(UnaryOp.NEG, negative.pop(0))
        else:
            return _int_const(constant, dt)
        for term in negative:
            out = Binary(BinaryOp.SUB, out, term)
        if constant > 0:
            out = Binary(BinaryOp.ADD, out, _int_const(constant, dt))
        elif constant < 0:
            out = Binary(BinaryOp.SUB, out, _int_const(-constant, dt))
        return out

    def _pieces(self, p: Poly, dt: DType) -> list[tuple[Expr, int, tuple[object, ...]]]:
        """The non-constant terms of ``p`` as (magnitude, sign, sort key) pieces.

        The polynomial is kept fully distributed so that like terms meet; written out, that
        would repeat multiplications. So an atom shared by several terms is factored out
        (``a*N + b*N -> (a + b) * N``, the most shared first), and terms with the same
        coefficient share one multiplication (``a*32 + b*32 -> (a + b) * 32``).
        """
        terms = {mono: coef for mono, coef in p.items() if mono != _CONST}
        pieces: list[tuple[Expr, int, tuple[object, ...]]] = []

        def add_piece(e: Expr, coef: int, weight: int, degree: int) -> None:
            pieces.append((e, 1 if coef > 0 else -1, (-weight, -degree, self._key(e))))

        while True:
            counts: dict[Expr, int] = {}
            for mono in terms:
                for atom in dict.fromkeys(mono):
                    counts[atom] = counts.get(atom, 0) + 1
            shared = [atom for atom, count in counts.items() if count >= 2]
            if not shared:
                break
            best = min(shared, key=lambda atom: (-counts[atom], self._key(atom)))
            group = {mono: coef for mono, coef in terms.items() if best in mono}
            for mono in group:
                del terms[mono]
            inner = {_without(mono, best): coef for mono, coef in group.items()}
            sign = -1 if all(coef < 0 for coef in inner.values()) else 1
            product = Binary(BinaryOp.MUL, self._emit(_scale(inner, sign), dt), best)
            weight = max(abs(coef) for coef in group.values())
            add_piece(product, sign, weight, max(len(mono) for mono in group))

        by_coef: dict[int, list[Monomial]] = {}
        for mono, coef in terms.items():
            by_coef.setdefault(coef, []).append(mono)
        for coef, monos in by_coef.items():
            if abs(coef) > 1 and len(monos) >= 2:
                shared_factor = self._emit(dict.fromkeys(monos, 1), dt)
                product = Binary(BinaryOp.MUL, shared_factor, _int_const(abs(coef), dt))
                add_piece(product, coef, abs(coef), max(len(mono) for mono in monos))
            else:
                for mono in monos:
                    add_piece(self._term(mono, abs(coef), dt), coef, abs(coef), len(mono))
        return pieces

    @staticmethod
    def _term(mono: Monomial, coef: int, dt: DType) -> Expr:
        out = mono[0]
        for atom in mono[1:]:
            out = Binary(BinaryOp.MUL, out, atom)
        if coef != 1:
            out = Binary(BinaryOp.MUL, out, _int_const(coef, dt))
        return out

    # ------------------------------------------------------------------ every other node

    def _node(self, e: Expr) -> Expr:
        """``e`` with its operands simplified and its own rules applied."""
        match e:
            case Const() | Var() | ThreadIdx() | BlockIdx():
                return e
            case Binary(op=op) if op.is_comparison:
                return self._comparison(op, self.simplify(e.lhs), self.simplify(e.rhs))
            case Binary(op=BinaryOp.AND | BinaryOp.OR):
                return self._logical(e.op, self.simplify(e.lhs), self.simplify(e.rhs))
            case Binary(op=op, lhs=lhs, rhs=rhs):
                a, b = self.simplify(lhs), self.simplify(rhs)
                if e.dtype.is_float:
                    return self._float_binary(op, a, b)
                if e.dtype.is_int:
                    return self._int_binary(op, a, b)
                return _fold_bool_binary(op, a, b)
            case Unary(op=op, operand=x):
                return self._unary(op, self.simplify(x))
            case Select(cond=cond, if_true=if_true, if_false=if_false):
                return self._select(cond, if_true, if_false)
            case Cast(type=dt, operand=x):
                return _cast(dt, self.simplify(x))
            case Bitcast(type=dt, operand=x):
                return Bitcast(dt, self.simplify(x))
            case Load(buffer=buf, index=index):
                return Load(buf, self.simplify(index))
            case ShuffleXor(value=value, lane_mask=mask):
                return ShuffleXor(self.simplify(value), mask)
            case Address(buffer=buf, index=index):
                return Address(buf, self.simplify(index))
        raise TypeError(f"simplify: unknown expression {type(e).__name__}")

    def _int_binary(self, op: BinaryOp, a: Expr, b: Expr) -> Expr:
        """Integer ops outside the polynomial form (and every op on unsigned ints)."""
        dt = a.dtype
        if isinstance(a, Const) and isinstance(b, Const):
            folded = _fold_int(op, int(a.value), int(b.value), dt)
            if folded is not None:
                return _int_const(folded, dt)
        zero, one = _is_int_const(b, 0), _is_int_const(b, 1)
        match op:
            case BinaryOp.ADD | BinaryOp.BITOR | BinaryOp.BITXOR | BinaryOp.SHL | BinaryOp.SHR:
                if zero:
                    return a
                if _is_int_const(a, 0) and op in (BinaryOp.ADD, BinaryOp.BITOR, BinaryOp.BITXOR):
                    return b
                if op is BinaryOp.BITXOR and a == b:
                    return _int_const(0, dt)
            case BinaryOp.SUB:
                if zero:
                    return a
                if a == b:
                    return _int_const(0, dt)
            case BinaryOp.MUL:
                if one or _is_int_const(a, 0):
                    return a
                if zero or _is_int_const(a, 1):
                    return b
            case BinaryOp.DIV | BinaryOp.FLOORDIV:
                if one:
                    return a
                if self._below(a, b):
                    return _int_const(0, dt)
            case BinaryOp.MOD:
                if one:
                    return _int_const(0, dt)
                if self._below(a, b):
                    return a
            case BinaryOp.BITAND:
                if zero or _is_int_const(a, 0):
                    return _int_const(0, dt)
                if a == b:
                    return a
                if isinstance(b, Const) and self._is_low_bits_mask(a, int(b.value)):
                    return a
            case BinaryOp.MIN | BinaryOp.MAX:
                return self._min_max(op, a, b)
        return Binary(op, a, b)

    def _below(self, a: Expr, b: Expr) -> bool:
        """``0 <= a < b`` for every value: then ``a // b == 0`` and ``a % b == a``."""
        ra, rb = self.range_of(a), self.range_of(b)
        return ra.is_nonnegative() and rb.lo is not None and ra.below(rb.lo)

    def _is_low_bits_mask(self, a: Expr, mask: int) -> bool:
        r = self.range_of(a)
        return (
            mask >= 0
            and mask & (mask + 1) == 0
            and r.is_nonnegative()
            and r.within(IntRange(0, mask))
        )

    def _difference_range(self, a: Expr, b: Expr) -> IntRange:
        """The range of ``a - b``; exact cancellation where the type allows it."""
        if _is_polynomial(a.dtype):
            diff = self._recombine(_add(self._as_poly(a), _scale(self._as_poly(b), -1)), a.dtype)
            return self._poly_range(diff)
        return self.range_of(a) - self.range_of(b)  # ranges of values, not of wrapped results

    def _min_max(self, op: BinaryOp, a: Expr, b: Expr) -> Expr:
        dt = a.dtype
        if a == b:
            return a
        diff = self._difference_range(a, b)
        if diff.below(1):  # a <= b
            return a if op is BinaryOp.MIN else b
        if diff.above(-1):
            return b if op is BinaryOp.MIN else a
        if isinstance(a, Const):
            a, b = b, a
        if (
            isinstance(b, Const)
            and isinstance(a, Binary)
            and a.op is op
            and isinstance(a.rhs, Const)
        ):  # min(min(x, c1), c2) == min(x, min(c1, c2))
            pick = min if op is BinaryOp.MIN else max
            inner = _int_const(pick(int(a.rhs.value), int(b.value)), dt)
            return self._min_max(op, a.lhs, inner)
        if not isinstance(b, Const) and self._key(b) < self._key(a):
            a, b = b, a
        return Binary(op, a, b)

    def _comparison(self, op: BinaryOp, a: Expr, b: Expr) -> Expr:
        dt = a.dtype
        if dt.is_int or dt.is_bool:
            if dt.is_int:
                decided = _decide(op, self._difference_range(a, b))
                if decided is not None:
                    return _bool_const(decided)
            elif isinstance(a, Const) and isinstance(b, Const):
                return _bool_const(_compare(op, int(a.value), int(b.value)))
            if _is_polynomial(dt):
                a, b = self._normalize_comparison(a, b)
            return Binary(op, a, b)
        if isinstance(a, Const) and isinstance(b, Const):
            x, y = _exact_float(a.value, dt), _exact_float(b.value, dt)
            if x is not None and y is not None:
                return _bool_const(_compare(op, x, y))
        return Binary(op, a, b)

    def _normalize_comparison(self, a: Expr, b: Expr) -> tuple[Expr, Expr]:
        """Cancel terms both sides share, and move a constant onto a constant side."""
        dt = a.dtype
        lhs, rhs = self._as_poly(a), self._as_poly(b)
        shared = [m for m in lhs if m != _CONST and rhs.get(m) == lhs[m]]
        if not shared and not (_constant_of(rhs) is not None and _CONST in lhs):
            return a, b
        for mono in shared:
            lhs, rhs = _add(lhs, {mono: -lhs[mono]}), _add(rhs, {mono: -rhs[mono]})
        if _constant_of(rhs) is not None and _constant_of(lhs) is None:
            k = _const_poly(-lhs.get(_CONST, 0))
            lhs, rhs = _add(lhs, k), _add(rhs, k)
        return self._emit(lhs, dt), self._emit(rhs, dt)

    def _logical(self, op: BinaryOp, a: Expr, b: Expr) -> Expr:
        """``&&`` / ``||`` chains without constants or repeated operands.

        Operands keep their order (a later one may rely on an earlier one, as a load on its
        bounds check); only repeats and neutral constants go.
        """
        absorbing = op is BinaryOp.OR  # true absorbs an OR, false an AND
        operands: list[Expr] = []
        for x in (*_chain(op, a), *_chain(op, b)):
            if _is_bool_const(x, absorbing):
                return _bool_const(absorbing)
            if not _is_bool_const(x, not absorbing) and x not in operands:
                operands.append(x)
        if not operands:
            return _bool_const(not absorbing)
        if op is BinaryOp.AND:
            operands = self._drop_implied(operands)
        out = operands[0]
        for x in operands[1:]:
            out = Binary(op, out, x)
        return out

    def _drop_implied(self, conjuncts: list[Expr]) -> list[Expr]:
        """Conjuncts without the bounds that another conjunct implies.

        ``i + 3 < N`` implies ``i < N``. A bound implied only by a later conjunct goes only
        when nothing in between loads: a load may rely on the earlier bound.
        """
        bounds = [self._as_nonpositive(c) for c in conjuncts]
        keep = [True] * len(conjuncts)
        for i, bound in enumerate(bounds):
            if bound is None:
                continue
            for j, other in enumerate(bounds):
                if j == i or other is None or not keep[j]:
                    continue
                if self._poly_range(_add(bound, _scale(other, -1))).below(1) and (
                    j < i or not any(_has_load(c) for c in conjuncts[i + 1 : j + 1])
                ):
                    keep[i] = False
                    break
        return [c for c, kept in zip(conjuncts, keep, strict=True) if kept]

    def _as_nonpositive(self, e: Expr) -> Poly | None:
        """``P`` with ``e`` equivalent to ``P <= 0``, for an ordering of signed integers."""
        if not (isinstance(e, Binary) and _is_polynomial(e.lhs.dtype)):
            return None
        lhs, rhs = self._as_poly(e.lhs), self._as_poly(e.rhs)
        match e.op:
            case BinaryOp.LE:
                return _add(lhs, _scale(rhs, -1))
            case BinaryOp.LT:
                return _add(_add(lhs, _scale(rhs, -1)), _const_poly(1))
            case BinaryOp.GE:
                return _add(rhs, _scale(lhs, -1))
            case BinaryOp.GT:
                return _add(_add(rhs, _scale(lhs, -1)), _const_poly(1))
        return None

    def _select(self, cond: Expr, if_true: Expr, if_false: Expr) -> Expr:
        c = self.simplify(cond)
        if isinstance(c, Const):
            return self.simplify(if_true if c.value else if_false)
        a, b = self.simplify(if_true), self.simplify(if_false)
        if a == b:
            return a
        if a.dtype.is_bool and isinstance(a, Const) and isinstance(b, Const):
            return c if a.value else self._unary(UnaryOp.NOT, c)
        return Select(c, a, b)

    def _unary(self, op: UnaryOp, x: Expr) -> Expr:
        dt = x.dtype
        if isinstance(x, Unary) and x.op is op and op in (UnaryOp.NEG, UnaryOp.NOT, UnaryOp.BITNOT):
            return x.operand  # involutions (exact for floats too)
        if op is UnaryOp.NOT:
            if isinstance(x, Const):
                return _bool_const(not x.value)
            if isinstance(x, Binary) and x.op.is_comparison and x.lhs.dtype.is_int:
                return Binary(_NEGATED_COMPARISON[x.op], x.lhs, x.rhs)
            return Unary(op, x)
        if dt.is_int:
            if isinstance(x, Const):
                v = int(x.value)
                folded = {UnaryOp.NEG: -v, UnaryOp.ABS: abs(v), UnaryOp.BITNOT: ~v}.get(op)
                if folded is not None:
                    return _int_const(folded, dt)
            if op is UnaryOp.ABS and dt.kind is Kind.SIGNED:
                r = self.range_of(x)
                if r.is_nonnegative():
                    return x
                if (-r).is_nonnegative():
                    return self._emit(_scale(self._as_poly(x), -1), dt)
            return Unary(op, x)
        if dt.is_float and isinstance(x, Const):
            exact = _exact_float(x.value, dt)
            if exact is not None:
                folded_float = {
                    UnaryOp.NEG: -exact,
                    UnaryOp.ABS: abs(exact),
                    UnaryOp.FLOOR: Fraction(math.floor(exact)),
                    UnaryOp.CEIL: Fraction(math.ceil(exact)),
                }.get(op)
                if folded_float is not None and not (op is UnaryOp.NEG and exact == 0):
                    # (-0.0 is a different float from 0.0: leave negated zeros alone)
                    result = _float_const(folded_float, dt)
                    if result is not None:
                        return result
        return Unary(op, x)

    def _float_binary(self, op: BinaryOp, a: Expr, b: Expr) -> Expr:
        dt = a.dtype
        if isinstance(a, Const) and isinstance(b, Const):
            x, y = _exact_float(a.value, dt), _exact_float(b.value, dt)
            if x is not None and y is not None:
                exact = _fold_exact(op, x, y)
                if exact is not None:
                    folded = _float_const(exact, dt)
                    if folded is not None:
                        return folded
        # Identities that hold bit for bit, NaNs, infinities and signed zeros included.
        if op in (BinaryOp.MUL, BinaryOp.DIV) and _is_float_const(b, 1.0):
            return a
        if op is BinaryOp.MUL and _is_float_const(a, 1.0):
            return b
        if op is BinaryOp.SUB and _is_positive_zero(b):
            return a
        return Binary(op, a, b)


# ----------------------------------------------------------------------------- folding helpers


def _without(mono: Monomial, atom: Expr) -> Monomial:
    """``mono`` with one occurrence of ``atom`` taken out."""
    i = mono.index(atom)
    return mono[:i] + mono[i + 1 :]


def _div_atom(op: BinaryOp, x: Expr, c: int) -> Binary:
    return Binary(op, x, _int_const(c, x.dtype))


def _has_load(e: Expr) -> bool:
    return any(isinstance(sub, Load) for sub in walk_exprs(e))


def _chain(op: BinaryOp, e: Expr) -> list[Expr]:
    """The operands of a chain of ``op`` (``a && (b && c)`` -> a, b, c)."""
    if isinstance(e, Binary) and e.op is op:
        return _chain(op, e.lhs) + _chain(op, e.rhs)
    return [e]


def _is_int_const(e: Expr, value: int) -> bool:
    return isinstance(e, Const) and not e.dtype.is_bool and e.value == value


def _is_float_const(e: Expr, value: float) -> bool:
    return isinstance(e, Const) and e.dtype.is_float and e.value == value


def _is_positive_zero(e: Expr) -> bool:
    return _is_float_const(e, 0.0) and math.copysign(1.0, float(e.value)) > 0  # type: ignore[arg-type]


def _compare(op: BinaryOp, x: int | Fraction, y: int | Fraction) -> bool:
    match op:
        case BinaryOp.LT:
            return x < y
        case BinaryOp.LE:
            return x <= y
        case BinaryOp.GT:
            return x > y
        case BinaryOp.GE:
            return x >= y
        case BinaryOp.EQ:
            return x == y
        case BinaryOp.NE:
            return x != y
    raise ValueError(f"{op} is not a comparison")


def _decide(op: BinaryOp, diff: IntRange) -> bool | None:
    """The truth of ``a op b`` when the range of ``a - b`` settles it, else None."""
    match op:
        case BinaryOp.LT:
            return True if diff.below(0) else False if diff.above(-1) else None
        case BinaryOp.LE:
            return True if diff.below(1) else False if diff.above(0) else None
        case BinaryOp.GT:
            return True if diff.above(0) else False if diff.below(1) else None
        case BinaryOp.GE:
            return True if diff.above(-1) else False if diff.below(0) else None
        case BinaryOp.EQ | BinaryOp.NE:
            if not diff.contains(0):
                return op is BinaryOp.NE
            if diff.is_point:
                return op is BinaryOp.EQ
    return None


def _fold_int(op: BinaryOp, a: int, b: int, dt: DType) -> int | None:
    """``a op b`` on exact integers; None where it is undefined (or not an integer op)."""
    match op:
        case BinaryOp.ADD:
            return a + b
        case BinaryOp.SUB:
            return a - b
        case BinaryOp.MUL:
            return a * b
        case BinaryOp.FLOORDIV:
            return a // b if b else None
        case BinaryOp.MOD:
            return a % b if b else None
        case BinaryOp.DIV:  # C: truncates toward zero
            return (abs(a) // abs(b)) * (1 if (a >= 0) == (b > 0) else -1) if b else None
        case BinaryOp.MIN:
            return min(a, b)
        case BinaryOp.MAX:
            return max(a, b)
        case BinaryOp.POW:
            return a**b if 0 <= b < 64 else None
        case BinaryOp.BITAND:
            return a & b
        case BinaryOp.BITOR:
            return a | b
        case BinaryOp.BITXOR:
            return a ^ b
        case BinaryOp.SHL:
            return a << b if 0 <= b < dt.bits else None
        case BinaryOp.SHR:
            return a >> b if 0 <= b < dt.bits else None
    return None


def _fold_exact(op: BinaryOp, x: Fraction, y: Fraction) -> Fraction | None:
    match op:
        case BinaryOp.ADD:
            return x + y
        case BinaryOp.SUB:
            return x - y
        case BinaryOp.MUL:
            return x * y
        case BinaryOp.DIV:
            return x / y if y else None
        case BinaryOp.MIN | BinaryOp.MAX if x != 0 and y != 0:
            # (fmin/fmax of signed zeros differ between targets: left alone)
            return min(x, y) if op is BinaryOp.MIN else max(x, y)
    return None


def _fold_bool_binary(op: BinaryOp, a: Expr, b: Expr) -> Expr:
    if isinstance(a, Const) and isinstance(b, Const):
        x, y = bool(a.value), bool(b.value)
        folded = {BinaryOp.BITAND: x and y, BinaryOp.BITOR: x or y, BinaryOp.BITXOR: x != y}
        if op in folded:
            return _bool_const(folded[op])
    return Binary(op, a, b)


def _cast(dt: DType, x: Expr) -> Expr:
    if x.dtype == dt:
        return x
    if not isinstance(x, Const):
        return Cast(dt, x)
    value = x.value
    if dt.is_bool:
        return _bool_const(value != 0)
    if dt.is_int:
        if x.dtype.is_float:
            if not math.isfinite(float(value)):
                return Cast(dt, x)
            truncated = math.trunc(value)
            if not IntRange.of_dtype(dt).contains(truncated):
                return Cast(dt, x)  # out of range: the target decides what happens
            return Const(truncated, dt)
        return _int_const(int(value), dt)
    if dt.is_float:
        exact = Fraction(int(value)) if not x.dtype.is_float else _exact_float(value, x.dtype)
        if exact is not None:
            folded = _float_const(exact, dt)
            if folded is not None:
                return folded
    return Cast(dt, x)


# ----------------------------------------------------------------------------- kernels


@dataclasses.dataclass
class _Scope:
    """What holds at one point of a statement list: the ranges and the names defined."""

    ranges: dict[str, IntRange]
    names: set[str]
    multiples: dict[str, int] = dataclasses.field(default_factory=dict)

    def nested(self) -> _Scope:
        return _Scope(dict(self.ranges), set(self.names), dict(self.multiples))

    def simplify(self, e: Expr) -> Expr:
        return simplify_expr(e, self.ranges, self.multiples)


def simplify_kernel(k: LoopKernel) -> LoopKernel:
    """``k`` with every expression simplified under the ranges in scope.

    Thread indices lie in ``[0, block_threads)``, block indices below the grid's extent,
    size symbols are non-negative, loop variables lie between their bounds and ``Let``
    variables in the range of their value. Branches whose condition folds are replaced by
    the branch taken, loops that never run are dropped, loops that run once with a constant
    start are replaced by their body, and nested statement lists are flattened.
    """
    ranges: dict[str, IntRange] = {s.name: IntRange(0, None) for s in k.symbols}
    grid = tuple(simplify_expr(extent, ranges) for extent in k.grid)
    ranges[THREAD_IDX] = IntRange(0, k.block_threads - 1)
    for axis, extent in enumerate(grid):
        top = int_range(extent, ranges).hi
        ranges[block_idx_name(axis)] = IntRange(0, None if top is None else max(top - 1, 0))
    names = {s.name for s in k.symbols} | {p.var.name for p in k.params if p.var is not None}
    body = _seq(_KernelSimplifier().stmts(k.body, _Scope(ranges, names)))
    return dataclasses.replace(k, grid=grid, body=body)  # type: ignore[arg-type]


def _seq(stmts: list[Stmt]) -> Stmt:
    return stmts[0] if len(stmts) == 1 else Seq(tuple(stmts))


class _KernelSimplifier:
    def stmts(self, s: Stmt, scope: _Scope) -> list[Stmt]:
        """``s`` simplified, as a flat list of statements to splice into the enclosing list."""

        simplify = scope.simplify

        match s:
            case Seq(body=body):
                return [out for child in body for out in self.stmts(child, scope)]
            case Comment() | Barrier() | Return():
                return [s]
            case Let(var=var, value=value):
                value = simplify(value)
                self._define(scope, var, value)
                return [Let(var, value)]
            case Store(buffer=buf, index=index, value=value):
                return [Store(buf, simplify(index), simplify(value))]
            case AtomicAdd(buffer=buf, index=index, value=value):
                return [AtomicAdd(buf, simplify(index), simplify(value))]
            case Prefetch(buffer=buf, index=index):
                return [Prefetch(buf, simplify(index))]
            case Copy():
                return self._copy(s, simplify)
            case Asm(outputs=outputs, inputs=inputs):
                return [
                    replace(
                        s,
                        outputs=tuple((b, simplify(i)) for b, i in outputs),
                        inputs=tuple(simplify(e) for e in inputs),
                    )
                ]
            case For():
                return self._for(s, scope)
            case If():
                return self._if(s, scope)
        raise TypeError(f"simplify_kernel: unknown statement {type(s).__name__}")

    @staticmethod
    def _define(scope: _Scope, var: Var, value: Expr | None) -> None:
        scope.names.add(var.name)
        scope.multiples.pop(var.name, None)  # a shadowed name loses what was known
        if value is not None and var.dtype.is_int:
            scope.ranges[var.name] = int_range(value, scope.ranges)
            m = multiple_of(value, scope.ranges, scope.multiples)
            if m > 1:
                scope.multiples[var.name] = m
        else:
            scope.ranges.pop(var.name, None)

    @staticmethod
    def _copy(c: Copy, simplify: Callable[[Expr], Expr]) -> list[Stmt]:
        predicate = None if c.predicate is None else simplify(c.predicate)
        fill = None if c.fill is None else simplify(c.fill)
        if predicate is not None and _is_bool_const(predicate, True):
            predicate, fill = None, None
        elif predicate is not None and _is_bool_const(predicate, False) and fill is None:
            return []  # masked off entirely, nothing to fill
        element = c.element_predicates
        if element is not None:
            element = tuple(simplify(p) for p in element)
            if all(_is_bool_const(p, True) for p in element):
                element = None
        return [
            dataclasses.replace(
                c,
                dst_index=simplify(c.dst_index),
                src_index=simplify(c.src_index),
                predicate=predicate,
                fill=fill,
                element_predicates=element,
            )
        ]

    def _for(self, loop: For, scope: _Scope) -> list[Stmt]:
        start = scope.simplify(loop.start)
        stop = scope.simplify(loop.stop)
        step = scope.simplify(loop.step)
        r_start, r_stop, r_step = (int_range(e, scope.ranges) for e in (start, stop, step))
        # The distance still to go, in the direction of the step: <= 0 means no iteration.
        lo: int | None = None
        hi: int | None = None
        distance: Expr | None = None
        if r_step.is_positive():
            distance = Binary(BinaryOp.SUB, stop, start)
            lo, hi = r_start.lo, None if r_stop.hi is None else r_stop.hi - 1
        elif (-r_step).is_positive():
            distance = Binary(BinaryOp.SUB, start, stop)
            lo, hi = None if r_stop.lo is None else r_stop.lo + 1, r_start.hi
        if lo is not None and hi is not None and lo > hi:
            return []
        var_range = IntRange(lo, hi) if distance is not None else None
        trips: IntRange | None = None
        if distance is not None:
            r_distance = int_range(scope.simplify(distance), scope.ranges)
            if r_distance.below(1):
                return []
            if isinstance(step, Const):
                s = abs(int(step.value))
                trips = IntRange(  # ceil(distance / s), at least 0
                    None if r_distance.lo is None else max(0, -(-r_distance.lo // s)),
                    None if r_distance.hi is None else -(-r_distance.hi // s),
                )
        body_scope = scope.nested()
        self._define(body_scope, loop.var, None)
        # Every value of the variable is start + i * step: a multiple of both's divisor.
        stride = multiple_of(start, scope.ranges, scope.multiples)
        stride = math.gcd(stride, multiple_of(step, scope.ranges, scope.multiples))
        if stride > 1:
            body_scope.multiples[loop.var.name] = stride
        if var_range is not None:
            known = var_range.intersect(IntRange.of_dtype(loop.var.dtype))
            if known is None:
                return []
            body_scope.ranges[loop.var.name] = known
        if trips is not None and trips.is_point and trips.lo == 1 and isinstance(start, Const):
            # One iteration from a known start: the variable is that constant in the body.
            body_scope.ranges[loop.var.name] = IntRange.point(int(start.value))
            body = self.stmts(loop.body, body_scope)
            if _hoistable(body, scope):
                return body
        else:
            body = self.stmts(loop.body, body_scope)
        if not body:
            return []
        return [replace(loop, start=start, stop=stop, step=step, body=_seq(body))]

    def _if(self, branch: If, scope: _Scope) -> list[Stmt]:
        cond = scope.simplify(branch.cond)
        then_ranges = _refine(cond, scope.ranges, True)
        else_ranges = _refine(cond, scope.ranges, False)
        if then_ranges is None:
            cond = _bool_const(False)
        elif else_ranges is None:
            cond = _bool_const(True)
        if isinstance(cond, Const):
            taken = branch.then_body if cond.value else branch.else_body
            if taken is None:
                return []
            body = self.stmts(taken, scope.nested())
            return body if _hoistable(body, scope) else [If(_bool_const(True), _seq(body))]
        assert then_ranges is not None and else_ranges is not None
        then_scope = _Scope(then_ranges, set(scope.names), dict(scope.multiples))
        for name, divisor in _divisibility(cond).items():  # e.g. a guard's `K % 8 == 0`
            then_scope.multiples[name] = math.lcm(then_scope.multiples.get(name, 1), divisor)
        then_body = self.stmts(branch.then_body, then_scope)
        else_scope = _Scope(else_ranges, set(scope.names), dict(scope.multiples))
        else_body = [] if branch.else_body is None else self.stmts(branch.else_body, else_scope)
        if not then_body and not else_body:
            return []
        if not then_body:
            negated = scope.simplify(Unary(UnaryOp.NOT, cond))
            return [If(negated, _seq(else_body))]
        return [If(cond, _seq(then_body), _seq(else_body) if else_body else None)]


def _divisibility(cond: Expr) -> dict[str, int]:
    """What ``cond`` being true says a name is a multiple of: one entry per conjunct of the
    form ``name % c == 0`` (for c > 0)."""
    match cond:
        case Binary(op=BinaryOp.AND, lhs=lhs, rhs=rhs):
            found = _divisibility(lhs)
            for name, c in _divisibility(rhs).items():
                found[name] = math.lcm(found.get(name, 1), c)
            return found
        case Binary(op=BinaryOp.EQ, lhs=Binary(op=BinaryOp.MOD, lhs=x, rhs=Const(value=c)),
                    rhs=Const(value=0)) if isinstance(c, int) and c > 0:
            name = _named_atom_key(x)
            return {name: c} if name is not None else {}
    return {}


def _hoistable(body: list[Stmt], scope: _Scope) -> bool:
    """Whether ``body`` can join the enclosing list without its Lets shadowing a name there."""
    return not any(isinstance(s, Let) and s.var.name in scope.names for s in body)


def _named_atom_key(e: Expr) -> str | None:
    """The ranges key of a variable or index, also seen through a widening cast."""
    match e:
        case Cast(type=dt, operand=inner) if dt.is_int and inner.dtype.is_int:
            if IntRange.of_dtype(inner.dtype).within(IntRange.of_dtype(dt)):
                return _named_atom_key(inner)
        case Var(name=name) if e.dtype.is_int:
            return name
        case ThreadIdx():
            return THREAD_IDX
        case BlockIdx(axis=axis):
            return block_idx_name(axis)
    return None


def _refine(cond: Expr, ranges: dict[str, IntRange], truth: bool) -> dict[str, IntRange] | None:
    """``ranges`` narrowed by knowing ``cond == truth``; None when that cannot happen.

    Understands comparisons of a variable (or thread/block index) with a constant, joined
    by ``&&`` (when true), ``||`` (when false) and ``!``; other conditions teach nothing.
    """
    match cond:
        case Const(value=value):
            return ranges if bool(value) is truth else None
        case Binary(op=BinaryOp.AND, lhs=lhs, rhs=rhs) if truth:
            narrowed = _refine(lhs, ranges, truth)
            return None if narrowed is None else _refine(rhs, narrowed, truth)
        case Binary(op=BinaryOp.OR, lhs=lhs, rhs=rhs) if not truth:
            narrowed = _refine(lhs, ranges, truth)
            return None if narrowed is None else _refine(rhs, narrowed, truth)
        case Unary(op=UnaryOp.NOT, operand=x):
            return _refine(x, ranges, not truth)
        case Binary(op=op, lhs=lhs, rhs=rhs) if op.is_comparison:
            if isinstance(lhs, Const) and _named_atom_key(rhs) is not None:
                lhs, rhs, op = rhs, lhs, _SWAPPED_COMPARISON[op]
            name = _named_atom_key(lhs)
            if name is None or not isinstance(rhs, Const) or rhs.dtype.is_bool:
                return ranges
            if not truth:
                op = _NEGATED_COMPARISON[op]
            c = int(rhs.value)
            bound = {
                BinaryOp.LT: IntRange(None, c - 1),
                BinaryOp.LE: IntRange(None, c),
                BinaryOp.GT: IntRange(c + 1, None),
                BinaryOp.GE: IntRange(c, None),
                BinaryOp.EQ: IntRange(c, c),
            }.get(op)
            if bound is None:
                return ranges
            known = int_range(lhs, ranges).intersect(bound)
            if known is None:
                return None
            return {**ranges, name: known}
    return ranges
