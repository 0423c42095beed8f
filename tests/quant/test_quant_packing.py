"""The packed storage format: a little-endian bitstream per row, and interleaves."""

from __future__ import annotations

import numpy as np
import pytest
from tegula.ir.layout import Layout
from tegula.ir.packing import (
    Interleave,
    PackedFormat,
    PackingError,
    elements_in,
    marlin_interleave,
    pack,
    packed_extent,
    unpack,
)


def reference_pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Row by row with Python integers: element j at bit j*bits of the row, LSB first."""
    rows = codes.reshape(-1, codes.shape[-1])
    nbytes = -(-codes.shape[-1] * bits // 8)
    out = []
    for row in rows:
        stream = sum(int(c) << (j * bits) for j, c in enumerate(row))
        out.append(list(stream.to_bytes(nbytes, "little")))
    return np.array(out, dtype=np.uint8).reshape(*codes.shape[:-1], nbytes)


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_is_the_bitstream_and_unpacks_back(bits: int) -> None:
    rng = np.random.default_rng()
    for shape in [(5, 13), (2, 3, 8), (1,), (4, 64)]:
        codes = rng.integers(0, 1 << bits, shape, dtype=np.uint8)
        packed = pack(codes, bits)
        assert packed.dtype == np.uint8
        assert packed.shape == (*shape[:-1], packed_extent(shape[-1], bits))
        assert np.array_equal(packed, reference_pack(codes, bits))
        assert np.array_equal(unpack(packed, bits, shape[-1]), codes)
        assert elements_in(packed.shape[-1], bits) >= shape[-1]


def test_a_3_bit_row_straddles_bytes() -> None:
    packed = pack(np.array([1, 2, 3, 4, 5]), 3)
    # bits: a=001 b=010 c=011 d=100 e=101 -> stream e d c b a = 101 100 011 010 001
    assert packed.tolist() == [0b11_010_001, 0b0_101_100_0]


@pytest.mark.parametrize("bits", [1, 3, 4, 5, 7])
def test_bit_layout_gives_each_elements_first_bit(bits: int) -> None:
    shape = (3, 2, 11)
    fmt = PackedFormat(bits)
    layout = fmt.bit_layout(shape)
    pitch = 8 * packed_extent(11, bits)
    for i, j, k in np.ndindex(*shape):
        assert layout((i, j, k)) == (i * 2 + j) * pitch + k * bits
    # And the bits it names hold the element.
    codes = np.random.default_rng().integers(0, 1 << bits, shape, dtype=np.uint8)
    stream = np.unpackbits(fmt.pack(codes).reshape(-1), bitorder="little")
    for coord in [(0, 0, 0), (2, 1, 10), (1, 0, 5)]:
        first = layout(coord)
        value = sum(int(stream[first + t]) << t for t in range(bits))
        assert value == codes[coord]
    assert str(PackedFormat(3).bit_layout((4, 5))) == "(4,5):(16,3)"


def test_marlin_interleave_orders_each_32_bit_word() -> None:
    interleave = marlin_interleave(4)
    assert interleave.order() == (0, 2, 4, 6, 1, 3, 5, 7)
    codes = np.random.default_rng().integers(0, 16, (3, 32), dtype=np.uint8)
    packed = pack(codes, 4, interleave=interleave)
    words = packed.view("<u4")
    for row, word_row in zip(codes, words, strict=True):
        for w, word in enumerate(word_row):
            group = row[8 * w : 8 * w + 8]
            nibbles = [(int(word) >> (4 * p)) & 0xF for p in range(8)]
            assert nibbles == [group[e] for e in (0, 2, 4, 6, 1, 3, 5, 7)]
    assert np.array_equal(unpack(packed, 4, 32, interleave=interleave), codes)
    assert marlin_interleave(8).order() == (0, 2, 1, 3)
    # The layout of the interleaved format sends element j to the bit of its slot.
    layout = PackedFormat(4, interleave).bit_layout((3, 32))
    for j in range(32):
        slot = 8 * (j // 8) + (0, 4, 1, 5, 2, 6, 3, 7)[j % 8]
        assert layout((1, j)) == 128 + 4 * slot


def test_any_permutation_layout_interleaves() -> None:
    interleave = Interleave(Layout((2, 3), (3, 1)))  # six 4-bit elements, three bytes
    codes = np.random.default_rng().integers(0, 16, (2, 12), dtype=np.uint8)
    packed = pack(codes, 4, interleave=interleave)
    assert np.array_equal(unpack(packed, 4, 12, interleave=interleave), codes)
    assert not np.array_equal(packed, pack(codes, 4))


def test_bad_input_is_named() -> None:
    with pytest.raises(PackingError, match="code 8 does not fit in 3 bits"):
        pack(np.array([1, 8]), 3)
    with pytest.raises(PackingError, match="code -1 does not fit"):
        pack(np.array([-1, 0]), 3)
    with pytest.raises(PackingError, match="integer array"):
        pack(np.array([1.0]), 3)
    with pytest.raises(PackingError, match=r"element width must be an int in 1\.\.8"):
        pack(np.array([1]), 9)
    with pytest.raises(PackingError, match=r"5 3-bit elements a row take 2 bytes; got data "
                                           r"of shape \(4, 3\)"):
        unpack(np.zeros((4, 3), np.uint8), 3, 5)
    with pytest.raises(PackingError, match="must be uint8"):
        unpack(np.zeros((4, 2), np.int8), 3, 5)
    with pytest.raises(PackingError, match="not a whole number of groups"):
        pack(np.zeros((2, 12), np.uint8), 4, interleave=marlin_interleave())
    with pytest.raises(PackingError, match="not a permutation"):
        Interleave(Layout((2, 4), (1, 1)))
    with pytest.raises(PackingError, match="does not fill whole bytes"):
        PackedFormat(3, marlin_interleave(8))
    with pytest.raises(PackingError, match="Marlin interleaves 4- and 8-bit"):
        marlin_interleave(3)
