"""Tuned configurations at compile time: the tuning database's best record for the shapes
at hand.

When a kernel declares tunable params (``BM in (64, 128)``) that the caller leaves open and
the tuning database holds measurements of this kernel on this target, ``tg.compile`` makes
it a call-time specialized kernel: each call's shapes pick the fastest measured config for
exactly those shapes, and shapes never tuned fall back to the declared defaults (said at
debug level). The database is read once per compile, not per call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .constexpr import ConstEvalError
from .headers import KernelHeader

log = logging.getLogger("tegula.tuned")


def resolved_dtypes(declared: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, str]:
    """Each parameter's element type with dtype params replaced by their values: what tuning
    records are keyed by, so the records of ``w: WT[K, N]`` at ``WT = i2`` and at ``i4``
    never stand in for each other."""
    return {name: str(values.get(dtype, dtype)) for name, dtype in declared.items()}


@dataclass(frozen=True)
class TunedConfigs:
    """The best measured config per shape tuple of one kernel on one target."""

    kernel: str
    target: str
    best: dict[tuple[tuple[str, int], ...], dict[str, Any]]

    def config_for(self, shapes: Mapping[str, int]) -> dict[str, Any] | None:
        found = self.best.get(tuple(sorted(shapes.items())))
        if found is None:
            log.debug(
                "no tuning record for %s at %s on %s; using the declared defaults",
                self.kernel,
                dict(shapes),
                self.target,
            )
        return found

    @classmethod
    def load(
        cls,
        header: KernelHeader,
        target: str,
        db_path: str | Path | None = None,
        pinned: Mapping[str, Any] | None = None,
    ) -> TunedConfigs | None:
        """The kernel's tuned configs at ``pinned``'s dtype params (else their defaults), or
        None when the database has none for it."""
        from .tuning.database import TuningDatabase, fastest_per_shapes

        database = TuningDatabase(db_path)
        if not Path(database.path).exists():
            return None
        try:
            values = header.dtype_values(pinned or {})
        except ConstEvalError:
            return None  # a dtype param set to no type of its own: the front end says so
        dtypes = resolved_dtypes(dict(header.dtypes), values)
        fastest = fastest_per_shapes(
            r for r in database.for_kernel(header.kernel_hash)
            if r.target == target and r.dtypes == dtypes
        )
        if not fastest:
            return None
        return cls(header.name, target, {k: dict(r.config) for k, r in fastest.items()})
