"""Building one candidate: lower it, check it against the target, describe it, compile it.

:func:`build_candidate` runs in a process of the compile pool, so its job and outcome are
plain values. With ``emit_binary=False`` it stops after lowering (what the search needs to
score a point); otherwise it also generates code and builds the binary that the device
worker loads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from tegula.compiler.diagnostics import DSLError
from tegula.compiler.driver import build_binary, generate_code, kernel_spec, lower_kernel
from tegula.compiler.frontend import build_tile_kernel
from tegula.compiler.parser import parse
from tegula.compiler.syntax import Program
from tegula.compiler.targets import resolve_target

from .features import extract_features
from .space import legality


@dataclass(frozen=True)
class BuildJob:
    source_text: str
    filename: str
    kernel: str
    constants: dict[str, Any]
    target: str  # a concrete target string: "cpu" or "cuda:sm_XX"
    shapes: dict[str, int]
    emit_binary: bool = True


@dataclass(frozen=True)
class BuildOutcome:
    status: str  # "ok", "compile_error" or "illegal"
    message: str = ""
    features: tuple[float, ...] = ()
    binary: bytes | None = None
    spec_json: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


_PROGRAMS: dict[str, Program] = {}  # parsed sources of this process, by text hash


def _program(source_text: str, filename: str) -> Program:
    key = hashlib.sha256(f"{filename}\0{source_text}".encode()).hexdigest()
    program = _PROGRAMS.get(key)
    if program is None:
        program = _PROGRAMS[key] = parse(source_text, filename)
    return program


def build_candidate(job: BuildJob) -> BuildOutcome:
    """Lower (and unless told otherwise, compile) one config; never raises for a bad one."""
    target = resolve_target(job.target)
    try:
        program = _program(job.source_text, job.filename)
        tile = build_tile_kernel(program, job.kernel, job.constants, job.shapes,
                                 target.constants())
        # A point that is only scored skips the verifier after each pass (about a sixth of
        # its lowering time); every point that is built to be timed is verified.
        loop, _ = lower_kernel(tile, target, verify=job.emit_binary)
    except DSLError as exc:
        return BuildOutcome("compile_error", str(exc))
    except Exception as exc:  # a compiler bug a config provokes is that config's failure
        return BuildOutcome("compile_error", f"{type(exc).__name__}: {exc}")
    reason = legality(loop, target)
    if reason is not None:
        return BuildOutcome("illegal", reason)
    features = extract_features(loop, job.shapes, target)
    if not job.emit_binary:
        return BuildOutcome("ok", features=features)
    try:
        code = generate_code(loop, target)
        binary, log = build_binary(code, job.kernel, target)
        spec = kernel_spec(tile, loop, target)
    except Exception as exc:
        return BuildOutcome("compile_error", f"{type(exc).__name__}: {exc}", features)
    return BuildOutcome("ok", log, features, binary, spec.to_json())
