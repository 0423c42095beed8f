"""How sub-byte tensors are stored: a little-endian bitstream per row.

A tensor of logical shape ``(..., n)`` with ``b``-bit elements (``1 <= b <= 8``) is stored
row by row. Element ``j`` of a row occupies bits ``[j*b, (j+1)*b)`` of the row's bytes,
least significant bit first (bit ``k`` of a row is bit ``k % 8`` of byte ``k // 8``), and
each row is padded with zero bits to a whole number of bytes. The storage is a ``uint8``
array of shape ``(..., ceil(n*b/8))``. For ``b`` in 1, 2, 4, 8 that is the usual packing
(element 0 in the low bits of byte 0); for 3, 5, 6, 7 elements straddle bytes::

    u3, n = 5:  byte 0              byte 1
                7 6 5 4 3 2 1 0     7 6 5 4 3 2 1 0
                c c b b b a a a     . e e e d d d c      (a = element 0; '.' padding)

As a layout of the algebra the format is the map from an element's coordinate to its first
bit: ``(..., n):(..., b)`` with the row pitch ``8*ceil(n*b/8)`` bits as the stride of the
row mode (:meth:`PackedFormat.bit_layout`; ``tegula layout`` draws it).

An :class:`Interleave` permutes each group of elements of a row before packing, for the
orders fast dequantization wants: Marlin's 4-bit order keeps elements
``[0, 2, 4, 6, 1, 3, 5, 7]`` in the nibbles of each 32-bit word, so one shift-and-mask
yields two elements that end up next to each other in registers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layout import Layout, composition, make_layout

__all__ = [
    "Interleave",
    "PackedFormat",
    "PackingError",
    "elements_in",
    "marlin_interleave",
    "pack",
    "packed_extent",
    "unpack",
]


class PackingError(ValueError):
    """Codes, bytes or shapes that do not fit a packed format."""


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise PackingError(f"element width must be an int in 1..8 bits, got {bits!r}")


def packed_extent(n: int, bits: int) -> int:
    """Bytes a row of ``n`` ``bits``-bit elements takes: ``ceil(n*bits/8)``."""
    _check_bits(bits)
    return -(-n * bits // 8)


def elements_in(nbytes: int, bits: int) -> int:
    """The most ``bits``-bit elements a row of ``nbytes`` bytes holds: ``floor(8*nbytes/bits)``.

    A row of that many bytes holds any ``n`` with ``packed_extent(n, bits) == nbytes``; this
    is the largest (for ``bits`` dividing 8 and no padding, the only one)."""
    _check_bits(bits)
    return 8 * nbytes // bits


@dataclass(frozen=True)
class Interleave:
    """A permutation of each group of ``layout.size`` consecutive elements of a row,
    applied before packing: element ``i`` of a group is stored in slot ``layout(i)``.

    ``layout`` must be a bijection onto ``range(layout.size)``."""

    layout: Layout

    def __post_init__(self) -> None:
        slots = self.layout.values()
        if not np.array_equal(np.sort(slots), np.arange(self.layout.size)):
            raise PackingError(
                f"interleave layout {self.layout} is not a permutation of "
                f"0..{self.layout.size - 1} (it gives {slots.tolist()})"
            )

    @property
    def group(self) -> int:
        return self.layout.size

    def slot_of(self, n: int) -> np.ndarray:
        """For a row of ``n`` elements, the storage slot of each element."""
        if n % self.group:
            raise PackingError(
                f"interleave {self.layout} permutes groups of {self.group}; a row of {n} "
                "elements is not a whole number of groups"
            )
        within = self.layout.values()
        starts = np.arange(0, n, self.group, dtype=np.int64)
        return (starts[:, None] + within[None, :]).reshape(-1)

    def order(self) -> tuple[int, ...]:
        """The element held by each slot of a group (the inverse permutation)."""
        return tuple(int(i) for i in np.argsort(self.layout.values()))


def marlin_interleave(bits: int = 4) -> Interleave:
    """Marlin's order within each 32-bit word: for 4-bit elements, slots hold elements
    ``[0, 2, 4, 6, 1, 3, 5, 7]`` (the layout ``(2,4):(4,1)``); for 8-bit ones
    ``[0, 2, 1, 3]`` (``(2,2):(2,1)``)."""
    if bits == 4:
        return Interleave(Layout((2, 4), (4, 1)))
    if bits == 8:
        return Interleave(Layout((2, 2), (2, 1)))
    raise PackingError(f"Marlin interleaves 4- and 8-bit elements, not {bits}-bit ones")


@dataclass(frozen=True)
class PackedFormat:
    """``bits``-bit elements stored as this module describes, optionally interleaved."""

    bits: int
    interleave: Interleave | None = None

    def __post_init__(self) -> None:
        _check_bits(self.bits)
        if self.interleave is not None and (self.interleave.group * self.bits) % 8:
            raise PackingError(
                f"an interleave group of {self.interleave.group} {self.bits}-bit elements "
                "does not fill whole bytes"
            )

    def storage_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The ``uint8`` array shape that stores a tensor of logical ``shape``."""
        shape = tuple(shape)
        if not shape:
            raise PackingError("a packed tensor has at least one dimension")
        return (*shape[:-1], packed_extent(shape[-1], self.bits))

    def bit_layout(self, shape: tuple[int, ...]) -> Layout:
        """The layout from an element's coordinate (row-major ``shape``) to its first bit
        in the storage: ``(..., n):(..., bits)`` with the rows at the byte-padded pitch, the
        last mode permuted by the interleave where there is one."""
        shape = tuple(shape)
        storage = self.storage_shape(shape)
        n = shape[-1]
        row = Layout(n, self.bits)
        if self.interleave is not None:
            self.interleave.slot_of(n)  # validates n
            g = self.interleave.group
            groups = make_layout(self.interleave.layout, Layout(n // g, g))
            row = composition(Layout(n, self.bits), groups)
        strides = []
        pitch = 8 * storage[-1]
        for extent in reversed(shape[:-1]):
            strides.append(pitch)
            pitch *= extent
        outer = [Layout(e, d) for e, d in zip(shape[:-1], reversed(strides), strict=True)]
        return make_layout(*outer, row) if outer else row

    def pack(self, codes: np.ndarray) -> np.ndarray:
        return pack(codes, self.bits, interleave=self.interleave)

    def unpack(self, data: np.ndarray, n: int) -> np.ndarray:
        return unpack(data, self.bits, n, interleave=self.interleave)


def pack(codes: np.ndarray, bits: int, *, interleave: Interleave | None = None) -> np.ndarray:
    """Pack ``codes`` (an integer array ``(..., n)``, each below ``2**bits``) into the
    ``uint8`` storage ``(..., ceil(n*bits/8))``."""
    _check_bits(bits)
    codes = np.asarray(codes)
    if not np.issubdtype(codes.dtype, np.integer):
        raise PackingError(f"pack: codes must be an integer array, got {codes.dtype}")
    if codes.ndim == 0:
        raise PackingError("pack: codes must have at least one dimension")
    if codes.size and (codes.min() < 0 or codes.max() >= 1 << bits):
        bad = codes[(codes < 0) | (codes >= 1 << bits)].flat[0]
        raise PackingError(f"pack: code {int(bad)} does not fit in {bits} bits")
    n = codes.shape[-1]
    codes = codes.astype(np.uint8)
    if interleave is not None:
        stored = np.empty_like(codes)
        stored[..., interleave.slot_of(n)] = codes
        codes = stored
    if bits == 8:
        return np.ascontiguousarray(codes)
    # Each element as its bits, LSB first, then the row's bitstream into bytes.
    shifts = np.arange(bits, dtype=np.uint8)
    stream = ((codes[..., None] >> shifts) & 1).reshape(*codes.shape[:-1], n * bits)
    return np.packbits(stream, axis=-1, bitorder="little")


def unpack(data: np.ndarray, bits: int, n: int, *, interleave: Interleave | None = None
           ) -> np.ndarray:
    """The ``uint8`` codes ``(..., n)`` stored in ``data``, a ``uint8`` array
    ``(..., ceil(n*bits/8))``."""
    _check_bits(bits)
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise PackingError(f"unpack: packed data must be uint8, got {data.dtype}")
    if data.ndim == 0 or data.shape[-1] != packed_extent(n, bits):
        raise PackingError(
            f"unpack: {n} {bits}-bit elements a row take {packed_extent(n, bits)} bytes; "
            f"got data of shape {data.shape}"
        )
    if bits == 8:
        codes = data.copy()
    else:
        stream = np.unpackbits(data, axis=-1, bitorder="little")[..., : n * bits]
        stream = stream.reshape(*data.shape[:-1], n, bits)
        weights = (1 << np.arange(bits, dtype=np.uint8)).astype(np.uint8)
        codes = (stream * weights).sum(axis=-1, dtype=np.uint8)
    if interleave is not None:
        codes = codes[..., interleave.slot_of(n)]
    return codes

