"""The planted illegal address on CUDA: the worker reports a crash and is replaced."""

from __future__ import annotations

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
