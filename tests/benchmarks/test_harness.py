"""The benchmark harness without a GPU and without the compiler: statistics, the results schema,
RESULTS.md generation, target verdicts, and leaving out peers that are missing or wrong."""

from __future__ import annotations

import copy
import json
import re
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# The benchmarks package lives at the repository root, beside the installed `tegula`.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import __main__ as cli
from benchmarks import harness, peers, report
from benchmarks.checks import CheckFailed, compare, poison, random_array
from benchmarks.compare import TEGULA, Buffers, Case, Impl, host_timer, measure_case
from benchmarks.schema import Row, SchemaError, SuiteResult, validate
from benchmarks.suites import SUITE_NAMES, all_suites
from benchmarks.targets import (
    TARGETS,
    CeilingTarget,
    LimitTarget,
    PeerTarget,
    RowRatioTarget,
    check,
    fraction_of_ceiling,
    ratio,
)

# ---------------------------------------------------------------------------- statistics


def test_summarize_gives_median_min_and_interquartile_range() -> None:
    stats = harness.summarize([5.0, 1.0, 3.0, 2.0, 4.0], calls_per_sample=10, graphed=True)
    assert stats.median_s == 3.0
    assert stats.min_s == 1.0
    assert stats.iqr_s == pytest.approx(2.0)  # quartiles 2 and 4 (inclusive method)
    assert stats.spread == pytest.approx(2.0 / 3.0)
    assert (stats.samples, stats.calls_per_sample, stats.graphed) == (5, 10, True)
    assert stats.to_json()["median_ms"] == pytest.approx(3000.0)


def test_summarize_is_robust_to_one_slow_sample() -> None:
    stats = harness.summarize([1.0] * 9 + [100.0])
    assert stats.median_s == 1.0
    assert stats.iqr_s == 0.0


@pytest.mark.parametrize("samples", [[], [1.0, -1.0], [1.0, float("nan")]])
def test_summarize_rejects_bad_samples(samples: list[float]) -> None:
    with pytest.raises(ValueError):
        harness.summarize(samples)


def test_settings_reject_zero_repeats() -> None:
    with pytest.raises(ValueError, match="repeats"):
        harness.Settings(warmup=0, repeats=0)


def test_gbps() -> None:
    assert harness.gbps(3 * 10**9, 0.5) == pytest.approx(6.0)


@pytest.mark.parametrize(("bytes_per_set", "cache", "expected"), [
    (10**9, 50 * 2**20, 1),  # one set already dwarfs the cache
    (48 * 2**20, 50 * 2**20, 3),  # 3 x 48 MiB > 2 x 50 MiB, 2 x 48 MiB is not
    (100, 100, 3),  # exactly twice the cache is not more than twice
])
def test_buffer_sets_exceed_twice_the_cache(bytes_per_set: int, cache: int, expected: int
                                            ) -> None:
    n = harness.buffer_sets_needed(bytes_per_set, cache)
    assert n == expected
    assert n * bytes_per_set > 2 * cache


def test_calls_per_sample_covers_whole_rotations() -> None:
    assert harness.calls_per_sample(1.0, 4) == 1  # long calls: one per sample
    count = harness.calls_per_sample(10e-6, 3)  # short calls: about 1 ms worth
    assert count % 3 == 0 and count * 10e-6 >= harness.SAMPLE_TARGET_S
    assert harness.calls_per_sample(1e-12, 1) == harness.MAX_CALLS_PER_SAMPLE


class FakeClock:
    """Every sample 'takes' the next of the given durations."""

    def __init__(self, durations: list[float]) -> None:
        self.durations = iter(durations)
        self.runs = 0

    def sample(self, run: harness.Call) -> float:
        run()
        self.runs += 1
        return next(self.durations)


