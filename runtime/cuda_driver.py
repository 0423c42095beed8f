"""CUDA driver entry points called through ctypes, and kernel arguments packed for them.

A launch through CuPy's ``Function.__call__`` converts every argument on every call (a
Python int becomes a C scalar object, a NumPy scalar is inspected). A tegula kernel knows the
C type of each argument once and for all, so :class:`PackedArguments` writes them into one
host buffer with a single ``struct.pack_into`` and ``cuLaunchKernel`` reads them through a
fixed array of pointers into it: the driver copies the values at the call, so the buffer is
free again as soon as the call returns.
"""

from __future__ import annotations

import ctypes
import functools
import struct
import threading
from collections.abc import Sequence
from typing import Any

from tegula.ir import dtypes

from .errors import LaunchError

# Struct codes (standard sizes, little-endian) of scalar parameters, by element type.
_SCALAR_CODES = {
    "bool": "?", "f16": "e", "bf16": "H", "f32": "f", "f64": "d",
    "i8": "b", "i16": "h", "i32": "i", "i64": "q",
    "u8": "B", "u16": "H", "u32": "I", "u64": "Q",
}
POINTER_CODE = "Q"
SYMBOL_CODE = "q"  # size symbols travel as long long
TENSOR_MAP_CODE = "128s"  # a CUtensorMap, by value (its bytes)

CUDA_ERROR_INVALID_CONTEXT = 201


def scalar_code(dt: dtypes.DType) -> str | None:
    """The struct code a scalar parameter of ``dt`` travels as, or None (no C scalar)."""
    return _SCALAR_CODES.get(dt.name)


@functools.cache
def _library() -> ctypes.CDLL:
    try:
        return ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise LaunchError(f"cannot load the CUDA driver library: {exc}") from None


@functools.cache
def driver_function(name: str, argtypes: tuple[Any, ...], restype: Any = ctypes.c_int) -> Any:
    """``name`` from libcuda with its C signature set (looked up once)."""
    try:
        function = getattr(_library(), name)
    except AttributeError as exc:
        raise LaunchError(f"the CUDA driver has no {name}: {exc}") from None
    function.argtypes = list(argtypes)
    function.restype = restype
    return function


def error_text(status: int) -> str:
    """The driver's name and description of a ``CUresult``."""
    text = ctypes.c_char_p()
    describe = driver_function("cuGetErrorString", (ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)))
    if describe(status, ctypes.byref(text)) != 0 or text.value is None:
        return f"CUresult {status}"
    return f"{text.value.decode()} (CUresult {status})"


_LAUNCH_ARGTYPES = (
    ctypes.c_void_p,  # CUfunction
    ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,  # grid
    ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,  # block
    ctypes.c_uint,  # dynamic shared memory bytes
    ctypes.c_void_p,  # CUstream
    ctypes.c_void_p,  # void** kernelParams
    ctypes.c_void_p,  # void** extra
)


class PackedArguments:
    """One kernel's launch arguments in a host buffer, each at an offset aligned to its size,
    with the array of pointers to them that ``cuLaunchKernel`` takes. A lock keeps two
    threads launching the same kernel from packing over each other."""

    def __init__(self, codes: Sequence[str]) -> None:
        layout, offsets, at = ["<"], [], 0
        for code in codes:
            size = struct.calcsize("<" + code)
            align = min(size, 8) if code != TENSOR_MAP_CODE else 64
            padding = -at % align
            if padding:
                layout.append(f"{padding}x")
            at += padding
            offsets.append(at)
            layout.append(code)
            at += size
        self.format = struct.Struct("".join(layout))
        self.buffer = ctypes.create_string_buffer(max(at, 1))
        base = ctypes.addressof(self.buffer)
        self.pointers = (ctypes.c_void_p * max(len(offsets), 1))(*(base + o for o in offsets))
        self.lock = threading.Lock()

    def pack(self, values: Sequence[Any]) -> None:
        """Write ``values`` where :attr:`pointers` point (hold :attr:`lock` around it and the
        launch that reads them)."""
        self.format.pack_into(self.buffer, 0, *values)

    def launch(self, function: int, grid: tuple[int, int, int], block: tuple[int, int, int],
               smem_bytes: int, stream: int, values: Sequence[Any]) -> int:
        """Pack ``values`` and launch; the driver's ``CUresult``."""
        launch = driver_function("cuLaunchKernel", _LAUNCH_ARGTYPES)
        with self.lock:
            self.pack(values)
            return int(launch(function, *grid, *block, smem_bytes, stream,
                              ctypes.addressof(self.pointers), None))
