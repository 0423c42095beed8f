from __future__ import annotations

import statistics

import numpy as np
import pytest
from tegula.compiler.tuning.database import TuningRecord
from tegula.compiler.tuning.evaluate import evaluate, replay, space_from_records
from tegula.compiler.tuning.features import FEATURE_NAMES
from tegula.compiler.tuning.loop import trials_to_fraction
from tegula.compiler.tuning.model import (
    GBDTRanker,
    RidgeModel,
    rank_correlation,
    relative_speed,
)


def _synthetic(shift: float = 0.0) -> list[TuningRecord]:
    """A 12 x 12 space whose time is a smooth function of two features (plus noise)."""
    rng = np.random.default_rng(7)
    records = []
    for a in range(12):
        for b in range(12):
            feats = np.zeros(len(FEATURE_NAMES))
            feats[0], feats[1] = a, b
            feats[2] = a * b  # a feature that does not decide the time
            t = 1e-3 * (1 + (a - 7 - shift) ** 2 + 0.5 * (b - 3) ** 2) * rng.uniform(1, 1.02)
            records.append(TuningRecord(
                kernel="syn", kernel_hash="s" * 64, shapes={"N": 100 + int(shift)},
                dtypes={}, target="cpu", device="host", config={"A": a, "B": b},
                status="ok", time_s=t, features=tuple(float(x) for x in feats)))
    return records


def test_ranker_orders_a_learnable_problem() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((120, 5))
    times = 1 + 3 * x[:, 0] + x[:, 1]
    model = GBDTRanker(seed=0)
    model.fit(x[:80], relative_speed(times[:80]), np.zeros(80, dtype=np.int64))
    assert model.uses_ranker
    scores = model.predict(x[80:])
    # Higher score, faster: a strong negative rank correlation with time.
    rank_corr = np.corrcoef(np.argsort(np.argsort(scores)),
                            np.argsort(np.argsort(times[80:])))[0, 1]
    assert rank_corr < -0.7


def test_ridge_stands_in_before_eight_rows() -> None:
    model = GBDTRanker(seed=0)
    x = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    model.fit(x, relative_speed(np.array([3.0, 2.0, 1.0])), np.zeros(3, dtype=np.int64))
    assert not model.uses_ranker
    assert np.argmax(model.predict(np.array([[0.0, 1.0], [3.0, 1.0]]))) == 1
    assert np.all(RidgeModel().predict(x) == 0)  # unfitted: no preference


def test_model_guided_search_beats_random_search() -> None:
    records = _synthetic()
    scores = {s.strategy: s for s in evaluate(records, seeds=range(6), trials=60)}
    gbdt, blind = scores["gbdt"].median, scores["random"].median
    assert gbdt is not None
    assert blind is None or gbdt < blind


def test_replay_is_reproducible_from_its_seed() -> None:
    records = _synthetic()
    space = space_from_records("syn", records)
    a = replay(space, records, "gbdt", 24, seed=3)
    b = replay(space, records, "gbdt", 24, seed=3)
    assert a == b and len(a) == 24 and len(set(a)) == 24  # no point measured twice


def test_transfer_from_another_shape_helps_early() -> None:
    records, other = _synthetic(), _synthetic(shift=1.0)
    best = min(r.time_s for r in records)
    space = space_from_records("syn", records)
    cold = [trials_to_fraction(replay(space, records, "gbdt", 60, s), best) for s in range(5)]
    warm = [trials_to_fraction(replay(space, records, "gbdt", 60, s, transfer=other), best)
            for s in range(5)]
    assert statistics.median(w or 61 for w in warm) <= statistics.median(c or 61 for c in cold)


def _mirrored(records: list[TuningRecord]) -> list[TuningRecord]:
    """Another workload where what was fast is slow: the times in reverse order."""
    times = sorted(r.time_s for r in records)
    by_speed = sorted(records, key=lambda r: r.time_s)
    return [TuningRecord(**{**r.__dict__, "shapes": {"N": 999},
                            "time_s": times[len(times) - 1 - i]})
            for i, r in enumerate(by_speed)]


def test_transfer_that_ranks_this_workload_backwards_is_dropped() -> None:
    """Rows of a workload whose fast configs are this one's slow ones would steer the search
    away from the best; once a few configs are measured the loop sees the disagreement and
    leaves them out, so the search does no worse than without them."""
    records = _synthetic()
    misleading = _mirrored(records)
    best = min(r.time_s for r in records)
    space = space_from_records("syn", records)
    cold = [trials_to_fraction(replay(space, records, "gbdt", 80, s), best) for s in range(5)]
    warm = [trials_to_fraction(replay(space, records, "gbdt", 80, s, transfer=misleading),
                               best) for s in range(5)]
    assert statistics.median(w or 81 for w in warm) <= statistics.median(c or 81 for c in cold)


