"""The compile driver: DSL text → Tile IR → passes → Loop IR → CUDA C / LLVM IR → binary.

:func:`compile_kernel` is the one path every user-facing entry point (``tg.compile``, the
CLI, the benchmarks) takes. A finished kernel is cached on disk under a key made of
everything that decides its code — the DSL source, the kernel name, the compile-time
constants, the target, the pass pipeline and the tegula version — so a later process loads
the binary and its :class:`KernelSpec` without running the compiler at all.

:func:`module_index` caches the headers of a source file's kernels (names, compile-time
params, the size symbols their defaults depend on) under the source text, so that
``tg.compile`` on a warm cache parses nothing: the program is handed to
:func:`compile_kernel` as a :class:`LazyProgram`, parsed only on a miss.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tegula.ir.loop import LoopKernel
from tegula.ir.target import Target
from tegula.ir.tile import TensorType, TileKernel
from tegula.passes.manager import PassContext, run_pipeline
from tegula.passes.narrow import INDEX_BITS_OPTION
from tegula.passes.pipeline import DEFAULT_PIPELINE
from tegula.runtime.cache import KernelCache, cache_key, default_cache
from tegula.runtime.kernel import Kernel
from tegula.runtime.spec import KernelSpec, ParamSpec
from tegula.runtime.tensor_map import TensorMapSpec

from tegula import __version__ as VERSION

from .fingerprint import compiler_fingerprint
from .headers import IndexFormatError, ModuleIndex
from .syntax import Program

log = logging.getLogger("tegula.compile")


@dataclass
class CompileResult:
    """Everything one compilation produced, for callers that want more than the kernel."""

    kernel: Kernel
    spec: KernelSpec
    source: str  # generated CUDA C or LLVM IR
    tile_ir: TileKernel | None = None
    loop_ir: LoopKernel | None = None
    timings: list[tuple[str, float]] = field(default_factory=list)  # (phase, seconds)
    cache_hit: bool = False
    backend_log: str = ""


def _machine(target: Target) -> str:
    """What else decides the binary: the host CPU for object code (CUDA cubins are per arch)."""
    if target.is_cuda:
        return ""
    from tegula.runtime.cpu_jit import host_description

    return host_description()


def kernel_spec(tile: TileKernel, loop: LoopKernel, target: Target) -> KernelSpec:
    params = []
    for p in tile.params:
        t = p.value.type
        if isinstance(t, TensorType):
            params.append(
                ParamSpec(
                    p.name,
                    "tensor",
                    t.dtype.name,
                    tuple(t.shape),
                    tuple(t.strides) if t.strides is not None else None,
                    writes=bool(getattr(p, "writes", False)),
                )
            )
        else:
            params.append(ParamSpec(p.name, "scalar", t.dtype.name))
    by_buffer = {p.buffer: p.name for p in loop.params if p.buffer is not None}
    tensor_maps = tuple(
        TensorMapSpec(by_buffer[m.tensor], m.box, m.swizzle_bytes, m.dims)
        for m in loop.tensor_maps
    )
    return KernelSpec(
        name=tile.name,
        tensor_maps=tensor_maps,
        params=tuple(params),
        symbols=tuple(s.name for s in tile.symbols),
        grid=tuple(tile.grid),
        block_threads=loop.block_threads,
        smem_bytes=loop.smem_bytes,
        target=str(target),
        index_bits=loop.index_bits,
    )


def generate_code(loop: LoopKernel, target: Target) -> str:
    if target.is_cuda:
        from tegula.codegen.cuda import generate_cuda

        return generate_cuda(loop)
    from tegula.codegen.llvm import generate_llvm

    return generate_llvm(loop)


def build_binary(code: str, name: str, target: Target) -> tuple[bytes, str]:
    """Compile generated code: a cubin through NVRTC, or host object code through LLVM."""
    if target.is_cuda:
        from tegula.runtime.nvrtc import compile_cuda

        binary = compile_cuda(code, name, target.arch)
        if binary.cubin is None:
            return binary.ptx.encode(), binary.log
        return binary.cubin, binary.log
    from tegula.runtime.cpu_jit import compile_llvm_ir

    return compile_llvm_ir(code), ""


def make_kernel(spec: KernelSpec, binary: bytes, target: Target, source: str) -> Kernel:
    if target.is_cuda:
        from tegula.runtime.cuda_launch import CudaLauncher

        launcher: Any = CudaLauncher(
            binary, spec.name, block_threads=spec.block_threads, smem_bytes=spec.smem_bytes
        )
    else:
        from tegula.runtime.cpu_jit import CpuLauncher, load_object

        launcher = CpuLauncher(load_object(binary, spec.name))
    return Kernel(spec, launcher, source=source)


def lower_kernel(
    tile: TileKernel,
    target: Target,
    *,
    dump_dir: Path | None = None,
    keep_dumps: bool = False,
    pipeline: tuple[str, ...] = DEFAULT_PIPELINE,
    verify: bool = True,
    index_bits: int | None = None,
) -> tuple[LoopKernel, PassContext]:
    """Tile IR through ``pipeline`` to Loop IR. ``index_bits`` (32 or 64) overrides the
    target's default width of index arithmetic (``passes/narrow.py``)."""
    ctx = PassContext(target=target, dump_dir=dump_dir, keep_dumps=keep_dumps, verify=verify)
    if index_bits is not None:
        ctx.options[INDEX_BITS_OPTION] = index_bits
    loop = run_pipeline(tile, pipeline, ctx)
    assert isinstance(loop, LoopKernel)
    return loop, ctx


