"""The CPU back end's runtime: LLVM IR → host object code → a callable, run over a grid.

The generated function has the CPU ABI of :mod:`tegula.runtime.spec`:
``void <name>(i64* argv, i64 begin, i64 end)`` runs blocks ``[begin, end)``. Object code is
the unit that is cached and shipped in artifacts; :func:`load_object` links it into the
process with MCJIT. :func:`launch_cpu` splits the grid over the calling thread and a team of
helpers (:mod:`tegula.runtime.cpu_team`) that claim chunks of blocks in native code, with no
GIL held, so the blocks really run in parallel.
"""

from __future__ import annotations

import ctypes
import operator
import struct
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import llvmlite.binding as llvm
from tegula.ir.dtypes import DType

from .cpu_team import num_threads, team
from .errors import CpuCompileError, LaunchError

KernelFunctionType = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_int64), ctypes.c_int64,
                                      ctypes.c_int64)

# Chunks of blocks per thread. More would even out blocks of unequal cost, but on two Zen 4
# cores a W4A16 GEMV's 16 blocks ran cold in 0.59-0.62 ms as 2 chunks and 0.69-0.77 ms as 8
# (eight alternating runs each; a GEMM and softmax unchanged). The shared counter still
# moves a chunk to whichever thread is free first (a helper that wakes late).
_CHUNKS_PER_THREAD = 1


@cache
def _initialize_llvm() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    llvm.initialize_native_asmparser()


@cache
def host_target_machine(opt_level: int = 3) -> llvm.TargetMachine:
    """A target machine for this CPU, with its name and features (AVX2, AVX-512, ...)."""
    return new_host_target_machine(opt_level)


def new_host_target_machine(opt_level: int = 3) -> llvm.TargetMachine:
    """An unshared host target machine (a JIT engine takes ownership of its own)."""
    _initialize_llvm()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    # PIC, so the object links both into MCJIT here and into a shared library ahead of time.
    return target.create_target_machine(
        cpu=llvm.get_host_cpu_name(),
        features=llvm.get_host_cpu_features().flatten(),
        opt=opt_level,
        reloc="pic",
        codemodel="default",
    )


def host_description() -> str:
    """Triple and CPU name: part of a cache key, since object code is specific to both."""
    _initialize_llvm()
    return f"{llvm.get_process_triple()}-{llvm.get_host_cpu_name()}"


def _optimize(module: llvm.ModuleRef, machine: llvm.TargetMachine, opt_level: int) -> None:
    if hasattr(llvm, "create_pass_builder"):  # new pass manager (llvmlite >= 0.44)
        tuning = llvm.create_pipeline_tuning_options(speed_level=opt_level)
        tuning.loop_vectorization = opt_level >= 2
        tuning.slp_vectorization = opt_level >= 2
        builder = llvm.create_pass_builder(machine, tuning)
        builder.getModulePassManager().run(module, builder)
        return
    builder = llvm.PassManagerBuilder()  # pragma: no cover - older llvmlite
    builder.opt_level = opt_level
    builder.loop_vectorize = opt_level >= 2
    builder.slp_vectorize = opt_level >= 2
    passes = llvm.create_module_pass_manager()
    machine.add_analysis_passes(passes)
    builder.populate(passes)
    passes.run(module)


def parse_llvm_ir(ir_text: str) -> llvm.ModuleRef:
    """Parse and verify IR; :class:`CpuCompileError` with LLVM's message otherwise."""
    _initialize_llvm()
    try:
        module = llvm.parse_assembly(ir_text)
        module.verify()
    except RuntimeError as exc:
        raise CpuCompileError(f"LLVM rejected the generated IR: {exc}") from None
    return module


def optimized_module(ir_text: str, machine: llvm.TargetMachine, opt_level: int) -> llvm.ModuleRef:
    """``ir_text`` parsed, set to ``machine``'s triple and data layout, and optimized."""
    module = parse_llvm_ir(ir_text)
    module.triple = machine.triple
    module.data_layout = str(machine.target_data)
    if opt_level > 0:
        _optimize(module, machine, opt_level)
    return module


def compile_llvm_ir(ir_text: str, *, opt_level: int = 3) -> bytes:
    """Optimize IR for this host and return its object code (ELF/Mach-O/COFF bytes)."""
    machine = host_target_machine(opt_level)
    return machine.emit_object(optimized_module(ir_text, machine, opt_level))


