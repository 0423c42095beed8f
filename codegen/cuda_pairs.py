"""Half-precision loops two lanes at a time: ``f16x2`` / ``bf16x2`` instructions on CUDA.

A GPU's half-precision units take two lanes per instruction (``HFMA2``, ``HADD2``…), but
an unrolled loop over a thread's register elements states one scalar operation per element,
and ptxas pairs those only here and there. :func:`paired_loop` rewrites an unrolled loop
whose one statement computes in ``f16`` or ``bf16`` into statements on element pairs
``(2t, 2t + 1)``, each operation one two-lane instruction:

* an elementwise loop ``dst[i] = f(i)`` stores each pair as one 32-bit register;
* a sum ``acc = acc + f(i)`` keeps two lane sums and adds them into ``acc`` at the end.
  The terms are added in another order than the scalar loop's (even and odd elements
  apart), as a sum across threads already is; each lane's arithmetic is unchanged.

Operands pair up when they are (after the loop variable is replaced by each pair's values)
consecutive elements of a local half buffer (one register), one value for both lanes
(broadcast), constants, ``+ - *`` of pairs, or the exact decoding of two integer codes
(:func:`tegula.passes.lowbit_codes.int_to_float_exactly`) whose codes are bit fields of one
or two bytes of a local code buffer. Those two codes become one half2 in three instructions,
the byte permute / logic op / ``f16x2`` FMA conversion of Marlin-style kernels: a permute
puts each code's byte in its lane, one logic op masks the field in place, offsets it and sets
the exponent of ``2^m`` (``m`` mantissa bits; the lane reads ``2^m + code * 2^shift``), and
the FMA scales each lane by ``2^-shift`` and subtracts the bias, exactly. A loop with any
other operand keeps its scalar form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tegula.ir.dtypes import DType, i8, u8, u16
from tegula.ir.loop import (
    Binary,
    BinaryOp,
    Bitcast,
    Buffer,
    Cast,
    Comment,
    Const,
    Expr,
    For,
    Load,
    LoopKind,
    Scope,
    Seq,
    Stmt,
    Store,
    substitute,
    walk_exprs,
)

from .cuda_expr import CudaExprPrinter

MAX_PAIRS = 32  # a longer loop keeps its scalar form (straight-line pairs would be long)

# Per half type: the pair type, its two-lane operators, broadcast, the lanes' halves.
PAIR_TYPE = {"f16": "__half2", "bf16": "__nv_bfloat162"}
_PAIR_OP = {BinaryOp.ADD: "__hadd2", BinaryOp.SUB: "__hsub2", BinaryOp.MUL: "__hmul2"}
_BROADCAST = {"f16": "__half2half2", "bf16": "__bfloat162bfloat162"}
_LANES = {"f16": ("__low2half", "__high2half"), "bf16": ("__low2bfloat16", "__high2bfloat16")}
# Per half type, the kernel-file helper that reads a 32-bit word as a pair.
PAIR_FROM_BITS = {"f16": "half2_from_bits", "bf16": "bfloat162_from_bits"}
PAIR_HELPER = """\
__device__ __forceinline__ {P} {name}(unsigned int bits) {{
    return *reinterpret_cast<const {P}*>(&bits);
}}"""


@dataclass(frozen=True)
class LaneDecoding:
    """How a 32-bit word whose 16-bit lanes hold one code byte each (at bits 0 and 16)
    becomes the two codes' values: ``(word & mask) ^ pattern`` read as a pair ``p``, then
    ``p * scales + adds`` (one FMA per pair, exact)."""

    mask: int
    pattern: int
    scales: tuple[float, float]
    adds: tuple[float, float]


def lane_decoding(
    half: DType, mask: int, shifts: tuple[int, int], xor: int, units: int, base: float
) -> LaneDecoding | None:
    """The decoding of fields ``(byte >> shift) & mask`` as ``bitcast(units | (field ^
    xor)) - base`` does it one at a time, or None where the pair form is not exact.

    Masked in place, a field ``f`` at ``shift`` reads ``2^m + (f ^ xor) * 2^shift`` once
    ``units`` (the bits of ``2^m``, ``m`` the mantissa width) is set above it: exact while
    the field fits the mantissa. Scaling by ``2^-shift`` and adding ``2^m (1 - 2^-shift) -
    base`` leaves ``units``-plus-field minus ``base``, the one-at-a-time value; every step is
    exact in the half type when the constants are."""
    m = half.mantissa
    as_half = half.to_numpy()
    if float(np.asarray([units], dtype=np.uint16).view(as_half)[0]) != 2.0**m:
        return None
    if xor > mask or any(mask << s >= 1 << m for s in shifts):
        return None
    scales = (2.0 ** -shifts[0], 2.0 ** -shifts[1])
    adds = (2.0**m * (1 - scales[0]) - base, 2.0**m * (1 - scales[1]) - base)
    if any(float(np.asarray(v, dtype=as_half)) != v for v in adds):
        return None
    low, high = (mask << shifts[0], mask << shifts[1])
    pattern = (xor << shifts[0] | units) | (xor << shifts[1] | units) << 16
    # The masked fields are zero where the exponent's bits are: one xor sets both.
    return LaneDecoding(low | high << 16, pattern, scales, adds)


class _NoPair(Exception):
    """An operand the pair form does not cover: the loop stays scalar."""


@dataclass(frozen=True)
class _ByteField:
    """``(buffer[byte] >> shift) & mask`` of a local byte buffer (``u8``, or ``i8`` read as
    its bits)."""

    buffer: Buffer
    byte: int
    shift: int
    mask: int


def paired_loop(
    loop: For,
    printer: CudaExprPrinter,
    buffer_name: Callable[[Buffer], str],
    fresh: Callable[[str], str],
    simplify: Callable[[Expr], Expr],
) -> tuple[list[str], set[str]] | None:
    """The statements of ``loop`` on element pairs and the half types whose bits helper
    they call, or None when the loop is not one the pair form covers."""
    store = _single_store(loop)
    if store is None:
        return None
    extent = _constant_extent(loop)
    if extent is None or extent < 2 or extent % 2 or extent // 2 > MAX_PAIRS:
        return None

    def lane(expr: Expr, value: int) -> Expr:
        return simplify(substitute(expr, loop.var, Const(value, loop.var.dtype)))

    first = int(loop.start.value)  # type: ignore[attr-defined]
    indices = [lane(store.index, first + i) for i in range(extent)]
    values = [lane(store.value, first + i) for i in range(extent)]
    writer = _PairWriter(store.buffer, printer, buffer_name, fresh)
    if not all(isinstance(i, Const) for i in indices):
        return None
    try:
        lines = _sum_or_map(store, indices, values, writer, fresh)
    except _NoPair:
        return None
    return writer.constant_lines + lines, writer.helpers


def _single_store(loop: For) -> Store | None:
    if loop.kind is not LoopKind.UNROLL:
        return None
    body: Stmt = loop.body
    if isinstance(body, Seq):
        stores = [s for s in body.body if not isinstance(s, Comment)]
        if len(stores) != 1:
            return None
        body = stores[0]
    if not isinstance(body, Store):
        return None
    buf = body.buffer
    if buf.scope is not Scope.LOCAL or buf.dtype.name not in PAIR_TYPE:
        return None
    if isinstance(body.value, Load):  # a copy: no arithmetic to pair
        return None
    return body


def _constant_extent(loop: For) -> int | None:
    bounds = (loop.start, loop.stop, loop.step)
    if not all(isinstance(b, Const) for b in bounds) or loop.step.value != 1:  # type: ignore[attr-defined]
        return None
    return int(loop.stop.value) - int(loop.start.value)  # type: ignore[attr-defined]


def _sum_or_map(
    store: Store,
    indices: list[Expr],
    values: list[Expr],
    writer: _PairWriter,
    fresh: Callable[[str], str],
) -> list[str]:
    buf = store.buffer
    where = [int(i.value) for i in indices]  # type: ignore[attr-defined]
    name = buffer_name = writer.buffer_name(buf)
    half = buf.dtype.name
    pairs = range(0, len(values), 2)
    if len(set(where)) == 1:  # acc = acc + f(i), acc one element
        acc = Load(buf, indices[0])
        terms = [_term_of_sum(v, acc) for v in values]
        sums = fresh(f"{buffer_name}_pairs")
        lines: list[str] = []
        for t in pairs:
            term = writer.pair(terms[t], terms[t + 1])
            lines += writer.take_temporaries()
            lines.append(f"{PAIR_TYPE[half]} {sums} = {term};" if t == 0
                         else f"{sums} = __hadd2({sums}, {term});")
        low, high = _LANES[half]
        element = f"{name}[{where[0]}]"
        lines.append(f"{element} = __hadd({element}, __hadd({low}({sums}), {high}({sums})));")
        return lines
    if any(where[t] % 2 or where[t + 1] != where[t] + 1 for t in pairs):
        raise _NoPair
    writer.written = buf
    lines = []
    for t in pairs:
        value = writer.pair(values[t], values[t + 1])
        lines += writer.take_temporaries()
        lines.append(f"reinterpret_cast<{PAIR_TYPE[half]}*>({name})[{where[t] // 2}] = {value};")
    return lines


def _term_of_sum(value: Expr, acc: Load) -> Expr:
    """``f`` of ``acc + f`` (either order); ``f`` must not read ``acc``'s buffer."""
    if isinstance(value, Binary) and value.op is BinaryOp.ADD:
        for mine, term in ((value.lhs, value.rhs), (value.rhs, value.lhs)):
            if mine == acc and not _reads(term, acc.buffer):
                return term
    raise _NoPair


