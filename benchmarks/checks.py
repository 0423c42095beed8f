"""Output checks run before anything is timed: poison the outputs, run once, compare with a
float64 reference. Works on NumPy arrays and on any CUDA array CuPy can view (CuPy, PyTorch).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tegula.runtime.arrays import array_module


class CheckFailed(AssertionError):
    """An implementation's output is wrong; its time must not be reported."""


def as_array(array: Any) -> Any:
    """`array` as a NumPy or CuPy array, without a copy; a PyTorch tensor as a float32 CuPy
    copy (bf16 has no NumPy or CuPy dtype)."""
    if type(array).__module__.split(".", 1)[0] == "torch":
        import cupy

        return cupy.from_dlpack(array.float())
    return array_module(array).asarray(array)


def poison(outputs: Iterable[Any]) -> None:
    """Fill outputs with NaN, so an element the code under test never writes fails the check."""
    for out in outputs:
        out.fill(float("nan"))


def random_array(xp: Any, shape: tuple[int, ...], seed: int) -> Any:
    """Fresh standard-normal float32 data (never zeros), on the host or device per `xp`."""
    return xp.random.default_rng(seed).standard_normal(shape, dtype=xp.float32)


@dataclass(frozen=True)
class Error:
    relative: float  # ||out - ref|| / ||ref||
    max_abs: float

    def __str__(self) -> str:
        return f"rel err {self.relative:.1e}, max abs err {self.max_abs:.1e}"


def compare(out: Any, reference: Any, tolerance: float) -> Error:
    """Check `out` against a float64 reference; raise CheckFailed naming what is wrong."""
    out = as_array(out)
    xp = array_module(out)
    if tuple(out.shape) != tuple(reference.shape):
        raise CheckFailed(f"shape {tuple(out.shape)}, expected {tuple(reference.shape)}")
    if not bool(xp.isfinite(out).all()):
        raise CheckFailed("output has NaN or infinity (an element left unwritten?)")
    diff = out.astype(xp.float64) - reference
    error = Error(
        relative=float(xp.linalg.norm(diff) / xp.linalg.norm(reference)),
        max_abs=float(xp.abs(diff).max()),
    )
    if not error.relative <= tolerance:
        raise CheckFailed(f"{error} exceeds tolerance {tolerance:.0e}")
    return error
