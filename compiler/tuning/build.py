"""Building one candidate: lower it, check it against the target, describe it, compile it.

:func:`build_candidate` runs in a process of the compile pool, so its job and outcome are
plain values. With ``emit_binary=False`` it stops after lowering (what the search needs to
score a point); otherwise it also generates code and builds the binary that the device
worker loads.
"""

from __future__ import annotations

import hashlib
import os
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
    identity: str = ""  # build_identity's digest, where the build got that far

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def identity_digest(*parts: str) -> str:
    """What a config builds to, as a digest: the generated code with its launch spec and
    target, or why it could not be built. Two compilers that build a config alike give it
    the same identity, so a measurement stays valid across compiler changes that do not
    touch the code it timed."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


_PROGRAMS: dict[str, Program] = {}  # parsed sources of this process, by text hash


def _program(source_text: str, filename: str) -> Program:
    key = hashlib.sha256(f"{filename}\0{source_text}".encode()).hexdigest()
    program = _PROGRAMS.get(key)
    if program is None:
        program = _PROGRAMS[key] = parse(source_text, filename)
    return program


def _failure(status: str, message: str, features: tuple[float, ...] = ()) -> BuildOutcome:
    return BuildOutcome(status, message, features, identity=identity_digest(status, message))


def build_candidate(job: BuildJob) -> BuildOutcome:
    """Lower (and unless told otherwise, compile) one config; never raises for a bad one."""
    return _build(job, generate=job.emit_binary, binary=job.emit_binary)


def build_identity(job: BuildJob) -> str:
    """The identity (:func:`identity_digest`) the config of ``job`` builds to with this
    compiler: generated code, no binary (what re-validating stored measurements needs)."""
    return _build(job, generate=True, binary=False).identity


def _build(job: BuildJob, *, generate: bool, binary: bool) -> BuildOutcome:
    """Lower; with ``generate`` also generate code (and its identity); with ``binary`` also
    build the binary the device worker loads."""
    target = resolve_target(job.target)
    try:
        # By the file's name alone: the generated code names it, and its identity must not
        # depend on where a checkout lies.
        program = _program(job.source_text, os.path.basename(job.filename))
        tile = build_tile_kernel(program, job.kernel, job.constants, job.shapes,
                                 target.constants())
        # A point that is only scored skips the verifier after each pass (about a sixth of
        # its lowering time); every point that is built to be timed is verified.
        loop, _ = lower_kernel(tile, target, verify=binary)
    except DSLError as exc:
        return _failure("compile_error", str(exc))
    except Exception as exc:  # a compiler bug a config provokes is that config's failure
        return _failure("compile_error", f"{type(exc).__name__}: {exc}")
    reason = legality(loop, target)
    if reason is not None:
        return _failure("illegal", reason)
    features = extract_features(loop, job.shapes, target)
    if not generate:
        return BuildOutcome("ok", features=features)
    try:
        source = generate_code(loop, target)
        spec = kernel_spec(tile, loop, target).to_json()
        identity = identity_digest(str(target), spec, source)
        if not binary:
            return BuildOutcome("ok", features=features, spec_json=spec, identity=identity)
        cubin, log = build_binary(source, job.kernel, target)
    except Exception as exc:
        return _failure("compile_error", f"{type(exc).__name__}: {exc}", features)
    return BuildOutcome("ok", log, features, cubin, spec, identity)
