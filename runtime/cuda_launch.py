"""Loading cubins (or PTX) and launching kernels on a CUDA GPU, through CuPy.

CuPy is imported only when a CUDA kernel is first loaded, so the CPU path never needs it.
A module is loaded once per device, the first time the kernel runs there; launches go to
the current stream of the library that owns the arrays (CuPy's, or PyTorch's for torch
tensors), so a kernel is ordered with the work around it. Where every argument has a C type
of its own (:func:`launch_argument_codes`), a launch packs them once and calls the driver's
``cuLaunchKernel`` itself (:class:`~.cuda_driver.PackedArguments`); otherwise, and where the
driver finds no current context on this thread, CuPy's ``Function`` launches it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
from tegula.ir.dtypes import DType

from .cuda_driver import (
    CUDA_ERROR_INVALID_CONTEXT,
    POINTER_CODE,
    SYMBOL_CODE,
    TENSOR_MAP_CODE,
    PackedArguments,
    error_text,
    scalar_code,
)
from .errors import DeviceUnavailableError, LaunchError
from .spec import KernelSpec

# Above this, a kernel must opt in to dynamic shared memory (cudaFuncSetAttribute).
DEFAULT_DYNAMIC_SMEM_LIMIT = 48 * 1024
_MAX_GRID_YZ = 65535
_MAX_GRID_X = 2**31 - 1


@cache
def cuda_unavailable_reason() -> str | None:
    """Why CUDA kernels cannot run in this process, or ``None`` if they can."""
    try:
        import cupy
    except ImportError as exc:
        return f"CuPy is not installed ({exc}); install tegula[cuda]"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CuPy raises its own runtime errors when there is no driver
        return f"CuPy sees no CUDA driver or device ({exc})"
    return None if count > 0 else "no CUDA device is visible"


def cuda_available() -> bool:
    """Whether CuPy is importable and sees at least one GPU."""
    return cuda_unavailable_reason() is None


class _StreamPointer:
    """The one thing CuPy's launch reads from a stream: its handle, ``.ptr``."""

    __slots__ = ("ptr",)

    def __init__(self, ptr: int) -> None:
        self.ptr = ptr


_stream_pointers: dict[int, _StreamPointer] = {}


def _torch_stream(device_index: int) -> _StreamPointer:
    import torch

    handle = torch.cuda.current_stream(device_index).cuda_stream
    found = _stream_pointers.get(handle)
    if found is None:
        found = _stream_pointers[handle] = _StreamPointer(handle)
    return found


def _scalar_converter(dt: DType) -> Callable[[Any], Any]:
    """Python value → a NumPy scalar of the parameter's exact C width, which CuPy passes
    by value. NumPy raises ``OverflowError`` for integers out of range."""
    if dt.name == "bf16":
        bf16 = dt.to_numpy()
        return lambda value: np.array(value, dtype=bf16).view(np.uint16)[()]
    if dt.name == "bool":
        return np.bool_
    return dt.to_numpy().type


def launch_argument_codes(spec: KernelSpec) -> tuple[str, ...] | None:
    """The struct code of each launch argument in the order :class:`~.kernel.Kernel` passes
    them: each parameter (a tensor's data pointer, a scalar at its C type), the size symbols
    (``long long``), then the tensor maps (by value); None where a scalar has no C type of
    its own."""
    codes = []
    for p in spec.params:
        code = POINTER_CODE if p.is_tensor else scalar_code(p.element_type)
        if code is None:
            return None
        codes.append(code)
    return (*codes, *[SYMBOL_CODE] * len(spec.symbols),
            *[TENSOR_MAP_CODE] * len(spec.tensor_maps))


def _current_stream_pointer() -> int:
    """The handle of CuPy's current stream on the current device."""
    global _stream_pointer
    if _stream_pointer is None:
        from cupy.cuda import stream

        found = getattr(stream, "get_current_stream_ptr", None)
        _stream_pointer = found or (lambda: stream.get_current_stream().ptr)
    return _stream_pointer()


_stream_pointer: Callable[[], int] | None = None


def _load_module(image: bytes | str) -> Any:
    import cupy

    module = cupy.cuda.function.Module()
    if isinstance(image, str):  # PTX: the driver reads a NUL-terminated string
        module.load(image.encode() + b"\0")
    else:
        module.load(image)
    return module


