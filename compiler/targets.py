"""Target strings as users write them (``cpu``, ``cuda``, ``cuda:sm_90a``, ``auto``)."""

from __future__ import annotations

from tegula.ir.target import Target, TargetError, cpu_target, cuda_target


def cuda_device_arch() -> str | None:
    """The architecture of the current CUDA device (``sm_90a`` on Hopper), or None."""
    from tegula.runtime.cuda_launch import cuda_available

    if not cuda_available():
        return None
    import cupy

    major, minor = (
        cupy.cuda.Device().compute_capability[:1],
        cupy.cuda.Device().compute_capability[1:],
    )
    cc = int(major + minor)
    # Hopper's architecture-specific features (wgmma, TMA) need the "a" variant.
    return f"sm_{cc}a" if cc in (90, 100, 120) else f"sm_{cc}"


def resolve_target(name: str | Target = "auto") -> Target:
    """``auto``: the GPU when CuPy sees one, else the CPU. ``cuda``: the GPU present.
    ``cuda:sm_XX``: a named architecture (builds without a GPU). ``cpu``: this machine."""
    if isinstance(name, Target):
        return name
    text = name.strip().lower()
    if text == "cpu":
        return cpu_target()
    if text in ("auto", "cuda"):
        arch = cuda_device_arch()
        if arch is not None:
            return cuda_target(arch)
        if text == "cuda":
            raise TargetError(
                "target 'cuda' asks for the GPU present, but CuPy sees no CUDA device; name an "
                "architecture to build without one (e.g. --target cuda:sm_90a), or use --target cpu"
            )
        return cpu_target()
    if text.startswith("cuda:"):
        return cuda_target(text.split(":", 1)[1])
    raise TargetError(f"unknown target {name!r}; expected cpu, cuda, cuda:sm_XX or auto")
