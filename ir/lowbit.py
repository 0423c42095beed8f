"""Exact conversions between real numbers and the codes of low-bit types.

:func:`encode` turns float values into ``uint8`` codes of a type of 8 bits or fewer;
:func:`decode` turns codes back into ``float32`` values. Both are vectorized NumPy and work
from the definition of each format (sign, biased exponent, mantissa), not through another
library's casts, so every type follows one set of rules:

* floats round to nearest, ties to even, in one step from the exact input (a ``float64``
  input is not rounded to ``float32`` first); values below the smallest normal become
  subnormals; the sign of zero is kept;
* ``e8m0`` (a power of two ``2^(code-127)``) rounds to the nearest power of two, ties to the
  larger one; values below ``2^-127`` become ``2^-127``. (ml_dtypes agrees except on
  ``(2^-127, 1.5·2^-127)``, float32 subnormals it rounds up to ``2^-126``);
* integers round to nearest even and clamp to the range; table types pick the nearest
  entry, ties to the lower code;
* on overflow, ``saturate=True`` (the default) gives the largest finite value of the right
  sign, for ±inf as well; ``saturate=False`` gives what ml_dtypes' casts give: inf for
  ``f8e5m2``, NaN for ``f8e4m3`` and ``e8m0``, and the largest finite value for the types
  that have neither (``f6*``, ``f4e2m1``);
* NaN encodes to the type's NaN (sign kept) and is a :class:`LowBitError` for a type that
  has no NaN.

The table of every code's value is built once per type (at most 256 entries), so
:func:`decode` is one indexing operation.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .dtypes import DType, Kind, NanEncoding

__all__ = ["LowBitError", "code_values", "decode", "encode", "grid"]


class LowBitError(ValueError):
    """A value or code that a low-bit type cannot take, or a type this module does not
    handle."""


def _check_type(dt: DType) -> None:
    if not isinstance(dt, DType):
        raise TypeError(f"expected a tegula DType, got {dt!r}")
    if not dt.is_lowbit:
        raise LowBitError(f"{dt} is not a low-bit type (8 bits or fewer, not bool)")


# -- decoding ---------------------------------------------------------------------------------


def _float_code_values(dt: DType) -> np.ndarray:
    """Every code's value of an exponent/mantissa type, from the definition."""
    assert dt.bias is not None
    codes = np.arange(1 << dt.bits, dtype=np.int64)
    mantissa = codes & ((1 << dt.mantissa) - 1)
    exponent = (codes >> dt.mantissa) & ((1 << dt.exponent) - 1)
    negative = dt.has_sign & (codes >> (dt.bits - 1)).astype(bool)
    normal = (1.0 + mantissa / (1 << dt.mantissa)) * np.exp2(exponent - dt.bias)
    subnormal = mantissa * 2.0 ** (1 - dt.bias - dt.mantissa)
    # Without mantissa bits there are no subnormals: exponent 0 is 2^-bias.
    is_normal = (exponent > 0) | (dt.mantissa == 0)
    magnitude = np.where(is_normal, normal, subnormal)
    top_exponent = exponent == (1 << dt.exponent) - 1
    if dt.has_inf:
        magnitude[top_exponent & (mantissa == 0)] = np.inf
    if dt.nan is NanEncoding.IEEE:
        magnitude[top_exponent & (mantissa != 0)] = np.nan
    elif dt.nan is NanEncoding.ALL_ONES:
        magnitude[top_exponent & (mantissa == (1 << dt.mantissa) - 1)] = np.nan
    return np.where(negative, -magnitude, magnitude)


@cache
def _code_values(dt: DType) -> np.ndarray:
    if dt.table is not None:
        values = np.full(1 << dt.bits, np.nan)
        values[: len(dt.table)] = dt.table
    elif dt.is_int:
        codes = np.arange(1 << dt.bits, dtype=np.int64)
        if dt.kind is Kind.SIGNED:
            codes = np.where(codes >= 1 << (dt.bits - 1), codes - (1 << dt.bits), codes)
        values = codes.astype(np.float64)
    else:
        values = _float_code_values(dt)
    result = values.astype(np.float32)
    result.flags.writeable = False
    return result


def code_values(dt: DType) -> np.ndarray:
    """The ``float32`` value of every code ``0 .. 2^bits - 1`` (read-only; NaN for NaN
    codes and for codes past the end of a table)."""
    _check_type(dt)
    return _code_values(dt)


def grid(dt: DType) -> np.ndarray:
    """The distinct finite values of ``dt``, ascending (``-0.0`` folded into ``0.0``)."""
    values = code_values(dt)
    return np.unique(values[np.isfinite(values)] + np.float32(0.0))


def decode(codes: np.ndarray, dt: DType) -> np.ndarray:
    """The ``float32`` values of ``codes`` (any integer array, each in ``0 .. 2^bits-1``)."""
    _check_type(dt)
    codes = np.asarray(codes)
    if not np.issubdtype(codes.dtype, np.integer):
        raise LowBitError(f"decode: codes must be an integer array, got {codes.dtype}")
    limit = len(dt.table) if dt.table is not None else 1 << dt.bits
    if codes.size and (codes.min() < 0 or codes.max() >= limit):
        bad = codes[(codes < 0) | (codes >= limit)].flat[0]
        raise LowBitError(f"decode: code {int(bad)} is not a {dt} code (0..{limit - 1})")
    return _code_values(dt)[codes]


# -- encoding ---------------------------------------------------------------------------------


