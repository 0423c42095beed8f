"""Reading layout expressions and drawing them: what ``tegula layout EXPR [--png FILE]`` runs.

Accepted expressions::

    (4,8):(8,1)                      a layout in CuTe notation (a bare shape is column-major)
    Sw<3,4,3> o (8,64):(64,1)        a swizzled layout ('∘' works too)
    spatial(4,8)*local(2,2)          register-tile primitives and their product
    blocked((16,64),128,4)           the coalesced default TV layout
    from_layout(((4,8),(2,2)):((32,1),(16,8)),(16,8))
    fragment(mma_m16n8k64_s4_s32, a)  an instruction atom's operand fragment (a, b or c;
                                     ``ir/atoms.py``'s ``mma.sync`` atoms, by name)
    (spatial(4,8)*local(2,2)).transpose()   .slice(axis) works the same way

A plain or swizzled layout is drawn as the grid of its indices (mode 0 down, mode 1 across);
a TV layout as its tile, each element showing the thread and value that hold it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TypeAlias

import numpy as np
from lark import Lark, Transformer, UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from PIL import Image, ImageDraw, ImageFont
from tegula.ir.atoms import MMA_ATOMS
from tegula.ir.inttuple import LayoutError
from tegula.ir.layout import Layout
from tegula.ir.swizzle import Swizzle, SwizzledLayout
from tegula.ir.tv_layout import TVLayout, blocked, from_layout, local, spatial

__all__ = [
    "CELL_HEIGHT",
    "CELL_WIDTH",
    "HEADER_HEIGHT",
    "HEADER_WIDTH",
    "PALETTE",
    "TITLE_HEIGHT",
    "AnyLayout",
    "describe",
    "parse_layout_expr",
    "render_png",
    "render_table",
]

AnyLayout: TypeAlias = Layout | SwizzledLayout | TVLayout

_GRAMMAR = r"""
?start: layout | swizzled | tv_expr

swizzled: "Sw" "<" SIGNED "," SIGNED "," SIGNED ">" ("o" | "∘") layout
layout: int_tuple (":" int_tuple)?
?int_tuple: SIGNED -> integer
          | "(" int_tuple ("," int_tuple)* ")" -> tuple

?tv_expr: tv_term ("*" tv_term)* -> product
?tv_term: tv_atom
        | tv_term "." "transpose" "(" ")" -> transpose
        | tv_term "." "slice" "(" SIGNED ")" -> slice
?tv_atom: "spatial" "(" SIGNED ("," SIGNED)* ")" -> spatial
        | "local" "(" SIGNED ("," SIGNED)* ")" -> local
        | "blocked" "(" int_tuple "," SIGNED ("," SIGNED)? ")" -> blocked
        | "from_layout" "(" layout "," int_tuple ")" -> from_layout
        | "fragment" "(" NAME "," NAME ")" -> fragment
        | "(" tv_expr ")"