def test_measure_warms_up_then_divides_by_calls_per_sample() -> None:
    calls = []
    clock = FakeClock([4.0, 8.0, 6.0])
    stats = harness.measure(lambda: calls.append(1), clock, harness.Settings(warmup=2, repeats=3),
                            calls_per_sample=2)
    assert len(calls) == 5  # 2 warm-up runs, then 3 timed
    assert clock.runs == 3
    assert stats.median_s == 3.0 and stats.min_s == 2.0


def test_host_clock_synchronizes_around_the_sample() -> None:
    events: list[str] = []
    clock = harness.HostClock(sync=lambda: events.append("sync"))
    assert clock.sample(lambda: events.append("run")) >= 0.0
    assert events == ["sync", "run", "sync"]


def test_bench_host_rotates_evenly_through_buffer_sets() -> None:
    counts = [0, 0, 0]

    def call_for(i: int) -> harness.Call:
        def call() -> None:
            counts[i] += 1
        return call

    stats = harness.bench_host([call_for(i) for i in range(3)], harness.QUICK)
    assert stats.samples == harness.QUICK.repeats
    assert stats.calls_per_sample % 3 == 0
    assert max(counts) - min(counts) <= 1 and min(counts) > 0


# ---------------------------------------------------------------------------- checks


def test_compare_accepts_float32_rounding_and_rejects_wrong_or_unwritten_output() -> None:
    x = random_array(np, (64, 32), seed=1)
    reference = x.astype(np.float64) * 2.0
    assert compare(x * np.float32(2.0), reference, 1e-6).relative < 1e-7
    with pytest.raises(CheckFailed, match="exceeds tolerance"):
        compare(x * np.float32(2.001), reference, 1e-6)
    out = np.empty_like(x)
    poison([out])
    out[:-1] = x[:-1] * 2  # last row never written
    with pytest.raises(CheckFailed, match="NaN"):
        compare(out, reference, 1e-6)
    with pytest.raises(CheckFailed, match="shape"):
        compare(x.T, reference, 1e-6)


def test_random_arrays_are_fresh_and_not_zero() -> None:
    a, b = random_array(np, (1000,), 0), random_array(np, (1000,), 1)
    assert a.dtype == np.float32
    assert np.count_nonzero(a) == a.size
    assert not np.array_equal(a, b)


# ---------------------------------------------------------------------------- one row


def _scale_case(n: int = 256) -> Case:
    return Case(
        case="scale/large",
        name=f"scale f32 {n}",
        nbytes=2 * n * 4,
        make_buffers=lambda s: Buffers({"x": random_array(np, (n,), s)},
                                       {"y": np.empty(n, dtype=np.float32)}),
        reference=lambda b: b["x"].astype(np.float64) * 2.0,
    )


def _scale_into(b: Buffers) -> harness.Call:
    def call() -> Any:
        np.multiply(b["x"], 2, out=b["y"])
        return b["y"]
    return call


def _broken_build(b: Buffers) -> harness.Call:
    raise ImportError("tegula is not built yet")


def _leaves_last_element(b: Buffers) -> harness.Call:
    def call() -> Any:
        np.multiply(b["x"][:-1], 2, out=b["y"][:-1])
        return b["y"]
    return call


_timer = host_timer(harness.Settings(warmup=1, repeats=3))


def test_measure_case_times_correct_impls_and_leaves_out_the_rest() -> None:
    row = measure_case(
        _scale_case(),
        {
            TEGULA: Impl(_scale_into),
            "NumPy": Impl(lambda b: lambda: b["x"] * 2),  # allocates its own output: fine
            "Broken": Impl(_broken_build),
            "Sloppy": Impl(_leaves_last_element),  # the poison catches the unwritten element
        },
        _timer,
        cache_bytes=4096,
        ceiling={"copy": 10.0},
        extra_notes=["threads: default"],
    )
    assert row.tegula is not None and row.tegula > 0
    assert set(row.peers) == {"NumPy"}
    assert row.ceiling == {"copy": 10.0}
    assert row.case == "scale/large"
    assert row.extra["buffer_sets"] * 2 * 256 * 4 > 2 * 4096
    notes = row.extra["notes"]
    assert "threads: default" in notes
    assert "Broken left out: ImportError: tegula is not built yet" in notes
    assert "Sloppy left out: CheckFailed" in notes
    assert set(row.extra["check"]) == {TEGULA, "NumPy"}
    validate(SuiteResult("t", "d", "2026-01-01T00:00:00+00:00", "c", (row,)).to_json())


