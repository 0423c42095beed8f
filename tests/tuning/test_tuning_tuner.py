from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from tegula.compiler.fingerprint import compiler_source_digest
from tegula.compiler.tuning import TuningDatabase, best_config, tune
from tegula.compiler.tuning.cli import add_tune_parser, run_tune
from tegula.compiler.tuning.executors import ray_available
from tuning_kernels import PLANTED, ROWSUM

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_planted_failures_are_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    db = tmp_path / "db.jsonl"
    # Random search over the whole space (12 points): every planted failure is measured.
    result = tune(PLANTED, "planted", {"N": 3000}, trials=12, target="cpu", db=db,
                  parallel=2, progress=False, model="random", timeout_s=2.0)
    status = {(r.config["BLOCK"], r.config["MODE"]): r.status for r in result.records}
    assert len(status) == 12
    for block in (64, 128):
        assert status[block, 0] == "ok"
        assert status[block, 1] == "wrong_result"
        assert status[block, 2] == "timeout"
        assert status[block, 3] == "compile_error"
    assert status[4194304, 0] == "crash"  # the worker's stack overflows: SIGSEGV
    assert status[4194304, 3] == "compile_error"
    crash = next(r for r in result.records if r.status == "crash")
    assert "SIGSEGV" in crash.message
    assert result.checked
    assert result.best_config is not None and result.best_config["MODE"] == 0
    assert result.best_config["BLOCK"] in (64, 128)
    assert result.trials_to_95 is not None and 1 <= result.trials_to_95 <= 12
    # Every measurement is in the database, and compile time finds the best one.
    on_disk = list(TuningDatabase(db).records())
    assert len(on_disk) == 12
    assert best_config(PLANTED, "planted", {"N": 3000}, "cpu", db) == result.best_config
    assert best_config(PLANTED, "planted", {"N": 4000}, "cpu", db) is None


def test_model_guided_tuning_of_an_example_with_its_companion(tmp_path: Path) -> None:
    db = tmp_path / "db.jsonl"
    path = EXAMPLES / "vector_add.tg"
    result = tune(path, "vector_add", {"N": 20000}, trials=3, target="cpu", db=db,
                  parallel=2, progress=False, seed=1)
    assert [r.status for r in result.records] == ["ok"] * 3
    assert result.checked  # against the companion's NumPy reference
    assert result.best_config is not None and result.best_config["BLOCK"] in (256, 512, 1024)
    assert all(len(r.features) > 0 for r in result.records)
    # A second run measures nothing twice: the space is exhausted.
    again = tune(path, "vector_add", {"N": 20000}, trials=3, target="cpu", db=db,
                 parallel=1, progress=False, seed=1)
    assert again.records == ()
    assert again.best_config == result.best_config
    measured = list(TuningDatabase(db).records())
    assert all(r.build for r in measured)  # each record says what its config built to

    def rerun_on(records: list) -> Any:
        db.unlink()
        TuningDatabase(db).append(records)
        return tune(path, "vector_add", {"N": 20000}, trials=3, target="cpu", db=db,
                    parallel=1, progress=False, seed=1)

    # Another compiler's measurements hold where this one builds the same code...
    assert rerun_on([dataclasses.replace(r, compiler="0" * 16) for r in measured]).records == ()
    # ...and are measured afresh, by this compiler, where the code differs or is unknown.
    for build in ("0" * 16, ""):
        stale = [dataclasses.replace(r, compiler="0" * 16, build=build) for r in measured]
        fresh = rerun_on(stale)
        assert len(fresh.records) == 3
        assert {r.compiler for r in fresh.records} == {compiler_source_digest()}


def test_bad_shapes_are_reported_by_name() -> None:
    with pytest.raises(ValueError, match="size symbol N"):
        tune(ROWSUM, "rowsum", {"M": 10}, trials=1, target="cpu", progress=False)
    with pytest.raises(ValueError, match="no size symbol Q"):
        tune(ROWSUM, "rowsum", {"M": 10, "N": 10, "Q": 1}, trials=1, target="cpu",
             progress=False)
    with pytest.raises(KeyError, match="no kernel 'nope'"):
        tune(ROWSUM, "nope", {"M": 10, "N": 10}, trials=1, target="cpu", progress=False)


def _cli(tmp_path: Path) -> tuple[argparse.ArgumentParser, Path]:
    """``tegula tune``'s parser, and the rowsum kernel in a file it can read."""
    parser = argparse.ArgumentParser(prog="tegula")
    add_tune_parser(parser.add_subparsers())
    kernel = tmp_path / "rowsum.tg"
    kernel.write_text(ROWSUM)
    return parser, kernel


def test_cli_tunes_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser, kernel = _cli(tmp_path)
    db = tmp_path / "db.jsonl"
    args = parser.parse_args(["tune", str(kernel), "--shape", "M=64", "--shape", "N=300",
                              "--trials", "4", "--target", "cpu", "--db", str(db),
                              "--parallel", "2", "--strategy", "random"])
    assert args.fn(args) == 0
    out = capsys.readouterr().out
    assert "best:" in out and "rowsum" in out
    report = parser.parse_args(["tune", "--report", "--db", str(db)])
    assert run_tune(report) == 0
    listed = capsys.readouterr().out
    assert "rowsum" in listed and "M=64" in listed


