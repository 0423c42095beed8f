"""Targets: what a back end needs to know about the machine it generates code for."""

from __future__ import annotations

import re
from dataclasses import dataclass


class TargetError(ValueError):
    """A target string that names no target tegula knows."""


@dataclass(frozen=True)
class Target:
    """A code-generation target.

    ``kind`` is ``"cpu"`` or ``"cuda"``. For CUDA, ``arch`` is the architecture NVRTC builds
    for (``sm_80``, ``sm_90a``…). A CPU block is one thread (``warp_size == 1``): the
    whole tile lives in that thread and blocks run in parallel on the cores.
    """

    kind: str
    arch: str = ""
    warp_size: int = 32
    max_block_threads: int = 1024
    max_smem_bytes: int = 48 * 1024
    vector_bytes: int = 16

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"

    @property
    def compute_capability(self) -> int:
        m = re.fullmatch(r"sm_(\d+)a?", self.arch)
        return int(m.group(1)) if m else 0

    def __str__(self) -> str:
        return f"cuda:{self.arch}" if self.is_cuda else "cpu"

    @property
    def has_wgmma(self) -> bool:
        """Whether the target has warpgroup tensor-core instructions (sm_90a alone)."""
        return self.arch == "sm_90a"

    @property
    def has_tma(self) -> bool:
        """Whether the target has the tensor-memory accelerator (bulk tensor copies and
        transaction-counting mbarriers, sm_90 on)."""
        return self.is_cuda and self.compute_capability >= 90

    def constants(self) -> dict[str, bool | int]:
        """The compile-time names a kernel's params may use to choose per target: ``CUDA``
        (whether it builds for a GPU), ``SM`` (the compute capability, 0 on the CPU) and
        ``WGMMA`` (whether ``dot`` may run on warpgroup tensor cores)."""
        return {"CUDA": self.is_cuda, "SM": self.compute_capability, "WGMMA": self.has_wgmma}


# Shared memory a block may opt into, by compute capability (bytes).
_SMEM_OPT_IN = {
    70: 96 * 1024,
    75: 64 * 1024,
    80: 163 * 1024,
    86: 99 * 1024,
    89: 99 * 1024,
    90: 227 * 1024,
    100: 227 * 1024,
    120: 99 * 1024,
}


def cpu_target(vector_bytes: int = 64) -> Target:
    return Target(
        "cpu",
        "",
        warp_size=1,
        max_block_threads=1,
        max_smem_bytes=1 << 30,
        vector_bytes=vector_bytes,
    )


def cuda_target(arch: str) -> Target:
    m = re.fullmatch(r"sm_(\d+)(a?)", arch)
    if not m:
        raise TargetError(f"unknown CUDA architecture {arch!r}; expected e.g. sm_80 or sm_90a")
    cc = int(m.group(1))
    smem = max((v for k, v in _SMEM_OPT_IN.items() if k <= cc), default=48 * 1024)
    return Target("cuda", arch, warp_size=32, max_block_threads=1024, max_smem_bytes=smem)
