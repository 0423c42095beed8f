"""CUDA C → cubin (and PTX) with NVRTC, which needs no GPU.

NVRTC is reached through ``cuda.bindings.nvrtc`` (the ``cuda-bindings`` package) or, where
only CuPy is installed, through CuPy's own binding. NVRTC ships no CUDA headers, so the
include folder of the ``nvidia-cuda-runtime`` wheel is always passed: generated code may
``#include <cuda_fp16.h>`` and ``<cuda_bf16.h>``.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from .errors import CudaCompileError

_PROGRAM_NAME = "kernel.cu"
_ARCH = re.compile(r"(sm|compute)_[0-9]+[a-z]?\Z")
_CONTEXT_LINES = 3


@dataclass(frozen=True)
class ResourceUsage:
    """What ``ptxas -v`` reports for one function."""

    registers: int
    spill_stores: int
    spill_loads: int
    stack_frame: int
    shared_bytes: int
    barriers: int = 0

    @property
    def spills(self) -> bool:
        return self.spill_stores > 0 or self.spill_loads > 0


@dataclass(frozen=True)
class CudaBinary:
    """NVRTC's output for one program. ``cubin`` is ``None`` when built for a virtual
    architecture (``compute_XX``), where only PTX exists."""

    cubin: bytes | None
    ptx: str
    log: str
    arch: str
    function_resources: dict[str, ResourceUsage] = field(default_factory=dict, hash=False)
    name: str = ""

    @property
    def resources(self) -> ResourceUsage | None:
        """Resource usage of the kernel ``name`` (parsed from the ptxas report)."""
        return self.function_resources.get(self.name)


# ---- ptxas report ---------------------------------------------------------------------

_FUNCTION = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
)
_USED = re.compile(r"Used (\d+) registers(?:, used (\d+) barriers)?")
_SMEM = re.compile(r"(\d+) bytes smem")
_ENTRY = re.compile(r"Compiling entry function '([^']+)'")


def parse_ptxas_resources(log: str) -> dict[str, ResourceUsage]:
    """Parse ``--ptxas-options=-v`` output into per-function resource usage."""
    found: dict[str, dict[str, int]] = {}
    current: str | None = None
    for line in log.splitlines():
        if m := _ENTRY.search(line) or _FUNCTION.search(line):
            current = m.group(1)
            found.setdefault(current, {})
            continue
        if current is None:
            continue
        if m := _FRAME.search(line):
            found[current].update(stack_frame=int(m[1]), spill_stores=int(m[2]),
                                  spill_loads=int(m[3]))
        if m := _USED.search(line):
            found[current].update(registers=int(m[1]), barriers=int(m[2] or 0))
            if s := _SMEM.search(line):
                found[current]["shared_bytes"] = int(s[1])
    return {
        fn: ResourceUsage(
            registers=facts.get("registers", 0),
            spill_stores=facts.get("spill_stores", 0),
            spill_loads=facts.get("spill_loads", 0),
            stack_frame=facts.get("stack_frame", 0),
            shared_bytes=facts.get("shared_bytes", 0),
            barriers=facts.get("barriers", 0),
        )
        for fn, facts in found.items()
        if "registers" in facts
    }


# ---- NVRTC bindings -------------------------------------------------------------------


@dataclass(frozen=True)
class _Result:
    ok: bool
    log: str
    cubin: bytes | None
    ptx: str


class _CudaBindingsNvrtc:
    """``cuda.bindings.nvrtc``: every call returns ``(status, *values)``."""

    def __init__(self) -> None:
        from cuda.bindings import nvrtc

        self.nvrtc = nvrtc

    def _check(self, result: tuple, what: str) -> tuple:
        status, *values = result
        if status != self.nvrtc.nvrtcResult.NVRTC_SUCCESS:
            _, message = self.nvrtc.nvrtcGetErrorString(status)
            raise RuntimeError(f"{what}: {message.decode()}")
        return tuple(values)

    def version(self) -> tuple[int, int]:
        major, minor = self._check(self.nvrtc.nvrtcVersion(), "nvrtcVersion")
        return int(major), int(minor)

    def _read(self, prog: object, size_fn: str, get_fn: str) -> bytes:
        (size,) = self._check(getattr(self.nvrtc, size_fn)(prog), size_fn)
        buffer = b"\0" * size
        self._check(getattr(self.nvrtc, get_fn)(prog, buffer), get_fn)
        return buffer

    def compile(self, source: str, options: Sequence[str], want_cubin: bool) -> _Result:
        nv = self.nvrtc
        (prog,) = self._check(
            nv.nvrtcCreateProgram(source.encode(), _PROGRAM_NAME.encode(), 0, [], []),
            "nvrtcCreateProgram",
        )
        try:
            encoded = [o.encode() for o in options]
            (status,) = nv.nvrtcCompileProgram(prog, len(encoded), encoded)
            log = self._read(prog, "nvrtcGetProgramLogSize", "nvrtcGetProgramLog")
            log_text = log.rstrip(b"\0").decode(errors="replace")
            if status != nv.nvrtcResult.NVRTC_SUCCESS:
                return _Result(False, log_text, None, "")
            ptx = self._read(prog, "nvrtcGetPTXSize", "nvrtcGetPTX")
            cubin = (
                self._read(prog, "nvrtcGetCUBINSize", "nvrtcGetCUBIN") if want_cubin else None
            )
            return _Result(True, log_text, cubin, ptx.rstrip(b"\0").decode())
        finally:
            nv.nvrtcDestroyProgram(prog)


class _CupyNvrtc:
    """CuPy's binding: raises ``NVRTCError`` on failure."""

    def __init__(self) -> None:
        from cupy_backends.cuda.libs import nvrtc

        self.nvrtc = nvrtc

    def version(self) -> tuple[int, int]:
        major, minor = self.nvrtc.getVersion()
        return int(major), int(minor)

    def compile(self, source: str, options: Sequence[str], want_cubin: bool) -> _Result:
        nv = self.nvrtc
        prog = nv.createProgram(source, _PROGRAM_NAME, (), ())
        try:
            try:
                nv.compileProgram(prog, list(options))
            except nv.NVRTCError:
                return _Result(False, nv.getProgramLog(prog), None, "")
            log = nv.getProgramLog(prog)
            ptx = nv.getPTX(prog)
            ptx_text = ptx.decode() if isinstance(ptx, bytes) else ptx
            cubin = nv.getCUBIN(prog) if want_cubin else None
            return _Result(True, log, cubin, ptx_text.rstrip("\0"))
        finally:
            nv.destroyProgram(prog)


