"""Array interop: what a NumPy, CuPy or PyTorch array (or any array-interface object) is.

For each argument the launcher needs its data pointer, shape, strides in elements, element
type (as a tegula :class:`~tegula.ir.dtypes.DType`) and device (``"cpu"`` or ``"cuda:N"``).
An :class:`ArrayReader` answers those questions for one array library; readers are chosen
by the argument's exact type and cached, and CuPy and PyTorch are imported only when an
object whose type lives in their module is seen, so a NumPy-only program never loads them.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tegula.ir import dtypes
from tegula.ir.dtypes import DType

CPU = "cpu"


def _cuda_device(index: int) -> str:
    return _CUDA_DEVICE_NAMES[index] if index < len(_CUDA_DEVICE_NAMES) else f"cuda:{index}"


_CUDA_DEVICE_NAMES = tuple(f"cuda:{i}" for i in range(16))

# np.dtype -> DType (or None when tegula has no such type); filled lazily because
# ``dtypes.from_numpy`` is a scan over every dtype.
_NUMPY_DTYPES: dict[np.dtype, DType | None] = {}


def array_module(array: Any) -> Any:
    """The array library to compute on ``array`` with where it lives: CuPy for a device
    array (CuPy's own, or any object with the CUDA array interface), NumPy otherwise. CuPy
    is imported only when such an array is seen."""
    if hasattr(array, "__cuda_array_interface__"):
        import cupy

        return cupy
    return np


def dtype_from_numpy(np_dtype: np.dtype) -> DType | None:
    """The tegula dtype of a NumPy dtype, or ``None`` if tegula has none (e.g. complex)."""
    found = _NUMPY_DTYPES.get(np_dtype, _NUMPY_DTYPES)
    if found is not _NUMPY_DTYPES:
        return found  # type: ignore[return-value]
    try:
        result: DType | None = dtypes.from_numpy(np_dtype)
    except TypeError:
        result = None
    _NUMPY_DTYPES[np_dtype] = result
    return result


def c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """Whether element strides are row-major dense (dims of extent 1 may have any stride)."""
    expected = 1
    for extent, stride in zip(reversed(shape), reversed(strides), strict=True):
        if extent == 0:
            return True
        if extent != 1 and stride != expected:
            return False
        expected *= extent
    return True


class ArrayReader:
    """Reads the facts the launcher needs from arrays of one library.

    Subclasses override what their library answers directly; each method takes the array.
    """

    library: str = "?"

    def pointer(self, a: Any) -> int:
        raise NotImplementedError

    def shape(self, a: Any) -> tuple[int, ...]:
        return tuple(a.shape)

    def strides(self, a: Any) -> tuple[int, ...]:
        """Strides in elements."""
        raise NotImplementedError

    def is_c_contiguous(self, a: Any) -> bool:
        return c_contiguous(self.shape(a), self.strides(a))

    def dtype(self, a: Any) -> DType | None:
        return dtype_from_numpy(a.dtype)

    def library_of(self, a: Any) -> str:
        """The library that owns ``a`` (whose stream a launch joins)."""
        return self.library

    def dtype_name(self, a: Any) -> str:
        """The library's own name of the element type, for error messages."""
        return str(a.dtype)

    def device(self, a: Any) -> str:
        raise NotImplementedError

    def is_readonly(self, a: Any) -> bool:
        return False


def _address_of(buffer: Any) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


class NumpyReader(ArrayReader):
    library = "numpy"

    def pointer(self, a: np.ndarray) -> int:
        # ``a.ctypes.data`` builds a helper object per call (~1.5 µs); taking the address of
        # a ctypes view of the buffer is 4x cheaper. It needs a writable, contiguous,
        # non-empty buffer, so anything else takes the documented route.
        try:
            return _address_of(a)
        except (TypeError, ValueError, BufferError):
            return a.ctypes.data

    def shape(self, a: np.ndarray) -> tuple[int, ...]:
        return a.shape

    def strides(self, a: np.ndarray) -> tuple[int, ...]:
        itemsize = a.itemsize
        return tuple(s // itemsize for s in a.strides)

    def is_c_contiguous(self, a: np.ndarray) -> bool:
        return a.flags.c_contiguous

    def device(self, a: np.ndarray) -> str:
        return CPU

    def is_readonly(self, a: np.ndarray) -> bool:
        return not a.flags.writeable


class CupyReader(ArrayReader):
    library = "cupy"

    def pointer(self, a: Any) -> int:
        return a.data.ptr

    def shape(self, a: Any) -> tuple[int, ...]:
        return a.shape

    def strides(self, a: Any) -> tuple[int, ...]:
        itemsize = a.itemsize
        return tuple(s // itemsize for s in a.strides)

    def is_c_contiguous(self, a: Any) -> bool:
        return a.flags.c_contiguous

    def device(self, a: Any) -> str:
        return _cuda_device(a.device.id)


# torch dtype name (after "torch.") -> tegula dtype name.
_TORCH_DTYPES = {
    "float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16",
    "float8_e4m3fn": "f8e4m3", "float8_e5m2": "f8e5m2", "float8_e8m0fnu": "e8m0",
    "int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64",
    "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64", "bool": "bool",
}  # fmt: skip


class TorchReader(ArrayReader):
    library = "torch"

    def __init__(self) -> None:
        self._dtypes: dict[Any, DType | None] = {}

    def pointer(self, a: Any) -> int:
        return a.data_ptr()  # already offset to the first element

    def shape(self, a: Any) -> tuple[int, ...]:
        return tuple(a.shape)

    def strides(self, a: Any) -> tuple[int, ...]:
        return a.stride()  # torch counts strides in elements

    def is_c_contiguous(self, a: Any) -> bool:
        return a.is_contiguous()

    def dtype(self, a: Any) -> DType | None:
        torch_dtype = a.dtype
        found = self._dtypes.get(torch_dtype, self._dtypes)
        if found is self._dtypes:
            name = _TORCH_DTYPES.get(str(torch_dtype).removeprefix("torch."))
            found = dtypes.dtype(name) if name else None
            self._dtypes[torch_dtype] = found
        return found  # type: ignore[return-value]

    def device(self, a: Any) -> str:
        index = a.get_device()  # -1 on the CPU, without building a torch.device
        return CPU if index < 0 else _cuda_device(index)


class CudaArrayInterfaceReader(ArrayReader):
    """Any object with ``__cuda_array_interface__`` (Numba, JAX, ...)."""

    library = "__cuda_array_interface__"

    def pointer(self, a: Any) -> int:
        return a.__cuda_array_interface__["data"][0]

    def shape(self, a: Any) -> tuple[int, ...]:
        return tuple(a.__cuda_array_interface__["shape"])

    def strides(self, a: Any) -> tuple[int, ...]:
        cai = a.__cuda_array_interface__
        shape = tuple(cai["shape"])
        if cai.get("strides") is None:
            return _contiguous_strides(shape)
        itemsize = np.dtype(cai["typestr"]).itemsize
        return tuple(s // itemsize for s in cai["strides"])

    def dtype(self, a: Any) -> DType | None:
        return dtype_from_numpy(np.dtype(a.__cuda_array_interface__["typestr"]))

    def dtype_name(self, a: Any) -> str:
        return str(np.dtype(a.__cuda_array_interface__["typestr"]))

    def is_readonly(self, a: Any) -> bool:
        return bool(a.__cuda_array_interface__["data"][1])

    def device(self, a: Any) -> str:
        # The interface does not say which device owns the memory; the driver does.
        import cupy

        attributes = cupy.cuda.runtime.pointerGetAttributes(self.pointer(a))
        return _cuda_device(attributes.device)


_DLPACK_CPU = 1  # DLDeviceType kDLCPU


class HostDLPackReader(ArrayReader):
    """Host arrays of any other library, through DLPack (``__dlpack__``): each question is
    asked of the zero-copy NumPy view ``np.from_dlpack`` makes, so memory, strides and the
    read-only flag are the producer's own. Device memory offered only through DLPack is
    refused by name: which stream to synchronize with is the producer's to say, and CuPy's
    ``cupy.from_dlpack`` or ``torch.from_dlpack`` already asks it."""

    library = "dlpack"

    @staticmethod
    def _view(a: Any) -> np.ndarray:
        device_type, device_id = a.__dlpack_device__()
        if device_type != _DLPACK_CPU:
            raise TypeError(
                f"{type(a).__qualname__} offers device memory only through DLPack (device "
                f"type {device_type}, id {device_id}); wrap it with cupy.from_dlpack or "
                f"torch.from_dlpack before the call")
        return np.from_dlpack(a)

    def pointer(self, a: Any) -> int:
        return _NUMPY_READER.pointer(self._view(a))

    def shape(self, a: Any) -> tuple[int, ...]:
        return self._view(a).shape

    def strides(self, a: Any) -> tuple[int, ...]:
        return _NUMPY_READER.strides(self._view(a))

    def is_c_contiguous(self, a: Any) -> bool:
        return self._view(a).flags.c_contiguous

    def dtype(self, a: Any) -> DType | None:
        return dtype_from_numpy(self._view(a).dtype)

    def dtype_name(self, a: Any) -> str:
        return str(self._view(a).dtype)

    def device(self, a: Any) -> str:
        return CPU

    def is_readonly(self, a: Any) -> bool:
        return not self._view(a).flags.writeable


@dataclass(frozen=True)
class Reinterpreted:
    """An array whose bytes are read as ``dtype``: how to pass an element type the array's
    library lacks (CuPy has no ``e8m0`` or 8-bit floats) without giving up the dtype check.
    ``array`` holds elements of ``dtype``'s width (``uint8`` bytes for an 8-bit type);
    :func:`reinterpret` builds one and checks that."""

    array: Any
    dtype: DType


def reinterpret(array: Any, dtype: DType | str) -> Reinterpreted:
    """``array`` (any array the runtime reads) with its elements read as ``dtype``, e.g.
    ``reinterpret(cupy.asarray(scales.view(np.uint8)), "e8m0")``."""
    dt = dtypes.dtype(dtype) if isinstance(dtype, str) else dtype
    reader = reader_for(type(array))
    if reader is None or isinstance(array, Reinterpreted):
        raise TypeError(f"reinterpret needs an array, not {describe(array)}")
    if dt.is_subbyte:
        raise TypeError(f"reinterpret takes whole-byte types; {dt.name} is stored packed")
    held = reader.dtype(array)
    if held is None or held.bits != dt.bits:
        raise TypeError(
            f"reinterpret as {dt.name} needs elements of {dt.bits} bits, not "
            f"{describe(array)}")
    return Reinterpreted(array, dt)


class ReinterpretedReader(ArrayReader):
    """Everything from the wrapped array's reader except the element type."""

    library = "reinterpreted"

    def _inner(self, a: Reinterpreted) -> ArrayReader:
        reader = reader_for(type(a.array))
        assert reader is not None  # checked by reinterpret
        return reader

    def library_of(self, a: Any) -> str:
        return self._inner(a).library_of(a.array)

    def pointer(self, a: Any) -> int:
        return self._inner(a).pointer(a.array)

    def shape(self, a: Any) -> tuple[int, ...]:
        return self._inner(a).shape(a.array)

    def strides(self, a: Any) -> tuple[int, ...]:
        return self._inner(a).strides(a.array)

    def is_c_contiguous(self, a: Any) -> bool:
        return self._inner(a).is_c_contiguous(a.array)

    def dtype(self, a: Any) -> DType | None:
        return a.dtype

    def dtype_name(self, a: Any) -> str:
        return f"{a.dtype.name} (as {self._inner(a).dtype_name(a.array)})"

    def device(self, a: Any) -> str:
        return self._inner(a).device(a.array)

    def is_readonly(self, a: Any) -> bool:
        return self._inner(a).is_readonly(a.array)


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for extent in reversed(shape):
        strides.append(step)
        step *= max(extent, 1)
    return tuple(reversed(strides))


_NUMPY_READER = NumpyReader()
_READERS: dict[type, ArrayReader | None] = {
    np.ndarray: _NUMPY_READER, Reinterpreted: ReinterpretedReader()}


def _find_reader(cls: type) -> ArrayReader | None:
    module = cls.__module__ or ""
    root = module.split(".", 1)[0]
    if issubclass(cls, np.ndarray):
        return _NUMPY_READER
    if root == "cupy" and hasattr(cls, "__cuda_array_interface__"):
        return CupyReader()
    if root == "torch":
        import torch

        if issubclass(cls, torch.Tensor):
            return TorchReader()
    if hasattr(cls, "__cuda_array_interface__"):
        return CudaArrayInterfaceReader()
    if hasattr(cls, "__dlpack__") and hasattr(cls, "__dlpack_device__"):
        return HostDLPackReader()
    return None


def reader_for(cls: type) -> ArrayReader | None:
    """The reader for arrays of type ``cls``, or ``None`` if it is no array type we know."""
    try:
        return _READERS[cls]
    except KeyError:
        reader = _READERS[cls] = _find_reader(cls)
        return reader


def is_array(obj: object) -> bool:
    return reader_for(type(obj)) is not None


@dataclass(frozen=True)
class ArrayInfo:
    """Everything the runtime reads from one array, gathered (for tools and messages)."""

    library: str
    pointer: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements
    dtype: DType | None
    dtype_name: str
    device: str
    readonly: bool

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_c_contiguous(self) -> bool:
        return c_contiguous(self.shape, self.strides)


def array_info(obj: object) -> ArrayInfo:
    """Describe an array; ``TypeError`` if ``obj`` is not one the runtime can pass."""
    reader = reader_for(type(obj))
    if reader is None:
        raise TypeError(f"{type(obj).__module__}.{type(obj).__qualname__} is not an array")
    return ArrayInfo(
        library=reader.library,
        pointer=reader.pointer(obj),
        shape=tuple(reader.shape(obj)),
        strides=tuple(reader.strides(obj)),
        dtype=reader.dtype(obj),
        dtype_name=reader.dtype_name(obj),
        device=reader.device(obj),
        readonly=reader.is_readonly(obj),
    )


def describe(obj: object) -> str:
    """A short phrase for an argument in an error message: ``a 1-d float32 array of shape
    (5,)``, ``a cuda:0 torch tensor ...``, or ``an int``."""
    reader = reader_for(type(obj))
    if reader is None:
        kind = type(obj).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        return f"{article} {kind}" + ("" if isinstance(obj, str) else f" ({obj!r})")[:80]
    shape = tuple(reader.shape(obj))
    what = "tensor" if reader.library == "torch" else "array"
    where = reader.device(obj)
    place = "" if where == CPU and reader.library == "numpy" else f" on {where}"
    return (
        f"a {len(shape)}-d {reader.dtype_name(obj)} {reader.library} {what} of shape "
        f"{shape}{place}"
    )


ScalarConverter = Callable[[Any], Any]
