"""The tuning database: an append-only JSON-lines file, one measurement per line.

Several processes may tune at once into one file: each append takes an exclusive advisory
lock (``fcntl.flock``) and writes whole lines with one ``write``, so lines never interleave.
Readers take no lock; a line that is not a valid record (a torn write after a power cut, a
hand edit) is skipped with a warning, never fatal.

A record's *workload* is what decides which measurements are comparable: the kernel's
hash (sha256 of its source text), the shapes (size-symbol values), the dtypes of its
parameters and the target (with the device's name). See ``docs/tuning.md`` for the format.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tegula import __version__ as VERSION

from .space import config_key

log = logging.getLogger("tegula.tuning")

RECORD_FORMAT = 1
DB_FILENAME = "tuning.jsonl"
# "illegal": the config built but broke a limit of the target (shared memory, registers), so
# it was never run; recorded so a space's every config is accounted for.
STATUSES = ("ok", "compile_error", "runtime_error", "crash", "timeout", "wrong_result",
            "illegal")


def default_db_path() -> Path:
    """``tuning.jsonl`` in tegula's cache folder (``$TEGULA_CACHE_DIR`` when set)."""
    from tegula.runtime.cache import default_cache_dir

    return default_cache_dir() / DB_FILENAME


class RecordFormatError(ValueError):
    """A line of the database that is not a record."""


@dataclass(frozen=True)
class TuningRecord:
    """One measurement of one config of one workload."""

    kernel: str
    kernel_hash: str
    shapes: dict[str, int]
    dtypes: dict[str, str]
    target: str
    device: str
    config: dict[str, Any]
    status: str
    time_s: float | None  # median seconds per call; None unless status == "ok"
    features: tuple[float, ...] = ()
    message: str = ""
    version: str = VERSION
    compiler: str = ""  # compiler_source_digest() of the compiler that built the config
    build: str = ""  # what the config built to (build.identity_digest); "" if unknown
    # How time_s was taken (measure.timing_protocol); "" for records older than the field,
    # whose samples were single launches. Times taken two ways are not compared.
    timing: str = ""
    timestamp: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise RecordFormatError(f"unknown status {self.status!r}; expected one of {STATUSES}")
        if self.status == "ok" and (self.time_s is None or not self.time_s > 0):
            raise RecordFormatError(f"an ok record needs a positive time, got {self.time_s!r}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def workload(self) -> str:
        return workload_key(self.kernel_hash, self.shapes, self.dtypes, self.target, self.device)

    @property
    def config_key(self) -> str:
        return config_key(self.config)

    def to_json(self) -> str:
        data = asdict(self)
        data["features"] = list(self.features)
        data["format"] = RECORD_FORMAT
        return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, line: str) -> TuningRecord:
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RecordFormatError(f"not JSON: {exc}") from None
        if not isinstance(data, dict) or data.pop("format", None) != RECORD_FORMAT:
            raise RecordFormatError("not a tuning record of this format")
        try:
            record = cls(
                kernel=_typed(data["kernel"], str),
                kernel_hash=_typed(data["kernel_hash"], str),
                shapes={_typed(k, str): _typed(v, int) for k, v in
                        _typed(data["shapes"], dict).items()},
                dtypes={_typed(k, str): _typed(v, str) for k, v in
                        _typed(data["dtypes"], dict).items()},
                target=_typed(data["target"], str),
                device=_typed(data["device"], str),
                config=_typed(data["config"], dict),
                status=_typed(data["status"], str),
                time_s=None if data["time_s"] is None else float(data["time_s"]),
                features=tuple(float(x) for x in _typed(data["features"], list)),
                message=_typed(data.get("message", ""), str),
                version=_typed(data["version"], str),
                compiler=_typed(data.get("compiler", ""), str),
                build=_typed(data.get("build", ""), str),
                timing=_typed(data.get("timing", ""), str),
                timestamp=float(data["timestamp"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordFormatError(f"malformed record: {exc}") from None
        return record


def _typed(value: Any, kind: type) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"expected {kind.__name__}, got {value!r}")
    return value


def workload_key(
    kernel_hash: str,
    shapes: Mapping[str, int],
    dtypes: Mapping[str, str],
    target: str,
    device: str,
) -> str:
    return json.dumps([kernel_hash, dict(shapes), dict(dtypes), target, device],
                      sort_keys=True, separators=(",", ":"))


class TuningDatabase:
    """The records of one JSON-lines file (made, with its folder, on the first append)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_db_path()

    def append(self, records: Iterable[TuningRecord]) -> None:
        text = "".join(r.to_json() + "\n" for r in records)
        if not text:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                written = 0
                while written < len(data):  # a short write continues where it stopped
                    written += os.write(fd, data[written:])
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def records(self) -> Iterator[TuningRecord]:
        """Every valid record, in file order; invalid lines are skipped with a warning."""
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    line = raw.decode()
                except UnicodeDecodeError:
                    log.warning("%s:%d: skipped a line that is not UTF-8", self.path, number)
                    continue
                if not line.strip():
                    continue
                if not line.endswith("\n"):
                    # The last line of a file another process is still writing, or torn.
                    log.warning("%s:%d: skipped an unfinished line", self.path, number)
                    continue
                try:
                    yield TuningRecord.from_json(line)
                except RecordFormatError as exc:
                    log.warning("%s:%d: skipped a line that is not a record (%s)",
                                self.path, number, exc)

    def for_kernel(self, kernel_hash: str) -> list[TuningRecord]:
        return [r for r in self.records() if r.kernel_hash == kernel_hash]

    def for_workload(self, workload: str) -> list[TuningRecord]:
        return [r for r in self.records() if r.workload == workload]

    def for_transfer(self, workload: str, target: str) -> list[TuningRecord]:
        """Measured records of other workloads on the same target, to warm-start a model."""
        return [
            r for r in self.records()
            if r.target == target and r.workload != workload and r.features
        ]

    def best(
        self,
        kernel_hash: str,
        shapes: Mapping[str, int],
        target: str,
        dtypes: Mapping[str, str] | None = None,
    ) -> TuningRecord | None:
        """The fastest ok record for these shapes and target (any device of that target
        when several have records: the most recent record's device and timing protocol
        decide, as times from two GPUs, or warm and cold caches, do not rank together)."""
        candidates = [
            r for r in self.records()
            if r.kernel_hash == kernel_hash and r.target == target
            and r.shapes == dict(shapes) and (dtypes is None or r.dtypes == dict(dtypes))
        ]
        return fastest_per_shapes(candidates).get(shape_key(shapes))


ShapeKey = tuple[tuple[str, int], ...]


def shape_key(shapes: Mapping[str, int]) -> ShapeKey:
    """Shapes as a hashable key, independent of their order."""
    return tuple(sorted(shapes.items()))


def fastest_per_shapes(records: Iterable[TuningRecord]) -> dict[ShapeKey, TuningRecord]:
    """The fastest ok record of each shape tuple among ``records`` (one kernel and target).
    Where a shape has records of several devices or timing protocols, those of its most
    recent record decide: times from two GPUs, or from warm and cold caches, do not rank
    together. Ties go to the earlier record."""
    by_shape: dict[ShapeKey, list[TuningRecord]] = {}
    for r in records:
        if r.ok:
            by_shape.setdefault(shape_key(r.shapes), []).append(r)
    fastest = {}
    for key, rows in by_shape.items():
        latest = max(rows, key=lambda r: r.timestamp)
        alike = [r for r in rows if (r.device, r.timing) == (latest.device, latest.timing)]
        fastest[key] = min(alike, key=lambda r: (r.time_s or math.inf, r.timestamp))
    return fastest
