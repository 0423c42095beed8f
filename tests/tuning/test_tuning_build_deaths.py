"""A build process that dies: one config that kills it is a compile error of that config;
processes that die whatever they build stop the run instead of filling the database with
false compile errors (as a tuning script without a `__main__` guard does under `spawn`)."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest
from tegula.compiler.tuning import measure
from tegula.compiler.tuning.build import BuildJob
from tegula.compiler.tuning.measure import BuildProcessesDie, Measurer, Workload
from tuning_kernels import ROWSUM

CONFIGS = [{"BM": bm, "BN": bn} for bm in (1, 2) for bn in (32, 64, 128)]


class DyingPool(cf.Executor):
    """Builds in this process; a build for which `kills(config)` holds breaks the pool, as
    a build process that dies breaks a ProcessPoolExecutor."""

    pools = 0

    def __init__(self, kills: Callable[[dict[str, Any]], bool]) -> None:
        self.kills = kills
        DyingPool.pools += 1

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        (job,) = args
        assert isinstance(job, BuildJob)
        future: cf.Future[Any] = cf.Future()
        if self.kills(job.constants):
            future.set_exception(BrokenProcessPool("a child process terminated"))
        else:
            future.set_result(fn(job))
        return future


def measurer(monkeypatch: pytest.MonkeyPatch, kills: Callable[[dict[str, Any]], bool]
             ) -> Measurer:
    monkeypatch.setattr(measure, "make_executor", lambda kind, workers: DyingPool(kills))
    DyingPool.pools = 0
    return Measurer(Workload(ROWSUM, "<string>", "rowsum", "cpu", {"M": 16, "N": 300}),
                    parallel=1, devices=[None])


def test_a_config_that_kills_its_build_is_its_compile_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    m = measurer(monkeypatch, lambda config: config == {"BM": 2, "BN": 64})
    outcomes = m.analyze(CONFIGS)
    statuses = {str(c): o.status for c, o in zip(CONFIGS, outcomes, strict=True)}
    assert statuses.pop(str({"BM": 2, "BN": 64})) == "compile_error"
    assert set(statuses.values()) == {"ok"}
    died = outcomes[CONFIGS.index({"BM": 2, "BN": 64})]
    assert "died" in died.message
    assert DyingPool.pools == 3  # the first, one for the retry alone, one after it died too


def test_build_processes_that_always_die_stop_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    m = measurer(monkeypatch, lambda config: True)
    with pytest.raises(BuildProcessesDie, match=r"3 builds in a row .*__main__"):
        m.analyze(CONFIGS)


def test_a_build_that_finishes_resets_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    # Builds die for BN != 64: two in a row at most (CONFIGS runs BN 32, 64, 128, 32, 64,
    # 128), so the run goes on and only those configs are compile errors.
    m = measurer(monkeypatch, lambda config: config["BN"] != 64)
    outcomes = m.analyze(CONFIGS)
    assert [o.status == "ok" for o in outcomes] == [c["BN"] == 64 for c in CONFIGS]