SIGNED: /-?[0-9]+/
NAME: /[A-Za-z_][A-Za-z0-9_]*/
%ignore /\s+/
"""


class _Build(Transformer):
    def integer(self, items) -> int:
        return int(items[0])

    def tuple(self, items) -> tuple:
        return tuple(items)

    def layout(self, items) -> Layout:
        return Layout(items[0], items[1] if len(items) > 1 else None)

    def swizzled(self, items) -> SwizzledLayout:
        bits, base, shift, layout = items
        return SwizzledLayout(Swizzle(int(bits), int(base), int(shift)), layout)

    def product(self, items) -> TVLayout:
        result = items[0]
        for inner in items[1:]:
            result = result * inner
        return result

    def transpose(self, items) -> TVLayout:
        return items[0].transpose()

    def slice(self, items) -> TVLayout:
        return items[0].slice(int(items[1]))

    def spatial(self, items) -> TVLayout:
        return spatial(*(int(i) for i in items))

    def local(self, items) -> TVLayout:
        return local(*(int(i) for i in items))

    def blocked(self, items) -> TVLayout:
        shape, *rest = items
        return blocked(shape if isinstance(shape, tuple) else (shape,), *(int(i) for i in rest))

    def from_layout(self, items) -> TVLayout:
        layout, shape = items
        return from_layout(layout, shape if isinstance(shape, tuple) else (shape,))

    def fragment(self, items) -> TVLayout:
        name, operand = (str(i) for i in items)
        atoms = {a.name: a for a in MMA_ATOMS}
        if name not in atoms:
            raise LayoutError(f"no atom {name!r}; the mma.sync atoms are {', '.join(atoms)}")
        atom = atoms[name]
        fragments = {"a": (atom.a_layout, (atom.m, atom.k)),
                     "b": (atom.b_layout, (atom.k, atom.n)),
                     "c": (atom.c_layout, (atom.m, atom.n))}
        if operand not in fragments:
            raise LayoutError(f"an atom's operands are a, b and c, not {operand!r}")
        return from_layout(*fragments[operand])


@cache
def _parser() -> Lark:
    return Lark(_GRAMMAR, parser="lalr")


def _describe_expected(terminals: object) -> str:
    names = []
    for name in sorted(terminals):  # type: ignore[call-overload]
        if name == "SIGNED":
            names.append("an integer")
        elif name != "$END":
            pattern = _parser().get_terminal(name).pattern
            names.append(repr(pattern.value) if pattern.type == "str" else name.lower())
    return " or ".join(sorted(set(names)))


def parse_layout_expr(text: str) -> AnyLayout:
    """A layout, swizzled layout or TV layout from its text (see the module docstring).

    Bad text raises :class:`LayoutError` naming the column and showing a caret.
    """
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as e:
        if isinstance(e, UnexpectedToken) and e.token.type == "$END":
            what = "unexpected end of text"
        elif isinstance(e, UnexpectedToken):
            what = f"unexpected {e.token.value!r}"
        elif isinstance(e, UnexpectedCharacters):
            what = f"unexpected character {text[e.pos_in_stream]!r}"
        else:
            what = "unexpected text"
        expected = _describe_expected(getattr(e, "expected", None) or getattr(e, "allowed", ()))
        if expected:
            what += f", expected {expected}"
        column = getattr(e, "column", -1)
        at_end = isinstance(e, UnexpectedToken) and e.token.type == "$END"
        if at_end or not isinstance(column, int) or column < 1:
            column = len(text) + 1
        raise LayoutError(
            f"bad layout expression at column {column}: {what}\n  {text}\n  {' ' * (column - 1)}^"
        ) from None
    try:
        return _Build().transform(tree)
    except Exception as e:  # lark wraps errors raised while building
        cause = getattr(e, "orig_exc", e)
        if isinstance(cause, LayoutError):
            raise LayoutError(f"bad layout expression {text!r}: {cause}") from None
        raise


# -- the grid a layout is drawn as ----------------------------------------------------------


def _grid_shape(obj: AnyLayout) -> tuple[int, int]:
    if isinstance(obj, TVLayout):
        shape = obj.tile_shape
        if len(shape) > 2:
            raise LayoutError(f"cannot draw {obj}: its tile has rank {len(shape)}, not 1 or 2")
        if len(shape) < 2:
            return (1, shape[0] if shape else 1)
        return shape
    if obj.rank > 2:
        raise LayoutError(f"cannot draw {obj}: it has rank {obj.rank}, not 1 or 2")
    layout = obj.layout if isinstance(obj, SwizzledLayout) else obj
    return (1, layout.size) if layout.rank == 1 else (layout[0].size, layout[1].size)


def _cells(obj: AnyLayout) -> tuple[np.ndarray, np.ndarray]:
    """The text of each cell, and the key its colour comes from (-1: no colour)."""
    rows, cols = _grid_shape(obj)
    if isinstance(obj, TVLayout):
        owners = obj.element_owners().reshape(rows, cols, 2)
        text = np.array(
            [[f"T{t}V{v}" if t >= 0 else "." for t, v in row] for row in owners.tolist()],
            dtype=object,
        )
        return text, owners[..., 0]
    # Mode 0 is the row, so the colexicographic index i = r + rows*c.
    values = obj.values().reshape(cols, rows).T
    return values.astype(str).astype(object), values


def _title(obj: AnyLayout) -> str:
    if isinstance(obj, TVLayout):
        shape = "x".join(map(str, obj.tile_shape))
        return (
            f"{obj} = {obj.layout}: {shape} tile, "
            f"{obj.num_threads} threads x {obj.num_values} values"
        )
    return str(obj)


def render_table(obj: AnyLayout) -> str:
    """The layout as a text grid: indices for a (swizzled) layout, ``T<t>V<v>`` per element
    for a TV layout (``.`` where no thread holds one; the lowest thread where several do)."""
    text, _ = _cells(obj)
    rows, cols = text.shape
    width = max(max(len(s) for s in text.ravel()), len(str(cols - 1)))
    header_width = len(str(rows - 1))
    lines = [_title(obj)]
    lines.append(" " * header_width + " " + " ".join(str(c).rjust(width) for c in range(cols)))
    for r in range(rows):
        cells = " ".join(s.rjust(width) for s in text[r])
        lines.append(f"{str(r).rjust(header_width)} {cells}")
    if isinstance(obj, TVLayout) and (copies := int(obj.owner_count().max())) > 1:
        lines.append(f"(replicated: up to {copies} threads hold an element; the lowest is shown)")
    return "\n".join(lines) + "\n"


# -- pictures ------------------------------------------------------------------------------

CELL_WIDTH = 44
CELL_HEIGHT = 34
HEADER_WIDTH = 32
HEADER_HEIGHT = 20
TITLE_HEIGHT = 22

# Tableau 20: dark and light pairs alternate, so neighbouring threads stand apart.
PALETTE: tuple[tuple[int, int, int], ...] = tuple(
    (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
    for h in (
        "1f77b4", "aec7e8", "ff7f0e", "ffbb78", "2ca02c", "98df8a", "d62728", "ff9896",
        "9467bd", "c5b0d5", "8c564b", "c49c94", "e377c2", "f7b6d2", "7f7f7f", "c7c7c7",
        "bcbd22", "dbdb8d", "17becf", "9edae5",
    )
)
_BACKGROUND = (255, 255, 255)
_GRID = (90, 90, 90)
_HEADER = (236, 236, 236)


def _text_colour(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


_LINE_HEIGHT = 13


class _Stamper:
    """Draws short labels centred at a point, rendering each distinct label once: a large
    tile repeats the same few ``T<t>`` and ``V<v>`` strings thousands of times."""

    def __init__(self, image: Image.Image, font: ImageFont.FreeTypeFont) -> None:
        self._image = image
        self._font = font
        self._masks: dict[str, Image.Image] = {}

    def __call__(self, label: str, x: int, y: int, colour: tuple[int, int, int]) -> None:
        mask = self._masks.get(label)
        if mask is None:
            left, top, right, bottom = self._font.getbbox(label, anchor="mm")
            mask = Image.new("L", (right - left, bottom - top), 0)
            ImageDraw.Draw(mask).text((-left, -top), label, fill=255, font=self._font,
                                      anchor="mm")
            self._masks[label] = mask
        x0 = x - mask.width // 2
        y0 = y - mask.height // 2
        self._image.paste(colour, (x0, y0, x0 + mask.width, y0 + mask.height), mask)


def render_png(obj: AnyLayout, path: str | Path) -> Path:
    """Draw the layout's grid to a PNG: each cell coloured by thread (TV layouts) or by index
    (plain layouts), palette cycled, with row and column headers and a title bar.

    The image is ``HEADER_WIDTH + cols*CELL_WIDTH`` pixels wide (or as wide as the title,
    if that is wider) and ``TITLE_HEIGHT + HEADER_HEIGHT + rows*CELL_HEIGHT`` pixels high.
    """
    text, keys = _cells(obj)
    rows, cols = text.shape
    font = ImageFont.load_default(11)
    title_font = ImageFont.load_default(12)
    title = _title(obj)
    grid_width = HEADER_WIDTH + cols * CELL_WIDTH
    width = max(grid_width, int(title_font.getlength(title)) + 8)
    height = TITLE_HEIGHT + HEADER_HEIGHT + rows * CELL_HEIGHT
    image = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    top = TITLE_HEIGHT + HEADER_HEIGHT

    draw.text((4, TITLE_HEIGHT // 2), title, fill=(0, 0, 0), font=title_font, anchor="lm")
    draw.rectangle((0, TITLE_HEIGHT, grid_width - 1, top - 1), fill=_HEADER)
    draw.rectangle((0, TITLE_HEIGHT, HEADER_WIDTH - 1, height - 1), fill=_HEADER)
    for c in range(cols):
        x = HEADER_WIDTH + c * CELL_WIDTH + CELL_WIDTH // 2
        draw.text((x, TITLE_HEIGHT + HEADER_HEIGHT // 2), str(c), fill=(0, 0, 0), font=font,
                  anchor="mm")
    for r in range(rows):
        y = top + r * CELL_HEIGHT + CELL_HEIGHT // 2
        draw.text((HEADER_WIDTH // 2, y), str(r), fill=(0, 0, 0), font=font, anchor="mm")

    stamp = _Stamper(image, font)
    for r in range(rows):
        for c in range(cols):
            x0, y0 = HEADER_WIDTH + c * CELL_WIDTH, top + r * CELL_HEIGHT
            key = int(keys[r, c])
            fill = PALETTE[key % len(PALETTE)] if key >= 0 else _BACKGROUND
            draw.rectangle((x0, y0, x0 + CELL_WIDTH - 1, y0 + CELL_HEIGHT - 1), fill=fill,
                           outline=_GRID)
            lines = str(text[r, c]).replace("V", " V").split()  # T<t>V<v> on two lines
            colour = _text_colour(fill)
            for i, line in enumerate(lines):
                dy = (2 * i - len(lines) + 1) * _LINE_HEIGHT // 2
                stamp(line, x0 + CELL_WIDTH // 2, y0 + CELL_HEIGHT // 2 + dy, colour)
    path = Path(path)
    image.save(path, format="PNG", compress_level=1)  # speed over size
    return path


def describe(text: str, png: str | Path | None = None) -> str:
    """Parse ``text``, return its table, and draw it to ``png`` when given: the whole of
    ``tegula layout EXPR [--png FILE]``."""
    obj = parse_layout_expr(text)
    if png is not None:
        render_png(obj, png)
    return render_table(obj)