def test_rank_correlation() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert rank_correlation(a, a * 10) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(a, np.ones(4)) == 0.0  # a constant has no order
    assert rank_correlation(np.array([1.0, 1.0, 2.0]), np.array([0.0, 0.0, 5.0])) == (
        pytest.approx(1.0))  # ties share their rank


def test_a_nearly_exhausted_large_space_still_yields_its_last_points() -> None:
    """Annealing over a space larger than the exhaustive limit rarely finds its last few
    unmeasured points; the batch must still contain them until the space is done."""
    from tegula.compiler.tuning.search import propose_batch
    from tegula.compiler.tuning.space import SearchSpace, config_key

    space = SearchSpace("k", (("A", tuple(range(30))), ("B", tuple(range(30)))))
    every = list(space.configs())
    rng = np.random.default_rng(0)
    left = [every[i] for i in rng.choice(len(every), 3, replace=False)]
    measured = {config_key(c) for c in every} - {config_key(c) for c in left}
    batch = propose_batch(space, lambda cs: rng.random(len(cs)), measured, 8, rng,
                          exhaustive_limit=256)
    assert sorted(map(config_key, batch)) == sorted(map(config_key, left))
    assert propose_batch(space, lambda cs: rng.random(len(cs)), set(map(config_key, every)),
                         8, rng) == []


def test_knob_values_reach_the_model_beside_the_ir_features() -> None:
    """Two configs with equal Loop IR features (GROUP_M on a one-row grid) are still
    different points to the model; rows keep one width whatever the kernel's params."""
    from tegula.compiler.tuning.loop import MAX_KNOBS, knob_features, model_row

    ir = (1.0, 2.0, 3.0)
    a = model_row({"BM": 16, "GROUP_M": 1}, ir)
    b = model_row({"BM": 16, "GROUP_M": 8}, ir)
    assert a[:3] == b[:3] == ir and a != b
    assert len(a) == len(ir) + MAX_KNOBS
    assert knob_features({"GROUP_M": 8, "BM": 16}) == knob_features({"BM": 16, "GROUP_M": 8})
    assert knob_features({"BM": 16})[0] == pytest.approx(np.log2(17))
    many = {f"P{i:02d}": i for i in range(2 * MAX_KNOBS)}
    assert len(knob_features(many)) == MAX_KNOBS
    # A bool param (TMA, WS) is the number it stands for: its two values differ.
    assert knob_features({"WS": True})[0] == pytest.approx(1.0)
    assert knob_features({"WS": False})[0] == 0.0
    layout = knob_features({"LAYOUT": "row"})[0]
    assert 0 <= layout < 1 and layout == knob_features({"LAYOUT": "row"})[0]


def test_evaluate_runs_only_the_strategies_asked_for() -> None:
    records, other = _synthetic(), _synthetic(shift=1.0)
    only = evaluate(records, seeds=range(2), trials=20, transfer=other,
                    strategies=("gbdt+transfer",))
    assert [s.strategy for s in only] == ["gbdt+transfer"]
    # without transfer records there is nothing to warm-start from: the strategy is skipped
    assert [s.strategy for s in evaluate(records, seeds=range(2), trials=20)] == ["gbdt",
                                                                                  "random"]


def test_transfer_leaders_are_each_workloads_fastest_first() -> None:
    from tegula.compiler.tuning.loop import TransferRows

    first, second = _synthetic(), _synthetic(shift=3.0)
    rows = TransferRows.from_records(first + second)
    leaders = rows.leaders(4)
    fastest = [min(w, key=lambda r: r.time_s).config for w in (first, second)]
    runner_up = [sorted(w, key=lambda r: r.time_s)[1].config for w in (first, second)]
    assert leaders == fastest + runner_up
    assert TransferRows.empty().leaders(4) == []


def test_chains_stuck_among_measured_points_still_yield_a_batch() -> None:
    """Chains that start at the best points measured and find only measured neighbours
    leave annealing empty-handed; the batch is then exploration, not the end of the run."""
    from tegula.compiler.tuning.search import propose_batch
    from tegula.compiler.tuning.space import SearchSpace, config_key

    space = SearchSpace("k", (("A", tuple(range(30))), ("B", tuple(range(30)))))
    # Measured: every point with A < 20 (600 of 900). Chains start at A = 0 and take 4 steps
    # of one candidate each, so every point they visit is measured.
    measured = {config_key(c) for c in space.configs() if c["A"] < 20}
    starts = [{"A": 0, "B": b} for b in range(0, 24, 3)]
    rng = np.random.default_rng(0)
    batch = propose_batch(space, lambda cs: np.zeros(len(cs)), measured, 4, rng,
                          starts=starts, chains=8, steps=4)
    assert len(batch) == 4 and not {config_key(c) for c in batch} & measured
