"""Stored measurements hold across compiler changes that leave a config's code alone: a
record of another compiler counts when the config still builds to the identity it carries.
A time holds only beside times taken the same way."""

from __future__ import annotations

import concurrent.futures as cf

from tegula.compiler.fingerprint import compiler_source_digest
from tegula.compiler.tuning.build import BuildJob, build_candidate, build_identity
from tegula.compiler.tuning.database import TuningRecord
from tegula.compiler.tuning.measure import timing_protocol
from tegula.compiler.tuning.revalidate import current_records
from tuning_kernels import ROWSUM

SHAPES = {"M": 16, "N": 300}


def job(config: dict[str, int], *, binary: bool = False) -> BuildJob:
    return BuildJob(ROWSUM, "<string>", "rowsum", config, "cpu", SHAPES, emit_binary=binary)


def record(config: dict[str, int], compiler: str, build: str, *, status: str = "ok",
           timing: str | None = None) -> TuningRecord:
    return TuningRecord(kernel="rowsum", kernel_hash="h", shapes=SHAPES, dtypes={}, target="cpu",
                        device="cpu", config=config, status=status,
                        time_s=1e-3 if status == "ok" else None, compiler=compiler, build=build,
                        timing=timing_protocol() if timing is None else timing)


def test_the_identity_is_the_code_the_config_builds_to() -> None:
    a, b = {"BM": 1, "BN": 32}, {"BM": 2, "BN": 32}
    assert build_identity(job(a)) == build_identity(job(a))
    assert build_identity(job(a)) != build_identity(job(b))
    # A build made to be timed carries the same identity as the check recomputes.
    assert build_candidate(job(a, binary=True)).identity == build_identity(job(a))


def test_other_compilers_records_hold_where_the_code_is_the_same() -> None:
    a, b, c = {"BM": 1, "BN": 32}, {"BM": 2, "BN": 64}, {"BM": 4, "BN": 128}
    ours = compiler_source_digest()
    records = [
        record(a, "an older compiler", build_identity(job(a))),  # same code: holds
        record(b, "an older compiler", build_identity(job(c))),  # other code: stale
        record(c, "an older compiler", ""),  # no identity: stale
        record(c, ours, ""),  # this compiler's own: holds
    ]
    with cf.ThreadPoolExecutor(2) as pool:
        held = current_records(records, ROWSUM, "<string>", pool)
    assert held == [records[3], records[0]]


def test_times_taken_another_way_do_not_hold() -> None:
    a, b = {"BM": 1, "BN": 32}, {"BM": 2, "BN": 64}
    ours = compiler_source_digest()
    records = [
        record(a, ours, "", timing=""),  # single launches, before the field: stale
        record(a, ours, "", timing=timing_protocol(0.01)),  # 10 ms samples: stale here
        record(b, ours, "", status="compile_error", timing=""),  # a failure holds regardless
        record(b, ours, ""),
    ]
    with cf.ThreadPoolExecutor(2) as pool:
        assert current_records(records, ROWSUM, "<string>", pool) == records[2:]
        assert current_records(records, ROWSUM, "<string>", pool,
                               timing_protocol(0.01)) == records[1:3]
