"""The quant suite's rows: names, bytes counted, targets, and one CPU row measured end to end
(real kernels, real checks; a fixed timer stands in for the clock)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from benchmarks import harness
from benchmarks.compare import TEGULA, Buffers, Impl, measure_case
from benchmarks.suites import SUITE_NAMES, all_suites, quant
from benchmarks.targets import TARGETS


def _fixed_timer(seconds: float = 1e-3) -> Any:
    return lambda calls, capture, verify: harness.summarize([seconds])


def test_rows_are_named_as_the_field_names_them() -> None:
    assert [c.name for c in quant.gpu_cases(quick=False)] == [
        "w4a16 g128 M=1 8192x8192", "w2a16 g128 M=1 8192x8192", "w3a16 g128 M=1 8192x8192",
        "w5a16 g128 M=1 8192x8192", "w6a16 g128 M=1 8192x8192", "w8a16 g128 M=1 8192x8192",
        *(f"w{b}a16 g128 M=1 8192x8192 w[N,K]" for b in (4, 2, 3, 5, 6, 8)),
        "w4a16 g128 M=1 8192x8192 w[N,K] f16 sums", "w4a16 g128 M=16 8192x8192"]
    assert quant.gpu_cases(quick=False)[6].case == "w4a16/M=1/nk"
    assert quant.gpu_cases(quick=False)[12].case == "w4a16/M=1/nk_f16"
    assert quant.gpu_cases(quick=False)[12].example == ("quant_gemv.tg", "quant_gemv_nk_f16")
    # Targets read the case key, which a quick run keeps.
    assert [c.case for c in quant.gpu_cases(quick=True)] == [
        c.case for c in quant.gpu_cases(quick=False)]
    assert [c.case for c in quant.cpu_cases(quick=True)] == ["w4a16/M=1"]


def test_bytes_are_the_packed_codes_scales_activations_and_output() -> None:
    gemv = quant.GemvCase("i3", 2, 256, 100)
    packed = 256 * 38  # 100 three-bit codes: 300 bits, 38 bytes a row
    scales = 2 * 100 * 2
    assert gemv.nbytes(packed) == packed + scales + (2 * 256 + 2 * 100) * 2


def test_one_row_runs_the_gemv_and_a_batch_the_tensor_core_gemm() -> None:
    assert quant.GemvCase("i3", 1, 64, 64).example == ("quant_gemv.tg", "quant_gemv_i3")
    assert quant.GemvCase("i4", 16, 64, 64).example == ("quant_gemm.tg", "quant_gemm_i4")
    with pytest.raises(ValueError, match="no i2 kernel"):
        _ = quant.GemvCase("i2", 16, 64, 64).example
    assert quant.GemvCase("i4", 1, 64, 64, layout="nk").example == ("quant_gemv.tg",
                                                                     "quant_gemv_nk")
    assert quant.GemvCase("i3", 1, 64, 64, layout="nk").constants == {"WT": "i3"}
    with pytest.raises(ValueError, match="GEMVs, M = 1"):
        _ = quant.GemvCase("i4", 16, 64, 64, layout="nk").example


def test_targets_name_rows_the_suites_make() -> None:
    by_suite = {(t.suite, t.case) for t in TARGETS}
    assert ("quant", "w4a16/M=1") in by_suite and ("cpu", "w4a16/M=1") in by_suite
    made = {g.case for g in quant.gpu_cases(quick=False)} | {quant.prefill_case(False).case}
    assert {case for suite, case in by_suite if suite == "quant"} <= made
    assert "quant" in SUITE_NAMES and all_suites()["quant"].needs_gpu


def test_cpu_row_checks_and_measures_tegula_and_numpy() -> None:
    (gemv,) = quant.cpu_cases(quick=True)
    rows = quant.measure([gemv], quant.cpu_placement(), _fixed_timer(), cache_bytes=2**20,
                         ceiling={"copy": 10.0})
    (row,) = rows
    assert row.name == "w4a16 g128 M=1 512x512" and row.extra["case"] == "w4a16/M=1"
    assert row.tegula is not None and set(row.peers) == {"NumPy"}
    # Same bytes for both, same (fixed) time: the same GB/s, which is bytes / 1 ms.
    assert row.tegula == pytest.approx(row.extra["bytes"] / 1e-3 / 1e9)
    assert row.peers["NumPy"] == pytest.approx(row.tegula)
    assert row.extra["buffer_sets"] > 1  # weights rotate past the given cache
    for implementation in (TEGULA, "NumPy"):
        relative = float(row.extra["check"][implementation].split()[2].rstrip(","))
        assert 0 < relative <= quant.TOLERANCE


@pytest.mark.parametrize("dtype", ["i4", "i3"])
def test_the_n_by_k_row_checks_its_own_layout_against_the_same_peer(dtype: str) -> None:
    gemv = quant.GemvCase(dtype, 1, 384, 200, layout="nk")
    (row,) = quant.measure([gemv], quant.cpu_placement(), _fixed_timer(), cache_bytes=2**20,
                           ceiling={"copy": 10.0})
    label = gemv.label
    assert row.name == f"{label} g128 M=1 384x200 w[N,K]"
    assert row.extra["case"] == f"{label}/M=1/nk"
    assert row.tegula is not None and set(row.peers) == {"NumPy"}
    bits = int(dtype[1:])
    assert row.extra["bytes"] == gemv.nbytes(200 * 384 * bits // 8)  # whole bytes a row
    for implementation in (TEGULA, "NumPy"):
        relative = float(row.extra["check"][implementation].split()[2].rstrip(","))
        assert 0 < relative <= quant.TOLERANCE


def test_a_wrong_implementation_is_left_out_of_the_row() -> None:
    (gemv,) = quant.cpu_cases(quick=True)
    case, impls = quant.make_case(gemv, quant.cpu_placement())

    def bind(b: Buffers) -> Any:
        out = b["y"]
        return lambda: (np.copyto(out, np.float16(1.0)), out)[1]  # ignores the weights

    impls["constant"] = Impl(bind, destination=True)
    row = measure_case(case, impls, _fixed_timer(), cache_bytes=2**20, ceiling={})
    assert "constant" not in row.peers and row.tegula is not None
    assert "constant left out: CheckFailed" in row.extra["notes"]


def test_gpu_rows_check_out_with_numpy_standing_in_for_cupy() -> None:
    # The GPU rows' buffers, references and peer, checked on the host: a placement with the
    # GPU's peer dtype (f16) and NumPy in CuPy's place. tegula's CUDA kernel is not run here.
    stand_in = quant.Placement("cpu", np, "cuBLAS", np.float16)
    for gemv in quant.gpu_cases(quick=True):
        case, impls = quant.make_case(gemv, stand_in)
        row = measure_case(case, {"cuBLAS": impls["cuBLAS"]}, _fixed_timer(), cache_bytes=0,
                           ceiling={})
        assert "cuBLAS" in row.peers, row.extra.get("notes")
        assert row.extra["case"] == gemv.case
        buffers = case.make_buffers(0)
        read = sum(buffers[name].nbytes for name in ("w", "s", "x"))
        assert case.nbytes == read + buffers["y"].nbytes


def test_prefill_row_checks_out_with_numpy_standing_in_for_cupy() -> None:
    """The prefill row's buffers, reference and cuBLAS peer, on the host in TFLOP/s."""
    stand_in = quant.Placement("cpu", np, "cuBLAS", np.float16)
    gemv = quant.prefill_case(quick=True)
    assert gemv.case == "w4a16/prefill" and gemv.example == ("quant_gemm.tg", "quant_gemm_i4")
    row = quant.measure_prefill(gemv, stand_in, _fixed_timer())
    assert row.metric == "TFLOP/s" and "cuBLAS f16" in row.peers, row.extra.get("notes")
    assert row.extra["flops"] == 2 * gemv.m * gemv.n * gemv.k
