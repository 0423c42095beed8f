"""The device worker: a separate process that runs and times candidates on one device.

It is started with the ``spawn`` method and talks to the tuner over a pipe in JSON
messages, each followed by one binary blob (a compiled kernel, or nothing). A session
fixes the workload: the inputs (the example companion's ``inputs`` when the source has
one, else random numbers drawn from the kernel's header with the session's seed) and the
reference outputs (the companion's NumPy ``reference``, else the outputs of a reference
build run once). Each candidate then gets copies of the inputs with its outputs poisoned,
is run once and checked (on the device it ran on), and is timed: warm-up calls, then the
median of the repeats, each sample as many calls back to back as last ``min_sample_s``
(CUDA events on the GPU, ``perf_counter`` on the CPU); with ``cold_l2`` the calls take
turns over copies of the inputs that together exceed twice the L2.

A CUDA error from a call (an illegal address, a launch failure) leaves the context
unusable, so the worker reports ``crash`` and exits; the tuner starts a fresh one. A
segfault or a hang is the tuner's to notice: the process dies or misses its deadline.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

Message = dict[str, Any]

# A bound on the calls in one timed sample (a kernel that takes nanoseconds).
_MAX_CALLS_PER_SAMPLE = 1000
# A bound on the copies of the inputs a cold-L2 timing rotates through (tiny inputs: 4096
# copies of 64 KiB are 256 MiB, past any L2 so far).
_MAX_TIMING_SETS = 4096


def send(conn: Connection, message: Message, blob: bytes = b"") -> None:
    conn.send_bytes(json.dumps(message).encode())
    conn.send_bytes(blob)


def receive(conn: Connection) -> tuple[Message, bytes]:
    message = json.loads(conn.recv_bytes().decode())
    return message, conn.recv_bytes()


def worker_main(conn: Connection, target: str, device_index: int | None) -> None:
    """Entry point of the worker process."""
    if device_index is not None:
        # Before CuPy is imported: this process sees one GPU, as device 0.
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device_index)
    from tegula.compiler.targets import resolve_target

    tgt = resolve_target(target)
    session: _Session | None = None
    send(conn, {"op": "hello", "device": device_name(tgt)})
    while True:
        try:
            message, blob = receive(conn)
        except EOFError:
            return
        op = message["op"]
        if op == "stop":
            return
        if op == "session":
            session = _Session(tgt, message, blob)
            send(conn, {"op": "ready", "checked": session.has_reference})
        elif op == "measure":
            assert session is not None, "a measure before any session"
            result = session.measure(message, blob)
            send(conn, result)
            if result.get("fatal"):
                conn.close()
                os._exit(3)  # the CUDA context is poisoned; the tuner starts a fresh worker


def device_name(target: Any) -> str:
    """The name records carry for the device measuring on ``target``: the GPU's name and
    compute capability, or the CPU's description."""
    if target.is_cuda:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return f"{name} (sm_{props['major']}{props['minor']})"
    from tegula.runtime.cpu_jit import host_description

    return host_description()


def _is_cuda_error(exc: BaseException) -> bool:
    kind = type(exc)
    return "CUDA" in kind.__name__ or kind.__module__.startswith(("cupy_backends", "cuda"))