def test_measure_case_without_tegula_keeps_the_peers() -> None:
    row = measure_case(_scale_case(), {TEGULA: Impl(_broken_build), "NumPy": Impl(_scale_into)},
                       _timer, cache_bytes=0, ceiling={})
    assert row.tegula is None
    assert "NumPy" in row.peers
    assert row.extra["notes"].startswith("tegula left out")


# ---------------------------------------------------------------------------- schema

def _fixture_rows() -> tuple[Row, ...]:
    return (
        Row("softmax f32 32768x8192", "GB/s", True, 3450.1,
            {"CuPy": 2100.4, "PyTorch": 3300.2}, {"copy": 3900.0}, {"case": "softmax/large"}),
        Row("vector_add f32 67108864", "GB/s", True, 3000.0,
            {"CuPy": 3100.0}, {"copy": 3900.0}, {"case": "vector_add/large"}),
        Row("rmsnorm f32 32768x8192", "GB/s", True, None, {"CuPy": 1500.0}, {"copy": 3900.0},
            {"case": "rmsnorm/large", "notes": "tegula left out: ImportError: not built"}),
    )


def _fixture_suite(suite: str = "memory") -> SuiteResult:
    return SuiteResult(suite, "NVIDIA H100 80GB HBM3, 80 GiB, CUDA driver 13.0",
                       "2026-11-21T12:00:00+00:00", "python -m benchmarks --suite memory",
                       _fixture_rows())


def test_suite_json_round_trips() -> None:
    result = _fixture_suite()
    doc = json.loads(json.dumps(result.to_json()))
    assert list(doc) == ["suite", "device", "date", "command", "rows"]
    assert list(doc["rows"][0])[:6] == ["name", "metric", "higher_is_better", "tegula", "peers",
                                        "ceiling"]
    assert SuiteResult.from_json(doc) == result


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.pop("device"), "lacks device"),
    (lambda d: d.update(date="yesterday"), "ISO 8601"),
    (lambda d: d.update(rows={}), "rows must be a list"),
    (lambda d: d["rows"][0].pop("peers"), "lacks peers"),
    (lambda d: d["rows"][0].update(tegula="fast"), "tegula must be a finite number or null"),
    (lambda d: d["rows"][0].update(tegula=float("nan")), "tegula must be a finite number"),
    (lambda d: d["rows"][0].update(higher_is_better=1), "higher_is_better"),
    (lambda d: d["rows"][0]["peers"].update(CuPy=True), "peers['CuPy']"),
    (lambda d: d["rows"][0]["ceiling"].update(copy=None), "ceiling['copy']"),
    (lambda d: d["rows"].append(copy.deepcopy(d["rows"][0])), "appears twice"),
])
def test_validate_names_what_is_wrong(mutate: Any, message: str) -> None:
    doc = _fixture_suite().to_json()
    mutate(doc)
    with pytest.raises(SchemaError, match=re.escape(message)):
        validate(doc)


def test_extra_keys_may_not_shadow_schema_keys() -> None:
    row = Row("r", "ms", False, 1.0, extra={"tegula": 2.0})
    with pytest.raises(SchemaError, match="shadow"):
        row.to_json()


# ---------------------------------------------------------------------------- targets


def test_ratio_and_fraction_of_ceiling() -> None:
    softmax = _fixture_rows()[0]
    assert ratio(softmax, "CuPy") == pytest.approx(3450.1 / 2100.4)
    assert ratio(softmax, "Triton") is None  # not installed: no ratio, no error
    assert fraction_of_ceiling(softmax, "copy") == pytest.approx(3450.1 / 3900.0)
    timed = Row("t", "ms", False, 2.0, {"NumPy": 1.0}, {"floor": 1.0})
    assert fraction_of_ceiling(timed, "floor") == pytest.approx(0.5)


