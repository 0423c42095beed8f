"""Cost models: rank candidate configs from their features.

A model is fitted on measured rows — features, a *relative speed* label in ``[0, 1]`` (the
workload's best time over this row's time; 0 for a failed candidate) and a workload id per
row — and predicts a score per row, higher meaning faster. Only the order of the scores
matters, which is why the main model is a ranker: LightGBM's gradient-boosted trees with
the ``lambdarank`` objective, one query group per workload, so that rows of other
workloads (past records: transfer) teach what makes a config fast without their absolute
times having to be comparable. With few rows a ranker has nothing to split on, so until
:data:`MIN_RANKER_ROWS` rows are measured a ridge regression on standardized features
stands in.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

MIN_RANKER_ROWS = 8
_GRADES = 30  # lambdarank's default label gains cover grades 0..30


class CostModel(Protocol):
    def fit(self, features: np.ndarray, speed: np.ndarray, groups: np.ndarray) -> None: ...

    def predict(self, features: np.ndarray) -> np.ndarray: ...


class RandomModel:
    """No model: random scores (blind search)."""

    def __init__(self, seed: int | np.random.Generator = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def fit(self, features: np.ndarray, speed: np.ndarray, groups: np.ndarray) -> None:
        pass

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.rng.random(len(features))


class RidgeModel:
    """Least squares with an L2 penalty on standardized features; zeros before any fit."""

    def __init__(self, penalty: float = 1.0) -> None:
        self.penalty = penalty
        self._mean: np.ndarray | None = None
        self._scale: np.ndarray | None = None
        self._weights: np.ndarray | None = None

    def fit(self, features: np.ndarray, speed: np.ndarray, groups: np.ndarray) -> None:
        x = np.asarray(features, dtype=np.float64)
        if len(x) < 2:
            return
        self._mean = x.mean(axis=0)
        self._scale = np.where(x.std(axis=0) > 1e-12, x.std(axis=0), 1.0)
        z = (x - self._mean) / self._scale
        y = np.asarray(speed, dtype=np.float64)
        y = y - y.mean()
        a = z.T @ z + self.penalty * np.eye(z.shape[1])
        self._weights = np.linalg.solve(a, z.T @ y)

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        if self._weights is None:
            return np.zeros(len(x))
        return ((x - self._mean) / self._scale) @ self._weights


class GBDTRanker:
    """LightGBM ``lambdarank`` over query groups (workloads), retrained on every fit."""

    def __init__(self, seed: int = 0, rounds: int = 60, threads: int = 1) -> None:
        self.seed = seed
        self.rounds = rounds
        self.threads = threads
        self._booster = None
        self._fallback = RidgeModel()
        self.uses_ranker = False

    def fit(self, features: np.ndarray, speed: np.ndarray, groups: np.ndarray) -> None:
        import lightgbm

        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(speed, dtype=np.float64)
        g = np.asarray(groups)
        self._fallback.fit(x, y, g)
        self.uses_ranker = len(x) >= MIN_RANKER_ROWS and len(np.unique(y)) > 1
        if not self.uses_ranker:
            return
        order = np.argsort(g, kind="stable")  # lightgbm wants each group's rows together
        x, y, g = x[order], y[order], g[order]
        _, sizes = np.unique(g, return_counts=True)
        labels = _grades(y, g)
        params = {
            "objective": "lambdarank",
            "learning_rate": 0.1,
            "num_leaves": 15,
            "min_data_in_leaf": 2,
            "min_sum_hessian_in_leaf": 1e-6,
            "lambdarank_truncation_level": 30,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "num_threads": self.threads,
            "verbosity": -1,
        }
        data = lightgbm.Dataset(x, label=labels, group=sizes, params={"verbosity": -1})
        self._booster = lightgbm.train(params, data, num_boost_round=self.rounds)

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        if not self.uses_ranker or self._booster is None:
            return self._fallback.predict(x)
        return np.asarray(self._booster.predict(x, num_threads=self.threads))


def _grades(speed: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Relevance grades 0..30 per group, by rank: the fastest row of a group gets 30 and the
    slowest working one 1 (failures 0), evenly between. Ranks rather than speeds, because
    speeds crowd near zero when a few configs are much faster than the rest, and the
    ranker would then see every slow config as equally bad."""
    labels = np.zeros(len(speed), dtype=np.int32)
    for g in np.unique(groups):
        rows = np.flatnonzero((groups == g) & (speed > 0))
        if not len(rows):
            continue
        order = rows[np.argsort(-speed[rows], kind="stable")]
        top = len(order) - 1
        for rank, row in enumerate(order):
            labels[row] = 1 + round((_GRADES - 1) * (top - rank) / top) if top else _GRADES
    return labels


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two equally long score vectors (ties share their mean
    rank); 0 when either is constant."""
    ra = _mean_ranks(np.asarray(a, dtype=np.float64))
    rb = _mean_ranks(np.asarray(b, dtype=np.float64))
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _mean_ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v), dtype=np.float64)
    for value in np.unique(v):  # ties share the mean of their ranks
        tied = v == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def make_model(kind: str, seed: int = 0) -> CostModel:
    """``gbdt`` (the learned ranker) or ``random`` (blind search)."""
    if kind == "gbdt":
        return GBDTRanker(seed=seed)
    if kind == "random":
        return RandomModel(seed)
    raise ValueError(f"unknown cost model {kind!r}; expected 'gbdt' or 'random'")


def relative_speed(times: np.ndarray) -> np.ndarray:
    """Best time over each time (1 for the best, 0 for a failure: NaN or inf)."""
    t = np.asarray(times, dtype=np.float64)
    good = np.isfinite(t) & (t > 0)
    out = np.zeros(len(t))
    if good.any():
        out[good] = t[good].min() / t[good]
    return out
