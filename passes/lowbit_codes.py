"""Low-bit values in Loop IR: tiles of codes in bytes, and their exact decoding.

Loop IR computes only on types with native arithmetic, so a register tile of a low-bit
type (``u4``, ``i3``, ``f4e2m1``, ``f8e4m3``, ``e8m0``, ``nf4``, a ``lut_type``…) is held as
its *codes*, one per ``u8`` register, and a global tensor of such a type is a buffer of
bytes (the packed bitstream of ``tegula.ir.packing`` for widths below 8). ``cast`` to a
number type decodes the codes with the expressions built here, which use only integer
operations, selects and exact float products, so both code generators get them and the
result is bit-exact against :func:`tegula.ir.lowbit.decode`:

* integers: the code itself, sign-extended for signed widths (``(c ^ h) - h``, ``h = 2^(b-1)``);
* exponent/mantissa floats: ``(mantissa + implicit one) * 2^(exponent - bias - m)``, the
  power of two an integer shift converted to float (exact), with the format's inf/NaN codes
  and the sign applied by selects;
* ``e8m0``: ``2^(code - 127)`` as a product of one selected power of two per code bit;
* table types (``nf4``, ``lut_type``): a tree of selects on the code's bits, one level per bit.
"""

from __future__ import annotations

import math

import numpy as np
from tegula.ir import loop as L
from tegula.ir import lowbit
from tegula.ir.dtypes import DType, NanEncoding, f32, i8, i32, i64, u8, u16, u32

BIN = L.BinaryOp


def is_code_type(dt: DType) -> bool:
    """Whether tiles of ``dt`` are held as codes in bytes (a low-bit type without native
    arithmetic: sub-byte integers, the 8/6/4-bit floats, ``e8m0``, table types)."""
    return dt.is_lowbit and not dt.has_native_arithmetic


def storage_dtype(dt: DType) -> DType:
    """The Loop IR type that holds one value of ``dt``: ``u8`` for a code type."""
    return u8 if is_code_type(dt) else dt


def is_packed(dt: DType) -> bool:
    """Whether a global tensor of ``dt`` is a packed bitstream (narrower than a byte)."""
    return is_code_type(dt) and dt.bits < 8


def code_of(value: float, dt: DType) -> int:
    """The code of the compile-time constant ``value`` (a load's ``other``) in ``dt``."""
    return int(lowbit.encode(np.asarray([value], dtype=np.float64), dt)[0])


def _u8(v: int) -> L.Const:
    return L.Const(v, u8)


def _i32(v: int) -> L.Const:
    return L.Const(v, i32)


def _f32(v: float) -> L.Const:
    return L.Const(v, f32)


def _bit(code: L.Expr, i: int) -> L.Expr:
    """Whether bit ``i`` of a ``u8`` code is set."""
    return L.Binary(BIN.NE, L.Binary(BIN.BITAND, code, _u8(1 << i)), _u8(0))


def _field(code: L.Expr, shift: int, width: int) -> L.Expr:
    """Bits ``[shift, shift + width)`` of a ``u8`` code, as an ``i32``."""
    bits = code if shift == 0 else L.Binary(BIN.SHR, code, _u8(shift))
    if shift + width < 8:
        bits = L.Binary(BIN.BITAND, bits, _u8((1 << width) - 1))
    return L.Cast(i32, bits)


def decode_int(code: L.Expr, dt: DType) -> L.Expr:
    """The integer value (``i32``) of a code of the integer type ``dt``."""
    if not dt.is_signed:
        return L.Cast(i32, code)
    # Sign-extend in the byte (``(c ^ h) - h`` wraps to the two's complement of the value),
    # then widen: byte-wide arithmetic keeps four times the lanes of a vector busy.
    half = _u8(1 << (dt.bits - 1))
    byte = L.Binary(BIN.SUB, L.Binary(BIN.BITXOR, code, half), half)
    return L.Cast(i32, L.Cast(i8, byte))