def test_cli_cold_l2_reaches_the_workers_and_the_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--cold-l2`` is passed to ``tune``, and records say how they were timed: on the CPU
    as without it (the workers keep one set of inputs: there is no L2 of a GPU to pass)."""
    from tegula.compiler.tuning import tuner
    from tegula.compiler.tuning.measure import timing_protocol

    seen = {}
    real_tune = tuner.tune

    def recording_tune(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.update(kwargs)
        return real_tune(*args, **kwargs)

    monkeypatch.setattr(tuner, "tune", recording_tune)
    parser, kernel = _cli(tmp_path)
    db = tmp_path / "db.jsonl"
    args = parser.parse_args(["tune", str(kernel), "--shape", "M=64", "--shape", "N=300",
                              "--trials", "2", "--target", "cpu", "--db", str(db),
                              "--parallel", "2", "--strategy", "random", "--cold-l2"])
    assert args.fn(args) == 0
    assert seen["cold_l2"] is True
    records = TuningDatabase(db).records()
    assert records and {r.timing for r in records if r.ok} == {timing_protocol()}


@pytest.mark.skipif(not ray_available(), reason="Ray is not installed (optional)")
def test_ray_executor_builds(tmp_path: Path) -> None:
    result = tune(ROWSUM, "rowsum", {"M": 16, "N": 100}, trials=2, target="cpu",
                  db=tmp_path / "db.jsonl", progress=False, model="random", executor="ray")
    assert [r.status for r in result.records] == ["ok", "ok"]
    # The command line reaches the same executor.
    parser, kernel = _cli(tmp_path)
    args = parser.parse_args(["tune", str(kernel), "--shape", "M=16", "--shape", "N=100",
                              "--trials", "2", "--target", "cpu", "--db", str(tmp_path / "c.jsonl"),
                              "--strategy", "random", "--executor", "ray"])
    assert args.fn(args) == 0


WIDEN = """
kernel widen(w: WT[N], y: f32[N])
    params WT = i8 in (i8, i16), B = 64 in (32, 64)
    grid (cdiv(N, B))
{
    i = bid.x * B
    store(y[i : +B], cast(load(w[i : +B]), f32) * 2.0)
}
"""


def test_a_kernel_is_tuned_at_each_value_of_its_dtype_params_apart(tmp_path: Path) -> None:
    from tegula.compiler.specialize import SpecializedKernel

    import tegula as tg

    db = tmp_path / "db.jsonl"
    wide = tune(WIDEN, "widen", {"N": 5000}, trials=2, target="cpu", db=db, parallel=1,
                progress=False, constants={"WT": "i16"})
    assert [r.status for r in wide.records] == ["ok", "ok"]
    assert {r.config["WT"] for r in wide.records} == {"i16"}
    assert {r.dtypes["w"] for r in wide.records} == {"i16"}
    # The default type's space is its own: nothing measured at i16 stands in for it.
    narrow = tune(WIDEN, "widen", {"N": 5000}, trials=2, target="cpu", db=db, parallel=1,
                  progress=False)
    assert len(narrow.records) == 2 and {r.dtypes["w"] for r in narrow.records} == {"i8"}
    # A compile at each type picks that type's best record.
    for pinned, result in (({"WT": "i16"}, wide), ({"WT": "i8"}, narrow), ({}, narrow)):
        kernel = tg.compile(WIDEN, target="cpu", tuning_db=db, **pinned)["widen"]
        assert isinstance(kernel, SpecializedKernel)
        assert kernel.constants_for(N=5000) == result.best_config
    parser = argparse.ArgumentParser(prog="tegula")
    add_tune_parser(parser.add_subparsers())
    source = tmp_path / "widen.tg"
    source.write_text(WIDEN)
    args = parser.parse_args(["tune", str(source), "--shape", "N=5000", "--const", "WT=i16",
                              "--trials", "2", "--target", "cpu", "--db", str(db)])
    assert args.fn(args) == 0  # both i16 configs are measured already: nothing new
    assert len(list(TuningDatabase(db).records())) == 4
    with pytest.raises(Exception, match="WT = f32 is not one of its types"):
        tg.compile(WIDEN, target="cpu", tuning_db=db, WT="f32")  # said at the source
    with pytest.raises(ValueError, match="dtype parameters only; B"):
        tune(WIDEN, "widen", {"N": 64}, trials=1, target="cpu", progress=False,
             constants={"B": 32})
    with pytest.raises(ValueError, match="no compile-time parameter Q"):
        tune(WIDEN, "widen", {"N": 64}, trials=1, target="cpu", progress=False,
             constants={"Q": "i8"})
    with pytest.raises(Exception, match="f32"):
        tune(WIDEN, "widen", {"N": 64}, trials=1, target="cpu", progress=False,
             constants={"WT": "f32"})


def test_the_declared_defaults_are_measured_first(tmp_path: Path) -> None:
    """A tuned config is never slower than the untuned kernel at its shape: the header's
    defaults (here not the first candidates) are the first point measured, once."""
    source = ROWSUM.replace("params BM in (1, 2, 4), BN in (32, 64, 128, 256)",
                            "params BM = 2 in (1, 2, 4), BN = 128 in (32, 64, 128, 256)")
    db = tmp_path / "db.jsonl"
    for seed in (0, 1):
        result = tune(source, "rowsum", {"M": 64, "N": 1000}, trials=3, target="cpu", db=db,
                      parallel=1, progress=False, model="random", seed=seed)
        configs = [(r.config["BM"], r.config["BN"]) for r in result.records]
        assert len(configs) == len(set(configs)) == 3
        if seed == 0:
            assert configs[0] == (2, 128)
        else:  # measured by the first run: not measured again
            assert (2, 128) not in configs
