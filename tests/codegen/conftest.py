"""Fixtures that build generated code: NVRTC for CUDA C, llvmlite's MCJIT for LLVM IR.

The runtime owns the production versions of both (``tegula.runtime.nvrtc``,
``tegula.runtime.cpu_jit``); these are used when present, and small local equivalents
otherwise, so the code generators can be tested on their own.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

ARCHES = ("sm_80", "sm_90a")


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _cuda_include_dir() -> Path | None:
    spec = importlib.util.find_spec("nvidia")
    for root in spec.submodule_search_locations if spec else ():
        for candidate in sorted(Path(root).glob("cu*/include")):
            if (candidate / "cuda_fp16.h").exists():
                return candidate
    return None


def _nvrtc_compile_locally(source: str, name: str, arch: str) -> bytes:
    from cuda.bindings import nvrtc

    def check(result: tuple) -> tuple:
        if result[0] != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise RuntimeError(f"NVRTC call failed: {result[0]}")
        return result[1:]

    (program,) = check(nvrtc.nvrtcCreateProgram(source.encode(), f"{name}.cu".encode(), 0, [], []))
    options = [f"--gpu-architecture={arch}".encode(), b"--std=c++17"]
    include = _cuda_include_dir()
    if include is not None:
        options.append(f"--include-path={include}".encode())
    status = nvrtc.nvrtcCompileProgram(program, len(options), options)[0]
    (log_size,) = check(nvrtc.nvrtcGetProgramLogSize(program))
    log = b" " * log_size
    check(nvrtc.nvrtcGetProgramLog(program, log))
    if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        numbered = "\n".join(f"{i + 1:4d} {line}" for i, line in enumerate(source.splitlines()))
        raise AssertionError(f"NVRTC failed for {arch}:\n{log.decode()}\n{numbered}")
    (size,) = check(nvrtc.nvrtcGetCUBINSize(program))
    cubin = b" " * size
    check(nvrtc.nvrtcGetCUBIN(program, cubin))
    check(nvrtc.nvrtcDestroyProgram(program))
    return cubin


@pytest.fixture(scope="session")
def compile_cuda() -> Callable[[str, str, str], bytes]:
    """``compile_cuda(source, name, arch) -> cubin bytes``; skips where NVRTC is missing."""
    if _has_module("tegula.runtime.nvrtc"):
        runtime_nvrtc = importlib.import_module("tegula.runtime.nvrtc")

        def via_runtime(source: str, name: str, arch: str) -> bytes:
            binary = runtime_nvrtc.compile_cuda(source, name, arch)
            return getattr(binary, "cubin", None) or getattr(binary, "image", binary)

        return via_runtime
    if not _has_module("cuda.bindings"):
        pytest.skip("NVRTC is not installed (pip install cuda-bindings nvidia-cuda-nvrtc)")
    return _nvrtc_compile_locally


class JitKernel:
    """A CPU kernel compiled from LLVM IR, called with the runtime's argv convention."""

    def __init__(self, ir_text: str, name: str) -> None:
        import llvmlite.binding as llvm

        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        module = llvm.parse_assembly(ir_text)
        module.verify()
        machine = llvm.Target.from_default_triple().create_target_machine(
            cpu=llvm.get_host_cpu_name(),
            features=llvm.get_host_cpu_features().flatten(),
            opt=3,
        )
        builder = llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(3))
        builder.getModulePassManager().run(module, builder)
        self.optimized_ir = str(module)
        self.engine = llvm.create_mcjit_compiler(module, machine)
        self.engine.finalize_object()
        address = self.engine.get_function_address(name)
        self.function = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)(
            address
        )

    def __call__(self, args: Sequence[object], symbols: Sequence[int], grid: Sequence[int]) -> None:
        """Run every block of ``grid``: arrays pass as pointers, floats as C doubles."""
        slots: list[int] = []
        for arg in args:
            if isinstance(arg, np.ndarray):
                slots.append(arg.ctypes.data)
            elif isinstance(arg, float):
                slots.append(int(np.array(arg, dtype=np.float64).view(np.int64)))
            else:
                slots.append(int(arg))  # type: ignore[call-overload]
        slots.extend(int(s) for s in symbols)
        slots.extend(int(g) for g in grid)
        argv = np.array(slots, dtype=np.int64)
        blocks = int(np.prod(grid))
        middle = blocks // 2  # two calls: the kernel must honour [begin, end)
        self.function(argv.ctypes.data, 0, middle)
        self.function(argv.ctypes.data, middle, blocks)


@pytest.fixture(scope="session")
def jit() -> Callable[[str, str], JitKernel]:
    """``jit(llvm_ir, name)`` compiles LLVM IR text at O3 for this CPU."""
    return JitKernel