ProgramSource = Program | Callable[[], Program]


class LazyProgram:
    """The parsed program of one source text, parsed on first use and then kept.

    A warm ``tg.compile`` finds every kernel in the disk cache and never calls this.
    """

    def __init__(self, source_text: str, filename: str) -> None:
        self.source_text = source_text
        self.filename = filename
        self._program: Program | None = None
        self._parsing = threading.Lock()  # kernels may be built on several threads

    @property
    def parsed(self) -> bool:
        return self._program is not None

    def __call__(self) -> Program:
        with self._parsing:
            if self._program is None:
                from . import parser  # imported here: a warm compile needs no parser at all

                self._program = parser.parse(self.source_text, self.filename)
        return self._program


def _discard(cache: KernelCache, key: str) -> None:
    """Remove an entry whose files are intact but whose content is unusable, so that the
    rebuilt one can take its place (``put`` keeps an existing entry)."""
    path = cache.entry_path(key)
    trash = path.with_name(f".trash-{key}-{uuid.uuid4().hex}")
    try:
        os.rename(path, trash)
    except OSError:
        return  # already gone
    shutil.rmtree(trash, ignore_errors=True)


def module_index(
    source_text: str,
    filename: str,
    program: ProgramSource,
    *,
    cache: KernelCache | None = None,
    use_cache: bool = True,
) -> ModuleIndex:
    """The headers of every kernel of ``source_text``: from the cache when it has them
    (no parse), else from ``program`` (then stored)."""
    cache = cache if cache is not None else default_cache()
    key = cache_key("module-index", VERSION, source_text)
    if use_cache:
        entry = cache.get(key)
        if entry is not None:
            try:
                return ModuleIndex.from_json(entry.files["index.json"])
            except (KeyError, IndexFormatError) as exc:
                log.warning("module index %s of %s is unusable (%s); rebuilding",
                            key[:12], filename, exc)
                _discard(cache, key)
    resolved = program() if callable(program) else program
    index = ModuleIndex.from_program(resolved)
    if use_cache:
        cache.put(key, {"index.json": index.to_json().encode()}, {"source": filename})
    return index


