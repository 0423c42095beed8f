"""``tegula tune``: tune a kernel from the command line, or list what the database knows.

    tegula tune FILE.tg --kernel K --shape M=4096 --shape N=4096 --trials 64
                [--const WT=i2] [--target T] [--db FILE] [--parallel N] [--seed S]
                [--strategy gbdt|random] [--cold-l2]
    tegula tune --report [--db FILE]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .database import TuningDatabase, TuningRecord

console = Console(highlight=False)


def add_tune_parser(subparsers: Any) -> argparse.ArgumentParser:
    tune = subparsers.add_parser("tune", help="autotune a kernel's params with a learned model")
    tune.add_argument("file", nargs="?", type=Path, help="the .tg file")
    tune.add_argument("--kernel", help="the kernel to tune (default: the file's only kernel)")
    tune.add_argument("--shape", action="append", default=[], metavar="NAME=VALUE",
                      help="a size symbol's value (repeat for each symbol)")
    tune.add_argument("--const", action="append", default=[], metavar="NAME=DTYPE",
                      help="a dtype param's value (WT=i2; repeatable): the type tuned at")
    tune.add_argument("--trials", type=int, default=64, help="measurements to make")
    tune.add_argument("--target", default="auto", help="cpu, cuda, cuda:sm_XX or auto")
    tune.add_argument("--db", type=Path, default=None,
                      help="the tuning database (default: tuning.jsonl in the cache folder)")
    tune.add_argument("--parallel", type=int, default=None, help="build processes")
    tune.add_argument("--executor", choices=("process", "ray"), default="process",
                      help="where builds run: local processes, or Ray tasks (a cluster, with "
                           "tegula[ray]); timing stays on this host's GPUs")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--strategy", choices=("gbdt", "random"), default="gbdt",
                      help="model-guided search (gbdt) or blind random search")
    tune.add_argument("--timeout", type=float, default=10.0,
                      help="seconds a candidate may run before it counts as hung")
    tune.add_argument("--cold-l2", action="store_true",
                      help="time each call on inputs not left in the GPU's L2 by the calls "
                           "before it (weights streamed once per call, as in decode)")
    tune.add_argument("--report", action="store_true", help="list the database's best records")
    tune.set_defaults(fn=run_tune)
    return tune


def _shapes(pairs: list[str]) -> dict[str, int]:
    from ..cli import int_assignments

    return int_assignments(pairs, "--shape")


def run_tune(args: argparse.Namespace) -> int:
    if args.report:
        report(TuningDatabase(args.db))
        return 0
    if args.file is None:
        raise ValueError("tegula tune needs a .tg file (or --report)")
    from ..cli import const_assignments
    from .tuner import load_kernel, tune

    kernel = args.kernel
    if kernel is None:
        from tegula.compiler.parser import parse

        names = [k.name for k in parse(args.file.read_text(), str(args.file)).kernels]
        if len(names) != 1:
            raise ValueError(f"{args.file} has kernels {', '.join(names)}; choose one with "
                             "--kernel")
        kernel = names[0]
    load_kernel(args.file, kernel)  # a missing kernel is reported before any process starts
    result = tune(args.file, kernel, _shapes(args.shape), args.trials, args.target, args.db,
                  args.parallel, args.seed, True, args.strategy, timeout_s=args.timeout,
                  executor=args.executor, constants=const_assignments(args.const),
                  cold_l2=args.cold_l2)
    table = Table(title=f"tegula tune {kernel} on {result.target} ({result.device})")
    for col in ("config", "status", "time (ms)", "note"):
        table.add_column(col, justify="right" if col.startswith("time") else "left")
    ranked = sorted(result.records, key=lambda r: (not r.ok, r.time_s or 0.0))
    for r in ranked:
        table.add_row(_config_text(r.config), r.status,
                      f"{r.time_s * 1e3:.4f}" if r.time_s else "-",
                      r.message.splitlines()[0][:60] if r.message else "")
    console.print(table)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.status_counts().items()))
    console.print(f"space {result.space_size} points, {len(result.pruned)} pruned; {counts}")
    if result.best_config is not None:
        console.print(f"best: {_config_text(result.best_config)} "
                      f"{result.best_time_s * 1e3:.4f} ms (within 95% after "
                      f"{result.trials_to_95} trials)")
    if not result.checked:
        console.print("[yellow]note: no reference to check results against[/yellow]")
    return 0 if result.best_config is not None else 1


def report(db: TuningDatabase) -> None:
    """One row per workload: its best record and how its measurements went."""
    groups: dict[str, list[TuningRecord]] = defaultdict(list)
    for r in db.records():
        groups[r.workload].append(r)
    table = Table(title=f"tuning database {db.path}")
    for col in ("kernel", "shapes", "target", "device", "records", "failed", "best config",
                "best (ms)"):
        table.add_column(col, justify="right" if col in ("records", "failed", "best (ms)")
                         else "left")
    for rows in groups.values():
        good = [r for r in rows if r.ok]
        best = min(good, key=lambda r: r.time_s or 0.0) if good else None
        first = rows[0]
        table.add_row(first.kernel, _config_text(first.shapes), first.target, first.device,
                      str(len(rows)), str(len(rows) - len(good)),
                      _config_text(best.config) if best else "-",
                      f"{best.time_s * 1e3:.4f}" if best and best.time_s else "-")
    console.print(table)


def _config_text(config: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in config.items())
