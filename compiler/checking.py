"""Run DSL kernels on random inputs and check them against a NumPy reference.

A ``.tg`` file may have a companion Python file of the same stem that says how to test its
kernels::

    KERNELS = {
        "softmax": {
            "sizes": {"M": 300, "N": 1000},          # default symbol values (ragged on purpose)
            "inputs": make_inputs,                   # (rng, **sizes) -> {param: array/scalar}
            "reference": reference,                  # (**inputs) -> {output param: array}
            "tolerance": {"rtol": 1e-5, "atol": 1e-6},
            "constants": {"BN": 256},                # optional compile-time parameters
        },
    }

An entry is keyed by its kernel's name, or checks one kernel at given constants under a
name of its own: a kernel generic over dtypes gets an entry per type it is checked at::

    "quant_gemm_w[i2]": {"kernel": "quant_gemm_w", "constants": {"WT": "i2"}, ...},

``tegula run``, the test suite and the quick-start job all go through :func:`check_file`.
Inputs are fresh random numbers each run and every output is poisoned (NaN) before the
call, so an element the kernel forgets to write fails the check.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from tegula.ir.target import Target
from tegula.runtime.arrays import Reinterpreted, array_module, dtype_from_numpy, reinterpret

from .api import compile as compile_source
from .targets import resolve_target


@dataclass(frozen=True)
class CheckResult:
    file: str
    kernel: str
    target: str
    sizes: dict[str, int]
    max_abs_error: float | None  # None: no reference to compare with
    max_rel_error: float | None
    passed: bool | None
    median_ms: float
    compile_s: float
    message: str = ""


def load_companion(tg_path: Path) -> ModuleType | None:
    py = tg_path.with_suffix(".py")
    if not py.exists():
        return None
    spec = importlib.util.spec_from_file_location(f"tegula_example_{tg_path.stem}", py)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _to_device(value: Any, target: Target) -> Any:
    if target.is_cuda and isinstance(value, np.ndarray):
        import cupy

        held = dtype_from_numpy(value.dtype)
        if held is not None and not _cupy_holds(value.dtype):  # e8m0: pass its bytes, typed
            return reinterpret(cupy.asarray(value.view(f"u{value.itemsize}")), held)
        return cupy.asarray(value)
    return value


@functools.cache
def _cupy_holds(np_dtype: np.dtype) -> bool:
    import cupy

    try:
        cupy.empty(0, np_dtype)
    except (TypeError, ValueError):
        return False
    return True


def _to_host(value: Any) -> np.ndarray:
    if isinstance(value, Reinterpreted):
        return _to_host(value.array).view(value.dtype.to_numpy())
    if hasattr(value, "get"):
        return value.get()
    return np.asarray(value)


def _time_call(fn, target: Target, repeats: int) -> float:
    """Median wall time of ``fn()`` in ms (device-synchronized on CUDA)."""
    times = []
    sync = None
    if target.is_cuda:
        import cupy

        sync = cupy.cuda.get_current_stream().synchronize
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def compare(out: Any, ref: Any, rtol: float, atol: float) -> tuple[float, float, bool]:
    """(max abs error, max error relative to the largest reference magnitude, within
    tolerance) of ``out`` against ``ref``. Computed where ``out`` lives: device arrays are
    compared on the device, so a large check costs no copy to the host."""
    xp = array_module(out)
    out64 = out.astype(xp.float64)
    ref64 = xp.asarray(ref, dtype=xp.float64)
    if out64.shape != ref64.shape:
        return math.inf, math.inf, False
    if not bool(xp.all(xp.isfinite(out64) == xp.isfinite(ref64))):
        return math.inf, math.inf, False
    finite = xp.isfinite(ref64)
    diff = xp.abs(out64[finite] - ref64[finite])
    max_abs = float(diff.max()) if diff.size else 0.0
    # Relative to the largest reference magnitude: elementwise ratios blow up where the
    # reference is near zero and say nothing there (the absolute tolerance covers those).
    scale = float(xp.abs(ref64[finite]).max()) if diff.size else 0.0
    max_rel = max_abs / scale if scale > 0 else max_abs
    ok = bool(xp.all(diff <= atol + rtol * xp.abs(ref64[finite])))
    return max_abs, max_rel, ok


def entry_kernel(entry: str, config: Mapping[str, Any]) -> str:
    """The kernel a companion entry checks: its ``kernel``, else the entry's own name."""
    return str(config.get("kernel", entry))


