"""The planted illegal address on CUDA: the worker reports a crash and is replaced. Two
workers on one GPU both time candidates; on a host with several GPUs, every GPU gets a worker
and times candidates."""

from __future__ import annotations

import concurrent.futures as cf
import re

import pytest
from tegula.compiler.driver import build_binary, generate_code, kernel_spec, lower_kernel
from tegula.compiler.frontend import build_tile_kernel
from tegula.compiler.parser import parse
from tegula.compiler.targets import resolve_target
from tegula.compiler.tuning.build import BuildOutcome, build_candidate
from tegula.compiler.tuning.measure import Measurer, Workload
from tuning_kernels import ROWSUM


def _wild_store_build(target_name: str) -> BuildOutcome:
    """The rowsum kernel with a store through a wild pointer at its entry."""
    target = resolve_target(target_name)
    tile = build_tile_kernel(parse(ROWSUM), "rowsum", {"BM": 1, "BN": 64})
    loop, _ = lower_kernel(tile, target)
    code = generate_code(loop, target)
    code = re.sub(r"(\browsum\s*\([^)]*\)\s*\{)",
                  r"\1\n  *((volatile float*)0x8) = 1.0f;", code, count=1)
    assert "0x8" in code
    binary, _ = build_binary(code, "rowsum", target)
    return BuildOutcome("ok", "", (), binary, kernel_spec(tile, loop, target).to_json())


@pytest.mark.gpu
def test_illegal_address_is_a_crash_and_the_worker_restarts() -> None:
    target = str(resolve_target("cuda"))
    workload = Workload(ROWSUM, "<string>", "rowsum", target, {"M": 64, "N": 300})
    with Measurer(workload, parallel=1, devices=[0], timeout_s=20.0,
                  reference_config={"BM": 1, "BN": 32}) as measurer:
        worker = measurer.workers[0]
        worker.submit(0, {"BM": 1, "BN": 64}, _wild_store_build(target), 20.0)
        assert worker.conn is not None and worker.conn.poll(20.0)
        crashed = worker.collect()
        assert crashed.status == "crash", crashed
        assert not worker.alive
        good = build_candidate(next(iter(measurer._jobs([{"BM": 2, "BN": 64}], True))))
        worker.submit(1, {"BM": 2, "BN": 64}, good, 20.0)
        assert worker.conn is not None and worker.conn.poll(20.0)
        assert worker.collect().status == "ok"  # a fresh worker with a fresh context


class _InlinePool(cf.Executor):
    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        future: cf.Future = cf.Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _measure_recording_workers(monkeypatch: pytest.MonkeyPatch,
                               devices: list[int] | None) -> tuple[int, set[int], list]:
    """Measure nine configs with one worker per entry of ``devices`` (None: every GPU of
    the host); returns the number of workers, which of them (by identity) timed
    candidates, and the results."""
    from tegula.compiler.tuning import measure

    used: set[int] = set()
    submit = measure.DeviceWorker.submit

    def recording_submit(self: measure.DeviceWorker, *args, **kwargs):
        used.add(id(self))
        return submit(self, *args, **kwargs)

    monkeypatch.setattr(measure.DeviceWorker, "submit", recording_submit)
    # Builds finish at submission, so every candidate is ready before any is timed and each
    # idle worker takes one at once (with real builds, each timing here ends before the next
    # build does, and the first worker could take them all).
    monkeypatch.setattr(measure, "make_executor", lambda kind, workers: _InlinePool())
    target = str(resolve_target("cuda"))
    workload = Workload(ROWSUM, "<string>", "rowsum", target, {"M": 64, "N": 300})
    configs = [{"BM": bm, "BN": bn} for bm in (1, 2, 4) for bn in (32, 64, 128)]
    with Measurer(workload, parallel=1, devices=devices, timeout_s=30.0) as measurer:
        count = len(measurer.workers)
        results = measurer.measure(configs)
    return count, used, results


@pytest.mark.gpu
def test_two_workers_on_one_gpu_both_time_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The several-worker path on any host: two worker processes on GPU 0."""
    count, used, results = _measure_recording_workers(monkeypatch, [0, 0])
    assert count == 2 and len(used) == 2, used
    assert len(results) == 9 and all(r.status == "ok" for r in results), results


@pytest.mark.gpu
def test_every_gpu_of_the_host_times_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    cupy = pytest.importorskip("cupy")
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs a host with two or more GPUs")
    count, used, results = _measure_recording_workers(monkeypatch, None)  # every GPU
    assert count == cupy.cuda.runtime.getDeviceCount()
    assert all(r.status == "ok" for r in results), results
    assert len(used) >= 2, used  # more than one GPU's worker timed candidates
    assert {r.device for r in results} and all(r.device for r in results)


@pytest.mark.gpu
def test_cold_l2_timing_rotates_input_copies_past_the_l2() -> None:
    """With ``cold_l2`` the worker times calls over enough copies of the inputs that a round
    reads more than twice the L2 (each set its own inputs, the outputs shared), and the
    candidate still checks and times; without it there is one set."""
    from tegula.compiler.tuning.worker import _Session

    cupy = pytest.importorskip("cupy")
    target = resolve_target("cuda")
    shapes = {"M": 2048, "N": 1000}  # 8 MB of input: a few copies exceed twice the L2
    for cold in (False, True):
        workload = Workload(ROWSUM, "<string>", "rowsum", str(target), shapes, cold_l2=cold)
        tile = build_tile_kernel(parse(ROWSUM), "rowsum", {"BM": 1, "BN": 64})
        loop, _ = lower_kernel(tile, target)
        binary, _ = build_binary(generate_code(loop, target), "rowsum", target)
        spec_json = kernel_spec(tile, loop, target).to_json()
        session = _Session(target, {
            "kernel": "rowsum", "filename": "<string>", "shapes": shapes, "seed": 0,
            "warmup": 1, "repeats": 3, "min_sample_s": 1e-4, "cold_l2": workload.cold_l2,
            "spec_json": spec_json}, binary)
        sets = session._timing_sets()
        inputs = [name for name in sets[0] if name not in session.outputs
                  and hasattr(sets[0][name], "nbytes")]
        per_set = sum(sets[0][name].nbytes for name in inputs)
        if cold:
            l2 = cupy.cuda.Device().attributes["L2CacheSize"]
            assert len(sets) * per_set > 2 * l2, (len(sets), per_set, l2)
            pointers = {sets[i][name].data.ptr for i in range(len(sets)) for name in inputs}
            assert len(pointers) == len(sets) * len(inputs)  # every set its own copies
            assert all(sets[i][o] is sets[0][o] for i in range(len(sets))
                       for o in session.outputs)
        else:
            assert len(sets) == 1
        result = session.measure({"spec_json": spec_json}, binary)
        assert result["status"] == "ok" and result["time_s"] > 0, result
    assert "rotated" in Workload("", "", "", str(target), {}, cold_l2=True).timing