def test_ceiling_and_peer_targets() -> None:
    softmax, vector_add, rmsnorm = _fixture_rows()
    assert CeilingTarget("memory", "softmax/large", "copy", 0.85).evaluate(softmax).status == "met"
    assert CeilingTarget("memory", "x", "copy", 0.9).evaluate(softmax).status == "not met"
    assert PeerTarget("memory", "x", "CuPy").evaluate(softmax).status == "met"
    verdict = PeerTarget("memory", "x", "CuPy").evaluate(vector_add)
    assert verdict.status == "not met" and "1.03x" in verdict.detail
    assert PeerTarget("memory", "x", "Triton").evaluate(softmax).status == "unchecked"
    missing = PeerTarget("memory", "x", "CuPy").evaluate(rmsnorm)
    assert missing.status == "not met" and "not built" in missing.detail


@pytest.mark.parametrize(("tegula", "numpy", "higher_is_better", "status"), [
    (11.0, 10.0, False, "met"),  # 1.1x NumPy's time
    (13.0, 10.0, False, "not met"),  # 1.3x
    (9.0, 10.0, True, "met"),  # GB/s: 10/9 = 1.11x the time
    (8.0, 10.0, True, "not met"),  # 1.25x the time
])
def test_peer_factor_reads_time_either_way(tegula: float, numpy: float, higher_is_better: bool,
                                           status: str) -> None:
    row = Row("softmax", "ms", higher_is_better, tegula, {"NumPy": numpy})
    assert PeerTarget("cpu", "softmax/square", "NumPy", 1.2).evaluate(row).status == status


def test_limit_target() -> None:
    target = LimitTarget("compile", "launch", 15.0, "us")
    assert target.evaluate(Row("l", "us", False, 9.0)).status == "met"
    assert target.evaluate(Row("l", "us", False, 21.0)).status == "not met"
    assert target.evaluate(Row("l", "ms", False, 0.009)).status == "unchecked"


def test_row_ratio_target_compares_two_rows_of_a_run() -> None:
    def row(case: str, ms: float | None) -> Row:
        extra = {"case": case} | (
            {"tegula_ms": ms} if ms is not None else {"notes": "tegula left out"})
        return Row(case, "GB/s", True, None if ms is None else 1.0, extra=extra)

    target = RowRatioTarget("quant", "w4a16/M=16", "w4a16/M=1", 1.3, "16 rows")
    met = check(target, (row("w4a16/M=1", 0.050), row("w4a16/M=16", 0.060)))
    assert met.status == "met" and "1.20x" in met.detail and "50 us" in met.detail
    assert check(target, (row("w4a16/M=1", 0.050), row("w4a16/M=16", 0.070))).status == "not met"
    assert check(target, (row("w4a16/M=16", 0.06),)).status == "unchecked"
    assert check(target, (row("w4a16/M=1", 0.05), row("w4a16/M=16", None))).status == "not met"


def test_check_finds_the_row_by_case() -> None:
    rows = _fixture_rows()
    assert check(PeerTarget("memory", "softmax/large", "CuPy"), rows).status == "met"
    verdict = check(PeerTarget("memory", "transpose/large", "CuPy"), rows)
    assert verdict.status == "not met" and "no row" in verdict.detail


def test_every_target_names_a_known_suite() -> None:
    assert {t.suite for t in TARGETS} <= set(SUITE_NAMES)


# ---------------------------------------------------------------------------- RESULTS.md


