"""``tg.compile``: the Python entry point.

    mod = tg.compile("examples/softmax.tg", target="cuda", BN=2048)
    mod.softmax(x, y)          # or mod["softmax"](x, y)

A source may be a path to a ``.tg`` file or the DSL text itself. Every kernel in it is
compiled for the target (with the compile-time constants given, each kernel taking the ones
it declares) and returned in a :class:`Module`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tegula.ir.target import Target
from tegula.runtime.kernel import Kernel

from .diagnostics import DSLError
from .driver import CompileResult, compile_kernel
from .frontend import declared_params
from .parser import parse
from .syntax import Program
from .targets import resolve_target


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
    """The kernels of one source file, compiled for one target."""

    def __init__(self, source: Source, target: Target, results: dict[str, CompileResult]) -> None:
        self.source = source
        self.target = target
        self.results = results

    def __getitem__(self, name: str) -> Kernel:
        try:
            return self.results[name].kernel
        except KeyError:
            known = ", ".join(self.results) or "none"
            raise KeyError(
                f"{self.source.filename} has no kernel {name!r} (kernels: {known})"
            ) from None

    def __getattr__(self, name: str) -> Kernel:
        if name.startswith("__") or name not in self.__dict__.get("results", {}):
            raise AttributeError(name)
        return self.results[name].kernel

    def __iter__(self) -> Iterator[str]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __repr__(self) -> str:
        return (
            f"<tegula.Module {self.source.filename} [{', '.join(self.results)}] on {self.target}>"
        )


def split_constants(
    program: Program, constants: Mapping[str, Any], filename: str
) -> dict[str, dict[str, Any]]:
    """Give each kernel the constants it declares; a constant no kernel declares is an error."""
    per_kernel: dict[str, dict[str, Any]] = {}
    claimed: set[str] = set()
    for kernel in program.kernels:
        names = set(declared_params(kernel))
        per_kernel[kernel.name] = {k: v for k, v in constants.items() if k in names}
        claimed |= names
    unknown = sorted(set(constants) - claimed)
    if unknown:
        raise TypeError(
            f"{filename}: no kernel declares compile-time parameter(s) {', '.join(unknown)}"
        )
    return per_kernel


def compile(
    source_or_path: str | Path,
    target: str | Target = "auto",
    *,
    kernels: list[str] | None = None,
    cache: bool = True,
    dump_dir: str | Path | None = None,
    **constants: Any,
) -> Module:
    """Compile every kernel of a DSL file (or string) for ``target``; see the module doc."""
    source = read_source(source_or_path)
    tgt = resolve_target(target)
    program = parse(source.text, source.filename)
    per_kernel = split_constants(program, constants, source.filename)
    results: dict[str, CompileResult] = {}
    for kdef in program.kernels:
        if kernels is not None and kdef.name not in kernels:
            continue
        kdump = Path(dump_dir) / kdef.name if dump_dir is not None else None
        results[kdef.name] = compile_kernel(
            program,
            source.text,
            kdef.name,
            tgt,
            per_kernel[kdef.name],
            use_cache=cache,
            dump_dir=kdump,
        )
    if kernels is not None:
        missing = sorted(set(kernels) - set(results))
        if missing:
            raise KeyError(f"{source.filename} has no kernel(s) {', '.join(missing)}")
    return Module(source, tgt, results)


__all__ = ["DSLError", "Module", "compile", "read_source"]
