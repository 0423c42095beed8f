"""Autotuning quality: how many measured trials the learned model needs to find a config
within 95% of the best, beside blind random search, on exhaustively measured spaces.

Ground truth: every legal config of `examples/gemm.tg`'s `gemm_f16` space is measured once
per workload (a large square GEMM and an LLM decode shape) and stored as tuning-database
JSON lines under `benchmarks/results/tuning/`, so later runs replay searches against it
without re-measuring. The searches are replayed with `tegula.compiler.tuning.evaluate` —
the same loop `tegula tune` runs, with measurement replaced by a look-up — for several seeds;
measuring a space took about half a second a config on an H100 host (blind sweeps then proposed
two configs at a time; they now fill the build pool), and a run that stops early
keeps what it measured (the next run measures only the rest);
each row reports the median trials to 95% of the best (lower is better), the model under
`tegula` and random search as the peer `random search`. Records carry the digest of the
compiler that built them and the identity of what the config built to (generated code,
launch spec, target): a space counts the configs this compiler measured and those an older
compiler measured that this one still builds to the same code (recomputed on the CPU), and
a space not yet complete is reported as such, not replayed. Replays need no GPU.

More rows per workload warm-start the model from another shape's records. The
``transfer`` row (the target's) takes the records a model-guided tuning run of a
neighbouring shape left (the first of ``SOURCES``: a smaller square GEMM; the decode step's
projection with the same output width), as a user's earlier tuning of other layers leaves
them; a GPU run of the suite makes that run once (``SOURCE_TRIALS`` trials) and stores it
under `transfer/`. Further sources get rows of their own beside it, with no target. The
``across`` row takes all the records of the other workload, whose best tiles belong to the
other regime (compute- against memory-bound): shown for comparison, with no target.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import devices
from ..harness import Settings
from ..kernels import EXAMPLES, REPO_ROOT
from ..schema import Row
from . import Suite

KERNEL = "gemm_f16"
TRUTH = REPO_ROOT / "benchmarks" / "results" / "tuning"
SEEDS = tuple(range(5))
# The share of a space that must be measured before it is replayed at all.
COVERAGE = 0.95

FULL = (("fp16 4096x4096x4096", {"M": 4096, "N": 4096, "K": 4096}),
        ("fp16 M=16 K=4096 N=4096", {"M": 16, "N": 4096, "K": 4096}))
QUICK = (("fp16 1024x1024x1024", {"M": 1024, "N": 1024, "K": 1024}),
         ("fp16 M=16 K=1024 N=1024", {"M": 16, "N": 1024, "K": 1024}))
# Where each workload's transfer rows warm-start from: the records a user's earlier tuning
# run of a neighbouring shape left, SOURCE_TRIALS model-guided trials of it, stored under
# TRUTH / "transfer". The first source is the target row's: a smaller square GEMM, and for
# the decode step the down projection (K = 14336), which has the same output width: at
# M = 16 the grid of BN-wide column tiles is what the best tiles answer to (its best config
# has the target's BN). The up projection (N = 14336, a 3.5 times wider grid) is shown beside
# it.
SOURCES = {
    "fp16 4096x4096x4096": (("fp16 2048x2048x2048", {"M": 2048, "N": 2048, "K": 2048}),),
    "fp16 M=16 K=4096 N=4096": (
        ("fp16 M=16 K=14336 N=4096", {"M": 16, "N": 4096, "K": 14336}),
        ("fp16 M=16 K=4096 N=14336", {"M": 16, "N": 14336, "K": 4096})),
    "fp16 1024x1024x1024": (("fp16 512x512x512", {"M": 512, "N": 512, "K": 512}),),
    "fp16 M=16 K=1024 N=1024": (("fp16 M=16 K=4096 N=1024", {"M": 16, "N": 1024, "K": 4096}),),
}
SOURCE_TRIALS = 64


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def _gemm_kernel() -> Any:
    """The suite's kernel: ``gemm_f16`` of examples/gemm.tg."""
    from tegula.compiler.tuning.tuner import load_kernel

    return load_kernel(EXAMPLES / "gemm.tg", KERNEL)


