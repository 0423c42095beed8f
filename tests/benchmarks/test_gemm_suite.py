"""The gemm suite's logic on the host: row naming, FLOP counting, buffer rotation, the summary
row, the targets, and one row measured end to end with NumPy standing in for CuPy."""

from __future__ import annotations

import math
import re
import statistics
from typing import Any

import numpy as np
import pytest

from benchmarks import harness
from benchmarks.checks import CheckFailed, random_array
from benchmarks.compare import TEGULA, Buffers, Impl
from benchmarks.kernels import EXAMPLES
from benchmarks.schema import Row, SuiteResult, validate
from benchmarks.suites import SUITE_NAMES, all_suites, cpu, gemm
from benchmarks.targets import TARGETS, CeilingTarget, PeerTarget, check

H100_L2 = 50 * 2**20


def _fixed_timer(seconds: float = 1e-3) -> Any:
    """A timer that times nothing: every implementation takes `seconds` per call."""
    return lambda calls, capture, verify: harness.summarize([seconds])


# ----------------------------------------------------------------- shapes, names, FLOPs

def test_flops_count_a_multiply_add_as_two() -> None:
    assert gemm.GemmShape(m=16, n=4096, k=14336).flops == 2 * 16 * 4096 * 14336
    assert gemm.flop_rate(4 * 10**12, 2.0, gemm.TFLOPS) == 2.0
    assert gemm.flop_rate(4 * 10**9, 2.0, gemm.GFLOPS) == 2.0


def test_bad_shapes_and_metrics_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="M=0 N=8 K=8"):
        gemm.GemmShape(0, 8, 8)
    with pytest.raises(ValueError, match="'GB/s'"):
        gemm.flop_rate(1, 1.0, "GB/s")


def test_full_run_has_the_agreed_rows() -> None:
    assert [c.name for c in gemm.square_cases(quick=False)] == [
        "fp16 4096x4096x4096", "fp16 8192x8192x8192",
        "bf16 4096x4096x4096", "bf16 8192x8192x8192"]
    llm = gemm.llm_cases(quick=False)
    assert len(llm) == 16
    assert llm[0].name == "fp16 M=16 K=4096 N=4096"
    assert llm[-1].name == "fp16 M=8192 K=8192 N=28672"
    by_name = {c.name: c for c in llm}
    # K is the reduction: (K, N) = (14336, 4096) is a down projection, b is 14336 x 4096.
    assert by_name["fp16 M=128 K=14336 N=4096"].shape == gemm.GemmShape(m=128, n=4096, k=14336)
    assert {c.precision for c in llm} == {"fp16"}
    assert all(c.tolerance == 1e-2 for c in (*llm, *gemm.square_cases(quick=False)))


@pytest.mark.parametrize("quick", [False, True])
def test_case_keys_are_unique_and_cover_the_targets(quick: bool) -> None:
    cases = gemm.square_cases(quick) + gemm.w8a8_cases(quick) + gemm.llm_cases(quick)
    keys = [c.case for c in cases] + [gemm.LLM_GEOMEAN_CASE]
    assert len(set(keys)) == len(keys)
    assert len({c.name for c in cases}) == len(cases)
    gemm_targets = [t for t in TARGETS if t.suite == "gemm"]
    assert {t.case for t in gemm_targets} <= set(keys)
    ceilings = [t for t in gemm_targets if isinstance(t, CeilingTarget)]
    assert all(t.ceiling == gemm.CUBLAS and t.fraction == 0.9 for t in ceilings)
    assert len(ceilings) == 5  # four square rows and the LLM summary
    (w8a8,) = [t for t in gemm_targets if not isinstance(t, CeilingTarget)]
    assert isinstance(w8a8, PeerTarget) and w8a8.peer == gemm.CUBLAS_F16
    assert w8a8.case == "w8a8/square/large" and w8a8.factor == 1 / 1.6


def test_quick_runs_only_small_shapes() -> None:
    cases = gemm.square_cases(quick=True) + gemm.llm_cases(quick=True)
    assert max(c.shape.flops for c in cases) <= 2 * 1024**3
    assert any(c.shape.memory_bound for c in cases)  # the rotation path runs too


