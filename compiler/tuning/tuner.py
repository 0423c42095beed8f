"""The tuning API: ``tune`` a kernel at given shapes; look up ``best_config`` later.

    from tegula.compiler.tuning import tune, best_config
    result = tune("examples/matmul.tg", "matmul", {"M": 512, "N": 512, "K": 512}, trials=32)
    best_config("examples/matmul.tg", "matmul", {"M": 512, "N": 512, "K": 512})
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tegula.compiler import syntax as ast
from tegula.compiler.api import canonical_constant, read_source
from tegula.compiler.fingerprint import compiler_source_digest
from tegula.compiler.frontend import dtype_params, size_symbols
from tegula.compiler.headers import kernel_text_hash
from tegula.compiler.parser import parse
from tegula.compiler.targets import resolve_target
from tegula.compiler.tuned import resolved_dtypes

from .database import TuningDatabase, TuningRecord
from .loop import TransferRows, TuningLoop, trials_to_fraction
from .measure import Measurement, Measurer, Workload
from .model import make_model
from .revalidate import current_records
from .space import Config, SearchSpace, config_key

log = logging.getLogger("tegula.tuning")


@dataclass(frozen=True)
class TuningResult:
    """What one tuning run found. ``curve[i]`` is the best time after trial ``i + 1``."""

    kernel: str
    kernel_hash: str
    shapes: dict[str, int]
    target: str
    device: str
    best_config: Config | None  # the constants to compile with (fixed params included)
    best_time_s: float | None
    records: tuple[TuningRecord, ...]
    curve: tuple[float | None, ...]
    trials_to_95: int | None
    space_size: int
    pruned: tuple[str, ...]
    checked: bool  # whether results were compared with a reference

    def status_counts(self) -> dict[str, int]:
        return dict(Counter(r.status for r in self.records))


@dataclass(frozen=True)
class KernelSource:
    text: str
    filename: str
    kernel: ast.KernelDef

    @property
    def kernel_hash(self) -> str:
        return kernel_text_hash(self.kernel)

    @property
    def dtypes(self) -> dict[str, str]:
        return {p.name: p.dtype for p in self.kernel.params}


def load_kernel(source_or_path: str | Path, kernel: str) -> KernelSource:
    source = read_source(source_or_path)
    program = parse(source.text, source.filename)
    kdef = program.kernel(kernel)
    if kdef is None:
        names = ", ".join(k.name for k in program.kernels) or "none"
        raise KeyError(f"{source.filename} has no kernel {kernel!r} (kernels: {names})")
    return KernelSource(source.text, source.filename, kdef)


def _check_shapes(kdef: ast.KernelDef, shapes: Mapping[str, int]) -> dict[str, int]:
    symbols = size_symbols(kdef)
    unknown = sorted(set(shapes) - set(symbols))
    if unknown:
        raise ValueError(f"kernel {kdef.name} has no size symbol {unknown[0]} "
                         f"(symbols: {', '.join(symbols) or 'none'})")
    dims = {d.value for p in kdef.params for d in p.shape or () if isinstance(d.value, str)}
    missing = [s for s in symbols if s in dims and s not in shapes]
    if missing:
        raise ValueError(f"kernel {kdef.name}: give a value for size symbol {missing[0]} "
                         f"(e.g. {missing[0]}=1024)")
    for name, value in shapes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"size {name} must be a positive int, got {value!r}")
    return dict(shapes)


def _check_constants(kdef: ast.KernelDef, constants: Mapping[str, Any]) -> dict[str, Any]:
    """``constants`` as compilations hold them, each a dtype param of ``kdef``: numeric
    params are what tuning searches (pinning one is compiling, not tuning)."""
    pinned = {name: canonical_constant(value) for name, value in constants.items()}
    dtype_names = set(dtype_params(kdef))
    for name in pinned:
        if name not in {d.name for d in kdef.const_params}:
            raise ValueError(f"kernel {kdef.name} has no compile-time parameter {name}")
        if name not in dtype_names:
            raise ValueError(f"tuning sets dtype parameters only; {name} of kernel "
                             f"{kdef.name} is one the search chooses")
    dtype_params(kdef, pinned)  # a value that is not one of the candidates is refused here
    return pinned


def _default_batch(model: str, workers: int, builds: int) -> int:
    """Configs proposed at a time. The model learns from each batch, so its batches are
    small: two per device worker, enough that one is built while another is timed. Blind
    search learns nothing between batches, so its batches keep the build pool busy several
    rounds over: a batch's timings start as its first builds finish, but the next batch's
    builds only once its last timing is done, so with one batch a pool round the compiles
    and the timings took turns (about 0.6 s a config in a 4500-config sweep on an H100
    host with 15 build processes; with batches of two, a compile for every other config)."""
    if model == "random":
        return max(2 * workers, BLIND_BATCH_ROUNDS * builds)
    return max(2, 2 * workers)


# Rounds of the build pool one blind-search batch holds (see _default_batch).
BLIND_BATCH_ROUNDS = 4


def tune(
    source_or_path: str | Path,
    kernel: str,
    shapes: Mapping[str, int],
    trials: int = 64,
    target: str = "auto",
    db: str | Path | TuningDatabase | None = None,
    parallel: int | None = None,
    seed: int = 0,
    progress: bool = True,
    model: str = "gbdt",
    *,
    batch_size: int | None = None,
    timeout_s: float = 10.0,
    epsilon: float = 0.1,
    transfer: bool = True,
    devices: Sequence[int | None] | None = None,
    executor: str = "process",
    repeats: int = 5,
    constants: Mapping[str, Any] | None = None,
    cold_l2: bool = False,
) -> TuningResult:
    """Tune ``kernel`` of a DSL file (or text) at ``shapes`` with ``trials`` measurements.

    ``constants`` sets dtype params (``{"WT": "i2"}``; the rest keep their defaults): what
    the kernel computes, so not searched; records carry the resulting element types, and a
    kernel tuned at one type never lends its configs to another.

    ``model``: ``gbdt`` (the learned ranker) or ``random`` (blind search). Every
    measurement is appended to ``db`` (default: the cache folder's ``tuning.jsonl``);
    ``cold_l2`` times each call on inputs no earlier call left in the GPU's L2
    (:class:`~.measure.Workload`), as records then say in their ``timing``;
    configs already measured there for this workload are not measured again. ``transfer``
    warm-starts the model with the database's records of other workloads on this target.
    """
    if trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    src = load_kernel(source_or_path, kernel)
    shapes = _check_shapes(src.kernel, shapes)
    pinned = _check_constants(src.kernel, constants or {})
    dtypes = resolved_dtypes(src.dtypes, dtype_params(src.kernel, pinned))
    tgt = resolve_target(target)
    space = SearchSpace.from_kernel(src.kernel, shapes, tgt, pinned)
    database = db if isinstance(db, TuningDatabase) else TuningDatabase(db)
    rng = np.random.default_rng(seed)
    workload = Workload(src.text, src.filename, kernel, str(tgt), shapes, seed, repeats=repeats,
                        cold_l2=cold_l2)
    reference = space.complete(space.default())
    with Measurer(workload, parallel=parallel, devices=devices, timeout_s=timeout_s,
                  executor=executor, reference_config=reference) as measurer:
        run = _Run(src, shapes, dtypes, str(tgt), space, database, measurer, rng, model,
                   seed, epsilon, transfer)
        batch = batch_size or _default_batch(model, len(measurer.workers), measurer.parallel)
        # The declared defaults go first (unless measured before): whatever the search then
        # finds, the tuned config is never slower than the untuned kernel at this shape.
        declared = space.declared(src.kernel, shapes, tgt)
        first = [declared] if declared is not None and config_key(
            declared) not in run.loop.measured else []
        with _progress(progress, trials, f"tuning {kernel}") as bar:
            while run.trials < trials:
                size = min(batch, trials - run.trials)
                taken = {config_key(c) for c in first}
                proposed = run.loop.next_batch(size - len(first))
                configs = (first + [c for c in proposed if config_key(c) not in taken])[:size]
                first = []
                if not configs:
                    break  # every legal point is measured
                run.record(measurer.measure([space.complete(c) for c in configs]), configs)
                bar(run.trials, run.best_time())
        device = measurer.device
        checked = measurer.checked
    return run.result(device, checked)


class _Run:
    """The state of one tuning run: the loop, the records, the database writes."""

    def __init__(self, src: KernelSource, shapes: dict[str, int], dtypes: dict[str, str],
                 target: str, space: SearchSpace, db: TuningDatabase, measurer: Measurer,
                 rng: np.random.Generator, model: str, seed: int, epsilon: float,
                 transfer: bool) -> None:
        self.src, self.shapes, self.target, self.space = src, shapes, target, space
        self.dtypes = dtypes
        self.db, self.measurer = db, measurer
        self.records: list[TuningRecord] = []
        self.times: list[float | None] = []
        self.analysis: dict[str, tuple[float, ...] | None] = {}
        self.pruned: list[str] = list(space.pruned)
        self.trials = 0
        mine = [r for r in db.for_kernel(src.kernel_hash)
                if r.shapes == shapes and r.target == target and r.dtypes == dtypes]
        # Configs measured for this workload are not measured again where the measurement
        # holds: made by this compiler, or by one that built the config to the same code
        # (revalidate); the rest are stale and measured afresh.
        prior = current_records(mine, src.text, src.filename, measurer.pool,
                                measurer.workload.timing)
        # This workload's records, of any compiler, are never "another workload" to learn from.
        workload_of = mine[0].workload if mine else None
        rows = TransferRows.empty()
        if transfer:
            rows = TransferRows.from_records(db.for_transfer(workload_of or "", target),
                                             exclude=workload_of)
        self.loop = TuningLoop(space, make_model(model, seed), self._features, rng,
                               epsilon=epsilon, transfer=rows)
        for r in prior:  # measured before: kept, not measured again
            point = {k: v for k, v in r.config.items() if k in space.names}
            if space.contains(point):
                self.loop.observe(point, r.time_s, r.features)

    def _features(self, configs: Sequence[Config]) -> list[tuple[float, ...] | None]:
        todo = [c for c in configs if config_key(c) not in self.analysis]
        if todo:
            outcomes = self.measurer.analyze([self.space.complete(c) for c in todo])
            failed = []
            for c, out in zip(todo, outcomes, strict=True):
                self.analysis[config_key(c)] = out.features if out.ok else None
                if out.status in ("compile_error", "illegal"):
                    failed.append(Measurement(self.space.complete(c), out.status, None,
                                              out.message, build=out.identity))
                if out.status == "compile_error":
                    self.loop.observe(c, None)
                elif out.status == "illegal":
                    self.pruned.append(f"{config_key(c)}: {out.message}")
            self._write(failed, count=False)
        return [self.analysis[config_key(c)] for c in configs]

    def record(self, measurements: list[Measurement], points: list[Config]) -> None:
        for m, point in zip(measurements, points, strict=True):
            self.loop.observe(point, m.time_s if m.status == "ok" else None, m.features)
        self._write([m for m in measurements if m.status != "illegal"], count=True)
        self._write([m for m in measurements if m.status == "illegal"], count=False)
        for m, point in zip(measurements, points, strict=True):
            if m.status == "illegal":
                self.pruned.append(f"{config_key(point)}: {m.message}")
                self.trials += 1

    def _write(self, measurements: list[Measurement], *, count: bool) -> None:
        records = [
            TuningRecord(
                kernel=self.src.kernel.name, kernel_hash=self.src.kernel_hash,
                shapes=self.shapes, dtypes=self.dtypes, target=self.target,
                device=m.device or self.measurer.device, config=dict(m.config),
                status=m.status, time_s=m.time_s if m.status == "ok" else None,
                features=m.features, message=m.message[:2000],
                compiler=compiler_source_digest(), build=m.build,
                timing=self.measurer.workload.timing,
            )
            for m in measurements
        ]
        self.db.append(records)
        self.records += records
        if count:
            self.trials += len(records)
            self.times += [r.time_s for r in records]

    def best_time(self) -> float | None:
        best = self.loop.best()
        return best[1] if best else None

    def result(self, device: str, checked: bool) -> TuningResult:
        best = self.loop.best()
        curve: list[float | None] = []
        so_far = math.inf
        for t in self.times:
            so_far = min(so_far, t if t is not None else math.inf)
            curve.append(so_far if math.isfinite(so_far) else None)
        run_best = min((t for t in self.times if t is not None), default=None)
        return TuningResult(
            kernel=self.src.kernel.name, kernel_hash=self.src.kernel_hash, shapes=self.shapes,
            target=self.target, device=device,
            best_config=self.space.complete(best[0]) if best else None,
            best_time_s=best[1] if best else None, records=tuple(self.records),
            curve=tuple(curve),
            trials_to_95=trials_to_fraction(self.times, run_best) if run_best else None,
            space_size=self.space.size, pruned=tuple(self.pruned), checked=checked,
        )


class _progress:
    """A rich progress bar (trials, best so far, time left), or nothing."""

    def __init__(self, enabled: bool, total: int, title: str) -> None:
        self.enabled, self.total, self.title = enabled, total, title
        self._bar: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda done, best: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                             MofNCompleteColumn(), TextColumn("best {task.fields[best]}"),
                             TimeRemainingColumn(), transient=False)
        self._bar.__enter__()
        task = self._bar.add_task(self.title, total=self.total, best="-")

        def update(done: int, best: float | None) -> None:
            self._bar.update(task, completed=done,
                             best="-" if best is None else f"{best * 1e3:.4f} ms")

        return update

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def best_config(
    source_or_path: str | Path,
    kernel: str,
    shapes: Mapping[str, int],
    target: str = "auto",
    db: str | Path | TuningDatabase | None = None,
) -> dict[str, Any] | None:
    """The constants of the fastest measured config for these shapes on ``target``, or
    None (said at debug level) when the database has no record of them."""
    src = load_kernel(source_or_path, kernel)
    tgt = str(resolve_target(target))
    database = db if isinstance(db, TuningDatabase) else TuningDatabase(db)
    record = database.best(src.kernel_hash, dict(shapes), tgt, src.dtypes)
    if record is None:
        log.debug("no tuning record for %s at %s on %s in %s; using the declared defaults",
                  kernel, dict(shapes), tgt, database.path)
        return None
    return dict(record.config)
