"""Run in a fresh process by the compile suite: time `tg.compile` of examples/softmax.tg until the
kernel has run once, and optionally a bare NVRTC compile of the CUDA C tegula generated.

Importing the packages, creating the CUDA context and loading NVRTC happen before the clock
starts: they are paid once per process by any CUDA program, not by the compiler. The cache
folders come from the environment (TEGULA_CACHE_DIR, CUPY_CACHE_DIR), so the parent decides
whether this run is cold or a cache hit. Prints one line, `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cupy
import numpy as np

import tegula as tg

from ..checks import compare, poison, random_array
from ..kernels import EXAMPLES
from .formulas import softmax

SOURCE_FILE = EXAMPLES / "softmax.tg"
SHAPE = (256, 256)
NVRTC_REPEATS = 3


def _nvrtc_include_dirs() -> list[Path]:
    """The CUDA headers the nvidia-cuda-runtime wheel ships (cu13 or cu12 layout)."""
    try:
        import nvidia
    except ImportError:
        return []
    candidates = [Path(p) / sub for p in nvidia.__path__ for sub in ("cu13/include",
                                                                      "cuda_runtime/include")]
    return [c for c in candidates if c.is_dir()]


def _check(result: tuple[Any, ...]) -> Any:
    if result[0] != 0:
        raise RuntimeError(f"NVRTC call failed: {result[0]}")
    return result[1:]


def nvrtc_compile(source: str, arch: str) -> float:
    """Seconds for one bare NVRTC compile of `source` to a cubin for `arch` (e.g. "sm_90")."""
    from cuda.bindings import nvrtc

    options = [f"--gpu-architecture={arch}".encode()]
    options += [f"--include-path={d}".encode() for d in _nvrtc_include_dirs()]
    start = time.perf_counter()
    (program,) = _check(nvrtc.nvrtcCreateProgram(source.encode(), b"kernel.cu", 0, [], []))
    try:
        (status,) = nvrtc.nvrtcCompileProgram(program, len(options), options)
        if status != 0:
            (log_size,) = _check(nvrtc.nvrtcGetProgramLogSize(program))
            log = b" " * log_size
            _check(nvrtc.nvrtcGetProgramLog(program, log))
            raise RuntimeError(f"NVRTC could not compile tegula's CUDA C: "
                               f"{log.decode(errors='replace').strip()[:500]}")
        (size,) = _check(nvrtc.nvrtcGetCUBINSize(program))
        cubin = b" " * size
        _check(nvrtc.nvrtcGetCUBIN(program, cubin))
    finally:
        nvrtc.nvrtcDestroyProgram(program)
    return time.perf_counter() - start


def _phases(kernel: Any) -> dict[str, float] | None:
    """tegula's own per-phase compile times, where the kernel reports them."""
    timings = getattr(kernel, "timings", None)
    if isinstance(timings, Mapping):
        return {str(k): float(v) for k, v in timings.items()}
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nvrtc", action="store_true", help="also time a bare NVRTC compile")
    args = parser.parse_args()

    arch = "sm_" + cupy.cuda.Device().compute_capability
    x = random_array(cupy, SHAPE, 0)
    y = cupy.empty_like(x)
    poison([y])
    cupy.cuda.Device().synchronize()  # the CUDA context exists from here on
    nvrtc_error = None
    if args.nvrtc:
        try:
            nvrtc_compile('extern "C" __global__ void warm() {}', arch)  # load NVRTC
        except Exception as error:  # report tegula's time even where NVRTC cannot be timed
            nvrtc_error = f"{type(error).__name__}: {error}"

    # The compiler's own modules load once per process, like the packages above; their import
    # time is reported on its own, not counted as compile time.
    import_start = time.perf_counter()
    import tegula.codegen.cuda
    import tegula.compiler.api
    import tegula.compiler.frontend  # imported on a cache miss only (a hit needs no front end)
    import tegula.compiler.parse_tables
    import tegula.compiler.parser
    import tegula.ir.verify_tile
    import tegula.passes.pipeline
    import tegula.runtime.cuda_launch  # noqa: F401

    import_s = time.perf_counter() - import_start

    start = time.perf_counter()
    kernel = tg.compile(SOURCE_FILE, target="cuda")["softmax"]
    kernel(x, y)
    cupy.cuda.Device().synchronize()
    ready_s = time.perf_counter() - start

    error = compare(y, softmax(x.astype(np.float64)), 1e-5)
    result: dict[str, Any] = {"ready_s": ready_s, "check": str(error), "phases": _phases(kernel),
                              "import_s": import_s}
    if args.nvrtc and nvrtc_error is None:
        source = kernel.source
        result["nvrtc_s"] = statistics.median(
            nvrtc_compile(source, arch) for _ in range(NVRTC_REPEATS))
    elif nvrtc_error is not None:
        result["nvrtc_error"] = nvrtc_error
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
