"""The one timing mechanism every suite uses.

A measurement is a list of *calls*, one per buffer set: each call runs the code under test once
on its own inputs. The harness cycles through them (so memory-bound code never finds its
inputs in cache), warms up, times many samples with a clock, and summarizes the samples as
seconds per call. On the GPU the clock is a pair of device events; calls that take only a
few microseconds are captured into a CUDA graph first, so launch gaps do not dominate.

CuPy and PyTorch are imported lazily: the statistics and the host clock work without them.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Call = Callable[[], object]

# Which framework's graph capture a call needs: kernels launched on CuPy's current stream are
# captured with CuPy's stream capture, PyTorch and Triton ops with `torch.cuda.graph` (it also
# routes PyTorch's allocations into a pool of its own during capture).
Capture = Literal["cupy", "torch"]

# Calls shorter than this are captured into a graph on the GPU.
GRAPH_BELOW_S = 50e-6
# Each timed sample runs enough calls to last about this long.
SAMPLE_TARGET_S = 1e-3
# The most calls a sample (or a captured graph) holds.
MAX_CALLS_PER_SAMPLE = 1000


@dataclass(frozen=True)
class Settings:
    """How hard to measure: warm-up calls and timed samples."""

    warmup: int = 5
    repeats: int = 30

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.repeats < 1:
            raise ValueError(f"need warmup >= 0 and repeats >= 1, got {self}")


QUICK = Settings(warmup=2, repeats=5)
FULL = Settings()


@dataclass(frozen=True)
class Stats:
    """Seconds per call over the timed samples."""

    median_s: float
    min_s: float
    iqr_s: float  # interquartile range: the spread, robust to a stray slow sample
    samples: int
    calls_per_sample: int = 1
    graphed: bool = False

    @property
    def spread(self) -> float:
        """The interquartile range relative to the median."""
        return self.iqr_s / self.median_s if self.median_s > 0 else math.inf

    def to_json(self) -> dict[str, object]:
        return {
            "median_ms": self.median_s * 1e3,
            "min_ms": self.min_s * 1e3,
            "iqr_ms": self.iqr_s * 1e3,
            "samples": self.samples,
            "calls_per_sample": self.calls_per_sample,
            "graph": self.graphed,
        }


def summarize(seconds_per_call: Sequence[float], *, calls_per_sample: int = 1,
              graphed: bool = False) -> Stats:
    """Median, minimum and interquartile range of per-call times."""
    if not seconds_per_call:
        raise ValueError("no samples to summarize")
    if any(not math.isfinite(s) or s < 0 for s in seconds_per_call):
        raise ValueError(f"sample times must be finite and non-negative: {seconds_per_call}")
    if len(seconds_per_call) == 1:
        iqr = 0.0
    else:
        quartiles = statistics.quantiles(seconds_per_call, n=4, method="inclusive")
        iqr = quartiles[2] - quartiles[0]
    return Stats(
        median_s=statistics.median(seconds_per_call),
        min_s=min(seconds_per_call),
        iqr_s=iqr,
        samples=len(seconds_per_call),
        calls_per_sample=calls_per_sample,
        graphed=graphed,
    )


def gbps(nbytes: int, seconds: float) -> float:
    """Bandwidth in GB/s (10^9 bytes per second)."""
    return nbytes / seconds / 1e9


def buffer_sets_needed(bytes_per_set: int, cache_bytes: int) -> int:
    """The fewest buffer sets whose total exceeds twice the cache, so no call finds its data
    left in cache by the one before."""
    if bytes_per_set <= 0:
        raise ValueError(f"bytes_per_set must be positive, got {bytes_per_set}")
    return max(1, 2 * cache_bytes // bytes_per_set + 1)


def calls_per_sample(seconds_per_call: float, n_sets: int) -> int:
    """Enough calls for a sample of about SAMPLE_TARGET_S, a whole number of rotations."""
    wanted = math.ceil(SAMPLE_TARGET_S / max(seconds_per_call, 1e-9))
    wanted = min(max(wanted, 1), MAX_CALLS_PER_SAMPLE)
    if wanted == 1:
        return 1
    return max(n_sets, math.ceil(wanted / n_sets) * n_sets)


class Clock(Protocol):
    """Times one sample: how long `run()` took, in seconds."""

    def sample(self, run: Call) -> float: ...


@dataclass(frozen=True)
class HostClock:
    """Wall time on the host; `sync` (e.g. a device synchronize) runs on both sides of the
    sample so that queued device work is neither counted before nor left out after."""

    sync: Callable[[], None] | None = None

    def sample(self, run: Call) -> float:
        if self.sync is not None:
            self.sync()
        start = time.perf_counter()
        run()
        if self.sync is not None:
            self.sync()
        return time.perf_counter() - start


class CudaEventClock:
    """Device time between two CUDA events recorded on CuPy's current stream."""

    def __init__(self) -> None:
        import cupy

        self._cupy = cupy
        self._start = cupy.cuda.Event()
        self._stop = cupy.cuda.Event()

    def sample(self, run: Call) -> float:
        self._start.record()
        run()
        self._stop.record()
        self._stop.synchronize()
        return self._cupy.cuda.get_elapsed_time(self._start, self._stop) / 1e3