def test_results_md_is_generated_from_json(tmp_path: Path) -> None:
    report.write_suite_json(_fixture_suite(), tmp_path)
    report.write_suite_json(SuiteResult("compile", "dev", "2026-11-21T12:00:00+00:00", "cmd", (
        Row("launch overhead", "us", False, 9.5, {"CuPy": 4.75}, extra={"case": "launch"}),
    )), tmp_path)
    md = report.write_results_md(tmp_path, tmp_path / "RESULTS.md").read_text()

    assert md.index("## memory") < md.index("## compile")
    assert "- command: `python -m benchmarks --suite memory`" in md
    assert "| row | metric | tegula | CuPy | PyTorch | tegula/CuPy | tegula/PyTorch |" in md
    softmax_line = next(line for line in md.splitlines() if line.startswith("| softmax"))
    assert "3450.1" in softmax_line and "1.64" in softmax_line and "88.46%" in softmax_line
    rmsnorm_line = next(line for line in md.splitlines() if line.startswith("| rmsnorm"))
    assert rmsnorm_line.count(report.MISSING) >= 3  # no tegula, no PyTorch, no ratios
    assert "**met** — softmax/large: >= 85% of the copy ceiling" in md
    assert "**not met** — vector_add/large: >= 85% of the copy ceiling" in md
    assert "**not met** — transpose/large" in md  # a target with no row is not met
    assert "**met** — launch: < 15 us" in md
    assert "tegula left out: ImportError: not built" in md
    # Suites with targets but no JSON are listed, not silently passed over.
    unmeasured = md[md.index("## Not yet measured"):]
    assert "**unchecked** — `quant`: w4a16/M=1" in unmeasured
    assert "`memory`" not in unmeasured and "`compile`" not in unmeasured


def test_results_md_names_a_malformed_file(tmp_path: Path) -> None:
    (tmp_path / "memory.json").write_text('{"suite": "memory"}')
    with pytest.raises(SchemaError, match=r"memory\.json"):
        report.load_results(tmp_path)


def test_results_md_without_results(tmp_path: Path) -> None:
    assert "No results yet" in report.render_markdown(report.load_results(tmp_path))


# ---------------------------------------------------------------------------- the command


