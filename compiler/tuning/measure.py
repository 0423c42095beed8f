"""Measuring candidates: builds in a process pool, runs in isolated device workers.

:class:`Measurer` owns a pool of compile processes (``spawn``; or Ray tasks, see
:mod:`executors`) and one device worker per device (:mod:`worker`). A batch goes through
both: each config is built (``compile_error``/``illegal`` stop it there), handed to the next
free worker, and given ``timeout_s`` to come back. A worker that misses the deadline is
killed (``timeout``); one that dies (a segfault, or a CUDA error that poisons its context)
gives ``crash``; either way a fresh worker takes its place and the batch goes on.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import signal
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from .build import BuildJob, BuildOutcome, build_candidate
from .executors import make_executor
from .space import Config
from .worker import receive, send, worker_main

log = logging.getLogger("tegula.tuning")

_START_TIMEOUT_S = 120.0  # spawning a worker and preparing inputs and the reference


@dataclass(frozen=True)
class Workload:
    """What a session of the device workers needs to know about the kernel being tuned."""

    source_text: str
    filename: str
    kernel: str
    target: str
    shapes: dict[str, int]
    seed: int = 0
    warmup: int = 1
    repeats: int = 5
    # Each timed sample runs the candidate back to back until it lasts this long (as
    # AutoTVM's min_repeat_ms): one 30 us launch timed alone carries a few percent of
    # launch and clock jitter, which let configs that build to the same loops differ by
    # 5-9% in a space's ground truth.
    min_sample_s: float = 1e-3
    # Whether each call reads inputs the cache has not kept: the workers rotate through
    # copies of the inputs until a round reads more than twice the GPU's L2, as a decode
    # step streams weights no earlier call left cached (a GEMM whose operands fit in L2 times
    # up to twice as fast warm, and ranks tile shapes by the wrong limit).
    cold_l2: bool = False

    @property
    def timing(self) -> str:
        """How the workers time this workload (a CPU has no L2 of a GPU to rotate past)."""
        return timing_protocol(self.min_sample_s, self.cold_l2 and self.target.startswith("cuda"))


def timing_protocol(min_sample_s: float = Workload.min_sample_s, cold_l2: bool = False) -> str:
    """How the workers time a candidate, as tuning records store it: a stored time holds only
    beside times taken the same way (a median of single launches runs a few percent apart
    from one of 1 ms samples, which is the size of the differences a search ranks; warm and
    cold caches further apart still)."""
    protocol = f"median of samples of >= {min_sample_s:g} s"
    return f"{protocol}, inputs rotated past twice the L2" if cold_l2 else protocol


@dataclass(frozen=True)
class Measurement:
    config: Config
    status: str  # ok, compile_error, runtime_error, crash, timeout, wrong_result, illegal
    time_s: float | None = None
    message: str = ""
    features: tuple[float, ...] = ()
    device: str = ""
    build: str = ""  # the build's identity (build.identity_digest), where it got that far


class BuildProcessesDie(RuntimeError):
    """Build processes die whatever they are given: the tuning run cannot go on, and
    recording each config as a compile error would be false."""


# Builds whose process dies, each again when retried alone in a fresh pool, with no build
# finishing in between, before the run stops: one config can kill its compiler process (a
# crash that is its own), several in a row mean the processes cannot start.
DEATHS_BEFORE_GIVING_UP = 3


class WorkerDied(RuntimeError):
    pass


class DeviceWorker:
    """One worker process bound to one device (``index`` None: the CPU)."""

    def __init__(self, workload: Workload, index: int | None,
                 reference: BuildOutcome | None) -> None:
        self.workload = workload
        self.index = index
        self.reference = reference
        self.device = ""
        self.checked = False
        self.process: Any = None
        self.conn: Connection | None = None
        self.deadline = 0.0
        self.job: tuple[int, Config, BuildOutcome] | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def start(self, fallback: BuildOutcome) -> None:
        """Spawn the process and open the session (``fallback`` gives the kernel's spec
        when there is no reference build)."""
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self.process = ctx.Process(
            target=worker_main, args=(child, self.workload.target, self.index), daemon=True
        )
        self.process.start()
        child.close()
        self.conn = parent
        hello = self._await(_START_TIMEOUT_S)
        self.device = hello["device"]
        w = self.workload
        ref = self.reference
        send(parent, {
            "op": "session", "kernel": w.kernel, "filename": w.filename, "shapes": w.shapes,
            "seed": w.seed, "warmup": w.warmup, "repeats": w.repeats,
            "min_sample_s": w.min_sample_s, "cold_l2": w.cold_l2,
            "spec_json": (ref or fallback).spec_json,
        }, (ref.binary or b"") if ref is not None else b"")
        self.checked = bool(self._await(_START_TIMEOUT_S)["checked"])

    def _await(self, timeout: float) -> dict[str, Any]:
        assert self.conn is not None
        try:
            if self.conn.poll(timeout):
                return receive(self.conn)[0]
        except (EOFError, OSError):
            pass
        reason = self.death_reason() if not self.alive else "no answer in time"
        self.kill()
        raise WorkerDied(f"device worker failed to start: {reason}")

    def submit(self, slot: int, config: Config, build: BuildOutcome, timeout_s: float) -> None:
        if not self.alive:
            try:
                self.start(build)
            except WorkerDied:
                if self.reference is None:
                    raise
                log.warning("the reference config fails on the device; measuring without it")
                self.reference = None
                self.start(build)
        assert self.conn is not None and build.binary is not None
        self.job = (slot, config, build)
        self.deadline = time.monotonic() + timeout_s
        send(self.conn, {"op": "measure", "spec_json": build.spec_json}, build.binary)

    def collect(self) -> Measurement:
        """The answer to the job in flight (called when the pipe is readable)."""
        assert self.job is not None and self.conn is not None
        _, config, build = self.job
        self.job = None
        try:
            answer = receive(self.conn)[0]
        except (EOFError, OSError):
            self.process.join(5)
            reason = self.death_reason()
            self.kill()
            return Measurement(config, "crash", None, reason, build.features, self.device,
                               build.identity)
        if answer.get("fatal"):
            self.kill()
        return Measurement(config, answer["status"], answer.get("time_s"),
                           answer.get("message", ""), build.features, self.device,
                           build.identity)

    def expire(self) -> Measurement:
        assert self.job is not None
        _, config, build = self.job
        self.job = None
        self.kill()
        return Measurement(config, "timeout", None, "no result within the time limit",
                           build.features, self.device, build.identity)

    def death_reason(self) -> str:
        code = self.process.exitcode if self.process is not None else None
        if code is None:
            return "the device worker stopped answering"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"the device worker died ({name})"
        return f"the device worker exited with status {code}"

    def kill(self) -> None:
        if self.process is not None:
            if self.process.is_alive():
                self.process.kill()
            self.process.join(10)
        if self.conn is not None:
            self.conn.close()
        self.process = self.conn = None

    def stop(self) -> None:
        if self.alive and self.conn is not None:
            try:
                send(self.conn, {"op": "stop"})
                self.process.join(5)
            except OSError:
                pass
        self.kill()


class Measurer:
    """Builds and times configs of one workload; use as a context manager."""

    def __init__(
        self,
        workload: Workload,
        *,
        parallel: int | None = None,
        devices: Sequence[int | None] | None = None,
        timeout_s: float = 10.0,
        executor: str = "process",
        reference_config: Config | None = None,
    ) -> None:
        self.workload = workload
        self.timeout_s = timeout_s
        self.parallel = max(1, parallel or (mp.cpu_count() or 1))
        self._executor_kind = executor
        self._pool: cf.Executor = make_executor(executor, self.parallel)
        self._deaths_in_a_row = 0
        if devices is None:
            devices = _all_devices(workload.target)
        reference = None
        if reference_config is not None:
            reference = self._build([reference_config], emit_binary=True)[0]
            if not reference.ok:
                log.warning("the reference config %s does not build (%s); results are "
                            "checked only against a companion reference", reference_config,
                            reference.message.splitlines()[0] if reference.message else "")
                reference = None
        self.workers = [DeviceWorker(workload, d, reference) for d in devices]

    def __enter__(self) -> Measurer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)

    @property
    def pool(self) -> cf.Executor:
        """The build pool (for other build work of this run, such as revalidation)."""
        return self._pool

    @property
    def device(self) -> str:
        return next((w.device for w in self.workers if w.device), "")

    @property
    def checked(self) -> bool:
        """Whether results are compared with a reference."""
        return any(w.checked for w in self.workers)

    # -- building

    def _jobs(self, configs: Sequence[Config], emit_binary: bool) -> list[BuildJob]:
        w = self.workload
        return [BuildJob(w.source_text, w.filename, w.kernel, dict(c), w.target, w.shapes,
                         emit_binary) for c in configs]

    def _build(self, configs: Sequence[Config], *, emit_binary: bool) -> list[BuildOutcome]:
        jobs = self._jobs(configs, emit_binary)
        futures = [self._pool.submit(build_candidate, j) for j in jobs]
        return [self._result(f, j) for f, j in zip(futures, jobs, strict=True)]

    def _result(self, future: cf.Future[BuildOutcome], job: BuildJob) -> BuildOutcome:
        """The build's outcome. When its process died (the pool breaks, and every build
        still in it fails with it), the build is tried again alone in a fresh pool: only
        a config that kills that one too is recorded as a compile error, and
        DEATHS_BEFORE_GIVING_UP such deaths in a row raise BuildProcessesDie."""
        try:
            outcome = future.result()
        except BrokenProcessPool:
            return self._retry_alone(job)
        except Exception as exc:
            return BuildOutcome("compile_error", f"{type(exc).__name__}: {exc}")
        self._deaths_in_a_row = 0
        return outcome

    def _retry_alone(self, job: BuildJob) -> BuildOutcome:
        self._restart_pool()
        try:
            outcome = self._pool.submit(build_candidate, job).result()
            self._deaths_in_a_row = 0
            return outcome
        except BrokenProcessPool:
            self._restart_pool()
            self._deaths_in_a_row += 1
            if self._deaths_in_a_row >= DEATHS_BEFORE_GIVING_UP:
                raise BuildProcessesDie(
                    f"{self._deaths_in_a_row} builds in a row killed their process, each "
                    "again when retried alone; the build processes cannot run (a script "
                    "that tunes must guard its entry point with `if __name__ == "
                    "'__main__':`, since they are spawned and import it)") from None
            return BuildOutcome("compile_error", "the compiler process died (twice)")

    def _restart_pool(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = make_executor(self._executor_kind, self.parallel)

    def analyze(self, configs: Sequence[Config]) -> list[BuildOutcome]:
        """Lower each config (no code generation): its features, or why it cannot run."""
        return self._build(configs, emit_binary=False)

    # -- measuring

    def measure(self, configs: Sequence[Config]) -> list[Measurement]:
        """Build and time ``configs``; one :class:`Measurement` each, in order."""
        jobs = self._jobs(configs, emit_binary=True)
        futures = {self._pool.submit(build_candidate, job): i for i, job in enumerate(jobs)}
        results: list[Measurement | None] = [None] * len(configs)
        ready: deque[tuple[int, BuildOutcome]] = deque()
        pending = set(futures)
        while pending or ready or any(w.job for w in self.workers):
            done = {f for f in pending if f.done()}
            for f in done:
                slot = futures[f]
                build = self._result(f, jobs[slot])
                if build.ok:
                    ready.append((slot, build))
                else:
                    results[slot] = Measurement(configs[slot], build.status, None,
                                                build.message, build.features,
                                                build=build.identity)
            pending -= done
            for w in self.workers:
                if w.job is None and ready:
                    slot, build = ready.popleft()
                    try:
                        w.submit(slot, configs[slot], build, self.timeout_s)
                    except WorkerDied as exc:
                        results[slot] = Measurement(configs[slot], "crash", None, str(exc),
                                                    build.features, build=build.identity)
            busy = [w for w in self.workers if w.job is not None]
            if not busy:
                if pending:
                    cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                continue
            now = time.monotonic()
            wait_s = max(0.0, min(w.deadline for w in busy) - now)
            if pending:
                wait_s = min(wait_s, 0.02)
            readable = wait([w.conn for w in busy if w.conn is not None], timeout=wait_s)
            now = time.monotonic()
            for w in busy:
                slot = w.job[0] if w.job is not None else -1
                if w.conn in readable:
                    results[slot] = w.collect()
                elif now >= w.deadline:
                    results[slot] = w.expire()
        return [r for r in results if r is not None]


def _all_devices(target: str) -> list[int | None]:
    """One worker per GPU of the host for a CUDA target; one for the CPU."""
    if not target.startswith("cuda"):
        return [None]
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:
        count = 0
    return list(range(count)) or [0]