def check_kernel(
    tg_path: Path,
    kernel: str,
    config: Mapping[str, Any],
    target: Target,
    sizes: Mapping[str, int] | None = None,
    *,
    repeats: int = 5,
    seed: int | None = None,
) -> CheckResult:
    """Check the companion entry ``kernel`` (a kernel's name, or an entry naming its kernel
    in ``config["kernel"]``); the result carries the entry's name."""
    rng = np.random.default_rng(seed)
    use_sizes = dict(config.get("sizes", {}))
    # A size given for the whole file applies to the kernels that have that symbol.
    use_sizes.update({k: v for k, v in (sizes or {}).items() if k in use_sizes})
    name = entry_kernel(kernel, config)
    start = time.perf_counter()
    module = compile_source(tg_path, target, kernels=[name], **config.get("constants", {}))
    compile_s = time.perf_counter() - start
    k = module[name]
    inputs = config["inputs"](rng, **use_sizes)
    device_args = {name: _to_device(v, target) for name, v in inputs.items()}
    k(**device_args)
    reference = config.get("reference")
    max_abs = max_rel = None
    passed: bool | None = None
    if reference is not None:
        expected = reference(**inputs)
        tol = config.get("tolerance", {"rtol": 1e-5, "atol": 1e-6})
        max_abs, max_rel, passed = 0.0, 0.0, True
        for name, ref in expected.items():
            a, r, ok = compare(_to_host(device_args[name]), ref, tol["rtol"], tol["atol"])
            max_abs, max_rel, passed = max(max_abs, a), max(max_rel, r), passed and ok
    median_ms = _time_call(lambda: k(**device_args), target, repeats)
    return CheckResult(
        str(tg_path), kernel, str(target), use_sizes, max_abs, max_rel, passed, median_ms, compile_s
    )


def random_inputs(spec: Any, sizes: Mapping[str, int], rng: np.random.Generator) -> dict[str, Any]:
    """Arguments for a kernel with no companion: fresh random values of the header's shapes
    (never zeros), the outputs poisoned, sub-byte tensors as random packed bytes."""
    from tegula.ir.packing import packed_extent

    inputs: dict[str, Any] = {}
    for p in spec.params:
        dt = p.element_type
        if not p.is_tensor:
            inputs[p.name] = (
                float(rng.uniform(0.5, 1.5)) if dt.is_float else int(rng.integers(1, 8))
            )
            continue
        missing = [d for d in p.shape if isinstance(d, str) and d not in sizes]
        if missing:
            raise ValueError(
                f"parameter {p.name!r} needs size {missing[0]}: give --size {missing[0]}=<value>"
            )
        shape = tuple(sizes[d] if isinstance(d, str) else d for d in p.shape)
        if dt.is_subbyte or dt.numpy is None:
            packed = (*shape[:-1], packed_extent(shape[-1], dt.bits))
            inputs[p.name] = rng.integers(0, 256, size=packed, dtype=np.uint8)
        elif p.writes and dt.is_float:
            inputs[p.name] = np.full(shape, np.nan, dtype=dt.to_numpy())
        elif dt.is_float:
            inputs[p.name] = rng.standard_normal(shape).astype(dt.to_numpy())
        elif dt.is_bool:
            inputs[p.name] = rng.random(shape) < 0.5
        else:
            inputs[p.name] = rng.integers(1, 16, size=shape).astype(dt.to_numpy())
    return inputs


def run_unchecked(
    tg_path: Path,
    target: Target,
    sizes: Mapping[str, int],
    *,
    repeats: int = 5,
    seed: int | None = None,
) -> list[CheckResult]:
    """Every kernel of a file without a companion: random inputs of the given sizes, run
    and timed, nothing to compare with."""
    from .specialize import SpecializedKernel

    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    module = compile_source(tg_path, target)
    compile_s = time.perf_counter() - start
    results = []
    for name in module:
        kernel = module[name]
        if isinstance(kernel, SpecializedKernel):
            missing = [s for s in kernel.symbols if s not in sizes]
            if missing:
                raise ValueError(
                    f"kernel {name} needs size {missing[0]}: give --size {missing[0]}=<value>"
                )
            kernel = kernel.compile_for(**{s: sizes[s] for s in kernel.symbols})
        inputs = random_inputs(kernel.spec, sizes, rng)
        args = {n: _to_device(v, target) for n, v in inputs.items()}
        kernel(**args)
        used = {s: sizes[s] for s in kernel.spec.symbols if s in sizes}
        results.append(
            CheckResult(
                str(tg_path),
                name,
                str(target),
                used,
                None,
                None,
                None,
                _time_call(lambda k=kernel, a=args: k(**a), target, repeats),
                compile_s,
            )
        )
    return results


def check_file(
    tg_path: str | Path,
    target: str | Target = "auto",
    sizes: Mapping[str, int] | None = None,
    *,
    repeats: int = 5,
    seed: int | None = None,
) -> list[CheckResult]:
    """Compile and run every kernel a ``.tg`` file's companion describes, checking each
    against its reference; a file without a companion runs on random inputs of ``sizes``."""
    path = Path(tg_path)
    tgt = resolve_target(target)
    companion = load_companion(path)
    if companion is None or not hasattr(companion, "KERNELS"):
        return run_unchecked(path, tgt, dict(sizes or {}), repeats=repeats, seed=seed)
    return [
        check_kernel(path, name, cfg, tgt, sizes, repeats=repeats, seed=seed)
        for name, cfg in companion.KERNELS.items()
    ]


def example_files(root: str | Path) -> list[Path]:
    """A ``.tg`` file itself, or the ``.tg`` files of a folder that have companions."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(p for p in root.glob("*.tg") if p.with_suffix(".py").exists())