def _reads(e: Expr, buf: Buffer) -> bool:
    return any(isinstance(x, Load) and x.buffer == buf for x in walk_exprs(e))


class _PairWriter:
    """Prints two lanes' expressions as one two-lane expression."""

    def __init__(
        self,
        dst: Buffer,
        printer: CudaExprPrinter,
        buffer_name: Callable[[Buffer], str],
        fresh: Callable[[str], str],
    ) -> None:
        self.half = dst.dtype
        self.printer = printer
        self.buffer_name = buffer_name
        self.written: Buffer | None = None
        self.helpers: set[str] = set()
        self.constants: dict[int, str] = {}  # a constant pair's bits -> its C name
        self.constant_lines: list[str] = []
        self.fresh = fresh
        self.words: dict[tuple[Buffer, int], str] = {}  # a code buffer's 32-bit words, named
        self.temporaries: list[str] = []  # declarations the next statement reads

    def take_temporaries(self) -> list[str]:
        taken, self.temporaries = self.temporaries, []
        return taken

    def temporary(self, hint: str, ctype: str, value: str) -> str:
        name = self.fresh(hint)
        self.temporaries.append(f"const {ctype} {name} = {value};")
        return name

    @property
    def pair_type(self) -> str:
        return PAIR_TYPE[self.half.name]

    def pair(self, a: Expr, b: Expr) -> str:
        if a.dtype != self.half or b.dtype != self.half:
            raise _NoPair
        if isinstance(a, Const) and isinstance(b, Const):
            return self.bits(self.lane_bits(a.value) | self.lane_bits(b.value) << 16)
        if a == b and not (self.written is not None and _reads(a, self.written)):
            return f"{_BROADCAST[self.half.name]}({self.printer(a)})"
        if _decoded(a) is not None:
            return self.decoded_pair(a, b)
        if isinstance(a, Binary) and isinstance(b, Binary) and a.op is b.op:
            if a.op in _PAIR_OP:
                return f"{_PAIR_OP[a.op]}({self.pair(a.lhs, b.lhs)}, {self.pair(a.rhs, b.rhs)})"
            raise _NoPair
        if isinstance(a, Load) and isinstance(b, Load):
            return self.register_pair(a, b)
        raise _NoPair

    def register_pair(self, a: Load, b: Load) -> str:
        buf = a.buffer
        if buf != b.buffer or buf.scope is not Scope.LOCAL:
            raise _NoPair
        if not (isinstance(a.index, Const) and isinstance(b.index, Const)):
            raise _NoPair
        i, j = int(a.index.value), int(b.index.value)
        if i % 2 or j != i + 1:
            raise _NoPair
        return f"reinterpret_cast<const {self.pair_type}*>({self.buffer_name(buf)})[{i // 2}]"

    def decoded_pair(self, a: Expr, b: Expr) -> str:
        """Two exactly decoded integer codes (``bitcast(units | (code ^ h)) - base``)."""
        fa, fb = _decoded(a), _decoded(b)
        if fa is None or fb is None:
            raise _NoPair
        (field_a, xor, units, base), (field_b, *rest) = fa, fb
        if (xor, units, base) != tuple(rest) or field_a.mask != field_b.mask:
            raise _NoPair
        if field_a.buffer != field_b.buffer or field_a.buffer.scope is not Scope.LOCAL:
            raise _NoPair
        d = lane_decoding(self.half, field_a.mask, (field_a.shift, field_b.shift), xor, units,
                          base)
        if d is None:
            raise _NoPair
        word = self.byte_pair(field_a, field_b)
        bits = self.bits_of(f"({word} & 0x{d.mask:08x}u) ^ 0x{d.pattern:08x}u")
        if d.scales == (1.0, 1.0):
            value = f"__hsub2({bits}, {self.constant_pair(-d.adds[0], -d.adds[1])})"
        else:
            scales, adds = self.constant_pair(*d.scales), self.constant_pair(*d.adds)
            value = f"__hfma2({bits}, {scales}, {adds})"
        return self.temporary("decoded", self.pair_type, value)

    def byte_pair(self, a: _ByteField, b: _ByteField) -> str:
        """A 32-bit word holding byte ``a.byte`` in byte 0 and ``b.byte`` in byte 2 (bytes
        1 and 3 are copies, masked off by the caller)."""
        first = min(a.byte, b.byte) // 4
        last = max(a.byte, b.byte) // 4
        if last - first > 1:
            raise _NoPair
        low = self.word(a.buffer, first)
        high = self.word(a.buffer, last) if last != first else "0u"
        pa, pb = a.byte - 4 * first, b.byte - 4 * first
        select = pa | pa << 4 | pb << 8 | pb << 12
        return f"__byte_perm({low}, {high}, 0x{select:04x})"

    def word(self, buf: Buffer, index: int) -> str:
        """Word ``index`` of a code buffer, read into a named register once per loop."""
        if (buf, index) not in self.words:
            name = self.buffer_name(buf)
            value = f"reinterpret_cast<const unsigned int*>({name})[{index}]"
            self.words[buf, index] = self.temporary(f"{name}_word", "unsigned int", value)
        return self.words[buf, index]

    def lane_bits(self, value: float | int | bool) -> int:
        return int(np.asarray(float(value), dtype=self.half.to_numpy()).view(np.uint16))

    def constant_pair(self, low: float, high: float) -> str:
        return self.bits(self.lane_bits(low) | self.lane_bits(high) << 16)

    def bits(self, word: int) -> str:
        """A constant pair, named once per loop (with its lanes' values in a comment)."""
        if word not in self.constants:
            name = self.constants[word] = self.fresh("lanes")
            values = np.asarray([word], dtype=np.uint32).view(self.half.to_numpy())
            self.constant_lines.append(
                f"const {self.pair_type} {name} = {self.bits_of(f'0x{word:08x}u')};"
                f"  // ({float(values[0]):g}, {float(values[1]):g})"
            )
        return self.constants[word]

    def bits_of(self, word: str) -> str:
        self.helpers.add(self.half.name)
        return f"{PAIR_FROM_BITS[self.half.name]}({word})"


