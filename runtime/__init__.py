"""The runtime: from a compiled kernel's binary and spec to a call on arrays.

It imports only :mod:`tegula.ir`, never the compiler, so an ahead-of-time artifact runs
with the runtime alone. CuPy (CUDA) and llvmlite (CPU) are loaded when first needed.
"""

from .arrays import ArrayInfo, array_info, is_array
from .cache import CacheEntry, KernelCache, cache_key, default_cache
from .errors import (
    ArgumentError,
    CpuCompileError,
    CudaCompileError,
    DeviceUnavailableError,
    ExprError,
    LaunchError,
    SpecError,
)
from .kernel import Kernel, Launcher, load_cpu_kernel, load_cuda_kernel
from .spec import KernelSpec, ParamSpec

__all__ = [
    "ArgumentError",
    "ArrayInfo",
    "CacheEntry",
    "CpuCompileError",
    "CudaCompileError",
    "DeviceUnavailableError",
    "ExprError",
    "Kernel",
    "KernelCache",
    "KernelSpec",
    "LaunchError",
    "Launcher",
    "ParamSpec",
    "SpecError",
    "array_info",
    "cache_key",
    "default_cache",
    "is_array",
    "load_cpu_kernel",
    "load_cuda_kernel",
]