def test_gpu_suites_skip_without_a_gpu_and_keep_old_results(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old = report.write_suite_json(_fixture_suite(), tmp_path).read_text()
    monkeypatch.setattr(cli, "gpu_available", lambda: False)
    assert cli.main(["--suite", "memory", "compile", "--out", str(tmp_path)]) == 0
    output = capsys.readouterr().out
    assert "[memory] skipped: no CUDA GPU" in output
    assert "[compile] skipped: no CUDA GPU" in output
    assert (tmp_path / "memory.json").read_text() == old
    assert not (tmp_path / "compile.json").exists()
    assert "## memory" in (tmp_path / "RESULTS.md").read_text()


def test_unknown_suite_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(["--suite", "nonsense"])
    assert "nonsense" in capsys.readouterr().err


def test_suites_register_without_gpu_packages() -> None:
    suites = all_suites()
    assert list(suites) == list(SUITE_NAMES)
    assert [s.needs_gpu for s in suites.values()] == [True, False, True, True, True, False]


def test_missing_peer_packages_are_left_out() -> None:
    assert peers.optional_module("a_package_that_is_not_installed") is None
    if peers.optional_module("torch") is None:
        assert peers.torch_cuda() is None
        assert peers.triton_kernels() is None


def test_memory_cases_check_out_with_numpy_standing_in_for_cupy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The GPU cases' shapes, byte counts, references and CuPy formulations, checked on the
    # host: NumPy has every CuPy function they use.
    from benchmarks.suites import memory

    monkeypatch.setattr(memory, "_cupy", lambda: np)
    size = memory.Sizes("large", 1024, (16, 64), (32, 48))
    for make_case in memory.KERNELS:
        case, impls = make_case(size)
        row = measure_case(case, {"CuPy": impls["CuPy"]}, _timer, cache_bytes=0, ceiling={})
        assert "CuPy" in row.peers, row.extra.get("notes")
        assert row.case == f"{make_case.__name__}/large"
        inputs = case.make_buffers(0)
        moved = sum(a.nbytes for a in (*inputs.inputs.values(), *inputs.outputs.values()))
        assert case.nbytes == moved


def test_cpu_cases_numpy_implementations_pass_their_checks() -> None:
    from benchmarks.suites import cpu, quant

    for case, impls in cpu.cases(cpu.Sizes(square=(16, 24), wide=(4, 128), vector=512)):
        row = measure_case(case, {"NumPy": impls["NumPy"]}, _timer, cache_bytes=0, ceiling={})
        assert "NumPy" in row.peers, row.extra.get("notes")
        buffers = case.make_buffers(0)
        moved = sum(a.nbytes for a in (*buffers.inputs.values(), *buffers.outputs.values()))
        assert case.nbytes == moved
    measured = {case.case for case, _ in cpu.cases(cpu.QUICK)} | {
        c.case for c in cpu.gemm_cases(quick=True)
    } | {c.case for c in quant.cpu_cases(quick=True)}
    assert {t.case for t in TARGETS if t.suite == "cpu"} <= measured


def test_destination_impls_get_a_verifier_that_catches_a_batch_doing_nothing() -> None:
    seen: dict[str, tuple[Any, Any]] = {}

    def timer(calls: Any, capture: Any, verify: Any) -> harness.Stats:
        seen[f"call{len(seen)}"] = (calls, verify)
        return harness.summarize([1e-3])

    measure_case(_scale_case(), {TEGULA: Impl(_scale_into, destination=True),
                                 "NumPy": Impl(lambda b: lambda: b["x"] * 2)},
                 timer, cache_bytes=4096, ceiling={})
    (tegula_calls, verify), (_, no_verify) = seen["call0"], seen["call1"]
    assert no_verify is None  # a peer returning a new array cannot be verified this way
    verify(lambda: [call() for call in tegula_calls])  # a batch doing the work passes
    with pytest.raises(CheckFailed, match="NaN"):
        verify(lambda: None)  # an empty graph leaves the poison in place


def test_report_only_runs_no_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report.write_suite_json(_fixture_suite(), tmp_path)
    monkeypatch.setattr(cli, "all_suites", lambda: pytest.fail("no suite may run"))
    assert cli.main(["--report-only", "--out", str(tmp_path)]) == 0
    assert "## memory" in (tmp_path / "RESULTS.md").read_text()


class _HostEvent:
    """Stands in for cupy.cuda.Event: records the host clock."""

    def record(self) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass


@pytest.fixture
def host_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench_gpu's logic on the host: CuPy's events replaced by host timestamps."""
    cuda = types.SimpleNamespace(Event=_HostEvent,
                                 get_elapsed_time=lambda a, b: (b.t - a.t) * 1e3)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda))


def _fail(*args: Any) -> None:
    raise RuntimeError("operation not permitted when stream is capturing")


@pytest.mark.parametrize(("capture_graph", "verify", "graphed"), [
    (lambda body, api: body, None, True),
    (lambda body, api: body, lambda replay: replay(), True),
    (_fail, None, False),  # not capturable: plain launches
    (lambda body, api: body, _fail, False),  # the graph misses work: plain launches
])
def test_bench_gpu_uses_a_graph_only_when_it_captures_and_verifies(
        host_events: None, monkeypatch: pytest.MonkeyPatch, capture_graph: Any, verify: Any,
        graphed: bool) -> None:
    monkeypatch.setattr(harness, "capture_graph", capture_graph)
    stats = harness.bench_gpu([lambda: None] * 2, harness.QUICK, "cupy", verify)
    assert stats.graphed is graphed
    assert stats.calls_per_sample % 2 == 0 and stats.median_s < harness.GRAPH_BELOW_S


def test_bench_gpu_times_long_calls_one_per_sample(host_events: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "capture_graph", lambda body, api: pytest.fail("no graph"))
    stats = harness.bench_gpu([lambda: time.sleep(2e-3)], harness.Settings(1, 3))
    assert (stats.calls_per_sample, stats.graphed) == (1, False)
    assert stats.median_s >= 2e-3
