"""Which stored measurements still hold for the compiler running now.

A record's time is the time of the code its config built to. A record made by this
compiler (same :func:`~tegula.compiler.fingerprint.compiler_source_digest`) holds; one made
by another compiler holds when the config still builds to the same thing, that is when the
identity it carries (:func:`build.identity_digest` of the generated code, launch spec and
target, or of why it could not be built) is the one this compiler gives it. Recomputing an
identity lowers and generates code but builds no binary, so it needs no GPU. Either way a
time holds only where it was taken the way the workers take times now
(:func:`~.measure.timing_protocol`); a failure holds whatever the timing.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Sequence

from tegula.compiler.fingerprint import compiler_source_digest

from .build import BuildJob, build_identity
from .database import TuningRecord
from .measure import timing_protocol


def timed_alike(records: Sequence[TuningRecord], timing: str | None = None
                ) -> list[TuningRecord]:
    """The records whose times were taken under ``timing`` (the workers' default if None),
    and the failures, which hold whatever the timing."""
    timing = timing_protocol() if timing is None else timing
    return [r for r in records if not r.ok or r.timing == timing]


def current_records(records: Sequence[TuningRecord], source_text: str, filename: str,
                    pool: cf.Executor, timing: str | None = None) -> list[TuningRecord]:
    """The records that hold for this compiler and for the timing protocol ``timing`` (the
    workers' default if None); ``pool`` recomputes identities."""
    records = timed_alike(records, timing)
    compiler = compiler_source_digest()
    held = [r for r in records if r.compiler == compiler]
    others = [r for r in records if r.compiler != compiler and r.build]
    jobs = [BuildJob(source_text, filename, r.kernel, dict(r.config), r.target, dict(r.shapes),
                     emit_binary=False) for r in others]
    identities = list(pool.map(build_identity, jobs)) if jobs else []
    return held + [r for r, now in zip(others, identities, strict=True) if now == r.build]