# ----------------------------------------------------------------------- buffer sets

def test_memory_bound_rows_rotate_b_past_twice_the_l2() -> None:
    shape = gemm.GemmShape(m=16, n=4096, k=4096)
    plan = gemm.plan_buffer_sets(shape, 2, H100_L2)
    per_set = (shape.k * shape.n + shape.m * shape.n) * 2
    assert plan.sets * per_set > 2 * H100_L2
    assert (plan.sets - 1) * per_set <= 2 * H100_L2  # no more sets than that needs
    assert not plan.capped


@pytest.mark.parametrize("shape", [gemm.GemmShape(2048, 4096, 4096),
                                   gemm.GemmShape(4096, 4096, 4096)])
def test_compute_bound_rows_use_one_buffer_set(shape: gemm.GemmShape) -> None:
    assert gemm.plan_buffer_sets(shape, 2, H100_L2) == gemm.BufferPlan(1, 1)


def test_rotation_stops_at_the_memory_budget_and_says_so() -> None:
    shape = gemm.GemmShape(m=16, n=4096, k=4096)
    plan = gemm.plan_buffer_sets(shape, 2, H100_L2, memory_budget=70 * 10**6)
    assert plan.sets == 2 and plan.capped


def test_full_run_stays_under_the_memory_budget() -> None:
    for case in gemm.llm_cases(quick=False) + gemm.square_cases(quick=False):
        shape, size = case.shape, gemm.ITEMSIZE[case.precision]
        plan = gemm.plan_buffer_sets(shape, size, H100_L2)
        total = (shape.m * shape.k + plan.sets * (shape.k * shape.n + shape.m * shape.n)) * size
        assert total <= gemm.GPU_MEMORY_BUDGET_BYTES, case.name
        assert not plan.capped, case.name


def test_buffer_sets_share_a_and_hold_fresh_b_and_c() -> None:
    sets = gemm.make_buffer_sets(gemm.GemmShape(4, 6, 5), 3,
                                 lambda shape, seed: random_array(np, shape, seed),
                                 lambda shape: np.empty(shape, dtype=np.float32))
    assert all(s["a"] is sets[0]["a"] for s in sets)
    assert sets[0]["a"].shape == (4, 5) and sets[0]["b"].shape == (5, 6)
    assert sets[0]["c"].shape == (4, 6)
    assert not np.array_equal(sets[0]["b"], sets[1]["b"])
    assert len({id(s["c"]) for s in sets}) == 3


# ------------------------------------------------------------------- tegula's tiles

def _declared_candidates(kernel: str) -> dict[str, set[int]]:
    text = (EXAMPLES / "gemm.tg").read_text()
    header = text[text.index(f"kernel {kernel}("):]
    header = header[:header.index("{")]
    return {name: {int(v) for v in values.split(",")}
            for name, values in re.findall(r"(\w+) = \d+ in \(([^)]*)\)", header)}


@pytest.mark.parametrize("kernel", sorted(gemm.TEGULA_KERNELS.values()))
def test_memory_bound_tiles_are_among_the_kernels_candidates(kernel: str) -> None:
    candidates = _declared_candidates(kernel)
    tiles = gemm.tegula_tile_params(gemm.GemmShape(16, 4096, 4096))
    assert tiles and set(tiles) <= set(candidates)
    assert all(value in candidates[name] for name, value in tiles.items())
    assert gemm.tegula_tile_params(gemm.GemmShape(2048, 4096, 4096)) == {}


