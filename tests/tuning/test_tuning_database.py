from __future__ import annotations

import logging
import multiprocessing as mp
from pathlib import Path

import pytest
from tegula.compiler.tuning.database import RecordFormatError, TuningDatabase, TuningRecord


def _record(i: int, status: str = "ok", time_s: float | None = None, **kw) -> TuningRecord:
    fields = dict(
        kernel="k", kernel_hash="h" * 64, shapes={"N": 1000}, dtypes={"x": "f32"},
        target="cpu", device="host", config={"BLOCK": 64 * (i + 1)}, status=status,
        time_s=time_s if time_s is not None or status != "ok" else 1e-3 * (i + 1),
        features=(1.0, 2.0),
    )
    fields.update(kw)
    return TuningRecord(**fields)


def test_records_round_trip(tmp_path: Path) -> None:
    db = TuningDatabase(tmp_path / "sub" / "db.jsonl")
    records = [_record(0), _record(1, "timeout", message="no result")]
    db.append(records)
    back = list(db.records())
    assert [(r.config, r.status, r.time_s, r.features) for r in back] == [
        (r.config, r.status, r.time_s, r.features) for r in records
    ]


def test_best_picks_the_fastest_ok_record_of_the_workload(tmp_path: Path) -> None:
    db = TuningDatabase(tmp_path / "db.jsonl")
    db.append([_record(2), _record(0, time_s=5e-4), _record(1, "crash"),
               _record(3, time_s=1e-5, shapes={"N": 2000})])
    best = db.best("h" * 64, {"N": 1000}, "cpu")
    assert best is not None and best.config == {"BLOCK": 64} and best.time_s == 5e-4
    assert db.best("h" * 64, {"N": 3000}, "cpu") is None
    assert db.best("h" * 64, {"N": 1000}, "cuda:sm_90a") is None


def test_corrupt_lines_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = TuningDatabase(tmp_path / "db.jsonl")
    db.append([_record(0)])
    with db.path.open("ab") as f:
        f.write(b'{"not": "a record"}\n\xff\xfe garbage\n{"kernel": "trunc')
    db.append([_record(1)])  # appended after a torn line: still readable? no: same line
    with caplog.at_level(logging.WARNING, logger="tegula.tuning"):
        back = list(db.records())
    assert [r.config["BLOCK"] for r in back] == [64]
    assert len(caplog.records) >= 3


def test_a_record_with_a_bad_status_is_refused() -> None:
    with pytest.raises(RecordFormatError, match="unknown status"):
        _record(0, status="fine")
    with pytest.raises(RecordFormatError, match="positive time"):
        _record(0, time_s=0.0)


def _append_many(path: str, worker: int, count: int) -> None:
    db = TuningDatabase(path)
    for i in range(count):
        db.append([_record(i, config={"worker": worker, "i": i}, message="x" * 5000)])


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "db.jsonl"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 161
    back = list(TuningDatabase(path).records())
    assert sorted((r.config["worker"], r.config["i"]) for r in back) == [
        (w, i) for w in range(4) for i in range(40)
    ]