# Per float type, the bits of ``2^m`` (m its mantissa bits), a float whose mantissa's units
# are ones: ``2^m + c`` has the bits ``units | c`` for every ``c < 2^m``.
_UNITS: dict[str, tuple[int, DType]] = {"f32": (0x4B000000, u32), "f16": (0x6400, u16),
                                        "bf16": (0x4300, u16)}


def exact_int_conversion(dt: DType, result: DType) -> bool:
    """Whether integers of ``dt`` convert to ``result`` through its mantissa
    (``int_to_float_exactly``): at most 8 bits (they travel as a ``u8`` code), and the offset
    code must fit the mantissa."""
    return dt.is_int and dt.bits <= 8 and result.name in _UNITS and dt.bits <= result.mantissa


def int_to_float_exactly(code: L.Expr, dt: DType, result: DType) -> L.Expr:
    """The value (of float type ``result``: ``f32``, ``f16`` or ``bf16``) of an integer of
    at most 8 bits given as its bit pattern ``code`` (``u8``), with integer and float adds
    instead of an int→float conversion.

    The code, offset to be non-negative (``c ^ h`` with ``h = 2^(b-1)`` for a signed width
    ``b``: the value plus ``h``), goes into the mantissa of ``2^m``; subtracting ``2^m + h``
    leaves the value, exactly. GPUs convert integers to floats at a quarter of the rate (or
    less) they or and add, which is what bounds a dequantizing GEMV's arithmetic; in ``f16``
    two such subtractions run as one ``f16x2`` instruction."""
    units, word_type = _UNITS[result.name]
    offset = 1 << (dt.bits - 1) if dt.is_signed else 0
    biased = code if offset == 0 else L.Binary(BIN.BITXOR, code, _u8(offset))
    word = L.Binary(BIN.BITOR, L.Cast(word_type, biased), L.Const(units, word_type))
    base = float(1 << result.mantissa) + offset
    return L.Binary(BIN.SUB, L.Bitcast(result, word), L.Const(base, result))


def decode_float(code: L.Expr, dt: DType) -> L.Expr:
    """The value (``f32``) of a code of the float or table type ``dt``, exactly."""
    if dt.table is not None:
        return _table(code, dt.table, dt.bits)
    if dt.mantissa == 0:
        return _e8m0(code)
    return _exponent_mantissa(code, dt)


def _table(code: L.Expr, table: tuple[float, ...], bits: int) -> L.Expr:
    """``table[code]`` as a select tree: level ``i`` picks on bit ``bits - 1 - i``."""
    values = [float(np.float32(v)) for v in table]
    values += [values[-1]] * ((1 << bits) - len(values))  # codes past the table never occur

    def tree(lo: int, width: int) -> L.Expr:
        if width == 0:
            return _f32(values[lo])
        upper = tree(lo + (1 << (width - 1)), width - 1)
        lower = tree(lo, width - 1)
        return L.Select(_bit(code, width - 1), upper, lower)

    return tree(0, bits)


def _e8m0(code: L.Expr) -> L.Expr:
    """``2^(code - 127)``: bit 7 chooses ``2^1`` or ``2^-127``, bits 0-6 multiply in
    ``2^(2^i)`` each; every partial product is a power of two in range (exact). 0xFF is NaN."""
    value: L.Expr = L.Select(_bit(code, 7), _f32(2.0), _f32(2.0**-127))
    for i in range(7):
        value = L.Binary(BIN.MUL, value, L.Select(_bit(code, i), _f32(2.0 ** (1 << i)), _f32(1.0)))
    return L.Select(L.Binary(BIN.EQ, code, _u8(0xFF)), _f32(math.nan), value)


