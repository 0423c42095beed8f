"""What the suites run on: whether there is a GPU, how to describe it, how large its caches are."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, or no device: all mean "no GPU here"
        return False


def _cuda_version(code: int) -> str:
    return f"{code // 1000}.{code % 1000 // 10}"


def describe_gpu() -> str:
    """Device name, driver and runtime versions, memory size."""
    import cupy

    runtime = cupy.cuda.runtime
    props = runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    memory_gib = props["totalGlobalMem"] / 2**30
    return (f"{name}, {memory_gib:.0f} GiB, CUDA driver {_cuda_version(runtime.driverGetVersion())}"
            f", runtime {_cuda_version(runtime.runtimeGetVersion())}, CuPy {cupy.__version__}")


def gpu_l2_bytes() -> int:
    import cupy

    return int(cupy.cuda.Device().attributes["L2CacheSize"])


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def describe_cpu() -> str:
    """CPU model, cores, memory, and the NumPy it was compared with."""
    import numpy

    memory = _memory_bytes()
    memory_text = f", {memory / 2**30:.0f} GiB" if memory else ""
    return (f"{_cpu_model()}, {os.cpu_count()} cores{memory_text}, {platform.system()}, "
            f"NumPy {numpy.__version__}")


def _parse_cache_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def cpu_cache_bytes() -> int:
    """The largest CPU cache of core 0 (the last level), or 64 MiB when the OS does not say."""
    caches = Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size")
    sizes = [_parse_cache_size(path.read_text()) for path in caches]
    return max(sizes, default=64 * 2**20)


def thread_environment() -> str:
    """The threading variables that change NumPy's and the CPU backend's speed."""
    names = sorted(n for n in os.environ if n.startswith("OPENBLAS_")) + [
        n for n in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if n in os.environ]
    if not names:
        return "no OPENBLAS_*/OMP_NUM_THREADS/MKL_NUM_THREADS variables set"
    return "set: " + ", ".join(f"{n}={os.environ[n]}" for n in names)