def test_tuned_configs_come_from_the_database_for_exact_shapes(tmp_path: Any) -> None:
    """A record of gemm_f16 at one shape sets that row's tiles; other shapes, bf16 (another
    kernel) and a missing database give None."""
    from tegula.compiler.headers import kernel_text_hash
    from tegula.compiler.parser import parse
    from tegula.compiler.tuning.database import TuningDatabase, TuningRecord

    kernel = next(k for k in parse((EXAMPLES / "gemm.tg").read_text()).kernels
                  if k.name == "gemm_f16")
    config = {"BM": 128, "BN": 128, "BK": 64, "GROUP_M": 4, "STAGES": 4, "WARPS": 8}
    database = tmp_path / "gemm.jsonl"
    TuningDatabase(database).append([TuningRecord(
        kernel="gemm_f16", kernel_hash=kernel_text_hash(kernel),
        shapes={"M": 2048, "N": 4096, "K": 4096}, dtypes={"a": "f16", "b": "f16", "c": "f16"},
        target="cuda:sm_90a", device="a GPU", config=config, status="ok", time_s=1e-4)])

    def tuned(precision: Any, shape: gemm.GemmShape, path: Any = database) -> Any:
        return gemm.tuned_tile_params(precision, shape, path, target="cuda:sm_90a")

    assert tuned("fp16", gemm.GemmShape(2048, 4096, 4096)) == config
    assert tuned("fp16", gemm.GemmShape(2048, 4096, 14336)) is None
    assert tuned("bf16", gemm.GemmShape(2048, 4096, 4096)) is None
    assert tuned("fp16", gemm.GemmShape(2048, 4096, 4096), tmp_path / "none.jsonl") is None


# ------------------------------------------------------------------------ one row

def _case(m: int = 8, n: int = 12, k: int = 16) -> gemm.GemmCase:
    return gemm.GemmCase("f32/t", f"f32 {m}x{n}x{k}", "f32", gemm.GemmShape(m, n, k), 1e-5)


def _host_sets(case: gemm.GemmCase, n_sets: int = 2) -> list[Buffers]:
    return gemm.make_buffer_sets(case.shape, n_sets,
                                 lambda shape, seed: random_array(np, shape, seed),
                                 lambda shape: np.empty(shape, dtype=np.float32))


def _reference(buffers: Buffers) -> Any:
    return buffers["a"].astype(np.float64) @ buffers["b"].astype(np.float64)


def _matmul_into(b: Buffers) -> harness.Call:
    def call() -> Any:
        np.matmul(b["a"], b["b"], out=b["c"])
        return b["c"]
    return call


def _off_by_one(b: Buffers) -> harness.Call:
    def call() -> Any:
        np.add(b["a"] @ b["b"], 1.0, out=b["c"])
        return b["c"]
    return call


def _skips_last_row(b: Buffers) -> harness.Call:
    def call() -> Any:
        np.matmul(b["a"][:-1], b["b"], out=b["c"][:-1])
        return b["c"]
    return call


def _raises(b: Buffers) -> harness.Call:
    raise RuntimeError("kernel failed to build")


def test_measure_gemm_reports_flop_rates_and_leaves_out_failures() -> None:
    case = _case()
    sets = _host_sets(case)
    row = gemm.measure_gemm(
        case, sets, _reference(sets[0]),
        {TEGULA: Impl(_matmul_into, destination=True),
         "cuBLAS": Impl(_matmul_into, destination=True),
         "Broken": Impl(_raises), "Wrong": Impl(_off_by_one), "Sloppy": Impl(_skips_last_row)},
        _fixed_timer(1e-3), metric=gemm.GFLOPS, ceiling_peer="cuBLAS",
        extra_notes=["threads: default"], extra={"tegula_params": {}})
    expected = case.shape.flops / 1e-3 / 1e9
    assert row.tegula == pytest.approx(expected)
    assert row.peers == {"cuBLAS": pytest.approx(expected)}
    assert row.ceiling == {"cuBLAS": pytest.approx(expected)}
    assert row.metric == "GFLOP/s" and row.higher_is_better
    assert row.case == "f32/t"
    assert row.extra["flops"] == case.shape.flops and row.extra["buffer_sets"] == 2
    assert row.extra["shape"] == {"M": 8, "N": 12, "K": 16}
    assert row.extra["check"][TEGULA].startswith("rel err")
    notes = row.extra["notes"]
    assert "threads: default" in notes
    assert "Broken left out: RuntimeError: kernel failed to build" in notes
    assert "Wrong left out: CheckFailed" in notes
    assert "Sloppy left out: CheckFailed: output has NaN" in notes
    validate(SuiteResult("gemm", "d", "2026-01-01T00:00:00+00:00", "c", (row,)).to_json())


