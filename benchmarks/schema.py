"""The results format: one JSON document per suite, read back by RESULTS.md and outside checks.

    {"suite", "device", "date", "command",
     "rows": [{"name", "metric", "higher_is_better", "tegula", "peers": {name: value},
               "ceiling": {name: value}, ...extra keys}]}

`tegula` is null when tegula produced no trustworthy figure (it failed to build, or its
output failed the check); the row's `notes` then say why. A peer that is not installed, or
whose output failed the check, is left out of `peers`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ROW_KEYS = ("name", "metric", "higher_is_better", "tegula", "peers", "ceiling")
SUITE_KEYS = ("suite", "device", "date", "command", "rows")


class SchemaError(ValueError):
    """A results document does not have the agreed shape."""


@dataclass(frozen=True)
class Row:
    """One measured figure: tegula beside its peers and the ceilings, in one metric."""

    name: str
    metric: str
    higher_is_better: bool
    tegula: float | None
    peers: Mapping[str, float] = field(default_factory=dict)
    ceiling: Mapping[str, float] = field(default_factory=dict)
    # Free-form extra keys: "case" (the stable key targets use), "notes", "check", timings.
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def case(self) -> str | None:
        return self.extra.get("case")

    def to_json(self) -> dict[str, Any]:
        clash = set(self.extra) & set(ROW_KEYS)
        if clash:
            raise SchemaError(f"row {self.name!r}: extra keys {sorted(clash)} shadow schema keys")
        return {
            "name": self.name,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "tegula": self.tegula,
            "peers": dict(self.peers),
            "ceiling": dict(self.ceiling),
            **self.extra,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Row:
        problems = row_problems(doc, "row")
        if problems:
            raise SchemaError("; ".join(problems))
        return cls(
            name=doc["name"],
            metric=doc["metric"],
            higher_is_better=doc["higher_is_better"],
            tegula=doc["tegula"],
            peers=dict(doc["peers"]),
            ceiling=dict(doc["ceiling"]),
            extra={k: v for k, v in doc.items() if k not in ROW_KEYS},
        )


@dataclass(frozen=True)
class SuiteResult:
    """Everything one suite measured in one run."""

    suite: str
    device: str
    date: str
    command: str
    rows: tuple[Row, ...]

    def to_json(self) -> dict[str, Any]:
        doc = {
            "suite": self.suite,
            "device": self.device,
            "date": self.date,
            "command": self.command,
            "rows": [row.to_json() for row in self.rows],
        }
        validate(doc)
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SuiteResult:
        validate(doc)
        return cls(
            suite=doc["suite"],
            device=doc["device"],
            date=doc["date"],
            command=doc["command"],
            rows=tuple(Row.from_json(row) for row in doc["rows"]),
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _figures_problems(value: object, where: str) -> list[str]:
    if not isinstance(value, Mapping):
        return [f"{where} must be an object of name -> number, got {type(value).__name__}"]
    return [
        f"{where}[{name!r}] must be a finite number, got {figure!r}"
        for name, figure in value.items()
        if not isinstance(name, str) or not _is_number(figure)
    ]


def row_problems(row: object, where: str) -> list[str]:
    """Everything wrong with one row, each naming the place."""
    if not isinstance(row, Mapping):
        return [f"{where} must be an object, got {type(row).__name__}"]
    missing = [key for key in ROW_KEYS if key not in row]
    if missing:
        return [f"{where} lacks {', '.join(missing)}"]
    where = f"{where} {row['name']!r}"
    problems = []
    if not isinstance(row["name"], str) or not row["name"]:
        problems.append(f"{where}: name must be a non-empty string")
    if not isinstance(row["metric"], str) or not row["metric"]:
        problems.append(f"{where}: metric must be a non-empty string")
    if not isinstance(row["higher_is_better"], bool):
        problems.append(f"{where}: higher_is_better must be true or false")
    if row["tegula"] is not None and not _is_number(row["tegula"]):
        problems.append(f"{where}: tegula must be a finite number or null, got {row['tegula']!r}")
    problems += _figures_problems(row["peers"], f"{where}: peers")
    problems += _figures_problems(row["ceiling"], f"{where}: ceiling")
    return problems


def validate(doc: object) -> None:
    """Raise SchemaError listing every way `doc` departs from the results format."""
    if not isinstance(doc, Mapping):
        raise SchemaError(f"a results document must be an object, got {type(doc).__name__}")
    missing = [key for key in SUITE_KEYS if key not in doc]
    if missing:
        raise SchemaError(f"results document lacks {', '.join(missing)}")
    problems = [
        f"{key} must be a non-empty string"
        for key in ("suite", "device", "date", "command")
        if not isinstance(doc[key], str) or not doc[key]
    ]
    if isinstance(doc["date"], str):
        try:
            datetime.fromisoformat(doc["date"])
        except ValueError:
            problems.append(f"date must be ISO 8601, got {doc['date']!r}")
    if not isinstance(doc["rows"], list):
        problems.append("rows must be a list")
    else:
        names = [row.get("name") for row in doc["rows"] if isinstance(row, Mapping)]
        problems += [f"row name {name!r} appears twice" for name in sorted(
            {n for n in names if isinstance(n, str) and names.count(n) > 1})]
        for index, row in enumerate(doc["rows"]):
            problems += row_problems(row, f"rows[{index}]")
    if problems:
        raise SchemaError(f"suite {doc.get('suite')!r}: " + "; ".join(problems))