def _as_float64(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype == np.float64:
        return values
    if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise LowBitError(f"encode: values must be a real array, got {values.dtype}")
    return values.astype(np.float64)


def _refuse_nan(x: np.ndarray, dt: DType) -> None:
    if np.isnan(x).any():
        raise LowBitError(
            f"encode: {dt} has no NaN, but the input holds NaN at index "
            f"{tuple(int(i) for i in np.argwhere(np.isnan(x))[0])}"
        )


def _max_code(dt: DType) -> int:
    """The magnitude code of the largest finite value."""
    finite = np.flatnonzero(np.isfinite(_code_values(dt)[: 1 << (dt.bits - 1)]))
    return int(finite[-1])


def _nan_code(dt: DType) -> int:
    """The magnitude code NaN encodes to: the all-ones pattern for ``fn`` types, the quiet
    NaN (top mantissa bit set) for IEEE-like ones — what ml_dtypes produces."""
    all_exponent = ((1 << dt.exponent) - 1) << dt.mantissa
    if dt.nan is NanEncoding.IEEE:
        return all_exponent | (1 << (dt.mantissa - 1))
    return all_exponent | ((1 << dt.mantissa) - 1)


def _encode_float(x: np.ndarray, dt: DType, saturate: bool) -> np.ndarray:
    assert dt.bias is not None
    if dt.nan is NanEncoding.NONE:
        _refuse_nan(x, dt)
    magnitude = np.abs(x)
    emin = 1 - dt.bias
    with np.errstate(invalid="ignore", over="ignore"):
        _, e = np.frexp(magnitude)  # magnitude = m * 2^e, m in [0.5, 1): floor(log2) = e - 1
        # Zero and subnormals share the lowest binade.
        binade = np.where(magnitude < 2.0**emin, emin, e.astype(np.int64) - 1)
        # Scale the binade's ulp to 1 (exact: a power of two) and round half to even.
        steps = np.rint(np.ldexp(magnitude, (dt.mantissa - binade).astype(np.int32)))
    # Code = (biased exponent - 1) << mantissa + steps; a carry out of the mantissa lands in
    # the next exponent, and subnormals (binade == emin) come out with exponent field 0.
    finite = np.isfinite(magnitude)
    steps = np.where(finite, steps, 0).astype(np.int64)
    code = ((binade + dt.bias - 1) << dt.mantissa) + steps
    max_code = _max_code(dt)
    overflow = ~finite | (code > max_code)
    if saturate or not (dt.has_inf or dt.nan is not NanEncoding.NONE):
        overflow_code = max_code
    elif dt.has_inf:
        overflow_code = ((1 << dt.exponent) - 1) << dt.mantissa
    else:
        overflow_code = _nan_code(dt)
    code = np.where(overflow, overflow_code, code)
    if dt.nan is not NanEncoding.NONE:
        code = np.where(np.isnan(magnitude), _nan_code(dt), code)
    return (code | (np.signbit(x).astype(np.int64) << (dt.bits - 1))).astype(np.uint8)


def _encode_e8m0(x: np.ndarray, dt: DType, saturate: bool) -> np.ndarray:
    """``2^(code - bias)``: nearest power of two, ties up; no zero, no sign, 0xFF is NaN."""
    assert dt.bias is not None
    top = (1 << dt.bits) - 2
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m, e = np.frexp(x)  # x = m * 2^e, m in [0.5, 1)
        exponent = e.astype(np.int64) - 1 + (m >= 0.75)  # 0.75 * 2^e is the tie: up
        code = np.clip(exponent + dt.bias, 0, None)  # below 2^-bias: the smallest value
    overflow = np.isinf(x) | (code > top)
    code = np.where(overflow, top if saturate else top + 1, code)
    zero = x == 0
    code = np.where(zero, 0 if saturate else top + 1, code)
    invalid = np.isnan(x) | ((x < 0) & ~zero)
    return np.where(invalid, top + 1, code).astype(np.uint8)


def _encode_int(x: np.ndarray, dt: DType) -> np.ndarray:
    _refuse_nan(x, dt)
    lo, hi = dt.int_range
    values = np.clip(np.rint(x), lo, hi).astype(np.int64)
    return (values & ((1 << dt.bits) - 1)).astype(np.uint8)


@cache
def _table_search(dt: DType) -> tuple[np.ndarray, np.ndarray]:
    """The table's distinct values ascending, each with the lowest code that holds it."""
    assert dt.table is not None
    values = np.asarray(dt.table, dtype=np.float64)
    order = np.lexsort((np.arange(len(values)), values))
    sorted_values = values[order]
    first = np.concatenate(([True], sorted_values[1:] != sorted_values[:-1]))
    return sorted_values[first], order[first]


def _encode_table(x: np.ndarray, dt: DType) -> np.ndarray:
    _refuse_nan(x, dt)
    values, codes = _table_search(dt)
    above = np.clip(np.searchsorted(values, x), 1, len(values) - 1)
    below = above - 1
    gap_below = np.abs(x - values[below])
    gap_above = np.abs(values[above] - x)
    # Nearest entry; on a tie, the lower code.
    tie_goes_above = (gap_above == gap_below) & (codes[above] < codes[below])
    take_above = (gap_above < gap_below) | tie_goes_above
    return np.where(take_above, codes[above], codes[below]).astype(np.uint8)


def encode(values: np.ndarray, dt: DType, *, saturate: bool = True) -> np.ndarray:
    """The ``uint8`` codes of ``values`` in ``dt`` (same shape), rounded per the module's
    rules. ``saturate`` only matters for float types with an inf or NaN to overflow to."""
    _check_type(dt)
    x = _as_float64(values)
    if dt.table is not None:
        return _encode_table(x, dt)
    if dt.is_int:
        return _encode_int(x, dt)
    if dt.mantissa == 0:
        return _encode_e8m0(x, dt, saturate)
    return _encode_float(x, dt, saturate)