def test_without_the_ceiling_peer_the_row_has_no_ceiling() -> None:
    case = _case()
    sets = _host_sets(case, 1)
    row = gemm.measure_gemm(case, sets, _reference(sets[0]), {TEGULA: Impl(_matmul_into)},
                            _fixed_timer(), metric=gemm.TFLOPS, ceiling_peer="cuBLAS")
    assert row.ceiling == {} and row.peers == {}


def test_graph_verifier_catches_a_batch_that_does_nothing() -> None:
    case = _case()
    sets = _host_sets(case, 3)
    seen: list[tuple[Any, Any]] = []

    def timer(calls: Any, capture: Any, verify: Any) -> harness.Stats:
        seen.append((calls, verify))
        return harness.summarize([1e-3])

    gemm.measure_gemm(case, sets, _reference(sets[0]),
                      {TEGULA: Impl(_matmul_into, destination=True)}, timer, metric=gemm.TFLOPS)
    ((calls, verify),) = seen
    verify(lambda: [call() for call in calls])
    with pytest.raises(CheckFailed, match="NaN"):
        verify(lambda: None)
    with pytest.raises(CheckFailed, match="NaN"):
        verify(lambda: calls[1]())  # wrote another set's output, not the first


# ------------------------------------------------------------------ the summary row

def _llm_row(name: str, tegula: float | None, **peers: float) -> Row:
    return Row(name, "TFLOP/s", True, tegula, peers, {"cuBLAS": peers["cuBLAS"]},
               {"case": f"fp16/llm/{name}"})


def test_geomean_row_is_the_geometric_mean_of_each_implementation() -> None:
    rows = [_llm_row("a", 190.0, cuBLAS=200.0, Triton=50.0),
            _llm_row("b", 400.0, cuBLAS=400.0),
            _llm_row("c", 300.0, cuBLAS=250.0, Triton=60.0)]
    summary = gemm.geomean_row(rows, name=gemm.LLM_GEOMEAN_NAME, case=gemm.LLM_GEOMEAN_CASE)
    assert summary.tegula == pytest.approx(statistics.geometric_mean([190.0, 400.0, 300.0]))
    assert summary.peers == {"cuBLAS": pytest.approx(statistics.geometric_mean([200, 400, 250]))}
    assert summary.ceiling == dict(summary.peers)
    # Over the same rows, a ratio of geometric means is the geometric mean of the ratios.
    per_row = [r.tegula / r.peers["cuBLAS"] for r in rows]  # type: ignore[operator]
    assert summary.tegula / summary.peers["cuBLAS"] == pytest.approx(
        statistics.geometric_mean(per_row))
    assert "Triton left out: no figure for b" in summary.extra["notes"]
    assert summary.extra["of"] == ["a", "b", "c"]
    assert summary.case == gemm.LLM_GEOMEAN_CASE
    verdict = check(CeilingTarget("gemm", gemm.LLM_GEOMEAN_CASE, "cuBLAS", 0.9), (summary,))
    assert verdict.status == "met"  # 284 of 271 TFLOP/s, though tegula trails in row a
    assert "104.5% of cuBLAS" in verdict.detail


def test_geomean_row_gives_tegula_nothing_when_a_row_lacks_it() -> None:
    rows = [_llm_row("a", 100.0, cuBLAS=200.0), _llm_row("b", None, cuBLAS=400.0)]
    summary = gemm.geomean_row(rows, name="s", case="s")
    assert summary.tegula is None
    assert "tegula left out: no figure for b" in summary.extra["notes"]
    verdict = check(CeilingTarget("gemm", "s", "cuBLAS", 0.9), (summary,))
    assert verdict.status == "not met" and "no figure for b" in verdict.detail


def test_geomean_row_refuses_no_rows_and_mixed_metrics() -> None:
    with pytest.raises(ValueError, match="at least one row"):
        gemm.geomean_row([], name="s", case="s")
    mixed = [_llm_row("a", 1.0, cuBLAS=1.0), Row("b", "GFLOP/s", True, 1.0)]
    with pytest.raises(ValueError, match="GFLOP/s, TFLOP/s"):
        gemm.geomean_row(mixed, name="s", case="s")


