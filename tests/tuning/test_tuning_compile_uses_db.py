"""``tg.compile`` picks the tuning database's best config for the shapes of each call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tegula.compiler.headers import kernel_text_hash
from tegula.compiler.parser import parse
from tegula.compiler.specialize import SpecializedKernel
from tegula.compiler.tuning.database import TuningDatabase, TuningRecord

import tegula as tg

SOURCE = """
kernel scale(x: f32[N], y: f32[N])
    params BN = 64 in (32, 64, 128)
    grid (cdiv(N, BN))
{
    i = bid.x * BN
    store(y[i : +BN], load(x[i : +BN]) * 3.0)
}
"""


def _record(config: dict[str, int], time_s: float, n: int) -> TuningRecord:
    kdef = parse(SOURCE).kernels[0]
    return TuningRecord(
        kernel="scale", kernel_hash=kernel_text_hash(kdef), shapes={"N": n},
        dtypes={"x": "f32", "y": "f32"}, target="cpu", device="host", config=config,
        status="ok", time_s=time_s,
    )


def test_calls_use_the_best_record_for_their_shapes(tmp_path: Path) -> None:
    db_path = tmp_path / "tuning.jsonl"
    TuningDatabase(db_path).append(
        [_record({"BN": 32}, 3e-3, 1000), _record({"BN": 128}, 1e-3, 1000),
         _record({"BN": 64}, 2e-3, 1000)]
    )
    module = tg.compile(SOURCE, target="cpu", tuning_db=db_path)
    kernel = module["scale"]
    assert isinstance(kernel, SpecializedKernel)
    rng = np.random.default_rng()
    for n, expected_bn in ((1000, 128), (999, 64)):  # tuned shape; untuned falls back
        x = rng.standard_normal(n).astype(np.float32)
        y = np.full_like(x, np.nan)
        kernel(x, y)
        np.testing.assert_allclose(y, x * 3.0, rtol=1e-6)
        assert kernel.constants_for(N=n) == {"BN": expected_bn}
    assert {dict(key)["BN"] for key in kernel.variants} == {128, 64}


def test_without_records_the_kernel_compiles_up_front(tmp_path: Path) -> None:
    module = tg.compile(SOURCE, target="cpu", tuning_db=tmp_path / "empty.jsonl")
    assert not isinstance(module["scale"], SpecializedKernel)


def test_a_pinned_param_ignores_the_database(tmp_path: Path) -> None:
    db_path = tmp_path / "tuning.jsonl"
    TuningDatabase(db_path).append([_record({"BN": 128}, 1e-3, 1000)])
    module = tg.compile(SOURCE, target="cpu", tuning_db=db_path, BN=32)
    assert not isinstance(module["scale"], SpecializedKernel)


def test_the_latest_timing_protocol_decides_a_shape(tmp_path: Path) -> None:
    """Warm-cache times do not rank beside cold ones: a shape's latest protocol decides."""
    from dataclasses import replace

    db_path = tmp_path / "tuning.jsonl"
    warm = replace(_record({"BN": 32}, 1e-4, 1000), timing="warm", timestamp=1.0)
    cold = [replace(_record({"BN": bn}, t, 1000), timing="cold", timestamp=2.0)
            for bn, t in ((64, 3e-3), (128, 2e-3))]
    TuningDatabase(db_path).append([warm, *cold])
    kernel = tg.compile(SOURCE, target="cpu", tuning_db=db_path)["scale"]
    assert isinstance(kernel, SpecializedKernel)
    assert kernel.constants_for(N=1000) == {"BN": 128}