class _Session:
    def __init__(self, target: Any, message: Message, reference_binary: bytes) -> None:
        from tegula.runtime.spec import KernelSpec

        self.target = target
        self.warmup = int(message.get("warmup", 1))
        self.repeats = int(message.get("repeats", 5))
        self.min_sample_s = float(message.get("min_sample_s", 0.0))
        self.cold_l2 = bool(message.get("cold_l2", False)) and target.is_cuda
        spec = KernelSpec.from_json(message["spec_json"])
        shapes = {k: int(v) for k, v in message["shapes"].items()}
        rng = np.random.default_rng(int(message["seed"]))
        companion = _companion_entry(message.get("filename", ""), message["kernel"])
        tolerance = None
        reference_fn = None
        if companion is not None and "inputs" in companion:
            self.inputs = dict(companion["inputs"](rng, **shapes))
            reference_fn = companion.get("reference")
            tolerance = companion.get("tolerance")
        else:
            from tegula.compiler.checking import random_inputs

            self.inputs = random_inputs(spec, shapes, rng)
        self.outputs = [p.name for p in spec.params if p.writes]
        self._args: dict[str, Any] | None = None  # the inputs, moved to the device once
        self._input_copies: list[dict[str, Any]] | None = None  # more, for cold-L2 timing
        self.reference: dict[str, Any] | None = None  # where the candidates run
        if reference_fn is not None:
            self.reference = {k: self._on_device(np.asarray(v))
                              for k, v in reference_fn(**self.inputs).items()}
        elif reference_binary:
            run = self._run(self._kernel(spec, reference_binary))
            self.reference = run if isinstance(run, dict) else None
        self.tolerance = tolerance or _default_tolerance(spec, self.outputs)

    @property
    def has_reference(self) -> bool:
        return self.reference is not None

    def _kernel(self, spec: Any, binary: bytes) -> Any:
        from tegula.compiler.driver import make_kernel

        return make_kernel(spec, binary, self.target, "")

    def _fresh_args(self) -> dict[str, Any]:
        """The arguments with every output poisoned. Inputs are copied (and moved to the
        device) once per workload; only the outputs are refilled per call, in place, so a
        candidate costs its own run and not a copy of the whole problem."""
        if self._args is None:
            args = {}
            for name, value in self.inputs.items():
                if isinstance(value, np.ndarray):
                    value = self._on_device(value.copy())
                args[name] = value
            self._args = args
        for name in self.outputs:
            value = self._args.get(name)
            if value is not None and hasattr(value, "fill"):
                _poison(value)
        return self._args

    def _on_device(self, array: np.ndarray) -> Any:
        """``array`` where the candidates run: moved to the GPU for a CUDA target."""
        if not self.target.is_cuda:
            return array
        import cupy

        return cupy.asarray(array)

    def _run(self, kernel: Any) -> dict[str, Any] | str:
        """One checked call: copies of the outputs where they were computed (the check runs
        there too: a copy of a large output to the host costs more than the candidate's
        timing), or the error's text."""
        args = self._fresh_args()
        try:
            kernel(**args)
            self._synchronize()
        except Exception as exc:
            if _is_cuda_error(exc):
                raise
            return f"{type(exc).__name__}: {exc}"
        return {name: _copy(args[name]) for name in self.outputs}

    def measure(self, message: Message, binary: bytes) -> Message:
        from tegula.runtime.spec import KernelSpec

        try:
            kernel = self._kernel(KernelSpec.from_json(message["spec_json"]), binary)
            outputs = self._run(kernel)
            if isinstance(outputs, str):
                return {"status": "runtime_error", "message": outputs}
            mismatch = self._check(outputs)
            if mismatch:
                return {"status": "wrong_result", "message": mismatch}
            sets = itertools.cycle(self._timing_sets())
            seconds = self._time(lambda: kernel(**next(sets)))
        except Exception as exc:
            if _is_cuda_error(exc):
                return {"status": "crash", "message": f"{type(exc).__name__}: {exc}",
                        "fatal": True}
            return {"status": "runtime_error", "message": f"{type(exc).__name__}: {exc}"}
        return {"status": "ok", "time_s": seconds}

    def _check(self, outputs: dict[str, Any]) -> str:
        from tegula.compiler.checking import compare

        if self.reference is None:
            return ""
        rtol, atol = self.tolerance["rtol"], self.tolerance["atol"]
        for name, expected in self.reference.items():
            max_abs, _, ok = compare(outputs[name], expected, rtol, atol)
            if not ok:
                return f"{name} differs from the reference (max abs error {max_abs:.3g})"
        return ""

    def _timing_sets(self) -> list[dict[str, Any]]:
        """The argument sets timed calls take in turn: one, or with ``cold_l2`` enough
        copies of the inputs that a round through them reads more than twice the L2 (within
        a quarter of the free device memory; made once per workload, as the inputs are).
        Every set shares the outputs, refilled as :meth:`_fresh_args` does."""
        args = self._fresh_args()
        if not self.cold_l2:
            return [args]
        if self._input_copies is None:
            import cupy

            arrays = {name: value for name, value in args.items()
                      if name not in self.outputs and hasattr(value, "nbytes")}
            per_set = max(1, sum(int(value.nbytes) for value in arrays.values()))
            l2 = int(cupy.cuda.Device().attributes["L2CacheSize"])
            free, _ = cupy.cuda.runtime.memGetInfo()
            sets = max(1, min(math.ceil(2 * l2 / per_set), _MAX_TIMING_SETS,
                              free // 4 // per_set))
            self._input_copies = [{name: value.copy() for name, value in arrays.items()}
                                  for _ in range(sets - 1)]
        return [args] + [{**args, **copies} for copies in self._input_copies]

    def _synchronize(self) -> None:
        if self.target.is_cuda:
            import cupy

            cupy.cuda.get_current_stream().synchronize()

    def _time(self, call: Callable[[], None]) -> float:
        """Seconds per call: the median over ``repeats`` samples, each of as many calls back
        to back as make it last ``min_sample_s`` (one call where a call takes longer)."""
        for _ in range(self.warmup):
            call()
        calls = self._calls_per_sample(call)
        return max(statistics.median(self._sample(call, calls) for _ in range(self.repeats)),
                   1e-9)

    def _calls_per_sample(self, call: Callable[[], None]) -> int:
        if self.min_sample_s <= 0:
            return 1
        once = self._sample(call, 1)
        return max(1, min(_MAX_CALLS_PER_SAMPLE, math.ceil(self.min_sample_s / max(once, 1e-9))))

    def _sample(self, call: Callable[[], None], calls: int) -> float:
        """Seconds per call over ``calls`` calls back to back (CUDA events on the GPU,
        ``perf_counter`` on the CPU)."""
        self._synchronize()
        if self.target.is_cuda:
            import cupy

            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            for _ in range(calls):
                call()
            end.record()
            end.synchronize()
            return cupy.cuda.get_elapsed_time(start, end) / 1e3 / calls
        t0 = time.perf_counter()
        for _ in range(calls):
            call()
        return (time.perf_counter() - t0) / calls


def _companion_entry(filename: str, kernel: str) -> dict[str, Any] | None:
    if not filename.endswith(".tg") or not Path(filename).exists():
        return None
    from tegula.compiler.checking import load_companion

    module = load_companion(Path(filename))
    kernels = getattr(module, "KERNELS", None) if module is not None else None
    entry = kernels.get(kernel) if isinstance(kernels, dict) else None
    return entry if isinstance(entry, dict) else None


def _poison(array: Any) -> None:
    """Fill a NumPy or CuPy array with a value no correct kernel leaves behind."""
    dtype = np.dtype(array.dtype)
    if np.issubdtype(dtype, np.integer):
        array.fill(np.iinfo(dtype).min)
    elif dtype == np.bool_:
        array.fill(True)
    else:
        array.fill(np.nan)


def _copy(value: Any) -> Any:
    """A copy on the array's own device (never a view: the arguments are reused by the next
    call)."""
    return value.copy() if hasattr(value, "copy") else np.array(value, copy=True)


def _default_tolerance(spec: Any, outputs: list[str]) -> dict[str, float]:
    """Loose enough for a reordered float sum, tight enough to catch another computation."""
    bits = min((p.element_type.bits for p in spec.params if p.name in outputs
                and p.element_type.is_float), default=32)
    return {"rtol": 1e-2, "atol": 1e-2} if bits <= 16 else {"rtol": 1e-3, "atol": 1e-3}