# ----------------------------------------------- the GPU row, NumPy standing in for CuPy

@pytest.fixture
def host_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """NumPy for CuPy, no PyTorch or Triton, and a tegula kernel that fails to build."""

    def no_kernel(kernel: str, params: Any, target: str) -> Any:
        raise RuntimeError(f"{kernel} does not build for {target}")

    monkeypatch.setattr(gemm, "_cupy", lambda: np)
    monkeypatch.setattr(gemm, "torch_cuda", lambda: None)
    monkeypatch.setattr(gemm, "triton_kernels", lambda: None)
    monkeypatch.setattr(gemm, "_tegula_gemm", no_kernel)
    monkeypatch.setattr(gemm, "portable_target", lambda: None)
    monkeypatch.setattr(gemm, "tuned_tile_params", lambda precision, shape: None)


def test_gpu_row_survives_a_failing_kernel_and_missing_peers(host_gpu: None) -> None:
    case = gemm.llm_case(m=16, k=64, n=32)
    row = gemm.measure_gpu_case(case, _fixed_timer(), l2_bytes=4096)
    assert row.tegula is None
    assert set(row.peers) == {"cuBLAS"} and set(row.ceiling) == {"cuBLAS"}
    assert row.extra["buffer_sets"] > 1  # M=16 is memory-bound: b rotates
    assert row.extra["tegula_params"] == dict(gemm.MEMORY_BOUND_TILES)
    notes = row.extra["notes"]
    assert "tegula left out: RuntimeError: gemm_f16 does not build for cuda" in notes
    assert "PyTorch left out" in notes and "Triton left out" in notes
    relative = float(row.extra["check"]["cuBLAS"].split()[2].rstrip(","))
    assert 0 < relative <= 1e-2  # a float16 result against the float32 reference


def test_the_portable_path_is_measured_beside_the_fastest(
    host_gpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gemm, "portable_target", lambda: "cuda:sm_90")
    row = gemm.measure_gpu_case(gemm.llm_case(m=16, k=64, n=32), _fixed_timer(), 4096)
    notes = row.extra["notes"]
    assert "tegula left out: RuntimeError: gemm_f16 does not build for cuda" in notes
    assert (f"{gemm.TEGULA_MMA_SYNC} left out: RuntimeError: gemm_f16 does not build for "
            "cuda:sm_90") in notes


def test_bf16_row_without_pytorch_is_left_empty_with_the_reason(host_gpu: None) -> None:
    row = gemm.measure_gpu_case(gemm.square_case("bf16", 16, "t", 1e-2), _fixed_timer(), 4096)
    assert row.tegula is None and row.peers == {}
    assert "bf16 operands need PyTorch" in row.extra["notes"]


def test_suite_is_registered_as_a_gpu_suite() -> None:
    assert "gemm" in SUITE_NAMES
    assert all_suites()["gemm"].needs_gpu


# ------------------------------------------------------------------ the CPU f32 rows

def test_cpu_gemm_rows() -> None:
    full, quick = cpu.gemm_cases(quick=False), cpu.gemm_cases(quick=True)
    assert [c.name for c in full] == ["f32 1024x1024x1024", "f32 2048x2048x2048"]
    assert [c.case for c in quick] == [c.case for c in full]
    cpu_gemm_targets = {t.case for t in TARGETS if t.suite == "cpu" and t.case.startswith("f32")}
    assert cpu_gemm_targets == {c.case for c in full}


def test_cpu_gemm_row_measures_tegula_and_numpy() -> None:
    case = gemm.square_case("f32", 64, "t", cpu.GEMM_TOLERANCE)
    row = cpu.measure_gemm_case(case, harness.Settings(warmup=0, repeats=1), ["threads: t"])
    assert row.metric == "GFLOP/s"
    assert row.tegula is not None and math.isfinite(row.tegula), row.extra.get("notes")
    assert set(row.peers) == {"NumPy"}
    assert set(row.extra["check"]) == {TEGULA, "NumPy"}
