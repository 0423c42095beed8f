"""Autotuning quality: how many measured trials the learned model needs to find a config
within 95% of the best, beside blind random search, on exhaustively measured spaces.

Ground truth: every legal config of `examples/gemm.tg`'s `gemm_f16` space is measured once
per workload (a large square GEMM and an LLM decode shape) and stored as tuning-database
JSON lines under `benchmarks/results/tuning/`, so later runs replay searches against it
without re-measuring. The searches are replayed with `tegula.compiler.tuning.evaluate` —
the same loop `tegula tune` runs, with measurement replaced by a look-up — for several seeds;
measuring a space takes about a second a config on an H200 host, and a run that stops early
keeps what it measured (the next run measures only the rest);
each row reports the median trials to 95% of the best (lower is better), the model under
`tegula` and random search as the peer `random search`. Records carry the digest of the
compiler that built them and the identity of what the config built to (generated code,
launch spec, target): a space counts the configs this compiler measured and those an older
compiler measured that this one still builds to the same code (recomputed on the CPU), and
a space not yet complete is reported as such, not replayed. Replays need no GPU. A second row
per workload warm-starts the model from the other workload's records (transfer).
"""

from __future__ import annotations

import os

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


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def ground_truth(name: str, shapes: dict[str, int], *, measure: bool) -> tuple[list, int]:
    """The records of the space at ``shapes`` measured by this compiler, and the space's size;
    with ``measure`` (a GPU is here), the configs not yet measured are measured first."""
    from tegula.compiler.fingerprint import compiler_source_digest
    from tegula.compiler.targets import resolve_target
    from tegula.compiler.tuning.database import TuningDatabase
    from tegula.compiler.tuning.executors import make_executor
    from tegula.compiler.tuning.revalidate import current_records
    from tegula.compiler.tuning.space import SearchSpace
    from tegula.compiler.tuning.tuner import load_kernel, tune
    from tegula.compiler.tuning.worker import device_name

    path = TRUTH / f"{_slug(name)}.jsonl"
    src = load_kernel(EXAMPLES / "gemm.tg", KERNEL)
    compiler = compiler_source_digest()

    # One device's measurements make a ground truth: the GPU here when measuring, else the
    # device that measured most of this compiler's records (times from two GPUs do not mix).
    here = device_name(resolve_target("cuda")) if measure else None

    def stored() -> list:
        if not path.exists():
            return []
        return [r for r in TuningDatabase(path).records()
                if r.kernel_hash == src.kernel_hash and r.shapes == shapes]

    # Older compilers' records count where this compiler builds their configs to the same
    # code (checked once, on the CPU); new measurements are this compiler's own.
    older = [r for r in stored() if r.compiler != compiler]
    with make_executor("process", os.cpu_count() or 1) as pool:
        still_valid = current_records(older, src.text, src.filename, pool) if older else []

    def records() -> list:
        mine = [r for r in stored() if r.compiler == compiler] + still_valid
        device = here or max({r.device for r in mine}, default=None,
                             key=[r.device for r in mine].count)
        return [r for r in mine if r.device == device]

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
        other = truth[names[1 - index]][0]
        label = "square" if index == 0 else "decode"
        measured = len({r.config_key for r in records})
        if measured < COVERAGE * size:  # a partial space would overstate how good search is
            note = (f"ground truth incomplete: {measured} of {size} configs have measurements "
                    "that hold for this compiler (the suite measures the rest on a GPU)")
            rows += [_missing(f"gemm_f16 {name}: {size} configs", f"tuning/{label}", note),
                     _missing(f"gemm_f16 {name}: {size} configs, transfer",
                              f"tuning/{label}/transfer", note)]
            continue
        scores = {s.strategy: s for s in evaluate(records, seeds=SEEDS, transfer=other)}
        unvisited = (f"; {size - measured} of the {size} configs have no measurement that holds "
                     "for this compiler (not reached by the sweeps, or built differently now), "
                     "replays count them as failed trials"
                     if measured < size else "")
        rows.append(_row(f"gemm_f16 {name}: {size} configs", f"tuning/{label}", records,
                         "gbdt", scores, f"median over seeds {list(SEEDS)}{unvisited}"))
        transfer_name = f"gemm_f16 {name}: {size} configs, transfer"
        if "gbdt+transfer" in scores:
            rows.append(_row(transfer_name, f"tuning/{label}/transfer", records, "gbdt+transfer",
                             scores, f"model warm-started from the records of {names[1 - index]}"))
        else:
            rows.append(_missing(transfer_name, f"tuning/{label}/transfer",
                                 f"no records of {names[1 - index]} by this compiler to "
                                 "warm-start from"))
    return rows


def _missing(name: str, case: str, note: str) -> Row:
    return Row(name, "trials to 95% of best", False, None, {},
               extra={"case": case, "notes": f"tegula not measured: {note}"})


def describe_device() -> str:
    """The GPU here, or where the stored ground truth was measured (a replay needs none)."""
    if devices.gpu_available():
        return devices.describe_gpu()
    from tegula.compiler.tuning.database import TuningDatabase
    from tegula.compiler.tuning.tuner import load_kernel

    # Records of another version of the kernel's text never count; their devices are not named.
    kernel_hash = load_kernel(EXAMPLES / "gemm.tg", KERNEL).kernel_hash
    seen = sorted({r.device for path in TRUTH.glob("*.jsonl")
                   for r in TuningDatabase(path).records() if r.kernel_hash == kernel_hash})
    return f"replayed from measurements on {', '.join(seen) or 'no device'}"


SUITE = Suite("tuning", needs_gpu=False, describe_device=describe_device, run=run)
