"""How the device worker times a candidate, and how many configs the tuner proposes at once."""

from __future__ import annotations

import pytest
from tegula.compiler.targets import resolve_target
from tegula.compiler.tuning import worker
from tegula.compiler.tuning.tuner import _default_batch
from tegula.compiler.tuning.worker import _MAX_CALLS_PER_SAMPLE, _Session


def _timer(min_sample_s: float, repeats: int = 3) -> _Session:
    """A worker session with only what timing reads (no kernel, no inputs)."""
    session = _Session.__new__(_Session)
    session.target = resolve_target("cpu")
    session.warmup = 1
    session.repeats = repeats
    session.min_sample_s = min_sample_s
    return session


def test_short_calls_are_timed_in_samples_of_the_minimum_length(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A call that takes 0.2 ms on a fake clock: samples of 5 ms hold 25 calls each."""
    now = 0.0
    calls = 0

    def call() -> None:
        nonlocal now, calls
        calls += 1
        now += 2e-4

    monkeypatch.setattr(worker.time, "perf_counter", lambda: now)
    per_call = _timer(5e-3)._time(call)
    assert calls == 1 + 1 + 3 * 25  # a warm-up, one call to size the samples, 3 samples
    assert per_call == pytest.approx(2e-4)  # per call, not per sample


def test_without_a_minimum_each_sample_is_one_call() -> None:
    calls = 0

    def call() -> None:
        nonlocal calls
        calls += 1

    _timer(0.0, repeats=5)._time(call)
    assert calls == 1 + 5


def test_a_sample_has_a_bounded_number_of_calls() -> None:
    calls = 0

    def call() -> None:
        nonlocal calls
        calls += 1

    _timer(10.0, repeats=1)._time(call)  # a call of nanoseconds would ask for millions
    assert calls <= 2 + _MAX_CALLS_PER_SAMPLE


@pytest.mark.parametrize(("model", "workers", "builds", "expected"),
                         [("gbdt", 1, 16, 2), ("gbdt", 4, 16, 8), ("random", 1, 16, 64),
                          ("random", 8, 2, 16)])
def test_blind_search_batches_fill_the_build_pool(model: str, workers: int, builds: int,
                                                  expected: int) -> None:
    """Model-guided batches stay small (it learns from each); blind ones hold several
    rounds of the build pool, so compiling and timing overlap."""
    assert _default_batch(model, workers, builds) == expected


def test_cold_l2_is_part_of_the_timing_protocol_and_cpu_sessions_keep_one_set() -> None:
    from tegula.compiler.tuning.measure import Workload, timing_protocol

    warm, cold = (Workload("", "", "k", "cuda:sm_90a", {}, cold_l2=c).timing
                  for c in (False, True))
    assert warm == timing_protocol() and cold == timing_protocol(cold_l2=True) != warm
    session = _timer(0.0)
    session.cold_l2 = False  # a CPU session: what a cuda-only option becomes there
    session.outputs = []
    session._args = {"x": object()}
    session._input_copies = None
    assert session._timing_sets() == [session._args]