def _exponent_mantissa(code: L.Expr, dt: DType) -> L.Expr:
    """``(-1)^S * (M + 2^m [E > 0]) * 2^(max(E, 1) - bias - m)`` and the format's specials."""
    e_bits, m_bits = dt.exponent, dt.mantissa
    assert dt.bias is not None
    exponent = _field(code, m_bits, e_bits)
    mantissa = _field(code, 0, m_bits)
    is_normal = L.Binary(BIN.NE, exponent, _i32(0))
    significand = L.Select(
        is_normal, L.Binary(BIN.BITOR, mantissa, _i32(1 << m_bits)), mantissa
    )
    # 2^max(E, 1) as an integer (E < 32 for every format here), then scaled by a constant
    # power of two: both conversions and the product are exact.
    power = L.Binary(
        BIN.SHL, L.Const(1, i64), L.Cast(i64, L.Binary(BIN.MAX, exponent, _i32(1)))
    )
    magnitude = L.Binary(
        BIN.MUL,
        L.Binary(BIN.MUL, L.Cast(f32, significand), L.Cast(f32, power)),
        _f32(2.0 ** (-dt.bias - m_bits)),
    )
    top = (1 << e_bits) - 1
    if dt.nan is NanEncoding.IEEE:
        special = L.Binary(BIN.EQ, exponent, _i32(top))
        inf_or_nan = L.Select(
            L.Binary(BIN.EQ, mantissa, _i32(0)), _f32(math.inf), _f32(math.nan)
        )
        magnitude = L.Select(special, inf_or_nan, magnitude)
    elif dt.nan is NanEncoding.ALL_ONES:
        all_ones = (1 << (e_bits + m_bits)) - 1
        is_nan = L.Binary(
            BIN.EQ, L.Binary(BIN.BITAND, code, _u8(all_ones)), _u8(all_ones)
        )
        magnitude = L.Select(is_nan, _f32(math.nan), magnitude)
    if not dt.has_sign:
        return magnitude
    negative = _bit(code, e_bits + m_bits)
    return L.Select(negative, L.Unary(L.UnaryOp.NEG, magnitude), magnitude)


def decode(code: L.Expr, dt: DType, result: DType) -> L.Expr:
    """The value of a ``u8`` code of ``dt`` for a cast to ``result``: of type ``result``
    for an integer type whose codes ``result``'s mantissa holds, else ``i32`` for integer
    types and ``f32`` for the rest."""
    if dt.is_int:
        if exact_int_conversion(dt, result):
            return int_to_float_exactly(code, dt, result)
        return decode_int(code, dt)
    return decode_float(code, dt)


# ----------------------------------------------------------------------------- packed bits


def unit_of(bits: int) -> tuple[int, int]:
    """``(elements, bytes)`` of the smallest whole-byte group of ``bits``-wide elements:
    (8, 1) for 1 bit, (2, 1) for 4, (8, 3) for 3, (4, 3) for 6."""
    elements = 8 // math.gcd(bits, 8)
    return elements, elements * bits // 8


def extract_constant(byte_at, bits: int, element: int) -> L.Expr:
    """The code of element ``element`` of a whole-byte unit whose bytes ``byte_at(i)``
    (``u8`` expressions) holds, with every shift a constant: a code that straddles two
    bytes takes its high bits from the next one."""
    first = element * bits
    index, shift = first >> 3, first & 7
    mask = _u8((1 << bits) - 1)
    low: L.Expr = byte_at(index)
    if shift:
        low = L.Binary(BIN.SHR, low, _u8(shift))
    if shift + bits > 8:
        high = L.Binary(BIN.SHL, byte_at(index + 1), _u8(8 - shift))
        low = L.Binary(BIN.BITOR, low, high)
    if shift + bits == 8:
        return low
    return L.Binary(BIN.BITAND, low, mask)


def extract_dynamic(low: L.Expr, high: L.Expr | None, shift: L.Expr, bits: int) -> L.Expr:
    """The code at bit ``shift`` (an ``i64`` in [0, 8)) of the byte ``low``, continued into
    ``high`` when the width can straddle bytes; computed in ``i32`` so no shift overflows."""
    word: L.Expr = L.Cast(i32, low)
    if high is not None:
        word = L.Binary(BIN.BITOR, word, L.Binary(BIN.SHL, L.Cast(i32, high), _i32(8)))
    shifted = L.Binary(BIN.SHR, word, L.Cast(i32, shift))
    return L.Cast(u8, L.Binary(BIN.BITAND, shifted, _i32((1 << bits) - 1)))