def _holding_records(path: Path, src: Any, shapes: dict[str, int], *, measure: bool
                     ) -> Callable[[], list]:
    """A reader of the records at ``path`` of the kernel ``src`` at ``shapes`` that hold for this
    compiler and were timed the way the workers time now: its own, and an older compiler's
    where this one builds their configs to the same code (checked once, here, on the CPU).
    One device's records only: the GPU here when measuring, else the device that measured
    most of them (times from two GPUs do not mix)."""
    from tegula.compiler.fingerprint import compiler_source_digest
    from tegula.compiler.targets import resolve_target
    from tegula.compiler.tuning.database import TuningDatabase
    from tegula.compiler.tuning.executors import make_executor
    from tegula.compiler.tuning.revalidate import current_records, timed_alike
    from tegula.compiler.tuning.worker import device_name

    compiler = compiler_source_digest()
    here = device_name(resolve_target("cuda")) if measure else None

    def stored() -> list:
        if not path.exists():
            return []
        return timed_alike([r for r in TuningDatabase(path).records()
                            if r.kernel_hash == src.kernel_hash and r.shapes == shapes])

    older = [r for r in stored() if r.compiler != compiler]
    with make_executor("process", os.cpu_count() or 1) as pool:
        still_valid = current_records(older, src.text, src.filename, pool) if older else []

    def records() -> list:
        mine = [r for r in stored() if r.compiler == compiler] + still_valid
        device = here or max({r.device for r in mine}, default=None,
                             key=[r.device for r in mine].count)
        return [r for r in mine if r.device == device]

    return records


def ground_truth(name: str, shapes: dict[str, int], *, measure: bool) -> tuple[list, int]:
    """The records of the space at ``shapes`` measured by this compiler, and the space's size;
    with ``measure`` (a GPU is here), the configs not yet measured are measured first."""
    from tegula.compiler.targets import resolve_target
    from tegula.compiler.tuning.space import SearchSpace
    from tegula.compiler.tuning.tuner import tune

    path = TRUTH / f"{_slug(name)}.jsonl"
    src = _gemm_kernel()
    records = _holding_records(path, src, shapes, measure=measure)
    found = records()
    # The space's legality depends on the target: the records', the GPU here, or (to size a
    # space nothing has measured yet, without a GPU) the Hopper the suite was written for.
    target = resolve_target(found[0].target if found else "cuda" if measure else "cuda:sm_90a")
    space = SearchSpace.from_kernel(src.kernel, shapes, target)
    # A random sweep may leave a few configs unvisited (its samples repeat); sweep again for
    # the rest, as long as each sweep adds something.
    seed = 0
    while measure and (missing := space.size - len({r.config_key for r in found})) > 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tune(EXAMPLES / "gemm.tg", KERNEL, shapes, trials=missing, target="cuda", db=path,
             model="random", parallel=os.cpu_count(), progress=False, seed=seed)
        before, found = len(found), records()
        if len(found) == before:
            break
        seed += 1
    return found, space.size


def transfer_source(name: str, shapes: dict[str, int], *, measure: bool) -> list:
    """The records of a model-guided tuning run of the kernel at ``shapes`` (``name``), up to
    ``SOURCE_TRIALS`` of them; with ``measure`` (a GPU is here) the run is made, or completed,
    first."""
    from tegula.compiler.tuning.tuner import tune

    path = TRUTH / "transfer" / f"{_slug(name)}.jsonl"
    records = _holding_records(path, _gemm_kernel(), shapes, measure=measure)
    found = records()
    measured = sum(r.ok for r in found)  # failures hold whatever the timing; times may not
    if measure and measured < SOURCE_TRIALS:
        path.parent.mkdir(parents=True, exist_ok=True)
        tune(EXAMPLES / "gemm.tg", KERNEL, shapes, trials=SOURCE_TRIALS - measured,
             target="cuda", db=path, model="gbdt", parallel=os.cpu_count(), progress=False,
             seed=0)
        found = records()
    return found


def _row(name: str, case: str, records: list, model: str, scores: dict, extra_note: str) -> Row:
    ok = [r for r in records if r.ok]
    best = min(ok, key=lambda r: r.time_s)
    return Row(
        name,
        "trials to 95% of best",
        False,
        scores[model].median,
        {"random search": scores["random"].median} if scores["random"].median is not None else {},
        extra={
            "case": case,
            "per_seed": {k: list(v.trials_to_95) for k, v in scores.items()},
            "configs_measured": len(records),
            "configs_ok": len(ok),
            "best_config": best.config,
            "best_ms": best.time_s * 1e3,
            "notes": extra_note,
        },
    )


