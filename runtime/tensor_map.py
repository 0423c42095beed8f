"""TMA tensor maps: what a kernel asks for (:class:`TensorMapSpec`, part of its spec) and
their encoding on the host, once per array (:class:`TensorMapEncoder`).

A tensor map describes a whole tensor to the tensor-memory accelerator: element type,
dimensions and strides (innermost first), the box one copy moves, and the swizzle the box
gets in shared memory. It is 128 opaque bytes that ``cuTensorMapEncodeTiled`` (CUDA driver)
writes; the kernel receives it by value (``__grid_constant__``) after its symbols.

TMA wants the base address 16-byte aligned and every stride but the innermost a multiple of
16 bytes. The kernels that take maps test exactly that before they use them (and otherwise
run a path that does not touch the map), so for such an array the encoder passes zeros.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from tegula.ir import dtypes
from tegula.ir.loop import tensor_dims

from .cuda_driver import driver_function
from .errors import LaunchError, SpecError

MAP_BYTES = 128
MAX_RANK = 5
MAX_BOX = 256
SWIZZLES = (0, 32, 64, 128)

# CUtensorMapDataType: bytes move as bytes, so 8-bit floats and integers are both UINT8.
_DATA_TYPE = {1: 0, 2: 1, 4: 2, 8: 4}  # by itemsize: UINT8, UINT16, UINT32, UINT64
_FLOAT_DATA_TYPE = {"f16": 6, "f32": 7, "f64": 8, "bf16": 9}
_SWIZZLE_MODE = {0: 0, 32: 1, 64: 2, 128: 3}  # CU_TENSOR_MAP_SWIZZLE_*
_L2_PROMOTION_256B = 3
_INTERLEAVE_NONE = 0
_OOB_FILL_ZERO = 0

# One map as NumPy scalar CuPy passes by value.
MAP_DTYPE = np.dtype([("bits", np.uint64, MAP_BYTES // 8)])


@dataclass(frozen=True)
class TensorMapSpec:
    """The map a kernel takes of tensor parameter ``param``: ``box`` extents innermost first
    and the shared-memory ``swizzle_bytes``.

    Without ``dims`` the map's dimensions are the tensor's. With them it is a view: map
    dimension ``d`` (innermost first) is ``(tensor_dim, extent, step)``, walking tensor
    dimension ``tensor_dim`` ``step`` elements at a time, ``extent`` times (0: as far as the
    tensor reaches, ``ceil(shape / step)``). Several map dimensions may walk one tensor
    dimension (rows in groups of eight, then groups of groups), which lets one box gather
    rows in a permuted order; the first must be the tensor's contiguous dimension, step 1.
    """

    param: str
    box: tuple[int, ...]
    swizzle_bytes: int = 0
    dims: tuple[tuple[int, int, int], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "box", tuple(self.box))
        object.__setattr__(self, "dims", tuple(tuple(d) for d in self.dims))
        owner = f"tensor map of {self.param!r}"
        if not 1 <= len(self.box) <= MAX_RANK:
            raise SpecError(f"{owner}: a box has 1 to {MAX_RANK} extents, not {len(self.box)}")
        if any(isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= MAX_BOX
               for b in self.box):
            raise SpecError(f"{owner}: box extents {self.box} must be ints in 1..{MAX_BOX}")
        if self.swizzle_bytes not in SWIZZLES:
            raise SpecError(f"{owner}: swizzle {self.swizzle_bytes!r} is not one of {SWIZZLES}")
        if self.dims:
            if len(self.dims) != len(self.box):
                raise SpecError(f"{owner}: {len(self.dims)} view dimensions for a "
                                f"{len(self.box)}-d box")
            if any(len(d) != 3 or any(not isinstance(x, int) or x < 0 for x in d) or d[2] < 1
                   for d in self.dims):
                raise SpecError(f"{owner}: view dimensions {self.dims} must be "
                                "(tensor dim, extent >= 0, step >= 1)")
            if self.dims[0][2] != 1:
                raise SpecError(f"{owner}: a view's first dimension steps by one element")

    def view(self, rank: int) -> tuple[tuple[int, int, int], ...]:
        """The map's dimensions over a ``rank``-d tensor (its own when there is no view)."""
        return self.dims or tensor_dims(rank)


