"""The tuning suite's ground truth: only configs measured by this compiler, the way the workers
time now, count, and a space not yet complete is reported as such (never replayed), without a
GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
from tegula.compiler.fingerprint import compiler_source_digest
from tegula.compiler.tuning.database import TuningDatabase, TuningRecord
from tegula.compiler.tuning.measure import timing_protocol
from tegula.compiler.tuning.tuner import load_kernel

from benchmarks.suites import tuning

SHAPES = {"M": 16, "N": 1024, "K": 1024}


def _records(compiler: str, count: int, timing: str | None = None) -> list[TuningRecord]:
    src = load_kernel(tuning.EXAMPLES / "gemm.tg", tuning.KERNEL)
    return [
        TuningRecord(kernel=tuning.KERNEL, kernel_hash=src.kernel_hash, shapes=SHAPES,
                     dtypes=src.dtypes, target="cuda:sm_90a", device="NVIDIA H200 (sm_90)",
                     config={"BM": 16, "BN": 64, "BK": 32, "WARPS": 4, "STAGES": 3,
                             "GROUP_M": 1 + i},
                     status="ok", time_s=1e-5 * (1 + i), compiler=compiler,
                     timing=timing_protocol() if timing is None else timing)
        for i in range(count)
    ]


def test_records_of_another_compiler_are_not_ground_truth(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "TRUTH", tmp_path)
    path = tmp_path / f"{tuning._slug('decode')}.jsonl"
    TuningDatabase(path).append(_records("0123456789abcdef", 5) +
                                _records(compiler_source_digest(), 2) +
                                _records(compiler_source_digest(), 3, timing=""))
    found, size = tuning.ground_truth("decode", SHAPES, measure=False)
    assert len(found) == 2 and all(r.compiler == compiler_source_digest() for r in found)
    assert size > len(found)


def test_an_incomplete_space_is_reported_not_replayed(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "TRUTH", tmp_path)
    monkeypatch.setattr(tuning.devices, "gpu_available", lambda: False)
    rows = tuning.run(tuning.Settings(), quick=True)
    assert [r.case for r in rows] == ["tuning/square", "tuning/square/transfer",
                                      "tuning/square/across", "tuning/decode",
                                      "tuning/decode/transfer", "tuning/decode/across"]
    assert all(r.tegula is None for r in rows)
    assert all("ground truth incomplete: 0 of" in r.extra["notes"] for r in rows)


def test_transfer_source_reads_its_own_folder_and_this_compilers_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "TRUTH", tmp_path)
    path = tmp_path / "transfer" / f"{tuning._slug('neighbour')}.jsonl"
    path.parent.mkdir()
    TuningDatabase(path).append(_records("0123456789abcdef", 3) +
                                _records(compiler_source_digest(), 4))
    found = tuning.transfer_source("neighbour", SHAPES, measure=False)
    assert len(found) == 4 and all(r.compiler == compiler_source_digest() for r in found)
    # the ground truth of the same name is another file
    assert tuning.ground_truth("neighbour", SHAPES, measure=False)[0] == []


def test_every_workload_names_a_transfer_source_of_other_shapes() -> None:
    for name, shapes in tuning.FULL + tuning.QUICK:
        for source, source_shapes in tuning.SOURCES[name]:
            assert source_shapes != shapes and source not in dict(tuning.FULL + tuning.QUICK)
