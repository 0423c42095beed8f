"""Swizzle functions for shared memory, and the bank-conflict count they exist to lower.

``Swizzle(bits, base, shift)`` is CuTe's ``Swizzle<B,M,S>``: it XORs ``B`` bits taken from
position ``M + S`` of an offset into the ``B`` bits at position ``M``::

    o ↦ o ^ ((o & (((1 << B) - 1) << (M + S))) >> S)

(a negative ``S`` moves bits the other way). It is applied *after* a layout, so a swizzled
layout is ``Sw<B,M,S> o layout``: :class:`SwizzledLayout`. A swizzle is an involution, so it
is its own inverse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from .inttuple import LayoutError, as_int
from .layout import Layout

__all__ = ["BANK_BYTES", "NUM_BANKS", "Swizzle", "SwizzledLayout", "bank_conflicts"]

NUM_BANKS = 32
BANK_BYTES = 4


@dataclass(frozen=True)
class Swizzle:
    """``Swizzle<bits, base, shift>``: XOR ``bits`` bits from ``base + shift`` into ``base``."""

    bits: int
    base: int
    shift: int

    def __post_init__(self) -> None:
        if self.bits < 0 or self.base < 0:
            raise LayoutError(f"{self}: bits and base must be non-negative")
        if abs(self.shift) < self.bits:
            # Source and destination bit ranges would overlap: not an involution.
            raise LayoutError(f"{self}: |shift| must be at least bits")

    @property
    def source_mask(self) -> int:
        """The bits that are read (``yyy`` in CuTe)."""
        return ((1 << self.bits) - 1) << (self.base + max(0, self.shift))

    def __call__(self, offset: int) -> int:
        offset = as_int(offset, "offset")
        return offset ^ self._moved(offset & self.source_mask)

    def apply(self, offsets: np.ndarray) -> np.ndarray:
        """The swizzle of every offset in an integer array."""
        return offsets ^ self._moved(offsets & self.source_mask)

    def _moved(self, bits):  # int or array: shift right by `shift` (left when negative)
        return bits >> self.shift if self.shift >= 0 else bits << -self.shift

    def inverse(self) -> Swizzle:
        return self

    def __str__(self) -> str:
        return f"Sw<{self.bits},{self.base},{self.shift}>"


@dataclass(frozen=True)
class SwizzledLayout:
    """``swizzle ∘ layout``: the layout's index, then swizzled. Written
    ``Sw<3,4,3> o (8,64):(64,1)``."""

    swizzle: Swizzle
    layout: Layout

    def __call__(self, *coord: object) -> int:
        return self.swizzle(self.layout(*coord))

    @property
    def shape(self):
        return self.layout.shape

    @property
    def size(self) -> int:
        return self.layout.size

    @property
    def rank(self) -> int:
        return self.layout.rank

    @property
    def cosize(self) -> int:
        return int(self.values().max()) + 1

    def values(self) -> np.ndarray:
        """The index of every ``i`` in ``range(size)``, as a NumPy array."""
        return self.swizzle.apply(self.layout.values())

    def __str__(self) -> str:
        return f"{self.swizzle} o {self.layout}"


def bank_conflicts(
    layout_fn: Callable[..., int],
    thread_coords: Iterable[object],
    element_bytes: int,
    access_bytes: int | None = None,
) -> int:
    """The worst-case bank-conflict degree of one warp's shared-memory access.

    Thread ``i`` accesses ``thread_coords[i]``; ``layout_fn`` maps it to an offset in
    elements of ``element_bytes`` bytes, and the thread reads ``access_bytes`` bytes from
    there (default: one element; 8 or 16 for vector accesses). Shared memory has 32 banks of
    4 bytes; threads reading the same 4-byte word are served together. Accesses of 8 or 16
    bytes are served in phases of 16 or 8 threads, as on NVIDIA GPUs. Returns the largest
    number of distinct words one bank must serve in one phase: 1 is conflict-free, 32 a
    fully serialized warp.
    """
    access = element_bytes if access_bytes is None else access_bytes
    if element_bytes not in (1, 2, 4, 8, 16) or access not in (1, 2, 4, 8, 16):
        raise LayoutError(
            f"bank_conflicts: element of {element_bytes} bytes, access of {access} bytes: "
            "each must be 1, 2, 4, 8 or 16"
        )
    addresses = [as_int(layout_fn(c), "offset") * element_bytes for c in thread_coords]
    if not addresses:
        raise LayoutError("bank_conflicts: no thread coordinates given")
    words_per_access = max(1, access // BANK_BYTES)
    threads_per_phase = NUM_BANKS // words_per_access
    worst = 0
    for start in range(0, len(addresses), threads_per_phase):
        words_by_bank: dict[int, set[int]] = {}
        for address in addresses[start : start + threads_per_phase]:
            for w in range(words_per_access):
                word = address // BANK_BYTES + w
                words_by_bank.setdefault(word % NUM_BANKS, set()).add(word)
        worst = max(worst, max(len(words) for words in words_by_bank.values()))
    return worst
