"""How well the search does, replayed on an exhaustively measured space.

Given the database records of every point of one workload's space, :func:`evaluate`
replays tuning runs through the same :class:`loop.TuningLoop` the tuner uses, the
measurement being a table look-up, for several seeds and for each strategy (the learned
model, blind random search, and the model warm-started from another workload's records),
and reports the median number of trials until a config within 95% of the best speed is
found. ``python -m benchmarks --suite tuning`` builds on it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .database import TuningRecord
from .loop import TransferRows, TuningLoop, trials_to_fraction
from .model import make_model
from .space import Config, SearchSpace, config_key


@dataclass(frozen=True)
class StrategyScore:
    strategy: str
    trials_to_95: tuple[int | None, ...]  # per seed; None: not reached within the budget

    @property
    def median(self) -> float | None:
        reached = [t for t in self.trials_to_95 if t is not None]
        if len(reached) * 2 <= len(self.trials_to_95):
            return None  # not reached in most runs
        budget = max(reached) + 1
        return float(statistics.median(t if t is not None else budget
                                       for t in self.trials_to_95))


def space_from_records(kernel: str, records: Sequence[TuningRecord]) -> SearchSpace:
    """The space the records span (every param that takes more than one value)."""
    values: dict[str, list] = {}
    for r in records:
        for k, v in r.config.items():
            if v not in values.setdefault(k, []):
                values[k].append(v)
    params = tuple((k, tuple(sorted(v))) for k, v in values.items() if len(v) > 1)
    fixed = tuple((k, v[0]) for k, v in values.items() if len(v) == 1)
    return SearchSpace(kernel, params, fixed)


def replay(
    space: SearchSpace,
    records: Sequence[TuningRecord],
    strategy: str,
    trials: int,
    seed: int,
    *,
    batch_size: int = 4,
    transfer: Sequence[TuningRecord] = (),
) -> list[float | None]:
    """The times a tuning run would measure, in order (None for failed candidates)."""
    table: dict[str, TuningRecord] = {}
    for r in records:
        point = {k: v for k, v in r.config.items() if k in space.names}
        table.setdefault(config_key(point), r)

    def features_of(configs: Sequence[Config]) -> list[tuple[float, ...] | None]:
        out = []
        for c in configs:
            r = table.get(config_key(c))
            out.append(r.features if r is not None and r.features else None)
        return out

    loop = TuningLoop(space, make_model(strategy, seed), features_of,
                      np.random.default_rng(seed), transfer=TransferRows.from_records(transfer))
    measured: list[float | None] = []
    while len(measured) < trials:
        batch = loop.next_batch(min(batch_size, trials - len(measured)))
        if not batch:
            break
        for c in batch:
            r = table.get(config_key(c))
            if r is not None and r.status == "illegal":  # the tuner prunes it: not a trial
                loop.observe(c, None)
                continue
            t = r.time_s if r is not None and r.ok else None
            loop.observe(c, t, r.features if r is not None else ())
            measured.append(t)
    return measured


def evaluate(
    records: Sequence[TuningRecord],
    *,
    seeds: Sequence[int] = tuple(range(10)),
    trials: int | None = None,
    transfer: Sequence[TuningRecord] = (),
    batch_size: int = 4,
    strategies: Sequence[str] = ("gbdt", "random", "gbdt+transfer"),
) -> list[StrategyScore]:
    """Trials to 95% of the best, per seed, for those of ``strategies`` that apply:
    ``gbdt``, ``random`` and (when ``transfer`` records are given) ``gbdt+transfer``."""
    if not records:
        raise ValueError("no records to evaluate on")
    space = space_from_records(records[0].kernel, records)
    best = min((r.time_s for r in records if r.ok and r.time_s), default=None)
    if best is None:
        raise ValueError("no successful measurement among the records")
    budget = trials or space.size
    runs = [(name, rows) for name, rows in (("gbdt", ()), ("random", ()),
                                            ("gbdt+transfer", transfer))
            if name in strategies and (rows or name != "gbdt+transfer")]
    scores = []
    for name, rows in runs:
        strategy = "gbdt" if name.startswith("gbdt") else name
        reached = tuple(
            trials_to_fraction(replay(space, records, strategy, budget, seed,
                                      batch_size=batch_size, transfer=rows), best)
            for seed in seeds
        )
        scores.append(StrategyScore(name, reached))
    return scores
