"""The registry of suites. A suite is a name, whether it needs a GPU, how to describe the
device it ran on, and a function that measures its rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..harness import Settings
from ..schema import Row


@dataclass(frozen=True)
class Suite:
    name: str
    needs_gpu: bool
    describe_device: Callable[[], str]
    run: Callable[[Settings, bool], list[Row]]  # (settings, quick) -> rows


def all_suites() -> dict[str, Suite]:
    from . import compile as compile_suite
    from . import cpu, gemm, memory, quant, tuning

    return {suite.name: suite
            for suite in (memory.SUITE, cpu.SUITE, compile_suite.SUITE, gemm.SUITE,
                          quant.SUITE, tuning.SUITE)}


SUITE_NAMES = ("memory", "cpu", "compile", "gemm", "quant", "tuning")
# Run when no suite is named. `tuning` is left out: its first run measures whole search
# spaces (about one config a second on an H200 host) to build the ground truth it replays.
DEFAULT_SUITES = ("memory", "cpu", "compile", "gemm", "quant")
