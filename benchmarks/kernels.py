"""tegula's side of the comparison: the bundled example kernels, compiled once per target."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .compare import Buffers, Impl
from .harness import Call

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples"


@functools.cache
def _module(file: str, target: str) -> Any:
    import tegula as tg

    return tg.compile(EXAMPLES / file, target=target)


@functools.cache
def _kernel_at(file: str, kernel: str, target: str,
               constants: tuple[tuple[str, Any], ...]) -> Any:
    import tegula as tg

    return tg.compile(EXAMPLES / file, target=target, kernels=[kernel], **dict(constants))[kernel]


def example_kernel(file: str, kernel: str, target: str, **constants: Any) -> Any:
    """Kernel `kernel` of `examples/<file>`, compiled for `target` ("cuda" or "cpu"), with
    `constants` set where given (a generic kernel's dtype params, say)."""
    if constants:
        return _kernel_at(file, kernel, target, tuple(sorted(constants.items())))
    return _module(file, target)[kernel]


def tegula_impl(target: str, file: str, kernel: str, args: tuple[str, ...], out: str,
                *scalars: float, constants: Mapping[str, Any] | None = None) -> Impl:
    """tegula's implementation of a case: kernel `kernel` of `examples/<file>` (at
    `constants`) called with the buffers named in `args` (outputs among them, destination
    passing), then `scalars`."""

    def bind(b: Buffers) -> Call:
        compiled = example_kernel(file, kernel, target, **dict(constants or {}))
        arrays = [b[name] for name in args]

        def call() -> Any:
            compiled(*arrays, *scalars)
            return b[out]

        return call

    return Impl(bind, "cupy" if target.startswith("cuda") else None, destination=True)
