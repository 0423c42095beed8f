"""Choosing the next batch of candidates to measure, guided by a cost model.

Small spaces (up to ``exhaustive_limit`` points) are scored whole: the batch is the
best-scored unmeasured points. Larger ones are explored by simulated annealing: chains
start at the best points measured so far and at random points, each step moves one param
to an adjacent candidate and keeps the move with the Metropolis rule at a temperature that
falls linearly to zero; every point visited is a candidate. Either way a share
``epsilon`` of the batch is drawn at random from the unmeasured points (exploration, so
that a wrong model cannot starve a region), and no point appears twice or is measured
twice. Every random choice comes from the one ``numpy.random.Generator`` given, so a run
is reproducible from its seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .space import Config, SearchSpace, config_key

ScoreFn = Callable[[Sequence[Config]], np.ndarray]  # higher is faster; -inf: not a candidate


def propose_batch(
    space: SearchSpace,
    score: ScoreFn,
    measured: set[str],
    batch_size: int,
    rng: np.random.Generator,
    *,
    epsilon: float = 0.1,
    starts: Sequence[Config] = (),
    exhaustive_limit: int = 256,
    chains: int = 8,
    steps: int = 24,
) -> list[Config]:
    """Up to ``batch_size`` unmeasured points: the model's best, plus ε random ones."""
    explore = math.floor(batch_size * epsilon + rng.random())  # ε in expectation
    # Where what is left to measure is small, the pool is all of it: annealing rarely lands
    # on the last few unmeasured points of a large space, and missing them would end a
    # sweep (or a tuning run) before the space is done.
    if space.size - len(measured) <= exhaustive_limit:
        pool = [c for c in space.configs() if config_key(c) not in measured]
    else:
        pool = _anneal(space, score, measured, rng, starts, chains, steps)
        if not pool:
            # Every chain stayed among measured points (they started at the best ones, and
            # their neighbourhoods are done): the batch is all exploration.
            pool = _fresh_samples(space, rng, measured, batch_size)
    if not pool:
        return []
    exploit = max(0, min(batch_size, len(pool)) - explore)
    scores = np.asarray(score(pool), dtype=np.float64) if exploit else np.zeros(len(pool))
    # Ties (an untrained model) are broken at random, not by enumeration order.
    order = np.lexsort((rng.random(len(pool)), -scores))
    chosen = [pool[i] for i in order[:exploit] if np.isfinite(scores[i])]
    taken = {config_key(c) for c in chosen} | measured
    rest = [c for c in pool if config_key(c) not in taken]
    if space.size > exhaustive_limit:
        rest += _fresh_samples(space, rng, taken, batch_size - len(chosen))
    while len(chosen) < batch_size and rest:
        pick = rest.pop(int(rng.integers(len(rest))))
        if config_key(pick) not in taken:
            taken.add(config_key(pick))
            chosen.append(pick)
    return chosen


def _anneal(
    space: SearchSpace,
    score: ScoreFn,
    measured: set[str],
    rng: np.random.Generator,
    starts: Sequence[Config],
    chains: int,
    steps: int,
) -> list[Config]:
    points = [dict(c) for c in starts[:chains]]
    points += [space.sample(rng) for _ in range(chains - len(points))]
    current = np.asarray(score(points), dtype=np.float64)
    visited: dict[str, Config] = {config_key(c): c for c in points}
    spread = float(np.nanstd(current[np.isfinite(current)])) if np.isfinite(current).any() else 1
    t0 = max(spread, 1e-3)
    for step in range(steps):
        temperature = t0 * (1.0 - step / steps)
        moves = [space.neighbor(c, rng) for c in points]
        new = np.asarray(score(moves), dtype=np.float64)
        for i, (move, s) in enumerate(zip(moves, new, strict=True)):
            visited.setdefault(config_key(move), move)
            if not np.isfinite(s):
                continue
            gain = s - current[i]
            if gain >= 0 or (temperature > 0 and rng.random() < math.exp(gain / temperature)):
                points[i], current[i] = move, s
    return [c for key, c in visited.items() if key not in measured]


def _fresh_samples(
    space: SearchSpace, rng: np.random.Generator, taken: set[str], count: int
) -> list[Config]:
    out: dict[str, Config] = {}
    for _ in range(8 * max(count, 0)):
        if len(out) >= count:
            break
        c = space.sample(rng)
        if config_key(c) not in taken:
            out.setdefault(config_key(c), c)
    return list(out.values())