def data_type(dt: dtypes.DType) -> int:
    """The ``CUtensorMapDataType`` that moves elements of ``dt``."""
    found = _FLOAT_DATA_TYPE.get(dt.name) if dt.is_float else None
    if found is None:
        found = _DATA_TYPE.get(dt.itemsize) if not dt.is_subbyte else None
    if found is None:
        raise SpecError(f"TMA has no element type for {dt}")
    return found


class _Driver:
    """``cuTensorMapEncodeTiled`` from the CUDA driver library, looked up on first use."""

    def encode(self) -> Any:
        u32p, u64p = ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_uint64)
        try:
            return driver_function("cuTensorMapEncodeTiled", (
                ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p, u64p, u64p,
                u32p, u32p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
            ))
        except LaunchError as exc:
            raise LaunchError(f"cannot encode TMA tensor maps: {exc}") from None


_DRIVER = _Driver()


class TensorMapEncoder:
    """Encodes the maps of one kernel, remembering the last arrays' (a kernel called in a
    loop on the same buffers encodes once)."""

    def __init__(self, maps: tuple[TensorMapSpec, ...], element_types: tuple[dtypes.DType, ...],
                 *, capacity: int = 64) -> None:
        self.maps = maps
        self.element_types = element_types
        self._capacity = capacity
        self._cache: OrderedDict[tuple[Any, ...], np.void] = OrderedDict()

    def encode(self, index: int, pointer: int, shape: tuple[int, ...],
               strides: tuple[int, ...]) -> np.void:
        """Map ``index`` of the array at ``pointer`` with ``shape`` and element ``strides``
        (outermost first, as NumPy gives them)."""
        key = (index, pointer, shape, strides)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        encoded = self._encode(index, pointer, shape, strides)
        self._cache[key] = encoded
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return encoded

    def _encode(self, index: int, pointer: int, shape: tuple[int, ...],
                strides: tuple[int, ...]) -> np.void:
        spec, dt = self.maps[index], self.element_types[index]
        out = np.zeros(1, MAP_DTYPE)
        view = spec.view(len(shape))
        if view[0][0] != len(shape) - 1 or any(d >= len(shape) for d, _, _ in view):
            raise LaunchError(f"{spec.param!r}: a {len(shape)}-d array for the map {view}")
        extents = [n or -(-shape[d] // step) for d, n, step in view]
        byte_strides = [strides[d] * step * dt.itemsize for d, _, step in view]
        if pointer % 16 or any(s % 16 for s in byte_strides[1:]) or strides[-1] != 1:
            return out[0]  # the kernel's own test sends such arrays down its other path
        rank = len(view)
        dims = (ctypes.c_uint64 * rank)(*extents)
        outer = (ctypes.c_uint64 * max(rank - 1, 1))(*byte_strides[1:])
        box = (ctypes.c_uint32 * rank)(*spec.box)
        unit = (ctypes.c_uint32 * rank)(*([1] * rank))
        status = _DRIVER.encode()(
            out.ctypes.data, data_type(dt), rank, pointer, dims, outer, box, unit,
            _INTERLEAVE_NONE, _SWIZZLE_MODE[spec.swizzle_bytes], _L2_PROMOTION_256B,
            _OOB_FILL_ZERO,
        )
        if status != 0:
            raise LaunchError(
                f"cuTensorMapEncodeTiled failed ({status}) for {spec.param!r}: dimensions "
                f"{extents}, byte strides {byte_strides[1:]}, box {spec.box}, swizzle "
                f"{spec.swizzle_bytes} B"
            )
        return out[0]
