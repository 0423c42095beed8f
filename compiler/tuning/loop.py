"""The measure–learn–propose loop, independent of how a measurement is made.

:class:`TuningLoop` keeps what has been measured, refits the cost model after each batch
(rows of this workload in one query group, transfer rows in theirs), and proposes the next
batch through :func:`search.propose_batch`. The tuner feeds it real measurements; the
evaluation (:mod:`evaluate`) replays a table of measured times through the same code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .database import TuningRecord
from .features import FEATURE_NAMES
from .model import CostModel, RandomModel, make_model, rank_correlation, relative_speed
from .search import propose_batch
from .space import Config, SearchSpace, config_key

FeaturesFn = Callable[[Sequence[Config]], list[tuple[float, ...] | None]]


# Tunable params the model sees directly, besides the Loop IR features (more are dropped).
MAX_KNOBS = 8
# Where the search's annealing chains start: this workload's best measured configs, then
# (while transfer rows are trusted) the fastest of theirs.
OWN_STARTS = 4
SEARCH_STARTS = 8
# Own measurements after which transfer rows must earn their place (see TuningLoop._fit).
TRANSFER_CHECK_AFTER = 4


def knob_features(config: Config) -> tuple[float, ...]:
    """The config's own values, by param name, as ``MAX_KNOBS`` numbers (zeros pad).

    The Loop IR features describe what a config builds; two configs can build loops that
    differ only in index arithmetic (`GROUP_M` on a one-row grid) and still run at very
    different speeds, and only the values themselves tell the model they are not the same
    point. Numbers enter as log2(1 + |v|) with their sign, so tile sizes are on the scale
    the IR features use; anything else as a stable code in [0, 1)."""
    out = []
    for name in sorted(config)[:MAX_KNOBS]:
        v = config[name]
        if isinstance(v, bool | int | float):  # a bool param is its 0 or 1
            x = float(v)
            out.append(float(np.sign(x) * np.log2(1.0 + abs(x))))
        else:
            out.append(int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=2).digest(),
                                      "little") / 65536.0)
    return tuple(out) + (0.0,) * (MAX_KNOBS - len(out))


def model_row(config: Config, features: Sequence[float]) -> tuple[float, ...]:
    """What the cost model sees of a config: its Loop IR features, then its knob values."""
    return tuple(features) + knob_features(config)


@dataclass(frozen=True)
class TransferRows:
    """Measured rows of other workloads: model rows, relative speeds, a group id per row."""

    features: np.ndarray
    speed: np.ndarray
    groups: np.ndarray
    configs: tuple[Config, ...] = ()  # row by row, where known

    @classmethod
    def empty(cls) -> TransferRows:
        width = len(FEATURE_NAMES) + MAX_KNOBS
        return cls(np.zeros((0, width)), np.zeros(0), np.zeros(0, dtype=np.int64))

    def leaders(self, count: int) -> list[Config]:
        """Up to ``count`` configs, the fastest of each workload first, then the second
        fastest of each, and so on: where a search that trusts these rows starts."""
        if len(self.configs) != len(self.speed):
            return []
        ranked = [sorted((i for i in range(len(self.speed)) if self.groups[i] == g),
                         key=lambda i: -self.speed[i]) for g in np.unique(self.groups)]
        out: list[Config] = []
        for depth in range(max((len(r) for r in ranked), default=0)):
            for rows in ranked:
                if depth < len(rows) and np.isfinite(self.speed[rows[depth]]) and (
                        self.speed[rows[depth]] > 0):
                    out.append(self.configs[rows[depth]])
        return out[:count]

    @classmethod
    def from_records(cls, records: Sequence[TuningRecord], exclude: str | None = None
                     ) -> TransferRows:
        """Rows of the records' workloads (but ``exclude``), one query group per workload;
        records without this feature set's features are left out."""
        by_workload: dict[str, list[TuningRecord]] = {}
        for r in records:
            if r.workload != exclude and len(r.features) == len(FEATURE_NAMES):
                by_workload.setdefault(r.workload, []).append(r)
        feats: list[tuple[float, ...]] = []
        configs: list[Config] = []
        speeds, groups = [], []
        for gid, rows in enumerate(by_workload.values()):
            times = np.asarray([r.time_s if r.ok else np.inf for r in rows], dtype=np.float64)
            feats += [model_row(r.config, r.features) for r in rows]
            configs += [dict(r.config) for r in rows]
            speeds.append(relative_speed(times))
            groups.append(np.full(len(rows), gid, dtype=np.int64))
        if not feats:
            return cls.empty()
        return cls(np.asarray(feats), np.concatenate(speeds), np.concatenate(groups),
                   tuple(configs))


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
        self._transfer_judge: CostModel | None = None  # fitted on the transfer rows alone
        self._transfer_in_use = False

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
        parts_x = [np.asarray([model_row(self.configs[k], self.features[k]) for k in keys],
                              dtype=np.float64)]
        parts_y = [relative_speed(np.asarray([self.measured[k] for k in keys]))]
        parts_g = [np.full(len(keys), -1, dtype=np.int64)]
        self._transfer_in_use = self._transfer_helps(parts_x[0], parts_y[0])
        if self._transfer_in_use:
            parts_x.append(self.transfer.features)
            parts_y.append(self.transfer.speed)
            parts_g.append(self.transfer.groups)
        x = np.concatenate([p.reshape(len(p), -1) for p in parts_x if len(p)]) if any(
            len(p) for p in parts_x) else np.zeros((0, 0))
        if len(x):
            self.model.fit(x, np.concatenate(parts_y), np.concatenate(parts_g))
        self._fitted = True

    def _transfer_helps(self, x: np.ndarray, speed: np.ndarray) -> bool:
        """Whether the transfer rows join this fit. Another workload's records help only
        where what is fast there is fast here (a memory-bound shape's best tiles can be a
        compute-bound one's worst): once ``TRANSFER_CHECK_AFTER`` configs of this workload
        are measured, the rows stay only while a model fitted on them alone ranks those
        configs in agreement with their measured speeds (rank correlation above 0)."""
        if self.transfer is None or not len(self.transfer.speed):
            return False
        if len(speed) < TRANSFER_CHECK_AFTER:
            return True
        if self._transfer_judge is None:
            self._transfer_judge = make_model("gbdt")
            self._transfer_judge.fit(self.transfer.features, self.transfer.speed,
                                     self.transfer.groups)
        return rank_correlation(self._transfer_judge.predict(x), speed) > 0

    def score(self, configs: Sequence[Config]) -> np.ndarray:
        if self._blind:
            return self.rng.random(len(configs))
        feats = self.features_of(configs)
        out = np.full(len(configs), -np.inf)
        rows = [i for i, f in enumerate(feats) if f is not None]
        if rows:
            x = np.asarray([model_row(configs[i], feats[i]) for i in rows])  # type: ignore[arg-type]
            out[rows] = self.model.predict(x)
        return out

    def next_batch(self, size: int) -> list[Config]:
        if not self._fitted and not self._blind:
            self._fit()
        ranked = sorted((t, k) for k, t in self.measured.items() if np.isfinite(t))
        starts = [self.configs[k] for _, k in ranked[:OWN_STARTS]]
        if self._transfer_in_use and self.transfer is not None:
            # While the other workloads' records are trusted, their fastest configs are
            # where the search starts too, as a user would begin from the tiles that won
            # on a neighbouring shape.
            starts += [c for c in self.transfer.leaders(SEARCH_STARTS)
                       if self.space.contains(c)][:SEARCH_STARTS - len(starts)]
        return propose_batch(self.space, self.score, set(self.measured), size, self.rng,
                             epsilon=self.epsilon, starts=starts)


def trials_to_fraction(times: Sequence[float | None], best: float,
                       fraction: float = 0.95) -> int | None:
    """How many trials (1-based) until one is within ``fraction`` of ``best``'s speed."""
    for i, t in enumerate(times):
        if t is not None and np.isfinite(t) and best / t >= fraction - 1e-12:
            return i + 1
    return None
