"""Measurement is spread over every device worker (one per GPU of the host): candidates that
are built wait for the first idle worker, so workers time candidates side by side. Checked
with two CPU workers, where every other part of the path is the GPUs' own."""

from __future__ import annotations

import concurrent.futures as cf
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from tegula.compiler.tuning import measure
from tegula.compiler.tuning.measure import Measurer, Workload
from tuning_kernels import ROWSUM

CONFIGS = [{"BM": bm, "BN": bn} for bm in (1, 2) for bn in (32, 64, 128)]


class InlinePool(cf.Executor):
    """Builds at submission, in this process: every candidate is built before any is timed,
    so the order in which idle workers take them is fixed."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        future: cf.Future[Any] = cf.Future()
        future.set_result(fn(*args, **kwargs))
        return future


def test_candidates_are_timed_by_every_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(measure, "make_executor", lambda kind, workers: InlinePool())
    taken: Counter[int] = Counter()
    submit = measure.DeviceWorker.submit

    def counting_submit(self: measure.DeviceWorker, *args: Any, **kwargs: Any) -> Any:
        taken[id(self)] += 1
        return submit(self, *args, **kwargs)

    monkeypatch.setattr(measure.DeviceWorker, "submit", counting_submit)
    workload = Workload(ROWSUM, "<string>", "rowsum", "cpu", {"M": 16, "N": 300},
                        min_sample_s=0.0)
    with Measurer(workload, parallel=1, devices=[None, None], timeout_s=60.0) as m:
        assert len(m.workers) == 2
        results = m.measure(CONFIGS)
        workers = {id(w) for w in m.workers}
    assert [r.status for r in results] == ["ok"] * len(CONFIGS)
    # The first two built candidates go to the two idle workers at once.
    assert set(taken) == workers and sum(taken.values()) == len(CONFIGS), taken
