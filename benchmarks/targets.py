"""The performance targets RESULTS.md checks, and the arithmetic behind each verdict.

A target names a suite and a row *case* (the stable `"case"` key a suite puts on each row,
independent of the sizes `--quick` picks), so the same target reads a full run and a quick one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .schema import Row

Status = Literal["met", "not met", "unchecked"]


@dataclass(frozen=True)
class Verdict:
    status: Status
    detail: str  # the numbers behind the status


def ratio(row: Row, peer: str) -> float | None:
    """tegula / peer in the row's metric, or None when either figure is missing."""
    other = row.peers.get(peer)
    if row.tegula is None or other is None or other == 0:
        return None
    return row.tegula / other


def fraction_of_ceiling(row: Row, ceiling: str) -> float | None:
    """How close tegula comes to a ceiling: 1.0 is at it. For lower-is-better metrics the
    ceiling is the least possible value, so the fraction is ceiling / tegula."""
    bound = row.ceiling.get(ceiling)
    if row.tegula is None or bound is None or row.tegula == 0 or bound == 0:
        return None
    return row.tegula / bound if row.higher_is_better else bound / row.tegula


def time_ratio(row: Row, peer: str) -> float | None:
    """tegula's time over the peer's time: below 1.0 tegula is faster, whatever the metric."""
    r = ratio(row, peer)
    if r is None or r == 0:
        return None
    return 1.0 / r if row.higher_is_better else r


def _figure(value: float, metric: str) -> str:
    return f"{value:.4g} {metric}"


def _tegula_missing(row: Row) -> Verdict:
    notes = str(row.extra.get("notes", "")).split("; ")
    why = [note for note in notes if note.startswith("tegula")] or [n for n in notes if n]
    reason = "; ".join(why) or "no reason recorded"
    return Verdict("not met", f"{row.name}: tegula has no figure ({reason})")


@dataclass(frozen=True)
class CeilingTarget:
    """tegula reaches at least `fraction` of a ceiling measured in the same run."""

    suite: str
    case: str
    ceiling: str
    fraction: float

    def describe(self) -> str:
        return f"{self.case}: >= {self.fraction:.0%} of the {self.ceiling} ceiling"

    def evaluate(self, row: Row) -> Verdict:
        if row.tegula is None:
            return _tegula_missing(row)
        reached = fraction_of_ceiling(row, self.ceiling)
        if reached is None:
            return Verdict("unchecked", f"{row.name}: no {self.ceiling} ceiling measured")
        status: Status = "met" if reached >= self.fraction else "not met"
        return Verdict(status, f"{row.name}: tegula {_figure(row.tegula, row.metric)} = "
                               f"{reached:.1%} of {self.ceiling} "
                               f"{_figure(row.ceiling[self.ceiling], row.metric)}")


@dataclass(frozen=True)
class PeerTarget:
    """tegula takes at most `factor` times the peer's time (factor 1.0: at least as fast)."""

    suite: str
    case: str
    peer: str
    factor: float = 1.0

    def describe(self) -> str:
        if self.factor == 1.0:
            return f"{self.case}: at least as fast as {self.peer}"
        if self.factor < 1.0:
            return f"{self.case}: at least {1 / self.factor:.3g}x as fast as {self.peer}"
        return f"{self.case}: within {self.factor:.3g}x of {self.peer}'s time"

    def evaluate(self, row: Row) -> Verdict:
        if row.tegula is None:
            return _tegula_missing(row)
        slowdown = time_ratio(row, self.peer)
        if slowdown is None:
            return Verdict("unchecked", f"{row.name}: {self.peer} not measured")
        status: Status = "met" if slowdown <= self.factor else "not met"
        return Verdict(status, f"{row.name}: tegula {_figure(row.tegula, row.metric)}, "
                               f"{self.peer} {_figure(row.peers[self.peer], row.metric)}: "
                               f"tegula takes {slowdown:.2f}x {self.peer}'s time")


@dataclass(frozen=True)
class LimitTarget:
    """tegula's figure is under `limit` (over it, for a higher-is-better metric)."""

    suite: str
    case: str
    limit: float
    metric: str

    def describe(self) -> str:
        return f"{self.case}: < {_figure(self.limit, self.metric)}"

    def evaluate(self, row: Row) -> Verdict:
        if row.tegula is None:
            return _tegula_missing(row)
        if row.metric != self.metric:
            return Verdict("unchecked", f"{row.name}: measured in {row.metric}, "
                                        f"target is in {self.metric}")
        within = row.tegula > self.limit if row.higher_is_better else row.tegula < self.limit
        return Verdict("met" if within else "not met",
                       f"{row.name}: tegula {_figure(row.tegula, row.metric)}")