def run(settings: Settings, quick: bool) -> list[Row]:
    from tegula.compiler.tuning.evaluate import evaluate

    workloads = QUICK if quick else FULL
    measure = devices.gpu_available()
    truth = {name: ground_truth(name, shapes, measure=measure) for name, shapes in workloads}
    rows = []
    names = [name for name, _ in workloads]
    for index, name in enumerate(names):
        records, size = truth[name]
        other = names[1 - index]
        (source, source_shapes), *more_sources = SOURCES[name]
        label = "square" if index == 0 else "decode"
        title = f"gemm_f16 {name}: {size} configs"
        cases = {"plain": (title, f"tuning/{label}"),
                 "transfer": (f"{title}, transfer", f"tuning/{label}/transfer"),
                 "across": (f"{title}, transfer from {other}", f"tuning/{label}/across")}
        measured = len({r.config_key for r in records})
        if measured < COVERAGE * size:  # a partial space would overstate how good search is
            note = (f"ground truth incomplete: {measured} of {size} configs have measurements "
                    "that hold for this compiler (the suite measures the rest on a GPU)")
            rows += [_missing(*cases[k], note) for k in ("plain", "transfer", "across")]
            continue
        source_records = transfer_source(source, source_shapes, measure=measure)
        scores = {s.strategy: s for s in evaluate(records, seeds=SEEDS, transfer=source_records)}
        unvisited = (f"; {size - measured} of the {size} configs have no measurement that holds "
                     "for this compiler (not reached by the sweeps, or built differently now), "
                     "replays count them as failed trials"
                     if measured < size else "")
        rows.append(_row(*cases["plain"], records, "gbdt", scores,
                         f"median over seeds {list(SEEDS)}{unvisited}"))
        if "gbdt+transfer" in scores:
            rows.append(_row(*cases["transfer"], records, "gbdt+transfer", scores,
                             f"model warm-started from the {len(source_records)} records of a "
                             f"model-guided tuning run of {source}"))
        else:
            rows.append(_missing(*cases["transfer"], f"no tuning records of {source} by this "
                                 "compiler to warm-start from (a GPU run of the suite makes "
                                 f"{SOURCE_TRIALS})"))
        for extra, extra_shapes in more_sources:  # beside the target's source, no target
            extra_records = transfer_source(extra, extra_shapes, measure=measure)
            alt = {s.strategy: s for s in evaluate(records, seeds=SEEDS, transfer=extra_records,
                                                   strategies=("gbdt+transfer",))}
            if "gbdt+transfer" in alt:
                rows.append(_row(f"{title}, transfer from {extra}", f"tuning/{label}/also",
                                 records, "gbdt+transfer", {**alt, "random": scores["random"]},
                                 f"model warm-started from the {len(extra_records)} records of "
                                 f"a model-guided tuning run of {extra}"))
        # The other workload's exhaustive records: a shape whose best tiles are another
        # regime's (compute- against memory-bound), for comparison; no target.
        across = {s.strategy: s for s in evaluate(records, seeds=SEEDS,
                                                  transfer=truth[other][0],
                                                  strategies=("gbdt+transfer",))}
        if "gbdt+transfer" in across:
            rows.append(_row(*cases["across"], records, "gbdt+transfer",
                             {**across, "random": scores["random"]},
                             f"model warm-started from all {len(truth[other][0])} records of "
                             f"{other}"))
    return rows


def _missing(name: str, case: str, note: str) -> Row:
    return Row(name, "trials to 95% of best", False, None, {},
               extra={"case": case, "notes": f"tegula not measured: {note}"})


def describe_device() -> str:
    """The GPU here, or where the stored ground truth was measured (a replay needs none)."""
    if devices.gpu_available():
        return devices.describe_gpu()
    from tegula.compiler.tuning.database import TuningDatabase

    # Records of another version of the kernel's text never count; their devices are not named.
    kernel_hash = _gemm_kernel().kernel_hash
    seen = sorted({r.device for path in TRUTH.glob("*.jsonl")
                   for r in TuningDatabase(path).records() if r.kernel_hash == kernel_hash})
    return f"replayed from measurements on {', '.join(seen) or 'no device'}"


SUITE = Suite("tuning", needs_gpu=False, describe_device=describe_device, run=run)