def measure(run: Call, clock: Clock, settings: Settings, *, calls_per_sample: int = 1,
            graphed: bool = False) -> Stats:
    """Warm up, then time `settings.repeats` samples of `run`, each doing `calls_per_sample`
    calls."""
    for _ in range(settings.warmup):
        run()
    samples = [clock.sample(run) / calls_per_sample for _ in range(settings.repeats)]
    return summarize(samples, calls_per_sample=calls_per_sample, graphed=graphed)


def _repeat(calls: Sequence[Call], count: int) -> Call:
    """One callable that makes `count` calls, cycling through `calls`."""
    rotation = itertools.cycle(calls)

    def run() -> None:
        for _ in range(count):
            next(rotation)()

    return run


def bench_host(calls: Sequence[Call], settings: Settings,
               sync: Callable[[], None] | None = None) -> Stats:
    """Time calls on the host clock, rotating through the buffer sets."""
    clock = HostClock(sync)
    estimate = clock.sample(_repeat(calls, len(calls))) / len(calls)
    count = calls_per_sample(estimate, len(calls))
    return measure(_repeat(calls, count), clock, settings, calls_per_sample=count)


def bench_gpu(calls: Sequence[Call], settings: Settings, capture: Capture | None = "cupy",
              verify: Callable[[Call], None] | None = None) -> Stats:
    """Time calls with device events; short calls are replayed from a captured CUDA graph.

    `verify(replay)` may check that a replay really does the work (a launch that escaped the
    capture, say onto another stream, leaves an empty graph); it raises if not. A call that
    cannot be captured or verified is timed as back-to-back launches instead, and the
    returned Stats say `graphed=False`.
    """
    clock = CudaEventClock()
    for _ in range(max(settings.warmup, 1)):
        _repeat(calls, len(calls))()
    estimate = clock.sample(_repeat(calls, len(calls))) / len(calls)
    count = calls_per_sample(estimate, len(calls))
    body = _repeat(calls, count)
    if capture is not None and estimate < GRAPH_BELOW_S:
        try:
            replay = capture_graph(body, capture)
            if verify is not None:
                verify(replay)
        except Exception:  # not capturable, or the graph misses work: plain launches
            replay = None
        if replay is not None:
            return measure(replay, clock, settings, calls_per_sample=count, graphed=True)
    return measure(body, clock, settings, calls_per_sample=count)


def capture_graph(body: Call, capture: Capture) -> Call:
    """Capture the launches `body` makes into a CUDA graph; return its replay."""
    if capture == "torch":
        import torch

        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            body()
        return graph.replay

    import cupy

    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        # One run outside the capture fills this stream's memory pool, so code that
        # allocates temporaries needs no new device memory while capturing.
        body()
        stream.synchronize()
        stream.begin_capture()
        try:
            body()
        finally:
            graph = stream.end_capture()
    # The graph replays on whatever stream is current: the one the clock records on.
    return graph.launch
