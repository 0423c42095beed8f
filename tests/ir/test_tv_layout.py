"""Thread-value layouts and the register-tile primitives (ir/tv_layout.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from tegula.ir.layout import Layout, LayoutError, parse_layout
from tegula.ir.tv_layout import TVLayout, blocked, from_layout, local, spatial


def all_pairs(tv: TVLayout):
    return itertools.product(range(tv.num_threads), range(tv.num_values))


def assert_covers_once(tv: TVLayout) -> None:
    owners = tv.element_owners()
    assert (owners >= 0).all()
    assert (tv.owner_count() == 1).all()
    for t, v in all_pairs(tv):
        assert tuple(owners[tv(t, v)]) == (t, v)


def test_spatial_times_local_mapping() -> None:
    tv = spatial(4, 8) * local(2, 2)
    assert (tv.tile_shape, tv.num_threads, tv.num_values) == ((8, 16), 32, 4)
    assert str(tv) == "spatial(4,8)*local(2,2)"
    for t, v in all_pairs(tv):
        assert tv(t, v) == (2 * (t // 8) + v // 2, 2 * (t % 8) + v % 2)
        row, col = tv(t, v)
        assert tv.layout((t, v)) == row * 16 + col  # row-major element index
    assert_covers_once(tv)


def test_local_times_spatial_mapping() -> None:
    tv = local(2, 2) * spatial(4, 8)
    assert (tv.tile_shape, tv.num_threads, tv.num_values) == ((8, 16), 32, 4)
    for t, v in all_pairs(tv):
        assert tv(t, v) == (4 * (v // 2) + t // 8, 8 * (v % 2) + t % 8)
    assert_covers_once(tv)


def test_primitives() -> None:
    assert [local(2, 3)(0, v) for v in range(6)] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert [spatial(2, 3)(t, 0) for t in range(6)] == [
        (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)
    ]
    assert local(5).num_values == 5 and spatial(2, 3, 4).num_threads == 24
    assert spatial(2, 3, 4)(23, 0) == (1, 2, 3)


@pytest.mark.parametrize(
    "tv",
    [
        spatial(3, 5) * local(2, 3),
        local(3, 1) * spatial(2, 16) * local(1, 3),
        spatial(2, 2) * spatial(2, 3),
        local(2, 2, 2) * spatial(3, 1, 2),
        local(6),
    ],
    ids=str,
)
def test_products_cover_the_tile_exactly_once(tv: TVLayout) -> None:
    assert_covers_once(tv)


def test_product_is_associative_and_numbers_outer_major() -> None:
    a, b, c = local(2, 1), spatial(2, 4), spatial(2, 1) * local(1, 3)
    left, right = (a * b) * c, a * (b * c)
    assert left.tile_shape == right.tile_shape == (8, 12)
    assert left.layout.equivalent(right.layout)
    inner = b * c
    for t, v in all_pairs(inner):
        tb, tc = divmod(t, c.num_threads)
        r, col = c(tc, v)
        rb, cb = b(tb, 0)
        assert inner(t, v) == (rb * c.tile_shape[0] + r, cb * c.tile_shape[1] + col)


def test_mma_accumulator_from_primitives_matches_the_core_layout() -> None:
    """The m16n8 accumulator: thread t holds rows t//4 and t//4+8, columns 2*(t%4)+{0,1}."""
    from_primitives = local(2, 1) * spatial(8, 4) * local(1, 2)
    core = parse_layout("((4,8),(2,2)):((32,1),(16,8))")  # column-major 16x8 index
    assert from_primitives.tile_shape == (16, 8)
    for t, v in all_pairs(from_primitives):
        index = core((t, v))
        assert from_primitives(t, v) == (index % 16, index // 16)
        assert from_primitives(t, v) == (t // 4 + 8 * (v // 2), 2 * (t % 4) + v % 2)
    transposed = from_layout(core, (8, 16)).transpose()  # column-major 16x8 = row-major 8x16^T
    assert transposed.layout.equivalent(from_primitives.layout)


@pytest.mark.parametrize(
    ("shape", "threads", "vector"),
    [((16, 64), 128, 4), ((3, 96), 32, 3), ((3, 96), 96, 1), ((6, 10), 12, 5),
     ((2, 3, 4), 6, 2), ((96,), 32, 3), ((5, 7), 35, 1)],
)
def test_blocked_covers_with_contiguous_vectors(shape, threads: int, vector: int) -> None:
    tv = blocked(shape, threads, vector)
    assert (tv.tile_shape, tv.num_threads) == (shape, threads)
    assert tv.num_values * threads == int(np.prod(shape))
    assert_covers_once(tv)
    indices = tv.element_indices()
    for t in range(threads):
        for v in range(tv.num_values):
            chunk, lane = divmod(v, vector)
            assert indices[t, v] == (t + threads * chunk) * vector + lane
    # A thread's vector is contiguous within one row.
    rows = indices // shape[-1]
    for j in range(0, tv.num_values, vector):
        assert (rows[:, j : j + vector] == rows[:, j : j + 1]).all()


def test_blocked_replicates_when_the_tile_is_small() -> None:
    tv = blocked((4, 8), 64, 4)  # 8 chunks of 4, 64 threads: 8 copies of each chunk
    assert (tv.num_threads, tv.num_values) == (64, 4)
    assert (tv.owner_count() == 8).all()
    for t in range(64):
        assert tv(t, 1) == ((t % 8) // 2, 4 * (t % 2) + 1)
    owners = tv.element_owners()
    assert (owners[..., 0] < 8).all()  # the lowest replica is reported
    assert "0" in str(tv.layout.stride)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (((3, 96), 128, 4), "do not replicate evenly"),
        (((3, 96), 40, 3), "do not divide evenly"),
        (((3, 96), 32, 5), "does not divide the last extent"),
    ],
)
def test_blocked_errors(args, message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        blocked(*args)


def test_transpose() -> None:
    tv = spatial(4, 8) * local(2, 2)
    transposed = tv.transpose()
    assert transposed.tile_shape == (16, 8)
    assert str(transposed) == "(spatial(4,8)*local(2,2)).transpose()"
    for t, v in all_pairs(tv):
        assert transposed(t, v) == tv(t, v)[::-1]
    assert transposed.transpose().layout.equivalent(tv.layout)


@pytest.mark.parametrize(
    "tv", [spatial(4, 8) * local(2, 2), local(2, 1) * spatial(8, 4) * local(1, 2),
           spatial(2, 3, 2) * local(1, 2, 3)], ids=str
)
def test_slice_keeps_each_thread_on_its_projected_elements(tv: TVLayout) -> None:
    rank = len(tv.tile_shape)
    for axis in range(rank):
        sliced = tv.slice(axis)
        assert sliced.num_threads == tv.num_threads
        assert sliced.tile_shape == tv.tile_shape[:axis] + tv.tile_shape[axis + 1 :]
        for t in range(tv.num_threads):
            held = {tv(t, v)[:axis] + tv(t, v)[axis + 1 :] for v in range(tv.num_values)}
            mine = [sliced(t, v) for v in range(sliced.num_values)]
            assert sorted(mine) == sorted(held)  # each projected element once
        counts = sliced.owner_count()
        assert counts.min() >= 1 and counts.sum() == sliced.num_threads * sliced.num_values


def test_slice_replicates_threads_along_the_reduced_axis() -> None:
    sliced = (spatial(4, 8) * local(2, 2)).slice(1)  # reduce each row
    assert sliced.tile_shape == (8,) and sliced.num_values == 2
    assert (sliced.owner_count() == 8).all()  # the 8 threads of a row each hold it
    for t in range(32):
        assert [sliced(t, v) for v in range(2)] == [(2 * (t // 8),), (2 * (t // 8) + 1,)]


def test_from_layout_and_owners_of_a_partial_layout() -> None:
    tv = from_layout(Layout((2, 1), (2, 0)), (4,))  # threads hold elements 0 and 2 only
    owners = tv.element_owners()
    assert owners.tolist() == [[0, 0], [-1, -1], [1, 0], [-1, -1]]
    assert tv == from_layout(Layout((2, 1), (2, 0)), [4])
    assert str(tv) == "from_layout((2,1):(2,0), (4))"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: from_layout(Layout((4, 2), (1, 4)), (2, 3)), "outside the 6 elements"),
        (lambda: from_layout(Layout(8), (8,)), "needs a \\(thread, value\\) layout"),
        (lambda: spatial(4, 8) * local(2), "tile ranks differ"),
        (lambda: spatial(4, 8)(32, 0), "thread 32 out of range"),
        (lambda: spatial(4, 8)(0, 1), "value 1 out of range"),
        (lambda: local(2, 0), "extent below 1"),
        (lambda: local(2, 2, 2).transpose(), "2-D tile"),
        (lambda: local(2, 2).slice(2), "axis 2 out of range"),
    ],
)
def test_clear_errors(call, message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        call()
