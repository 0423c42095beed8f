"""Errors the runtime raises.

Each names the thing at fault (a parameter, a symbol, a cache entry, a line of generated
code), so the message alone tells the user what to fix.
"""

from __future__ import annotations


class ArgumentError(TypeError):
    """An argument of a kernel call does not fit the kernel's header.

    A ``TypeError`` so that code catching the usual Python error for a bad call still works.
    """


class SpecError(ValueError):
    """A :class:`~tegula.runtime.spec.KernelSpec` is malformed (a code generator's bug)."""


class ExprError(ValueError):
    """A grid expression uses something other than the small allowed language."""


class CudaCompileError(RuntimeError):
    """NVRTC rejected CUDA C source.

    ``log`` is NVRTC's full log; ``source_excerpt`` the source around the first error, with
    line numbers, which the message repeats.
    """

    def __init__(self, message: str, log: str, source_excerpt: str = "") -> None:
        super().__init__(message)
        self.log = log
        self.source_excerpt = source_excerpt


class CpuCompileError(RuntimeError):
    """LLVM rejected generated IR (a parse or verifier error) or could not emit code."""


class LaunchError(RuntimeError):
    """A kernel could not be loaded or launched on its device."""


class DeviceUnavailableError(LaunchError):
    """The kernel's device (a CUDA GPU, through CuPy) is not present in this process."""
