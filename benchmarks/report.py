"""Writing results: one JSON file per suite, and RESULTS.md regenerated from all of them.

RESULTS.md is only ever written here, from the JSON files: no figure in it is typed by hand.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from .schema import Row, SchemaError, SuiteResult
from .targets import TARGETS, Target, check, fraction_of_ceiling, ratio

# Suites and peers appear in this order; others follow alphabetically.
SUITE_ORDER = ("memory", "cpu", "compile", "gemm", "tuning")
PEER_ORDER = ("cuBLAS", "CuPy", "PyTorch", "Triton", "NumPy")
MISSING = "—"


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file and a rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_suite_json(result: SuiteResult, out_dir: Path) -> Path:
    """Validate and write `<out_dir>/<suite>.json`; return its path."""
    path = out_dir / f"{result.suite}.json"
    _atomic_write(path, json.dumps(result.to_json(), indent=2) + "\n")
    return path


def load_results(out_dir: Path) -> list[SuiteResult]:
    """Every suite's results in `out_dir`, in report order; a malformed file is an error that
    names it."""
    results = []
    for path in sorted(out_dir.glob("*.json")):
        try:
            results.append(SuiteResult.from_json(json.loads(path.read_text(encoding="utf-8"))))
        except (json.JSONDecodeError, SchemaError) as error:
            raise SchemaError(f"{path}: {error}") from error
    return sorted(results, key=lambda r: _order_key(r.suite, SUITE_ORDER))


def _order_key(name: str, order: Sequence[str]) -> tuple[int, str]:
    return (order.index(name), "") if name in order else (len(order), name)


def _ordered_names(mappings: Iterable[Iterable[str]], order: Sequence[str]) -> list[str]:
    return sorted({name for names in mappings for name in names},
                  key=lambda n: _order_key(n, order))


def fmt(value: float | None) -> str:
    """A figure for a table: four significant digits, or one decimal for large ones."""
    if value is None:
        return MISSING
    return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.4g}"


def summary_line(row: Row) -> str:
    """One row as a line of progress output."""
    figures = [f"tegula {fmt(row.tegula)}"] + [f"{n} {fmt(v)}" for n, v in row.peers.items()]
    return f"  {row.name}: " + ", ".join(figures) + f" {row.metric}"


def _cell(value: float | None, suffix: str = "") -> str:
    return MISSING if value is None else f"{value:.2f}{suffix}"


def _table(rows: Sequence[Row]) -> list[str]:
    peers = _ordered_names((row.peers for row in rows), PEER_ORDER)
    ceilings = _ordered_names((row.ceiling for row in rows), ())
    header = (["row", "metric", "tegula", *peers]
              + [f"tegula/{peer}" for peer in peers]
              + [f"{ceiling} (ceiling)" for ceiling in ceilings]
              + [f"% of {ceiling}" for ceiling in ceilings])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        metric = f"{row.metric} ({'higher' if row.higher_is_better else 'lower'} is better)"
        cells = ([row.name, metric, fmt(row.tegula)]
                 + [fmt(row.peers.get(peer)) for peer in peers]
                 + [_cell(ratio(row, peer)) for peer in peers]
                 + [fmt(row.ceiling.get(c)) for c in ceilings]
                 + [_cell(_percent(fraction_of_ceiling(row, c)), "%") for c in ceilings])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else 100.0 * fraction


def _notes(rows: Sequence[Row]) -> list[str]:
    """Each row's notes; a note every row carries is written once, for all rows."""
    parts = {row.name: str(row.extra.get("notes", "")).split("; ") for row in rows}
    shared = [p for p in next(iter(parts.values()), []) if p and all(
        p in row_parts for row_parts in parts.values())] if len(rows) > 1 else []
    lines = [f"- all rows: {note}" for note in shared]
    for name, row_parts in parts.items():
        own = [p for p in row_parts if p and p not in shared]
        if own:
            lines.append(f"- {name}: {'; '.join(own)}")
    return lines


def render_suite(result: SuiteResult, targets: Sequence[Target]) -> list[str]:
    lines = [
        f"## {result.suite}",
        "",
        f"- device: {result.device}",
        f"- date: {result.date}",
        f"- command: `{result.command}`",
        "",
        *_table(result.rows),
    ]
    suite_targets = [t for t in targets if t.suite == result.suite]
    if suite_targets:
        lines += ["", "Targets:", ""]
        for target in suite_targets:
            verdict = check(target, result.rows)
            lines.append(f"- **{verdict.status}** — {target.describe()} — {verdict.detail}")
    notes = _notes(result.rows)
    if notes:
        lines += ["", "Notes:", "", *notes]
    return [*lines, ""]


def render_markdown(results: Sequence[SuiteResult], targets: Sequence[Target] = TARGETS,
                    source: str = "results/") -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `python -m benchmarks` from the JSON files in `{source}`; "
        "do not edit by hand. Ratios are tegula / peer in the row's metric; the metric says "
        "which way is better.",
        "",
    ]
    if not results:
        lines += ["No results yet: run `python -m benchmarks`.", ""]
    for result in results:
        lines += render_suite(result, targets)
    lines += _unmeasured(results, targets)
    return "\n".join(lines)


def _unmeasured(results: Sequence[SuiteResult], targets: Sequence[Target]) -> list[str]:
    """Targets of suites with no results yet, listed so a missing suite is not read as met."""
    measured = {result.suite for result in results}
    waiting = [t for t in targets if t.suite not in measured]
    if not waiting:
        return []
    lines = ["## Not yet measured", ""]
    lines += [f"- **unchecked** — `{t.suite}`: {t.describe()} — no results/{t.suite}.json"
              for t in waiting]
    return [*lines, ""]


def write_results_md(out_dir: Path, md_path: Path) -> Path:
    """Regenerate RESULTS.md from every JSON file in `out_dir`."""
    source = Path(os.path.relpath(out_dir, md_path.parent)).as_posix() + "/"
    _atomic_write(md_path, render_markdown(load_results(out_dir), source=source))
    return md_path
