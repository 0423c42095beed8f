"""Quantize weights into low-bit types on the host, and back.

``quantize(w, dtype, ...)`` returns a :class:`QuantizedTensor`: the codes packed as
:mod:`tegula.ir.packing` stores them (the format a kernel's sub-byte parameter takes), one
scale per group, and for asymmetric integer quantization one zero point per group.
``dequantize(qt)`` gives ``float32`` values back: ``(code_value - zero) * scale``.

Groups run along ``axis`` — for a ``[K, N]`` weight of ``x @ w``, axis 0, the reduction
dimension ``K``, so that one scale covers the ``group_size`` consecutive ``k`` a GEMM's
inner loop consumes together:

* per tensor: ``axis=None`` (one scale);
* per channel: ``group_size=None`` (one scale per column: the group is all of ``K``);
* per group: ``group_size=g``, ``g`` dividing ``K`` (32, 64, 128 are usual);
* MX (OCP Microscaling v1.0): ``mx=True``: blocks of 32, ``e8m0`` scales
  ``X = 2^(floor(log2(amax)) - emax_elem)``, ``f8e4m3``/``f8e5m2``/``f6*``/``f4e2m1``
  elements (MXFP8, MXFP6, MXFP4) or ``i8`` (MXINT8, whose elements carry an implicit factor
  of ``2^-6``: a code ``q`` stands for ``q * 2^-6 * X``, so ``emax_elem`` is 0);
* two-level (NVFP4): a low-bit float ``scale_dtype`` (``f8e4m3``, ``f8e5m2``) with one
  ``f32`` scale for the whole tensor, ``tensor_scale``, chosen so that the largest group's
  scale is the scale type's largest value: ``quantize(w, "f4e2m1", group_size=16,
  scale_dtype="f8e4m3")`` is NVFP4.

Scales of a ``scale_dtype`` other than ``e8m0`` are rounded *up* onto that type's grid, so
no value of the group needs clamping: symmetric integer quantization is then off by at most
half a scale per element.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tegula.ir import dtypes, lowbit
from tegula.ir.dtypes import DType
from tegula.ir.packing import Interleave, PackedFormat

__all__ = ["MX_BLOCK", "QuantizationError", "QuantizedTensor", "dequantize", "quantize"]

MX_BLOCK = 32  # OCP MX v1.0: every concrete MX format shares one scale per 32 elements
_MX_ELEMENTS = ("f8e4m3", "f8e5m2", "f6e3m2", "f6e2m3", "f4e2m1", "i8")
# MXINT8's elements are 8-bit integers with an implicit factor of 2^-6 (OCP MX v1.0, 5.3).
_MX_INT8_ELEMENT_SCALE = 2.0**-6
_SCALE_TYPES = ("f16", "bf16", "f32", "e8m0", "f8e4m3", "f8e5m2")
# Scale types too narrow to cover a tensor's range alone: a per-tensor f32 scale goes with them.
_TWO_LEVEL_SCALE_TYPES = ("f8e4m3", "f8e5m2")


class QuantizationError(ValueError):
    """Arguments of :func:`quantize` or parts of a :class:`QuantizedTensor` that do not fit."""


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """A tensor of logical ``shape`` held as ``dtype`` codes with per-group scales.

    ``data``: the codes, packed along the last dimension (``uint8``,
    ``PackedFormat(dtype.bits, interleave).storage_shape(shape)``). ``scales``: ``shape``
    with ``shape[axis]`` divided by ``group_size`` (all ones for ``axis=None``), stored as
    ``scale_dtype`` arrays (``float16``, ``bfloat16``, ``float32``; ``e8m0``, ``f8e4m3`` and
    ``f8e5m2`` as ml_dtypes arrays, which kernels take as tensors of those types).
    ``zeros``: ``None`` (symmetric) or ``uint8`` zero-point codes of the element type, the
    shape of ``scales``.
    ``tensor_scale``: the per-tensor factor of two-level scaling (8-bit float scales), else 1.
    ``mx``: an OCP MX tensor, whose elements may carry an implicit factor
    (:attr:`element_scale`).
    """

    data: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray | None
    dtype: DType
    shape: tuple[int, ...]
    axis: int | None
    group_size: int
    scale_dtype: DType
    interleave: Interleave | None = None
    tensor_scale: float = 1.0
    mx: bool = False

    def __post_init__(self) -> None:
        fmt = PackedFormat(self.dtype.bits, self.interleave)
        if self.data.dtype != np.uint8 or self.data.shape != fmt.storage_shape(self.shape):
            raise QuantizationError(
                f"data must be uint8 of shape {fmt.storage_shape(self.shape)} for a "
                f"{self.dtype}{list(self.shape)} tensor; got {self.data.dtype} "
                f"{self.data.shape}"
            )
        if self.scales.shape != self.scale_shape:
            raise QuantizationError(
                f"scales must have shape {self.scale_shape}; got {self.scales.shape}"
            )
        if self.zeros is not None and self.zeros.shape != self.scale_shape:
            raise QuantizationError(
                f"zeros must have shape {self.scale_shape}; got {self.zeros.shape}"
            )

    @property
    def scale_shape(self) -> tuple[int, ...]:
        if self.axis is None:
            return (1,) * len(self.shape)
        groups = self.shape[self.axis] // self.group_size
        return (*self.shape[: self.axis], groups, *self.shape[self.axis + 1 :])

    @property
    def element_scale(self) -> float:
        """The factor every element value carries implicitly: ``2^-6`` for MXINT8, else 1."""
        return _MX_INT8_ELEMENT_SCALE if self.mx and self.dtype.is_int else 1.0

    @property
    def format(self) -> PackedFormat:
        return PackedFormat(self.dtype.bits, self.interleave)

    def codes(self) -> np.ndarray:
        """The unpacked ``uint8`` codes, of the logical shape."""
        return self.format.unpack(self.data, self.shape[-1])

    def scale_values(self) -> np.ndarray:
        """The per-group scales as ``float32`` values (without ``tensor_scale``)."""
        return self.scales.astype(np.float32)  # ml_dtypes converts its 8-bit floats exactly


# -- helpers ---------------------------------------------------------------------------------


def _grouped(w: np.ndarray, axis: int | None, group_size: int) -> np.ndarray:
    """``w`` with the grouped axis split into ``(groups, group_size)``, groups first."""
    if axis is None:
        return w.reshape(1, -1)
    shape = w.shape
    return w.reshape(*shape[:axis], shape[axis] // group_size, group_size, *shape[axis + 1 :])


def _expand(per_group: np.ndarray, axis: int | None, group_size: int) -> np.ndarray:
    if axis is None:
        return per_group
    return np.repeat(per_group, group_size, axis=axis)


def _e8m0_array(powers_of_two: np.ndarray) -> np.ndarray:
    """Exact powers of two as an ``e8m0`` array (ml_dtypes ``float8_e8m0fnu``)."""
    return lowbit.encode(powers_of_two, dtypes.e8m0).view(dtypes.e8m0.to_numpy())


def _round_scale_up(scale: np.ndarray, scale_dtype: DType) -> np.ndarray:
    """The stored scales: the smallest value of ``scale_dtype`` at or above ``scale``."""
    if scale_dtype is dtypes.e8m0:
        exponent = np.ceil(np.log2(scale))
        if exponent.max() > 127:
            raise QuantizationError("scales overflow e8m0 (above 2^127)")
        return _e8m0_array(np.exp2(np.maximum(exponent, -127)))
    if scale.max() > scale_dtype.max_finite:
        raise QuantizationError(
            f"scales overflow {scale_dtype} (largest needed {scale.max():.6g}); "
            "use scale_dtype=f32"
        )
    np_type = scale_dtype.to_numpy()
    if scale_dtype.is_lowbit:  # an 8-bit float: round on its code grid
        codes = lowbit.encode(scale, scale_dtype)
        low = lowbit.decode(codes, scale_dtype).astype(np.float64) < scale
        # Positive finite codes are ordered like their values: the next code is the next value.
        return np.where(low, codes + 1, codes).astype(np.uint8).view(np_type)
    stored = scale.astype(np_type)
    low = stored.astype(np.float64) < scale
    if low.any():  # rounding to nearest went down: one step up is the value above
        stored = np.where(low, np.nextafter(stored, np.asarray(np.inf, np_type)), stored)
    return stored


def _check_axis_and_group(shape: tuple[int, ...], axis: int | None,
                          group_size: int | None) -> tuple[int | None, int]:
    if axis is None:
        if group_size is not None:
            raise QuantizationError("group_size needs an axis; axis=None is one group")
        return None, int(np.prod(shape))
    if isinstance(axis, bool) or not isinstance(axis, int) or not -len(shape) <= axis < len(
        shape
    ):
        raise QuantizationError(f"axis {axis!r} is not an axis of a {len(shape)}-d tensor")
    axis %= len(shape)
    extent = shape[axis]
    if group_size is None:
        return axis, extent
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise QuantizationError(f"group_size must be a positive int, got {group_size!r}")
    if extent % group_size:
        raise QuantizationError(
            f"group_size {group_size} does not divide dim {axis} of shape {shape} "
            f"({extent}); groups must tile the axis exactly"
        )
    return axis, group_size


# -- the API ---------------------------------------------------------------------------------


def quantize(
    w: np.ndarray,
    dtype: DType | str,
    *,
    axis: int | None = 0,
    group_size: int | None = None,
    symmetric: bool = True,
    scale_dtype: DType | str | None = None,
    mx: bool = False,
    interleave: Interleave | None = None,
) -> QuantizedTensor:
    """Quantize a real array ``w`` (rank >= 1) to ``dtype``.

    ``dtype``: an integer type of 1–8 bits, a float type of 8 bits or fewer, or a table type
    (``nf4``). Symmetric: ``scale = amax / max_finite(dtype)`` per group. Asymmetric
    (``symmetric=False``, integer types only): the group's range, widened to hold 0, is
    spread over all codes, ``scale = (hi - lo) / (2^bits - 1)``, ``zero = rint(-lo / scale)``
    in code units. ``scale_dtype`` defaults to ``f16`` (``e8m0`` with ``mx``); an 8-bit float
    scale type adds a per-tensor ``f32`` scale (``tensor_scale``, NVFP4's second level).
    ``interleave`` permutes the packed codes (:func:`tegula.ir.packing.marlin_interleave`).
    """
    w = np.asarray(w)
    if not (np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)):
        raise QuantizationError(f"w must be a real array, got {w.dtype}")
    if w.ndim == 0:
        raise QuantizationError("w must have at least one dimension")
    if not np.isfinite(w).all():
        raise QuantizationError("w holds inf or NaN; quantize finite values only")
    dt = dtypes.dtype(dtype)
    if not dt.is_lowbit:
        raise QuantizationError(f"dtype {dt} is not a low-bit type (8 bits or fewer)")
    if mx:
        if dt.name not in _MX_ELEMENTS:
            raise QuantizationError(
                f"mx=True needs an MX element type ({', '.join(_MX_ELEMENTS)}), not {dt}"
            )
        if group_size not in (None, MX_BLOCK):
            raise QuantizationError(f"mx=True uses blocks of {MX_BLOCK}, not {group_size}")
        if scale_dtype not in (None, "e8m0", dtypes.e8m0):
            raise QuantizationError(f"mx=True uses e8m0 scales, not {scale_dtype}")
        if not symmetric:
            raise QuantizationError("mx=True is symmetric (no zero points)")
        if axis is None:
            raise QuantizationError("mx=True needs the axis its blocks run along")
        group_size = MX_BLOCK
    sdt = dtypes.dtype(scale_dtype) if scale_dtype is not None else (
        dtypes.e8m0 if mx else dtypes.f16
    )
    if sdt.name not in _SCALE_TYPES:
        raise QuantizationError(f"scale_dtype must be one of {_SCALE_TYPES}, not {sdt}")
    if sdt.name in _TWO_LEVEL_SCALE_TYPES and not symmetric:
        raise QuantizationError(f"{sdt} scales are symmetric (no zero points)")
    if not symmetric and not dt.is_int:
        raise QuantizationError(f"symmetric=False needs an integer dtype, not {dt}")
    axis, group = _check_axis_and_group(w.shape, axis, group_size)

    x = w.astype(np.float64)
    grouped = _grouped(x, axis, group)
    group_axis = -1 if axis is None else axis + 1  # the within-group axis of `grouped`
    zeros = None
    tensor_scale = 1.0
    element_scale = _MX_INT8_ELEMENT_SCALE if mx and dt.is_int else 1.0
    if mx:
        amax = np.abs(grouped).max(axis=group_axis)
        # OCP MX v1.0, 6.3: X = 2^(floor(log2(amax)) - emax_elem), clamped to e8m0's range;
        # MXINT8's largest element is 127/64, so its emax_elem is 0.
        emax_elem = 0 if dt.is_int else dt.max_exponent
        _, e = np.frexp(amax)
        exponent = np.where(amax > 0, e - 1 - emax_elem, -127)
        stored = _e8m0_array(np.exp2(np.clip(exponent, -127, 127)))
    elif symmetric:
        amax = np.abs(grouped).max(axis=group_axis)
        bound = dt.max_finite if not dt.is_lut else float(np.abs(dt.table).max())
        wanted = np.where(amax > 0, amax / bound, 1.0)
        if sdt.name in _TWO_LEVEL_SCALE_TYPES:
            # The largest group scale lands on the scale type's largest value; the rest of
            # the range is the tensor scale's.
            top = float(amax.max())
            tensor_scale = float(np.float32(top / bound / sdt.max_finite)) if top > 0 else 1.0
            wanted = np.minimum(wanted / tensor_scale, sdt.max_finite)
        stored = _round_scale_up(wanted, sdt)
    else:
        lo = np.minimum(grouped.min(axis=group_axis), 0.0)
        hi = np.maximum(grouped.max(axis=group_axis), 0.0)
        qmin, qmax = dt.int_range
        stored = _round_scale_up(np.where(hi > lo, (hi - lo) / (qmax - qmin), 1.0), sdt)
        zero_value = np.clip(
            np.rint(qmin - lo / stored.astype(np.float64)), qmin, qmax
        )
        zeros = lowbit.encode(zero_value, dt)
    scale = stored.astype(np.float64) * (tensor_scale * element_scale)
    if axis is None:
        scale_full = scale.reshape(())
        zero_full = 0.0 if zeros is None else lowbit.decode(zeros, dt).reshape(())
        stored = stored.reshape((1,) * w.ndim)
        zeros = None if zeros is None else zeros.reshape((1,) * w.ndim)
    else:
        scale_full = _expand(scale, axis, group)
        zero_full = 0.0 if zeros is None else _expand(lowbit.decode(zeros, dt), axis, group)
    codes = lowbit.encode(x / scale_full + zero_full, dt, saturate=True)
    data = PackedFormat(dt.bits, interleave).pack(codes)
    return QuantizedTensor(data, stored, zeros, dt, tuple(w.shape), axis, group, sdt, interleave,
                           tensor_scale, mx)


def dequantize(qt: QuantizedTensor) -> np.ndarray:
    """The ``float32`` values ``qt`` stands for:
    ``(code_value - zero) * scale * tensor_scale * element_scale``."""
    values = lowbit.decode(qt.codes(), qt.dtype)
    scale = qt.scale_values() * (qt.tensor_scale * qt.element_scale)
    zero = None if qt.zeros is None else lowbit.decode(qt.zeros, qt.dtype)
    if qt.axis is not None:
        scale = _expand(scale, qt.axis, qt.group_size)
        zero = None if zero is None else _expand(zero, qt.axis, qt.group_size)
    if zero is not None:
        values = values - zero
    return (values * scale).astype(np.float32)