@dataclass(frozen=True)
class RowRatioTarget:
    """tegula's time on one row is at most `factor` times its own time on another row of the
    same run (how a cost should scale: with the bytes, or not at all with more rows)."""

    suite: str
    case: str
    reference: str  # the other row's case
    factor: float
    why: str  # what the factor stands for, e.g. "(bits / 4) x 1.15"

    def describe(self) -> str:
        return f"{self.case}: <= {self.factor:.3g}x the time of {self.reference} ({self.why})"

    def evaluate_rows(self, row: Row, reference: Row) -> Verdict:
        times = [r.extra.get("tegula_ms") for r in (row, reference)]
        if times[0] is None:
            return _tegula_missing(row)
        if times[1] is None:
            return Verdict("unchecked", f"{reference.name}: tegula has no figure")
        ratio_ = times[0] / times[1]
        status: Status = "met" if ratio_ <= self.factor else "not met"
        return Verdict(status, f"{row.name}: tegula {times[0] * 1e3:.4g} us = {ratio_:.2f}x "
                               f"{reference.name}'s {times[1] * 1e3:.4g} us")


Target = CeilingTarget | PeerTarget | LimitTarget | RowRatioTarget


def check(target: Target, rows: tuple[Row, ...]) -> Verdict:
    """The verdict on `target` from a suite's rows."""
    by_case = {row.case: row for row in reversed(rows)}  # the first row of a case wins
    row = by_case.get(target.case)
    if row is None:
        return Verdict("not met", f"no row for case {target.case!r} in this run")
    if isinstance(target, RowRatioTarget):
        reference = by_case.get(target.reference)
        if reference is None:
            return Verdict("unchecked", f"no row for case {target.reference!r} in this run")
        return target.evaluate_rows(row, reference)
    return target.evaluate(row)


def _memory_targets(kernel: str) -> tuple[Target, ...]:
    case = f"{kernel}/large"
    return (CeilingTarget("memory", case, "copy", 0.85), PeerTarget("memory", case, "CuPy"))


def _gemm_targets() -> tuple[Target, ...]:
    # The cases of benchmarks/suites/gemm.py: its square rows and its LLM-shape summary, each
    # against cuBLAS's figure for the same row (the row's ceiling).
    cases = [f"{precision}/square/{size}" for precision in ("fp16", "bf16")
             for size in ("medium", "large")]
    return tuple(CeilingTarget("gemm", case, "cuBLAS", 0.9)
                 for case in (*cases, "fp16/llm/geomean"))


def _tuning_targets() -> tuple[Target, ...]:
    """Model-guided search within 64 trials (16 with transfer) of reaching 95% of the best
    config, and random search needing at least twice as many."""
    metric = "trials to 95% of best"
    out: list[Target] = []
    for label in ("square", "decode"):
        case = f"tuning/{label}"
        out += [LimitTarget("tuning", case, 64.5, metric),
                PeerTarget("tuning", case, "random search", 0.5),
                LimitTarget("tuning", f"{case}/transfer", 16.5, metric)]
    return tuple(out)


TARGETS: tuple[Target, ...] = (
    *_memory_targets("vector_add"),
    *_memory_targets("softmax"),
    *_memory_targets("rmsnorm"),
    *_memory_targets("transpose"),
    PeerTarget("cpu", "softmax/square", "NumPy", 1.2),
    PeerTarget("cpu", "softmax/wide", "NumPy", 1.2),
    PeerTarget("cpu", "rmsnorm/square", "NumPy", 1.2),
    PeerTarget("cpu", "rmsnorm/wide", "NumPy", 1.2),
    # At least 80% of NumPy's (OpenBLAS's) GFLOP/s: at most 1 / 0.8 = 1.25x its time.
    PeerTarget("cpu", "f32/square/medium", "NumPy", 1.25),
    PeerTarget("cpu", "f32/square/large", "NumPy", 1.25),
    # The W4A16 GEMV at least 3x faster than NumPy's f32 GEMV on the dequantized weights.
    PeerTarget("cpu", "w4a16/M=1", "NumPy", 1 / 3),
    LimitTarget("compile", "cold/overhead", 200.0, "ms"),
    LimitTarget("compile", "cache-hit", 5.0, "ms"),
    LimitTarget("compile", "launch", 15.0, "us"),
    *_gemm_targets(),
    # Decode GEMV at the bandwidth limit: 80% of the device copy rate on the packed bytes.
    CeilingTarget("quant", "w4a16/M=1", "copy", 0.8),
    # Every width's time scales with its bytes; 16 decode rows cost little more than one.
    *(RowRatioTarget("quant", f"w{bits}a16/M=1", "w4a16/M=1", 1.15 * bits / 4,
                     "(bits / 4) x 1.15") for bits in (2, 3, 5, 6)),
    RowRatioTarget("quant", "w4a16/M=16", "w4a16/M=1", 1.3, "the same weights, 16 rows"),
    # Prefill: at least 90% of cuBLAS f16's speed on the dequantized weights.
    PeerTarget("quant", "w4a16/prefill", "cuBLAS f16", 1 / 0.9),
    # W8A8 on integer tensor cores at least 1.6x cuBLAS's f16 speed on the same values.
    PeerTarget("gemm", "w8a8/square/large", "cuBLAS f16", 1 / 1.6),
    *_tuning_targets(),
)
