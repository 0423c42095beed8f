"""The pass manager: runs an ordered pipeline, verifying, timing and dumping after each pass.

Every pass is a function from IR to IR (Tile IR → Tile IR, Tile IR → Loop IR, or Loop IR →
Loop IR) registered here by name with :func:`register_pass`. The manager never needs to know
what a pass does: it looks at the IR a pass returns, verifies it with the verifier of its
level, records the wall time, and, when asked, writes the printed IR to a numbered file so a
user can read the program after every step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tegula.ir.loop import LoopKernel
from tegula.ir.target import Target
from tegula.ir.tile import TileKernel

IR = TileKernel | LoopKernel


@dataclass
class PassContext:
    """What every pass may read: the target and options; what the manager records."""

    target: Target
    options: dict[str, Any] = field(default_factory=dict)
    dump_dir: Path | None = None
    verify: bool = True
    timings: list[tuple[str, float]] = field(default_factory=list)
    dumps: list[tuple[str, str]] = field(default_factory=list)
    keep_dumps: bool = False


PassFn = Callable[[Any, PassContext], Any]


@dataclass(frozen=True)
class PassInfo:
    name: str
    fn: PassFn
    description: str


_REGISTRY: dict[str, PassInfo] = {}


def register_pass(name: str, description: str = "") -> Callable[[PassFn], PassFn]:
    """Register ``fn(ir, ctx) -> ir`` under ``name``."""

    def deco(fn: PassFn) -> PassFn:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"pass {name!r} is registered twice")
        _REGISTRY[name] = PassInfo(name, fn, description or (fn.__doc__ or "").strip())
        return fn

    return deco


def registered_passes() -> dict[str, PassInfo]:
    return dict(_REGISTRY)


class PassError(RuntimeError):
    """A pass produced IR that does not verify: a compiler bug, reported with the pass name."""


def print_ir(ir: IR) -> str:
    from tegula.ir.printer_loop import print_loop_kernel
    from tegula.ir.printer_tile import print_tile_kernel

    return print_tile_kernel(ir) if isinstance(ir, TileKernel) else print_loop_kernel(ir)


def verify_ir(ir: IR) -> None:
    from tegula.ir.verify_loop import verify_loop_kernel
    from tegula.ir.verify_tile import verify_tile_kernel

    if isinstance(ir, TileKernel):
        verify_tile_kernel(ir)
    else:
        verify_loop_kernel(ir)


def run_pipeline(ir: IR, pipeline: Sequence[str], ctx: PassContext) -> IR:
    """Run the named passes in order; verify, time and (optionally) dump after each."""
    _record(ctx, 0, "input", ir)
    for index, name in enumerate(pipeline, start=1):
        info = _REGISTRY.get(name)
        if info is None:
            raise KeyError(f"no pass named {name!r}; known: {', '.join(sorted(_REGISTRY))}")
        start = time.perf_counter()
        ir = info.fn(ir, ctx)
        ctx.timings.append((name, time.perf_counter() - start))
        if ctx.verify:
            try:
                verify_ir(ir)
            except Exception as exc:
                raise PassError(f"IR after pass {name!r} does not verify: {exc}") from exc
        _record(ctx, index, name, ir)
    return ir


def _record(ctx: PassContext, index: int, name: str, ir: IR) -> None:
    if ctx.dump_dir is None and not ctx.keep_dumps:
        return
    text = print_ir(ir)
    ctx.dumps.append((f"{index:02d}-{name}", text))
    if ctx.dump_dir is not None:
        ctx.dump_dir.mkdir(parents=True, exist_ok=True)
        (ctx.dump_dir / f"{index:02d}-{name}.txt").write_text(text)
