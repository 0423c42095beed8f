"""`tegula layout`: parsing layout expressions, tables and pictures (compiler/layout_view.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from tegula.compiler.layout_view import (
    CELL_HEIGHT,
    CELL_WIDTH,
    HEADER_HEIGHT,
    HEADER_WIDTH,
    PALETTE,
    TITLE_HEIGHT,
    describe,
    parse_layout_expr,
    render_png,
    render_table,
)
from tegula.ir.layout import Layout, LayoutError
from tegula.ir.swizzle import Swizzle, SwizzledLayout
from tegula.ir.tv_layout import TVLayout, blocked, local, spatial


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(4,8):(8,1)", Layout((4, 8), (8, 1))),
        (" (4, (2,3)) ", Layout((4, (2, 3)))),
        ("Sw<3,4,3> o (8,64):(64,1)", SwizzledLayout(Swizzle(3, 4, 3), Layout((8, 64), (64, 1)))),
        ("spatial(4,8)*local(2,2)", spatial(4, 8) * local(2, 2)),
        ("local(2,2) * spatial(4,8)", local(2, 2) * spatial(4, 8)),
        ("blocked((16,64), 128, 4)", blocked((16, 64), 128, 4)),
        ("(spatial(4,8)*local(2,2)).transpose()", (spatial(4, 8) * local(2, 2)).transpose()),
        ("spatial(4,8).slice(1)", spatial(4, 8).slice(1)),
    ],
)
def test_parse(text: str, expected) -> None:
    parsed = parse_layout_expr(text)
    assert parsed == expected
    assert parse_layout_expr(str(parsed)) == parsed  # what is printed reads back


def test_parse_from_layout() -> None:
    tv = parse_layout_expr("from_layout(((4,8),(2,2)):((32,1),(16,8)), (16,8))")
    assert isinstance(tv, TVLayout) and tv.tile_shape == (16, 8)
    assert tv.layout == Layout(((4, 8), (2, 2)), ((32, 1), (16, 8)))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("(4,8:(8,1)", "column 5: unexpected ':', expected ')' or ','"),
        ("spatial(4,8)*", "column 14: unexpected end of text"),
        ("spatail(4)", "column 1"),
        ("spatial(4,8)*local(2)", "tile ranks differ"),
        ("Sw<3,4,2> o (8,64):(64,1)", "shift"),
    ],
)
def test_bad_text_names_the_column(text: str, message: str) -> None:
    with pytest.raises(LayoutError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_layout_expr(text)


def test_table_of_a_layout() -> None:
    assert render_table(parse_layout_expr("(2,3):(3,1)")) == (
        "(2,3):(3,1)\n"
        "  0 1 2\n"
        "0 0 1 2\n"
        "1 3 4 5\n"
    )


def test_table_of_a_tv_layout() -> None:
    assert render_table(spatial(2, 2) * local(1, 2)) == (
        "spatial(2,2)*local(1,2) = (4,2):(2,1): 2x4 tile, 4 threads x 2 values\n"
        "     0    1    2    3\n"
        "0 T0V0 T0V1 T1V0 T1V1\n"
        "1 T2V0 T2V1 T3V0 T3V1\n"
    )


def test_table_marks_replication_and_swizzles() -> None:
    table = render_table(blocked((2, 4), 8, 2))
    assert table.splitlines()[-1].startswith("(replicated: up to 2 threads")
    swizzled = render_table(parse_layout_expr("Sw<1,0,1> o (2,2):(2,1)"))
    assert swizzled.splitlines()[1:] == ["  0 1", "0 0 1", "1 3 2"]


def test_png(tmp_path) -> None:
    tv = spatial(4, 8) * local(2, 2)
    path = render_png(tv, tmp_path / "tv.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (HEADER_WIDTH + 16 * CELL_WIDTH,
                              TITLE_HEIGHT + HEADER_HEIGHT + 8 * CELL_HEIGHT)
        rgb = np.asarray(image.convert("RGB")).reshape(-1, 3)
    pixels = {tuple(p) for p in np.unique(rgb, axis=0).tolist()}
    assert len(pixels & set(PALETTE)) >= min(tv.num_threads, len(PALETTE))


def test_describe_prints_and_draws(tmp_path) -> None:
    png = tmp_path / "layout.png"
    assert describe("(4,8):(8,1)", png).startswith("(4,8):(8,1)\n")
    with Image.open(png) as image:
        assert image.size == (HEADER_WIDTH + 8 * CELL_WIDTH,
                              TITLE_HEIGHT + HEADER_HEIGHT + 4 * CELL_HEIGHT)


def test_rank_3_cannot_be_drawn() -> None:
    with pytest.raises(LayoutError, match="rank 3"):
        render_table(local(2, 2, 2))


def test_an_atoms_fragments_are_drawable_by_name() -> None:
    """``fragment(ATOM, a|b|c)`` is the atom's operand fragment as a TV layout of its tile,
    so ``tegula layout`` draws any instruction's thread-value mapping from ir/atoms.py."""
    from tegula.ir.atoms import MMA_ATOMS
    from tegula.ir.tv_layout import from_layout

    for atom in MMA_ATOMS:
        for operand, layout, shape in (("a", atom.a_layout, (atom.m, atom.k)),
                                       ("b", atom.b_layout, (atom.k, atom.n)),
                                       ("c", atom.c_layout, (atom.m, atom.n))):
            drawn = parse_layout_expr(f"fragment({atom.name}, {operand})")
            assert drawn == from_layout(layout, shape)
            assert tuple(drawn.tile_shape) == shape and drawn.num_threads == 32
    with pytest.raises(LayoutError, match="no atom 'mma_x'"):
        parse_layout_expr("fragment(mma_x, a)")
    with pytest.raises(LayoutError, match="not 'd'"):
        parse_layout_expr("fragment(mma_m16n8k8_tf32_f32, d)")
