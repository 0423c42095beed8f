"""The layout algebra (ir/layout.py, ir/inttuple.py) and swizzles (ir/swizzle.py).

Layouts are functions, so most checks compare functions pointwise over their whole domain.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tegula.ir.inttuple import (
    congruent,
    crd2idx,
    flatten,
    idx2crd,
    prefix_product,
    product,
    shape_div,
    unflatten,
)
from tegula.ir.layout import (
    Layout,
    LayoutError,
    blocked_product,
    coalesce,
    col_major,
    complement,
    composition,
    left_inverse,
    logical_divide,
    logical_product,
    make_layout,
    make_ordered_layout,
    parse_layout,
    raked_product,
    right_inverse,
    row_major,
    tiled_divide,
    tiled_product,
    zipped_divide,
    zipped_product,
)
from tegula.ir.swizzle import Swizzle, SwizzledLayout, bank_conflicts

P = parse_layout
FEW = settings(max_examples=60, deadline=None)

# -- strategies --------------------------------------------------------------------------------

extents = st.sampled_from([1, 2, 3, 4, 6])
shapes = st.recursive(
    extents, lambda inner: st.lists(inner, min_size=1, max_size=3).map(tuple), max_leaves=4
)


SMALL_STRIDES = st.integers(0, 12)


@st.composite
def layouts(draw, strides=SMALL_STRIDES) -> Layout:
    shape = draw(shapes)
    return Layout(shape, unflatten([draw(strides) for _ in flatten(shape)], shape))


@st.composite
def complementable_layouts(draw) -> Layout:
    """Injective layouts whose sorted modes leave gaps that whole modes can fill."""
    flat = draw(st.lists(st.sampled_from([2, 3, 4, 5]), min_size=1, max_size=3))
    order = draw(st.permutations(range(len(flat))))
    strides = [0] * len(flat)
    current = 1
    for i in order:
        strides[i] = current * draw(st.sampled_from([1, 1, 2, 3]))
        current = strides[i] * flat[i]
    shape = tuple(flat) if len(flat) > 1 else flat[0]
    return Layout(shape, tuple(strides) if len(flat) > 1 else strides[0])


def span(layout: Layout) -> int:
    """The extent of an injective layout's sorted modes: the cotarget it tiles exactly."""
    return max(s * d for s, d in zip(flatten(layout.shape), flatten(layout.stride), strict=True))


def pointwise(layout: Layout) -> list[int]:
    return [layout(i) for i in range(layout.size)]


# -- facts ---------------------------------------------------------------------------------------


def test_coalesce_fact() -> None:
    assert coalesce(P("(2,(1,6)):(1,(6,2))")) == P("12:1")


def test_composition_fact() -> None:
    a, b = P("(6,2):(8,2)"), P("(4,3):(3,1)")
    assert composition(a, b) == P("((2,2),3):((24,2),8)")
    assert a.compose(b) == composition(a, b)


def test_complement_fact() -> None:
    assert complement(P("4:2"), 24) == P("(2,3):(1,8)")


def test_logical_divide_fact() -> None:
    assert logical_divide(P("(4,2,3):(2,1,8)"), P("4:2")) == P("((2,2),(2,3)):((4,1),(2,8))")


def test_by_mode_divide() -> None:
    layout = P("(9,(4,8)):(59,(13,1))")
    tiler = (P("3:3"), P("(2,4):(1,8)"))
    assert logical_divide(layout, tiler) == P("((3,3),((2,4),(2,2))):((177,59),((13,2),(26,1)))")
    assert zipped_divide(layout, tiler) == P("((3,(2,4)),(3,(2,2))):((177,(13,2)),(59,(26,1)))")
    assert tiled_divide(layout, tiler) == P("((3,(2,4)),3,(2,2)):((177,(13,2)),59,(26,1))")


def test_logical_product_fact() -> None:
    assert logical_product(P("(2,2):(4,1)"), P("6:1")) == P("((2,2),(2,3)):((4,1),(2,8))")