class CudaLauncher:
    """Launches one kernel function from a cubin or PTX image.

    ``module_loader`` exists so the launch logic can be tested with a fake module where
    there is no GPU.
    """

    device_kind = "cuda"

    def __init__(
        self,
        image: bytes | str,
        name: str,
        *,
        block_threads: int,
        smem_bytes: int,
        module_loader: Callable[[bytes | str], Any] = _load_module,
        argument_codes: tuple[str, ...] | None = None,
    ) -> None:
        if not image:
            raise LaunchError(f"empty CUDA image for kernel {name!r}")
        self.image = image
        self.name = name
        self.block = (block_threads, 1, 1)
        self.smem_bytes = smem_bytes
        self._module_loader = module_loader
        self._functions: dict[int, Any] = {}  # device index -> loaded function
        self._modules: dict[int, Any] = {}  # kept alive while their functions are
        self._real = module_loader is _load_module
        # The driver-call launch, for a real module whose arguments all have C types.
        self._packed = (PackedArguments(argument_codes)
                        if self._real and argument_codes is not None else None)
        self._map_count = sum(code == TENSOR_MAP_CODE for code in argument_codes or ())

    def scalar_converter(self, dt: DType) -> Callable[[Any], Any]:
        return _scalar_converter(dt)

    def function(self, device_index: int) -> Any:
        """The kernel function loaded on ``device_index`` (loading it the first time)."""
        found = self._functions.get(device_index)
        if found is None:
            found = self._load(device_index)
        return found

    def _load(self, device_index: int) -> Any:
        reason = cuda_unavailable_reason() if self._real else None
        if reason is not None:
            raise DeviceUnavailableError(f"cannot run CUDA kernel {self.name!r}: {reason}")
        with _on_device(device_index, self._real):
            try:
                module = self._module_loader(self.image)
                function = module.get_function(self.name)
            except Exception as exc:
                raise LaunchError(
                    f"could not load CUDA kernel {self.name!r} on cuda:{device_index}: {exc}"
                ) from exc
            if self.smem_bytes > DEFAULT_DYNAMIC_SMEM_LIMIT:
                try:
                    self._allow_dynamic_smem(function)
                except Exception as exc:
                    raise LaunchError(
                        f"kernel {self.name!r} needs {self.smem_bytes} bytes of dynamic "
                        f"shared memory, more than cuda:{device_index} allows: {exc}"
                    ) from exc
        self._modules[device_index] = module
        self._functions[device_index] = function
        return function

    def _allow_dynamic_smem(self, function: Any) -> None:
        if not self._real:
            function.max_dynamic_shared_size_bytes = self.smem_bytes
            return
        from cupy.cuda import driver

        driver.funcSetAttribute(
            function.ptr,
            driver.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            self.smem_bytes,
        )

    def launch(self, grid: tuple[int, int, int], args: list[Any], device: str,
               library: str) -> None:
        gx, gy, gz = grid
        if gx > _MAX_GRID_X or gy > _MAX_GRID_YZ or gz > _MAX_GRID_YZ:
            raise LaunchError(
                f"kernel {self.name!r}: grid {grid} exceeds CUDA's limits "
                f"({_MAX_GRID_X}, {_MAX_GRID_YZ}, {_MAX_GRID_YZ})"
            )
        index = _device_index(device)
        function = self._functions.get(index)
        if function is None:
            function = self._load(index)
        stream = _torch_stream(index) if library == "torch" else None
        if not self._real or index == _current_device():
            if self._packed is None or not self._launch_packed(function, grid, args, stream):
                function(grid, self.block, args, shared_mem=self.smem_bytes, stream=stream)
        else:
            with _on_device(index, True):
                function(grid, self.block, args, shared_mem=self.smem_bytes, stream=stream)

    def _launch_packed(self, function: Any, grid: tuple[int, int, int], args: list[Any],
                       stream: _StreamPointer | None) -> bool:
        """Launch through the driver with packed arguments; False where this thread has no
        current context (CuPy's launch sets one up)."""
        assert self._packed is not None
        if self._map_count:
            args = [*args[:-self._map_count], *(m.tobytes() for m in args[-self._map_count:])]
        handle = stream.ptr if stream is not None else _current_stream_pointer()
        status = self._packed.launch(function.ptr, grid, self.block, self.smem_bytes, handle,
                                     args)
        if status == CUDA_ERROR_INVALID_CONTEXT:
            return False
        if status:
            _raise_driver_error(self.name, status)
        return True


def _raise_driver_error(name: str, status: int) -> None:
    """Raise what CuPy's launch raises for ``status`` (callers tell a poisoned context,
    such as an earlier kernel's illegal address, by CuPy's error class), naming the kernel."""
    try:
        from cupy.cuda.driver import CUDADriverError
    except ImportError:
        raise LaunchError(f"kernel {name!r}: launch failed: {error_text(status)}") from None
    raise CUDADriverError(status)


_DEVICE_INDEX = {f"cuda:{i}": i for i in range(16)}


def _device_index(device: str) -> int:
    found = _DEVICE_INDEX.get(device)
    return found if found is not None else int(device.split(":", 1)[1])


_get_device: Callable[[], int] | None = None


def _current_device() -> int:
    global _get_device
    if _get_device is None:
        import cupy

        _get_device = cupy.cuda.runtime.getDevice
    return _get_device()


def _on_device(index: int, real: bool) -> contextlib.AbstractContextManager[Any]:
    """Make ``index`` the current device for a block (nothing to do for a fake module)."""
    if not real:
        return contextlib.nullcontext()
    import cupy

    return cupy.cuda.Device(index)