def _decoded(e: Expr) -> tuple[_ByteField, int, int, float] | None:
    """``(field, xor, units, base)`` of ``bitcast(units | cast(field ^ xor)) - base``."""
    if not (isinstance(e, Binary) and e.op is BinaryOp.SUB and isinstance(e.rhs, Const)):
        return None
    word = e.lhs.operand if isinstance(e.lhs, Bitcast) else None
    if word is None or word.dtype is not u16:
        return None
    if not (isinstance(word, Binary) and word.op is BinaryOp.BITOR):
        return None
    units, code = (word.rhs, word.lhs) if isinstance(word.rhs, Const) else (word.lhs, word.rhs)
    if not isinstance(units, Const):
        return None
    xor = 0
    code = _strip_casts(code)
    if isinstance(code, Binary) and code.op is BinaryOp.BITXOR and isinstance(code.rhs, Const):
        xor, code = int(code.rhs.value), code.lhs
    field = _byte_field(code)
    if field is None:
        return None
    return field, xor, int(units.value), float(e.rhs.value)


def _strip_casts(e: Expr) -> Expr:
    """``e`` without its integer casts to unsigned or wide types: a code is small and
    non-negative, so they keep its value (a cast to ``i8`` would not, nor would widening a
    signed byte, whose bits only ``cast(u8, ·)`` reads as a code)."""
    while (isinstance(e, Cast) and e.type.is_int and e.operand.dtype.is_int
           and (not e.type.is_signed or e.type.bits >= 16)
           and not (isinstance(e.operand, Load) and e.operand.dtype.is_signed)):
        e = e.operand
    return e


def _byte_field(e: Expr) -> _ByteField | None:
    e = _strip_casts(e)
    match e:
        case Load(buffer=buf, index=Const(value=index)) if buf.dtype is u8:
            return _ByteField(buf, int(index), 0, 0xFF)
        case Cast(type=dt, operand=Load(buffer=buf, index=Const(value=index))) if (
            dt is u8 and buf.dtype is i8
        ):
            return _ByteField(buf, int(index), 0, 0xFF)
        case Binary(op=BinaryOp.BITAND, lhs=inner, rhs=Const(value=mask)):
            field = _byte_field(inner)
            if field is None:
                return None
            return _ByteField(field.buffer, field.byte, field.shift, field.mask & int(mask))
        case Binary(op=BinaryOp.SHR, lhs=inner, rhs=Const(value=shift)):
            field = _byte_field(inner)
            if field is None:
                return None
            return _ByteField(field.buffer, field.byte, field.shift + int(shift),
                              field.mask >> int(shift))
    return None