def test_mma_m16n8_accumulator() -> None:
    """PTX ISA, mma.m16n8 C fragment: thread t holds rows t//4 and t//4+8, columns 2*(t%4)
    and 2*(t%4)+1; the layout's index is the column-major index of the 16x8 tile."""
    tv = P("((4,8),(2,2)):((32,1),(16,8))")
    for t in range(32):
        for v in range(4):
            index = tv((t, v))
            assert (index % 16, index // 16) == (t // 4 + 8 * (v // 2), 2 * (t % 4) + v % 2)
    assert tv((0, 0)) == 0 and tv((5, 3)) == 16 * 3 + 9  # thread 5: row 1+8, col 3
    assert sorted(tv.values()) == list(range(128))


def test_blocked_and_raked_products() -> None:
    tile, grid = P("(2,5):(5,1)"), P("(3,4):(4,1)")
    blocked = blocked_product(tile, grid)
    raked = raked_product(tile, grid)
    assert blocked == P("((2,3),(5,4)):((5,40),(1,10))")
    assert raked == P("((3,2),(4,5)):((40,5),(10,1))")
    whole = logical_product(tile, grid)
    for r in range(6):
        for c in range(20):
            tile_coord, grid_coord = (r % 2, c % 5), (r // 2, c // 5)
            assert blocked(r, c) == whole(tile_coord, grid_coord)
            assert raked(r, c) == whole((r // 3, c // 4), (r % 3, c % 4))


def test_zipped_and_tiled_product() -> None:
    layout, tiler = P("(2,3):(3,1)"), (P("2:1"), P("4:1"))
    result = logical_product(layout, tiler)
    zipped = zipped_product(layout, tiler)
    assert zipped.size == tiled_product(layout, tiler).size == 48
    for i in range(2):
        for j in range(3):
            for k in range(2):
                for m in range(4):
                    assert zipped((i, j), (k, m)) == result((i, k), (j, m))


def test_inverses() -> None:
    layout = P("(4,(2,3)):(6,(1,2))")
    assert sorted(layout.values()) == list(range(24))
    right = right_inverse(layout)
    assert right.size == 24
    assert [layout(right(i)) for i in range(24)] == list(range(24))
    gappy = P("(4,3):(2,16)")
    left = left_inverse(gappy)
    assert [left(gappy(i)) for i in range(12)] == list(range(12))


def test_helpers_and_printing() -> None:
    assert row_major((4, 8)) == P("(4,8):(8,1)")
    assert col_major((4, 8)) == P("(4,8):(1,4)")
    assert row_major((4, (2, 3))) == P("(4,(2,3)):(6,(3,1))")
    assert make_ordered_layout((2, 3, 4), (1, 2, 0)) == P("(2,3,4):(4,8,1)")
    assert make_layout(P("4:2"), P("(2,3):(1,8)")) == P("(4,(2,3)):(2,(1,8))")
    layout = Layout((4, (2, 3)), (1, (4, 8)))
    assert str(layout) == "(4,(2,3)):(1,(4,8))"
    assert (layout.size, layout.cosize, layout.rank, layout.depth) == (24, 24, 2, 2)
    assert layout[1] == P("(2,3):(4,8)")
    assert layout.flatten() == P("(4,2,3):(1,4,8)")
    assert layout(5) == layout((1, 1)) == layout(1, 1) == layout((1, (1, 0))) == 5
    assert P("(3,4)") == Layout((3, 4), (1, 3))
    assert P("(6,4):(4,1)").with_shape((2, 3, 4)).equivalent(P("(6,4):(4,1)"))
    assert hash(P("(2,3):(3,1)")) == hash(Layout((2, 3), (3, 1)))
    assert P(" ( 4 , 8 ) : ( -1 , 0 ) ") == Layout((4, 8), (-1, 0))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: Layout((4, 8), (1,)), "different profiles"),
        (lambda: Layout((4, 0)), "extent below 1"),
        (lambda: P("(4,8:(8,1)"), "column 5"),
        (lambda: P("(4,8):(8,1) x"), "column 13"),
        (lambda: P("(4,8)")(32), "out of range"),
        (lambda: P("(4,8)")((1, 2, 3)), "does not fit"),
        (lambda: logical_divide(P("12:1"), P("5:1")), "does not divide"),
        (lambda: composition(P("(4,3):(1,10)"), P("6:1")), "does not divide"),
        (lambda: complement(P("(2,2):(1,1)"), 8), "not complementable"),
        (lambda: P("(4,8)").with_shape((5, 6)), "has size"),
    ],
)
def test_clear_errors(call, message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        call()


# -- properties ----------------------------------------------------------------------------------


@FEW
@given(layouts())
def test_coalesce_preserves_the_function(layout: Layout) -> None:
    merged = coalesce(layout)
    assert merged.size == layout.size
    assert np.array_equal(merged.values(), layout.values())
    assert merged.depth <= 1
    by_mode = coalesce(layout, by_mode=True)
    assert by_mode.rank == layout.rank and np.array_equal(by_mode.values(), layout.values())


@FEW
@given(layouts(), st.data())
def test_values_agree_with_call(layout: Layout, data) -> None:
    i = data.draw(st.integers(0, layout.size - 1))
    assert layout.values()[i] == layout(i) == layout(idx2crd(i, layout.shape))


@settings(max_examples=80, deadline=None)
@given(layouts(), layouts(strides=st.sampled_from([0, 1, 2, 3, 4, 6])))
def test_composition_is_functional_composition(a: Layout, b: Layout) -> None:
    assume(b.cosize <= a.size)
    try:
        c = composition(a, b)
    except LayoutError:
        assume(False)
    assert c.size == b.size
    if isinstance(b.shape, tuple):
        assert c.rank == b.rank
    assert np.array_equal(c.values(), a.values()[b.values()])
    if b.size <= 24:
        assert pointwise(c) == [a(b(i)) for i in range(b.size)]


@FEW
@given(complementable_layouts(), st.integers(1, 4), st.integers(0, 5))
def test_complement_fills_the_gaps(layout: Layout, multiple: int, extra: int) -> None:
    exact = span(layout) * multiple
    for cotarget in (exact, exact + extra):
        rest = complement(layout, cotarget)
        both = make_layout(layout, rest)
        values = both.values()
        assert both.is_injective()
        assert set(range(cotarget)) <= set(values.tolist())
        assert set(layout.values().tolist()).isdisjoint(rest.values()[1:].tolist())
        strides = [d for s, d in zip(flatten(rest.shape), flatten(rest.stride), strict=True)
                   if s > 1]
        assert strides == sorted(strides)
    assert sorted(make_layout(layout, complement(layout, exact)).values()) == list(range(exact))


@FEW
@given(complementable_layouts(), st.integers(1, 3), st.integers(0, 7), st.integers(0, 40))
def test_logical_divide_matches_its_definition(
    tiler: Layout, extra: int, d0: int, d1: int
) -> None:
    # A layout whose first mode is as large as the tiler's span, so the tile splits it.
    layout = Layout((span(tiler), extra), (d0, d1))
    divided = logical_divide(layout, tiler)
    definition = make_layout(tiler, complement(tiler, layout.size))
    assert np.array_equal(divided.values(), layout.values()[definition.values()])
    # Mode 0 is the tile: layout ∘ tiler.
    assert [divided((i, 0)) for i in range(tiler.size)] == [
        layout(tiler(i)) for i in range(tiler.size)
    ]
    # Dividing only regroups the domain.
    assert sorted(divided.values()) == sorted(layout.values())


@FEW
@given(complementable_layouts(), layouts(strides=st.sampled_from([0, 1, 2, 4])))
def test_logical_product_matches_its_definition(block: Layout, tiler: Layout) -> None:
    try:
        result = logical_product(block, tiler)
    except LayoutError:  # the tiler's strides do not split the complement's modes evenly
        assume(False)
    rest = complement(block, block.size * tiler.cosize)
    assert np.array_equal(result[0].values(), block.values())
    assert np.array_equal(result[1].values(), rest.values()[tiler.values()])
    n = block.size
    values = result.values()
    for j in range(tiler.size):
        assert np.array_equal(values[j * n : (j + 1) * n], block.values() + rest(tiler(j)))


@FEW
@given(complementable_layouts(), st.integers(1, 3))
def test_product_of_compact_layouts_is_a_bijection(block: Layout, n: int) -> None:
    compact = Layout(block.shape)
    result = logical_product(compact, Layout(n))
    assert sorted(result.values()) == list(range(compact.size * n))


@FEW
@given(complementable_layouts())
def test_inverses_invert(layout: Layout) -> None:
    left = left_inverse(layout)
    assert [left(layout(i)) for i in range(layout.size)] == list(range(layout.size))
    right = right_inverse(layout)
    assert [layout(right(i)) for i in range(right.size)] == list(range(right.size))


@FEW
@given(shapes)
def test_idx2crd_crd2idx_round_trip(shape) -> None:
    strides = prefix_product(shape)
    for i in range(product(shape)):
        coord = idx2crd(i, shape)
        assert congruent(coord, shape)
        assert crd2idx(coord, shape, strides) == i
        assert crd2idx(i, shape, strides) == i


@FEW
@given(layouts(strides=st.integers(-5, 12)))
def test_parse_round_trips(layout: Layout) -> None:
    assert parse_layout(str(layout)) == layout


def test_shape_div() -> None:
    assert shape_div(12, 4) == 3 and shape_div(4, 12) == 1
    assert shape_div((4, 6), 8) == (1, 3)
    with pytest.raises(LayoutError, match="neither divides"):
        shape_div(6, 4)


# -- swizzles ------------------------------------------------------------------------------------


def test_swizzle_formula_and_involution() -> None:
    sw = Swizzle(3, 4, 3)
    assert sw(0b1110000000) == 0b1110000000 ^ 0b0001110000
    for swizzle in (Swizzle(3, 4, 3), Swizzle(2, 0, 3), Swizzle(5, 0, 5), Swizzle(2, 1, -3)):
        offsets = np.arange(1 << 12)
        once = swizzle.apply(offsets)
        assert sorted(once.tolist()) == offsets.tolist()  # a permutation...
        assert np.array_equal(swizzle.apply(once), offsets)  # ...that undoes itself
        assert swizzle.inverse() == swizzle
        assert [swizzle(int(o)) for o in offsets[:64]] == once[:64].tolist()
    with pytest.raises(LayoutError, match="shift"):
        Swizzle(3, 4, 2)


def test_swizzled_layout() -> None:
    swizzled = SwizzledLayout(Swizzle(3, 4, 3), P("(8,64):(64,1)"))
    assert str(swizzled) == "Sw<3,4,3> o (8,64):(64,1)"
    assert swizzled(2, 17) == Swizzle(3, 4, 3)(2 * 64 + 17)
    assert sorted(swizzled.values()) == list(range(512))


def test_swizzled_transpose_tile_has_no_bank_conflicts() -> None:
    plain = P("(32,32):(32,1)")  # a 32x32 f32 tile, row-major
    swizzled = SwizzledLayout(Swizzle(5, 0, 5), plain)
    rows = [(7, t) for t in range(32)]  # a warp reads one row...
    cols = [(t, 7) for t in range(32)]  # ...or one column
    assert bank_conflicts(plain, rows, 4) == 1
    assert bank_conflicts(plain, cols, 4) == 32
    assert bank_conflicts(swizzled, rows, 4) == 1
    assert bank_conflicts(swizzled, cols, 4) == 1


def test_swizzle_removes_conflicts_of_16_byte_column_reads() -> None:
    # 8 threads each read 16 bytes (8 f16) of one row of an (8,64) tile, same columns.
    plain = P("(8,64):(64,1)")
    swizzled = SwizzledLayout(Swizzle(3, 3, 3), plain)
    reads = [(r, 8) for r in range(8)] * 4
    assert bank_conflicts(plain, reads, 2, access_bytes=16) == 8
    assert bank_conflicts(swizzled, reads, 2, access_bytes=16) == 1