class CpuFunction:
    """A kernel function linked into this process; keeps its JIT engine (and so its code)
    alive for as long as it lives."""

    def __init__(self, engine: llvm.ExecutionEngine, name: str, address: int) -> None:
        self._engine = engine
        self.name = name
        self.address = address
        self.cfunc = KernelFunctionType(address)

    def __call__(self, argv: ctypes.Array, begin: int, end: int) -> None:
        self.cfunc(argv, begin, end)

    def __repr__(self) -> str:
        return f"<CpuFunction {self.name} at {self.address:#x}>"


def load_object(obj: bytes, name: str) -> CpuFunction:
    """Link object code into the process with MCJIT and find the function ``name``."""
    return load_functions(obj, (name,))[0]


def load_functions(obj: bytes, names: Sequence[str]) -> list[CpuFunction]:
    """Link object code into the process once and find each function of ``names``."""
    machine = new_host_target_machine()  # the engine owns and frees it
    holder = llvm.parse_assembly("")  # MCJIT needs a module to own; the code comes after
    holder.triple = machine.triple
    engine = llvm.create_mcjit_compiler(holder, machine)
    try:
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        engine.finalize_object()
    except RuntimeError as exc:
        raise LaunchError(f"could not link object code for {names[0]!r}: {exc}") from None
    functions = []
    for name in names:
        address = engine.get_function_address(name)
        if not address:
            raise LaunchError(f"object code has no function named {name!r}")
        functions.append(CpuFunction(engine, name, address))
    return functions


def launch_cpu(
    fn: CpuFunction,
    argv_values: Sequence[int],
    grid: tuple[int, int, int],
    *,
    threads: int | None = None,
) -> None:
    """Run every block of ``grid``; ``argv_values`` are the header and symbol slots (the
    launcher appends ``gx, gy, gz``). Returns when all blocks are done.

    The calling thread works too, beside ``threads - 1`` helpers; each takes the next chunk
    of blocks from a shared counter until none is left. (A task per chunk, with the caller
    only waiting, took twice as long for a 1 ms GEMV on two cores: every chunk paid a
    hand-off between threads; see :mod:`~tegula.runtime.cpu_team` for how helpers wait.)"""
    gx, gy, gz = grid
    if gx <= 0 or gy <= 0 or gz <= 0:
        return
    total = gx * gy * gz
    slots = (ctypes.c_int64 * (len(argv_values) + 3))(*argv_values, gx, gy, gz)
    threads = min(num_threads() if threads is None else threads, total)
    chunks = min(total, threads * _CHUNKS_PER_THREAD)
    if threads == 1 or not team(threads - 1).run(fn.address, slots, total, chunks):
        fn.cfunc(slots, 0, total)  # one thread, or the team is busy with another launch


_DOUBLE = struct.Struct("<d")
_INT64 = struct.Struct("<q")


def _scalar_converter(dt: DType) -> Callable[[Any], int]:
    """Python value → the 64-bit argv slot of the CPU ABI."""
    if dt.is_float:

        def float_slot(value: Any) -> int:
            return _INT64.unpack(_DOUBLE.pack(float(value)))[0]

        return float_slot
    if dt.is_bool:
        return lambda value: 1 if value else 0
    lo, hi = (-(1 << (dt.bits - 1)), (1 << (dt.bits - 1)) - 1) if dt.is_signed else (
        0, (1 << dt.bits) - 1)

    def int_slot(value: Any) -> int:
        number = operator.index(value)
        if not lo <= number <= hi:
            raise OverflowError(f"{number} is out of range for {dt.name} [{lo}, {hi}]")
        return number - (1 << 64) if number >= 1 << 63 else number  # u64: same bits

    return int_slot


class CpuLauncher:
    """Launches a :class:`CpuFunction` over a grid (the CPU half of the launcher protocol)."""

    device_kind = "cpu"

    def __init__(self, function: CpuFunction, *, threads: int | None = None) -> None:
        self.function = function
        self.threads = threads

    def scalar_converter(self, dt: DType) -> Callable[[Any], int]:
        return _scalar_converter(dt)

    def launch(self, grid: tuple[int, int, int], args: list[Any], device: str,
               library: str) -> None:
        launch_cpu(self.function, args, grid, threads=self.threads)