@cache
def _backend() -> _CudaBindingsNvrtc | _CupyNvrtc:
    errors = []
    for backend in (_CudaBindingsNvrtc, _CupyNvrtc):
        try:
            return backend()
        except ImportError as exc:
            errors.append(str(exc))
    raise ImportError(
        "NVRTC is not available: install `cuda-bindings` and `nvidia-cuda-nvrtc` "
        f"(pip install 'tegula[nvrtc]') or CuPy ({'; '.join(errors)})"
    )


def nvrtc_available() -> bool:
    try:
        _backend().version()
    except (ImportError, RuntimeError, OSError):
        return False
    return True


def nvrtc_version() -> tuple[int, int]:
    """NVRTC's ``(major, minor)`` version."""
    return _backend().version()


@cache
def cuda_include_dir() -> Path | None:
    """The CUDA headers of the ``nvidia-cuda-runtime`` wheel (CUDA 13 or 12 layout)."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        for candidate in ("cu13/include", "cuda_runtime/include", "cu12/include"):
            path = Path(root) / candidate
            if (path / "cuda_fp16.h").is_file():
                return path
    return None


def default_arch() -> str | None:
    """The architecture of the current GPU (``"sm_90a"`` on an H100), or ``None``.

    Hopper and later get the ``a`` variant: a cubin for the exact device may use its
    architecture-specific instructions (``wgmma``, TMA).
    """
    from .cuda_launch import cuda_available

    if not cuda_available():
        return None
    import cupy

    major, minor = divmod(int(cupy.cuda.Device().compute_capability), 10)
    return f"sm_{major}{minor}{'a' if major >= 9 else ''}"


def _source_excerpt(source: str, log: str) -> tuple[int | None, str]:
    match = re.search(rf"{re.escape(_PROGRAM_NAME)}\((\d+)\): (?:catastrophic )?error", log)
    if match is None:
        return None, ""
    line_number = int(match.group(1))
    lines = source.splitlines()
    first = max(1, line_number - _CONTEXT_LINES)
    last = min(len(lines), line_number + _CONTEXT_LINES)
    width = len(str(last))
    excerpt = "\n".join(
        f"{'>' if n == line_number else ' '} {n:>{width}} | {lines[n - 1]}"
        for n in range(first, last + 1)
    )
    return line_number, excerpt


def compile_cuda(
    source: str,
    name: str,
    arch: str,
    *,
    options: Sequence[str] = (),
    include_dirs: Sequence[str | Path] = (),
    report_resources: bool = True,
) -> CudaBinary:
    """Compile CUDA C source with NVRTC for ``arch`` (``sm_80``, ``sm_90a``, ``compute_90``).

    A real architecture (``sm_XX``) gives a cubin and its PTX; a virtual one
    (``compute_XX``) gives PTX only. ``report_resources`` adds ``--ptxas-options=-v`` so
    :attr:`CudaBinary.resources` holds registers, spills and shared memory.
    """
    if not _ARCH.match(arch):
        raise ValueError(f"CUDA architecture {arch!r} is not like 'sm_90a' or 'compute_90'")
    flags = [f"-arch={arch}", "-std=c++17"]
    includes = [Path(d) for d in include_dirs]
    if (headers := cuda_include_dir()) is not None:
        includes.append(headers)
    flags += [f"-I{d}" for d in includes]
    real = arch.startswith("sm_")
    if report_resources and real and not any("ptxas-options" in o for o in options):
        flags.append("--ptxas-options=-v")
    flags += list(options)
    result = _backend().compile(source, flags, want_cubin=real)
    if not result.ok:
        line, excerpt = _source_excerpt(source, result.log)
        where = f" at line {line}" if line is not None else ""
        message = f"NVRTC could not compile {name!r} for {arch}{where}:\n{result.log.strip()}"
        if excerpt:
            message += f"\n{excerpt}"
        raise CudaCompileError(message, result.log, excerpt)
    return CudaBinary(
        cubin=result.cubin,
        ptx=result.ptx,
        log=result.log,
        arch=arch,
        function_resources=parse_ptxas_resources(result.log),
        name=name,
    )
