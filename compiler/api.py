"""``tg.compile``: the Python entry point.

    mod = tg.compile("examples/softmax.tg", target="cuda", BN=2048)
    mod.softmax(x, y)          # or mod["softmax"](x, y)

A source may be a path to a ``.tg`` file or the DSL text itself. Every kernel in it is
compiled for the target (with the compile-time constants given, each kernel taking the ones
it declares) and returned in a :class:`Module`. A kernel whose params' defaults depend on
size symbols (``params BN = min(pow2ceil(N), 8192)``) is returned as a
:class:`SpecializedKernel`, compiled at call time for the constants its arguments' shapes
give. A warm disk cache answers the whole call without parsing the source.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tegula.ir import dtypes
from tegula.ir.dtypes import DType
from tegula.ir.target import Target
from tegula.runtime.kernel import Kernel

from .diagnostics import DSLError
from .driver import CompileResult, LazyProgram, compile_kernel, module_index, phase_times
from .headers import ModuleIndex
from .specialize import SpecializedKernel
from .targets import resolve_target
from .tuned import TunedConfigs


@dataclass(frozen=True)
class Source:
    text: str
    filename: str


def read_source(source_or_path: str | Path) -> Source:
    """A path to a ``.tg`` file, or DSL text (anything containing a newline or ``kernel``)."""
    if isinstance(source_or_path, Path):
        return Source(source_or_path.read_text(), str(source_or_path))
    text = str(source_or_path)
    if "\n" in text or text.lstrip().startswith("kernel"):
        return Source(text, "<string>")
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"no such DSL file: {text}")
    return Source(path.read_text(), str(path))


class Module:
    """The kernels of one source file, compiled for one target.

    ``results`` holds the compile results of the kernels compiled up front; ``specialized``
    the kernels compiled at call time for their arguments' shapes (see
    :class:`SpecializedKernel`). ``module[name]`` and ``module.name`` give either kind.
    """

    def __init__(
        self,
        source: Source,
        target: Target,
        results: dict[str, CompileResult],
        specialized: dict[str, SpecializedKernel] | None = None,
        order: tuple[str, ...] | None = None,
    ) -> None:
        self.source = source
        self.target = target
        self.results = results
        self.specialized = dict(specialized or {})
        self.names = order if order is not None else (*results, *self.specialized)

    def __getitem__(self, name: str) -> Kernel | SpecializedKernel:
        if name in self.results:
            return self.results[name].kernel
        if name in self.specialized:
            return self.specialized[name]
        raise self._no_kernel(name)

    def _no_kernel(self, name: str) -> KeyError:
        known = ", ".join(self.names) or "none"
        return KeyError(f"{self.source.filename} has no kernel {name!r} (kernels: {known})")

    def __getattr__(self, name: str) -> Kernel | SpecializedKernel:
        if name.startswith("__") or name not in self.__dict__.get("names", ()):
            raise AttributeError(name)
        return self[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def timings(self, name: str) -> dict[str, float]:
        """Seconds per compile phase of kernel ``name`` (its latest variant, for a kernel
        specialized at call time; empty before its first call)."""
        if name in self.specialized:
            return self.specialized[name].timings
        if name not in self.results:
            raise self._no_kernel(name)
        return phase_times(self.results[name].timings)

    def __repr__(self) -> str:
        return f"<tegula.Module {self.source.filename} [{', '.join(self.names)}] on {self.target}>"


def split_constants(
    index: ModuleIndex, constants: Mapping[str, Any], filename: str
) -> dict[str, dict[str, Any]]:
    """Give each kernel the constants it declares; a constant no kernel declares is an error."""
    per_kernel: dict[str, dict[str, Any]] = {}
    claimed: set[str] = set()
    for kernel in index.kernels:
        names = set(kernel.declared)
        per_kernel[kernel.name] = {
            k: canonical_constant(v) for k, v in constants.items() if k in names
        }
        claimed |= names
    unknown = sorted(set(constants) - claimed)
    if unknown:
        raise TypeError(
            f"{filename}: no kernel declares compile-time parameter(s) {', '.join(unknown)}"
        )
    return per_kernel


def canonical_constant(value: Any) -> Any:
    """A constant as compilations and cache keys hold it: a dtype (a tegula DType, or a name
    or alias of one) by its canonical name; anything else as given (the front end checks
    it against the param's kind)."""
    if isinstance(value, DType):
        return value.name
    if isinstance(value, str) and dtypes.is_dtype_name(value):
        return dtypes.dtype(value).name
    return value


def compile(
    source_or_path: str | Path,
    target: str | Target = "auto",
    *,
    kernels: list[str] | None = None,
    cache: bool = True,
    dump_dir: str | Path | None = None,
    tuning_db: str | Path | None = None,
    **constants: Any,
) -> Module:
    """Compile every kernel of a DSL file (or string) for ``target``; see the module doc.

    A kernel whose params' defaults depend on size symbols (and whose caller does not set
    those params) becomes a :class:`SpecializedKernel`, compiled at its first call for the
    shapes it is given. So does a kernel with tunable params the caller leaves open when the
    tuning database (``tuning_db``, default: the cache folder's) has measurements of it on
    this target: each call then runs the best measured config for its shapes. With a warm
    disk cache nothing is parsed.
    """
    source = read_source(source_or_path)
    tgt = resolve_target(target)
    program = LazyProgram(source.text, source.filename)
    index = module_index(source.text, source.filename, program, use_cache=cache)
    per_kernel = split_constants(index, constants, source.filename)
    if kernels is not None:
        missing = sorted(set(kernels) - {k.name for k in index.kernels})
        if missing:
            raise KeyError(f"{source.filename} has no kernel(s) {', '.join(missing)}")
    builds: dict[str, Callable[[], CompileResult]] = {}
    specialized: dict[str, SpecializedKernel] = {}
    chosen = [k for k in index.kernels if kernels is None or k.name in kernels]
    for header in chosen:
        pinned = per_kernel[header.name]
        kdump = Path(dump_dir) / header.name if dump_dir is not None else None
        tunable = [
            p.name
            for p in header.const_params
            if p.candidates and not p.is_dtype and p.name not in pinned
        ]
        tuned = TunedConfigs.load(header, str(tgt), tuning_db, pinned) if tunable else None
        if header.specialization_symbols(pinned) or tuned is not None:
            specialized[header.name] = SpecializedKernel(
                header,
                source.text,
                source.filename,
                tgt,
                pinned,
                program,
                use_cache=cache,
                dump_dir=kdump,
                tuned=tuned,
            )
        else:
            builds[header.name] = functools.partial(
                compile_kernel,
                source.text,
                source.filename,
                header.name,
                tgt,
                pinned,
                program=program,
                use_cache=cache,
                dump_dir=kdump,
            )
    results = dict(zip(builds, _build_all(list(builds.values()), tgt), strict=True))
    return Module(source, tgt, results, specialized, tuple(k.name for k in chosen))


# NVRTC compiles independent programs on concurrent threads (and releases the GIL while it
# does); each compile holds a few hundred MB, so a handful at a time.
_MAX_BUILD_THREADS = 8


def _build_all(builds: list[Callable[[], CompileResult]], target: Target) -> list[CompileResult]:
    """Run ``builds`` (the kernels' compilations, in order), CUDA ones on a few threads:
    NVRTC is most of a cold compile, and its compiles overlap. The first failure in order
    is raised, as a serial loop would. CPU builds stay serial (LLVM's code generation runs
    in one process-wide context)."""
    workers = min(len(builds), os.cpu_count() or 1, _MAX_BUILD_THREADS)
    if not target.is_cuda or workers < 2:
        return [build() for build in builds]
    with ThreadPoolExecutor(workers, thread_name_prefix="tegula-build") as pool:
        return list(pool.map(lambda build: build(), builds))


__all__ = ["DSLError", "Module", "SpecializedKernel", "compile", "read_source"]
