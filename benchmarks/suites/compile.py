"""Compile time and launch overhead.

- cold compile of examples/softmax.tg for the GPU, in a fresh process with empty caches, next
  to a bare NVRTC compile of the CUDA C tegula generated: the difference is tegula's overhead;
- a cache hit in a new process (same TEGULA_CACHE_DIR): tg.compile until the kernel has run;
- Python-side launch overhead: host time per call over many back-to-back launches of a tiny
  vector add (the GPU idles between them), beside CuPy's RawKernel, PyTorch and Triton.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .. import devices
from ..checks import compare, poison, random_array
from ..compare import TEGULA, failure_reason
from ..harness import Call, Settings, Stats, bench_host
from ..kernels import REPO_ROOT, example_kernel
from ..peers import torch_cuda, triton_kernels
from ..report import summary_line
from ..schema import Row
from . import Suite

LAUNCH_ELEMENTS = 1024
COLD_TOTAL = "cold compile softmax.tg to first run"
COLD_OVERHEAD = "tegula overhead beyond NVRTC (softmax.tg)"
CACHE_HIT = "cache hit in a new process (softmax.tg)"
CHILD_TIMEOUT_S = 600

RAW_VECTOR_ADD = r"""
extern "C" __global__ void vector_add(const float* x, const float* y, float* z, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) z[i] = x[i] + y[i];
}
"""


def run_child(tegula_cache: Path, cupy_cache: Path, *, nvrtc: bool) -> dict[str, Any]:
    """Run compile_child in a new process with the given cache folders; return its result."""
    env = os.environ | {"TEGULA_CACHE_DIR": str(tegula_cache), "CUPY_CACHE_DIR": str(cupy_cache)}
    command = [sys.executable, "-m", "benchmarks.suites.compile_child"]
    proc = subprocess.run(command + (["--nvrtc"] if nvrtc else []), cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"compile probe exited {proc.returncode}: " + " | ".join(tail))
    return json.loads(lines[-1].removeprefix("RESULT "))


def compile_rows(settings: Settings) -> list[Row]:
    cold_runs = max(1, min(settings.repeats, 3))
    hit_runs = max(1, min(settings.repeats, 5))
    with tempfile.TemporaryDirectory(prefix="tegula-bench-") as scratch:
        root = Path(scratch)
        cold = [run_child(root / f"cold{i}", root / f"cupy{i}", nvrtc=True)
                for i in range(cold_runs)]
        # The last cold run left its caches filled: every later process hits them.
        last = cold_runs - 1
        hits = [run_child(root / f"cold{last}", root / f"cupy{last}", nvrtc=False)
                for _ in range(hit_runs)]
    total_ms = statistics.median(r["ready_s"] for r in cold) * 1e3
    hit_ms = statistics.median(r["ready_s"] for r in hits) * 1e3
    nvrtc_runs = [r["nvrtc_s"] for r in cold if "nvrtc_s" in r]
    nvrtc_ms = statistics.median(nvrtc_runs) * 1e3 if len(nvrtc_runs) == cold_runs else None
    overhead: dict[str, Any] = {"case": "cold/overhead", "total_ms": total_ms}
    if nvrtc_ms is None:
        overhead["notes"] = f"NVRTC not timed: {cold[-1].get('nvrtc_error', 'no figure')}"
    else:
        overhead["nvrtc_ms"] = nvrtc_ms
    phases = {"phases_s": cold[-1]["phases"]} if cold[-1]["phases"] else {}
    return [
        Row(COLD_TOTAL, "ms", False, total_ms,
            extra={"case": "cold/total", "nvrtc_ms": nvrtc_ms, "runs": cold_runs,
                   "check": cold[-1]["check"], **phases,
                   "import_ms": statistics.median(r.get("import_s", 0.0) for r in cold) * 1e3,
                   "notes": "new process, empty caches; imports (of tegula's compiler too, "
                            "reported as import_ms), CUDA context and NVRTC loading happen "
                            "before the clock starts"}),
        Row(COLD_OVERHEAD, "ms", False,
            None if nvrtc_ms is None else total_ms - nvrtc_ms, extra=overhead),
        Row(CACHE_HIT, "ms", False, hit_ms,
            extra={"case": "cache-hit", "runs": hit_runs,
                   "all_ms": [r["ready_s"] * 1e3 for r in hits]}),
    ]


def _launch_calls(x: Any, y: Any, z: Any) -> dict[str, Call]:
    """One launch of a tiny vector add per implementation that is available."""
    import cupy
    import numpy as np

    raw = cupy.RawKernel(RAW_VECTOR_ADD, "vector_add")
    n = np.int32(x.size)
    grid = ((x.size + 127) // 128,)
    calls: dict[str, Call] = {
        "CuPy": lambda: raw(grid, (128,), (x, y, z, n)),
    }
    torch = torch_cuda()
    if torch is not None:
        tx, ty, tz = (torch.from_dlpack(a) for a in (x, y, z))
        calls["PyTorch"] = lambda: torch.add(tx, ty, out=tz)
        kernels = triton_kernels()
        if kernels is not None:
            calls["Triton"] = lambda: kernels.vector_add(tx, ty, tz)
    return calls


def launch_row(settings: Settings) -> Row:
    import cupy

    x, y = (random_array(cupy, (LAUNCH_ELEMENTS,), seed) for seed in (1, 2))
    z = cupy.empty_like(x)
    reference = x.astype(cupy.float64) + y
    sync = cupy.cuda.Device().synchronize
    notes: list[str] = []
    calls: dict[str, Call] = {}
    try:
        kernel = example_kernel("vector_add.tg", "vector_add", "cuda")
        calls[TEGULA] = lambda: kernel(x, y, z)
    except Exception as error:
        notes.append(f"tegula left out: {failure_reason(error)}")
    calls |= _launch_calls(x, y, z)

    figures: dict[str, float] = {}
    timing: dict[str, dict[str, object]] = {}
    for name, call in calls.items():
        try:
            poison([z])
            call()
            sync()
            compare(z, reference, 1e-6)
            stats: Stats = bench_host([call], settings, sync=sync)
        except Exception as error:
            notes.append(f"{name} left out: {failure_reason(error)}")
            continue
        figures[name] = stats.median_s * 1e6
        timing[name] = stats.to_json()
    extra: dict[str, Any] = {"case": "launch", "timing": timing}
    if notes:
        extra["notes"] = "; ".join(notes)
    return Row(f"launch overhead per call (vector_add f32 {LAUNCH_ELEMENTS})", "us", False,
               figures.pop(TEGULA, None), peers=figures, extra=extra)


def run(settings: Settings, quick: bool) -> list[Row]:
    try:
        rows = compile_rows(settings)
    except Exception as error:  # still measure launches; say why compile rows are empty
        why = failure_reason(error)
        rows = [Row(name, "ms", False, None, extra={"case": case, "notes": why})
                for name, case in ((COLD_TOTAL, "cold/total"), (COLD_OVERHEAD, "cold/overhead"),
                                   (CACHE_HIT, "cache-hit"))]
    rows.append(launch_row(settings))
    for row in rows:
        print(summary_line(row), flush=True)
    return rows


SUITE = Suite("compile", needs_gpu=True, describe_device=devices.describe_gpu, run=run)
