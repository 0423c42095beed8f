"""The measure–learn–propose loop, independent of how a measurement is made.

:class:`TuningLoop` keeps what has been measured, refits the cost model after each batch
(rows of this workload in one query group, transfer rows in theirs), and proposes the next
batch through :func:`search.propose_batch`. The tuner feeds it real measurements; the
evaluation (:mod:`evaluate`) replays a table of measured times through the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .model import CostModel, RandomModel, relative_speed
from .search import propose_batch
from .space import Config, SearchSpace, config_key

FeaturesFn = Callable[[Sequence[Config]], list[tuple[float, ...] | None]]


@dataclass(frozen=True)
class TransferRows:
    """Measured rows of other workloads: features, relative speeds, a group id per row."""

    features: np.ndarray
    speed: np.ndarray
    groups: np.ndarray

    @classmethod
    def empty(cls, width: int) -> TransferRows:
        return cls(np.zeros((0, width)), np.zeros(0), np.zeros(0, dtype=np.int64))


class TuningLoop:
    def __init__(
        self,
        space: SearchSpace,
        model: CostModel,
        features_of: FeaturesFn,
        rng: np.random.Generator,
        *,
        epsilon: float = 0.1,
        transfer: TransferRows | None = None,
    ) -> None:
        self.space = space
        self.model = model
        self.features_of = features_of
        self.rng = rng
        self.epsilon = epsilon
        self.transfer = transfer
        self.measured: dict[str, float] = {}  # config key -> seconds (inf: failed)
        self.configs: dict[str, Config] = {}
        self.features: dict[str, tuple[float, ...]] = {}
        self._blind = isinstance(model, RandomModel)
        self._fitted = False

    def observe(self, config: Config, time_s: float | None,
                features: tuple[float, ...] = ()) -> None:
        key = config_key(config)
        self.measured[key] = time_s if time_s is not None and time_s > 0 else np.inf
        self.configs[key] = dict(config)
        if features:
            self.features[key] = tuple(features)
        self._fitted = False

    def best(self) -> tuple[Config, float] | None:
        good = [(t, k) for k, t in self.measured.items() if np.isfinite(t)]
        if not good:
            return None
        t, k = min(good)
        return self.configs[k], t

    def _fit(self) -> None:
        keys = [k for k in self.measured if k in self.features]
        parts_x = [np.asarray([self.features[k] for k in keys], dtype=np.float64)]
        parts_y = [relative_speed(np.asarray([self.measured[k] for k in keys]))]
        parts_g = [np.full(len(keys), -1, dtype=np.int64)]
        if self.transfer is not None and len(self.transfer.speed):
            parts_x.append(self.transfer.features)
            parts_y.append(self.transfer.speed)
            parts_g.append(self.transfer.groups)
        x = np.concatenate([p.reshape(len(p), -1) for p in parts_x if len(p)]) if any(
            len(p) for p in parts_x) else np.zeros((0, 0))
        if len(x):
            self.model.fit(x, np.concatenate(parts_y), np.concatenate(parts_g))
        self._fitted = True

    def score(self, configs: Sequence[Config]) -> np.ndarray:
        if self._blind:
            return self.rng.random(len(configs))
        feats = self.features_of(configs)
        out = np.full(len(configs), -np.inf)
        rows = [i for i, f in enumerate(feats) if f is not None]
        if rows:
            out[rows] = self.model.predict(np.asarray([feats[i] for i in rows]))
        return out

    def next_batch(self, size: int) -> list[Config]:
        if not self._fitted and not self._blind:
            self._fit()
        ranked = sorted((t, k) for k, t in self.measured.items() if np.isfinite(t))
        starts = [self.configs[k] for _, k in ranked[:4]]
        return propose_batch(self.space, self.score, set(self.measured), size, self.rng,
                             epsilon=self.epsilon, starts=starts)


def trials_to_fraction(times: Sequence[float | None], best: float,
                       fraction: float = 0.95) -> int | None:
    """How many trials (1-based) until one is within ``fraction`` of ``best``'s speed."""
    for i, t in enumerate(times):
        if t is not None and np.isfinite(t) and best / t >= fraction - 1e-12:
            return i + 1
    return None
