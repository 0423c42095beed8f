"""Command line: run suites, write their JSON, regenerate RESULTS.md."""

from __future__ import annotations

import argparse
import shlex
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path

from .devices import gpu_available
from .harness import FULL, QUICK
from .report import write_results_md, write_suite_json
from .schema import SuiteResult
from .suites import DEFAULT_SUITES, SUITE_NAMES, all_suites

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = PACKAGE_DIR / "results"
DEFAULT_RESULTS_MD = PACKAGE_DIR / "RESULTS.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--suite", action="extend", nargs="+", choices=SUITE_NAMES,
                        metavar="NAME",
                        help=f"suites to run (default: {', '.join(DEFAULT_SUITES)}; "
                        f"known: {', '.join(SUITE_NAMES)})")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few repeats (a smoke test, not a measurement)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing; regenerate RESULTS.md from the JSON files present")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                        help="folder for <suite>.json (default: benchmarks/results); RESULTS.md "
                             "goes to benchmarks/RESULTS.md, or into DIR when DIR is given")
    return parser.parse_args(argv)


def command_line() -> str:
    """The exact command that started this run."""
    return shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    results_md = DEFAULT_RESULTS_MD if out.resolve() == DEFAULT_OUT else out / "RESULTS.md"
    settings = QUICK if args.quick else FULL
    names = [] if args.report_only else args.suite or list(DEFAULT_SUITES)
    suites = all_suites() if names else {}
    have_gpu = bool(names) and gpu_available()
    failed = []
    for name in names:
        suite = suites[name]
        if suite.needs_gpu and not have_gpu:
            print(f"[{name}] skipped: no CUDA GPU visible to CuPy (existing results kept)")
            continue
        print(f"[{name}] running{' (quick)' if args.quick else ''} ...", flush=True)
        try:
            rows = suite.run(settings, args.quick)
            result = SuiteResult(
                suite=name,
                device=suite.describe_device(),
                date=datetime.now(UTC).isoformat(timespec="seconds"),
                command=command_line(),
                rows=tuple(rows),
            )
            path = write_suite_json(result, out)
        except Exception:
            traceback.print_exc()
            print(f"[{name}] failed; its results were not written")
            failed.append(name)
            continue
        print(f"[{name}] wrote {path}")
    print(f"wrote {write_results_md(out, results_md)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
