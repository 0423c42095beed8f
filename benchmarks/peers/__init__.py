"""Peers are optional: a package that is not installed (or cannot see a GPU) leaves its column
out of the results instead of failing the run."""

from __future__ import annotations

import importlib
from types import ModuleType


def optional_module(name: str) -> ModuleType | None:
    """The module, or None when it cannot be imported."""
    try:
        return importlib.import_module(name)
    except Exception:  # ImportError, or a package that fails while initializing
        return None


def torch_cuda() -> ModuleType | None:
    """PyTorch, when it is installed and sees a CUDA device."""
    torch = optional_module("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch


def triton_kernels() -> ModuleType | None:
    """The Triton peer kernels, when Triton and PyTorch with CUDA are both there."""
    if torch_cuda() is None or optional_module("triton") is None:
        return None
    return optional_module("benchmarks.peers.triton_kernels")
