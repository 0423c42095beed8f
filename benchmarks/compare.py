"""One row of a bandwidth table: tegula and its peers on the same buffers, checked, then timed.

A *case* is one kernel at one size: how to make a fresh buffer set, the bytes a call must
move, and a float64 reference. An *implementation* binds to a buffer set and returns a call
that runs once and returns its output. Every implementation is checked on the first buffer
set before it is timed over all of them; one that fails to build or to match the reference is
left out of the row, with the reason in the row's notes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .checks import compare, poison
from .harness import Call, Capture, Settings, Stats, bench_gpu, bench_host, buffer_sets_needed, gbps
from .schema import Row

TEGULA = "tegula"

# (calls, capture, verify) -> Stats; see harness.bench_gpu for `verify`.
Timer = Callable[[Sequence[Call], Capture | None, Callable[[Call], None] | None], Stats]


def gpu_timer(settings: Settings) -> Timer:
    return lambda calls, capture, verify: bench_gpu(calls, settings, capture, verify)


def host_timer(settings: Settings) -> Timer:
    return lambda calls, capture, verify: bench_host(calls, settings)


@dataclass(frozen=True)
class Buffers:
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]  # destination-passing outputs, poisoned before each check

    def __getitem__(self, name: str) -> Any:
        return self.inputs[name] if name in self.inputs else self.outputs[name]


@dataclass(frozen=True)
class Case:
    case: str  # stable key for targets, e.g. "softmax/large"
    name: str  # the row's name, e.g. "softmax f32 32768x8192"
    nbytes: int  # each input read once, each output written once
    make_buffers: Callable[[int], Buffers]  # seed -> a fresh buffer set of random data
    reference: Callable[[Buffers], Any]  # float64 result for a buffer set
    tolerance: float = 1e-5  # on the relative L2 error; float32 lands far below


@dataclass(frozen=True)
class Impl:
    bind: Callable[[Buffers], Call]  # buffer set -> a call that returns the output
    capture: Capture | None = None  # how to put its launches in a CUDA graph (GPU only)
    destination: bool = False  # writes into the case's output buffer (rather than a new array)
    # The check's tolerance where the implementation must compute in a narrower type than the
    # case (a peer that takes only bf16 operands, say); None: the case's. Rows say why.
    tolerance: float | None = None


def failure_reason(error: BaseException) -> str:
    """An exception as one short line for a row's notes."""
    lines = str(error).strip().splitlines()
    first = lines[0] if lines else ""
    return f"{type(error).__name__}: {first[:200]}"


def _verifier(buffer_sets: Sequence[Buffers], reference: Any, tolerance: float
              ) -> Callable[[Call], None]:
    """Checks that one run of a batch (e.g. a graph replay) writes the first set's output."""

    def verify(run: Call) -> None:
        for buffers in buffer_sets:
            poison(buffers.outputs.values())
        run()
        (out,) = buffer_sets[0].outputs.values()
        compare(out, reference, tolerance)

    return verify


def measure_case(case: Case, impls: Mapping[str, Impl], timer: Timer, *, cache_bytes: int,
                 ceiling: Mapping[str, float], extra_notes: Sequence[str] = ()) -> Row:
    """Check and time every implementation on the same buffer sets; return the GB/s row."""
    n_sets = buffer_sets_needed(case.nbytes, cache_bytes)
    buffer_sets = [case.make_buffers(seed) for seed in range(n_sets)]
    reference = case.reference(buffer_sets[0])
    figures: dict[str, float] = {}
    checks: dict[str, str] = {}
    timings: dict[str, dict[str, object]] = {}
    notes = list(extra_notes)
    for name, impl in impls.items():
        try:
            calls = [impl.bind(buffers) for buffers in buffer_sets]
            tolerance = case.tolerance if impl.tolerance is None else impl.tolerance
            poison(buffer_sets[0].outputs.values())
            checks[name] = str(compare(calls[0](), reference, tolerance))
            verify = _verifier(buffer_sets, reference, tolerance) if impl.destination else None
            stats = timer(calls, impl.capture, verify)
        except Exception as error:  # one failing implementation must not sink the row
            notes.append(f"{name} left out: {failure_reason(error)}")
            continue
        figures[name] = gbps(case.nbytes, stats.median_s)
        timings[name] = stats.to_json()
    extra: dict[str, Any] = {"case": case.case, "bytes": case.nbytes, "buffer_sets": n_sets}
    if TEGULA in timings:
        extra["tegula_ms"] = timings[TEGULA]["median_ms"]
    extra |= {"check": checks, "timing": timings}
    if notes:
        extra["notes"] = "; ".join(notes)
    return Row(
        name=case.name,
        metric="GB/s",
        higher_is_better=True,
        tegula=figures.pop(TEGULA, None),
        peers=figures,
        ceiling=dict(ceiling),
        extra=extra,
    )