def compile_kernel(
    source_text: str,
    filename: str,
    name: str,
    target: Target,
    constants: Mapping[str, Any] | None = None,
    *,
    program: ProgramSource | None = None,
    cache: KernelCache | None = None,
    use_cache: bool = True,
    dump_dir: Path | None = None,
    index_bits: int | None = None,
) -> CompileResult:
    """Compile kernel ``name`` of ``source_text`` with ``constants``, or load it from the
    disk cache. ``program`` is the parsed source or a callable that parses it (called only
    on a cache miss); by default the source is parsed when needed.

    A kernel built with 32-bit indices (CUDA's default where legal) gets a 64-bit twin,
    compiled (or loaded) at the first call whose sizes 32 bits cannot index."""
    constants = dict(constants or {})
    cache = cache if cache is not None else default_cache()
    key = cache_key(
        "kernel",
        VERSION,
        source_text,
        name,
        sorted(constants.items()),
        str(target),
        DEFAULT_PIPELINE,
        _machine(target),
        compiler_fingerprint(),
        index_bits,
    )

    def wide_twin() -> Kernel:
        return compile_kernel(
            source_text, filename, name, target, constants, program=program, cache=cache,
            use_cache=use_cache, index_bits=64,
        ).kernel
    if use_cache and dump_dir is None:
        t0 = time.perf_counter()
        entry = cache.get(key)
        if entry is not None:
            try:
                spec = KernelSpec.from_json(entry.files["spec.json"].decode())
                source = entry.files["source"].decode()
                kernel = make_kernel(spec, entry.files["binary"], target, source)
            except Exception as exc:  # a damaged entry is rebuilt, never trusted
                log.warning(
                    "cache entry %s for %s is unusable (%s); rebuilding", key[:12], name, exc
                )
                _discard(cache, key)
            else:
                timings = [("cache", time.perf_counter() - t0)]
                _attach_timings(kernel, timings)
                if spec.index_bits < 64:
                    kernel.set_wide_twin(wide_twin)
                return CompileResult(kernel, spec, source, timings=timings, cache_hit=True)
    from .frontend import build_tile_kernel  # imported here: a cache hit needs no front end

    timings: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    if program is None:
        program = LazyProgram(source_text, filename)
    resolved = program() if callable(program) else program
    timings.append(("parse", time.perf_counter() - t0))
    t0 = time.perf_counter()
    tile = build_tile_kernel(resolved, name, constants, target=target.constants())
    timings.append(("frontend", time.perf_counter() - t0))
    loop, ctx = lower_kernel(tile, target, dump_dir=dump_dir, index_bits=index_bits)
    timings.extend(ctx.timings)
    t0 = time.perf_counter()
    code = generate_code(loop, target)
    timings.append(("codegen", time.perf_counter() - t0))
    if dump_dir is not None:
        suffix = "cu" if target.is_cuda else "ll"
        (dump_dir / f"{len(ctx.timings) + 1:02d}-codegen.{suffix}").write_text(code)
    t0 = time.perf_counter()
    binary, backend_log = build_binary(code, name, target)
    timings.append(("nvrtc" if target.is_cuda else "llvm", time.perf_counter() - t0))
    spec = kernel_spec(tile, loop, target)
    if use_cache:
        cache.put(
            key,
            {"binary": binary, "spec.json": spec.to_json().encode(), "source": code.encode()},
            {
                "kernel": name,
                "target": str(target),
                "constants": json.dumps(constants, default=str),
            },
        )
    kernel = make_kernel(spec, binary, target, code)
    _attach_timings(kernel, timings)
    if spec.index_bits < 64:
        kernel.set_wide_twin(wide_twin)
    return CompileResult(kernel, spec, code, tile, loop, timings, False, backend_log)


def _attach_timings(kernel: Kernel, timings: list[tuple[str, float]]) -> None:
    """``kernel.timings``: seconds per compile phase (where the Kernel class allows it)."""
    with contextlib.suppress(AttributeError):
        kernel.timings = phase_times(timings)  # type: ignore[attr-defined]


def phase_times(timings: list[tuple[str, float]]) -> dict[str, float]:
    """Seconds per phase; a phase that ran more than once is summed."""
    out: dict[str, float] = {}
    for phase, seconds in timings:
        out[phase] = out.get(phase, 0.0) + seconds
    return out
