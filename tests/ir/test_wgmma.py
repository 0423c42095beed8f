"""wgmma as data: the shared-memory layouts its descriptors read, the descriptors, and the
row order that lets the accumulator keep the mma.sync layout (checked against the PTX ISA's
definitions, computed here from scratch)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tegula.ir.atoms import (
    WgmmaSmemLayout,
    find_wgmma,
    wgmma_descriptor,
    wgmma_tile_fits,
)
from tegula.ir.distributed import wgmma_accumulator_layout
from tegula.ir.dtypes import bf16, f16, f32, i8, i32, i64
from tegula.ir.loop import Const, Var
from tegula.passes.lowering.values import StagedTile, WarpgroupRows
from tegula.passes.simplify import simplify_expr

import tegula as tg

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _value(expr) -> int:
    folded = simplify_expr(expr)
    assert isinstance(folded, Const), folded
    return int(folded.value)


def _hardware_swizzle(byte: int, swizzle_bytes: int) -> int:
    """The PTX ISA's swizzle modes on a byte address: the 16-byte chunk index (bits 4..6)
    XORed with the 128-byte line index (bits 7..9), as many bits as the mode has."""
    bits = {128: 0b111, 64: 0b011, 32: 0b001}[swizzle_bytes]
    return byte ^ (((byte >> 7) & bits) << 4)


@pytest.mark.parametrize(
    ("rows", "cols", "itemsize"),
    [(64, 64, 2), (128, 32, 2), (32, 256, 2), (64, 16, 2), (16, 128, 1), (64, 192, 2)],
)
def test_staged_layout_is_the_hardware_swizzle_of_its_canonical_offsets(
    rows: int, cols: int, itemsize: int
) -> None:
    lay = WgmmaSmemLayout(rows, cols, itemsize)
    dtype = {1: i8, 2: f16}[itemsize]
    tile = StagedTile(
        buffer=None,  # type: ignore[arg-type]
        base=Const(0, i64),
        swizzle=None,
        shape=(rows, cols),
        dtype=dtype,
        wgmma=lay,
    )
    seen = set()
    for row in range(rows):
        for col in range(cols):
            offset = _value(tile.offset([Const(row, i64), Const(col, i64)]))
            # Canonical: blocks of swizzle-row width, each holding every row.
            block, within = divmod(col, lay.block)
            canonical = (block * rows * lay.block + row * lay.block + within) * itemsize
            assert offset * itemsize == _hardware_swizzle(canonical, lay.swizzle_bytes)
            seen.add(offset)
    assert seen == set(range(rows * cols))  # a permutation of the tile's bytes


@pytest.mark.parametrize("plan", ["edge", "view"])
@pytest.mark.parametrize(
    ("rows", "cols", "warps"),
    [(128, 32, 8), (128, 64, 8), (256, 32, 8), (256, 64, 8), (64, 64, 4), (128, 128, 4),
     (32, 256, 0), (64, 128, 0), (16, 512, 0)],
)
def test_tma_boxes_write_each_element_where_the_staged_layout_reads_it(
    rows: int, cols: int, warps: int, plan: str
) -> None:
    """What the tensor-memory accelerator writes for each box is the staged layout, element
    for element, and the boxes cover the tile once: a box walks its dimensions innermost
    first, each element to the next shared address (then the hardware swizzle on the
    address), reading the tile element its map's steps reach from the box's first row and
    column. ``edge``: boxes of the tile itself; ``view``: one a block through a view.
    ``warps`` > 0 stages an A operand (8-row groups in warpgroup order), 0 a B operand."""
    import itertools

    lay = WgmmaSmemLayout(rows, cols, 2)
    groups = None
    if warps:
        acc = wgmma_accumulator_layout((rows, 32), warps)
        groups = WarpgroupRows(acc.wpc[0], acc.reps(0))
    tile = StagedTile(None, Const(0, i64), None, (rows, cols), f16,  # type: ignore[arg-type]
                      wgmma=lay, row_groups=groups)
    boxes = tile.tma_boxes() if plan == "edge" else tile.tma_view()
    assert boxes is not None and boxes.box[0] == lay.block and max(boxes.box) <= 256
    if plan == "view":
        assert len(boxes.boxes) <= max(1, rows // 64) * (cols // lay.block)
    written: dict[int, tuple[int, int]] = {}
    for first_row, first_col, at in boxes.boxes:
        assert at * 2 % 128 == 0  # TMA's shared destinations are 128-byte aligned
        ranges = [range(b) for b in reversed(boxes.box)]  # outermost first
        for linear, outer_first in enumerate(itertools.product(*ranges)):
            at_tile = [first_row, first_col]
            for (dim, extent, step), c in zip(boxes.dims, reversed(outer_first), strict=True):
                assert extent == 0 or c < extent
                at_tile[dim] += c * step
            element = _hardware_swizzle(at * 2 + linear * 2, lay.swizzle_bytes) // 2
            assert element not in written
            written[element] = (at_tile[0], at_tile[1])
    assert len(written) == rows * cols
    for element, (row, col) in written.items():
        assert row < rows and col < cols
        assert _value(tile.offset([Const(row, i64), Const(col, i64)])) == element


def test_gemm_fills_its_rings_by_tma_on_hopper() -> None:
    module = tg.compile(EXAMPLES / "gemm.tg", target="cuda:sm_90a", kernels=["gemm_f16"],
                        cache=False, WS=False)
    result = module.results["gemm_f16"]
    source, spec = result.source, result.spec
    # A's 8-row groups go in warpgroup order (a box each), B's 64-column blocks a box each.
    maps = {(m.param, m.box, m.swizzle_bytes, m.dims) for m in spec.tensor_maps}
    assert maps == {
        ("a", (32, 8), 64, ()), ("b", (64, 32), 128, ()),  # edge boxes: the tensors
        # Inside the tensors, one box a stage: A's rows in warpgroup order, B's blocks.
        ("a", (32, 8, 2, 4, 2), 64, ((1, 0, 1), (0, 8, 1), (0, 2, 64), (0, 4, 8), (0, 0, 32))),
        ("b", (64, 32, 4), 128, ((1, 64, 1), (0, 0, 1), (1, 0, 64))),
    }
    assert "const __grid_constant__ tensor_map_t a_map" in source
    loop = source.split("for (int k = 0;")[1]
    assert loop.count("cp.async.bulk.tensor.2d") == 128 // 8 + 256 // 64
    assert loop.count("cp.async.bulk.tensor.5d") == loop.count("cp.async.bulk.tensor.3d") == 1
    assert "mbarrier.try_wait.parity" in loop and "cp.async.cg" not in loop
    assert f"\"r\"({(128 * 32 + 32 * 256) * 2}u)" in loop  # the bytes a stage brings
    # Each warp's first lane issues its share of the twenty boxes.
    assert all(f"thread_idx == {32 * w} &&" in loop for w in range(8))
    # No block barrier in the loop: a warp releases a slot on its empty barrier once the
    # products that read it are complete, and the lanes that refill a slot wait for that.
    body = loop.split("wgmma.wait_group.sync.aligned 0;")[0]
    assert "__syncthreads" not in body
    assert "mbarrier.arrive.shared::cta.b64" in body and "slot_empty" in body
    # Five stages and their ten 8-byte barriers (full and empty, each to 16 bytes).
    assert f"{5 * (128 * 32 + 32 * 256) * 2 + 2 * 48} bytes of shared memory" in source
    # sm_90 without "a" has no wgmma layouts, so its rings stay on cp.async.
    portable = tg.compile(EXAMPLES / "gemm.tg", target="cuda:sm_90", kernels=["gemm_f16"],
                          cache=False, TMA=True).results["gemm_f16"]
    assert "cp.async.bulk" not in portable.source and not portable.spec.tensor_maps


def test_rows_that_fit_no_swizzle_mode_are_refused() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        WgmmaSmemLayout(64, 8, 2)  # 16-byte rows
    with pytest.raises(ValueError, match="do not fit"):
        WgmmaSmemLayout(64, 96, 2)  # 192-byte rows: not whole 128-byte blocks


def test_descriptor_fields() -> None:
    k_major = WgmmaSmemLayout(128, 64, 2)
    mn_major = WgmmaSmemLayout(32, 256, 2)
    address = Var("address", i32)
    for lay, mn, lbo in ((k_major, False, 16), (mn_major, True, 32 * 128)):
        bits = lay.descriptor_bits(mn_major=mn)
        assert (bits >> 16) & 0x3FFF == lbo >> 4
        assert (bits >> 32) & 0x3FFF == 8 * 128 >> 4  # eight 128-byte rows
        assert bits >> 62 == 1  # 128-byte swizzle
        assert bits & 0x3FFF == 0  # the start address is added at run time
    desc = wgmma_descriptor(k_major.descriptor_bits(mn_major=False), Const(0x12340, i32))
    assert _value(desc) & 0x3FFF == 0x1234
    assert wgmma_descriptor(0, address).dtype.bits == 64


@pytest.mark.parametrize(("m", "warps"), [(64, 4), (128, 4), (128, 8), (256, 8), (256, 4)])
def test_each_warp_holds_the_rows_its_instruction_gives_it(m: int, warps: int) -> None:
    """wgmma gives warp w of a warpgroup rows 16 w + 8 h + g of the 64 its descriptor points
    at; staged in warpgroup order, those are the tile rows the mma.sync accumulator layout
    gives that warp's lanes."""
    lay = wgmma_accumulator_layout((m, 32), warps)
    order = WarpgroupRows(lay.wpc[0], lay.reps(0))
    stored = {r: _value(order.stored_row(Const(r, i64))) for r in range(m)}
    assert sorted(stored.values()) == list(range(m))
    for thread in range(32 * warps):
        warp, lane = divmod(thread, 32)
        warpgroup, w = divmod(warp, 4)
        for value in range(lay.num_values):
            row, col = lay.coords(thread, value)
            instruction, within = divmod(stored[row], 64)
            rep = row // (8 * warps)
            assert instruction == warpgroup * (lay.reps(0) // 2) + rep // 2
            assert within == 16 * w + 8 * (rep % 2) + lane // 4
            assert col % 8 in (2 * (lane % 4), 2 * (lane % 4) + 1)
    first = _value(order.first_row(Const(1, i64), 0)) if warps == 8 else 0
    assert first == (64 * (lay.reps(0) // 2) if warps == 8 else 0)


def test_which_products_fit_a_warpgroup() -> None:
    assert find_wgmma(f16, f16, f32, "sm_90a") is not None
    assert find_wgmma(bf16, bf16, f32, "sm_90a") is not None
    assert find_wgmma(f16, f16, f32, "sm_90") is None  # wgmma needs the "a" architecture
    assert find_wgmma(f16, f16, f32, "sm_100a") is None
    half = find_wgmma(f16, f16, f32, "sm_90a")
    assert wgmma_tile_fits(half, 128, 256, 32, 8)
    assert not wgmma_tile_fits(half, 128, 256, 32, 4)  # 256 accumulator values a thread
    assert not wgmma_tile_fits(half, 64, 128, 32, 8)  # 32 rows a warpgroup: not one instruction
    assert not wgmma_tile_fits(half, 128, 128, 32, 2)  # no whole warpgroup
    assert not wgmma_tile_fits(half, 128, 128, 24, 4)  # k not a multiple of 16
    # 8-bit integers: 32 deep per instruction, exact s32 sums.
    byte = find_wgmma(i8, i8, i32, "sm_90a")
    assert byte is not None and byte.integer and byte.k == 32
    assert find_wgmma(i8, i8, i32, "sm_80") is None
    assert wgmma_tile_fits(byte, 256, 128, 128, 8)
    assert not wgmma_tile_fits(byte, 256, 128, 48, 8)  # k not a multiple of 32


def test_integer_wgmma_has_no_immediates_and_only_its_widths() -> None:
    """The integer form takes D, the descriptors and scale-d alone (no negation or transpose
    immediates: both operands K-major), and past 24 columns only multiples of 16."""
    byte = find_wgmma(i8, i8, i32, "sm_90a")
    text = byte.ptx(128, trans_b=False)
    assert "m64n128k32.s32.s8.s8" in text and text.endswith("%64, %65, accumulate; }")
    assert byte.takes_n(24) and byte.takes_n(256) and not byte.takes_n(40)
    with pytest.raises(ValueError, match="K-major"):
        byte.ptx(128, trans_b=True)
    with pytest.raises(ValueError, match="no 40-column form"):
        byte.ptx(40, trans_b=False)
    assert find_wgmma(f16, f16, f32, "sm_90a").takes_n(40)


def _source(target: str, **params: int | bool) -> str:
    module = tg.compile(
        EXAMPLES / "gemm.tg", target=target, kernels=["gemm_f16"], cache=False, **params
    )
    return module.results["gemm_f16"].source


def test_gemm_runs_on_wgmma_on_sm90a_and_on_mma_sync_elsewhere() -> None:
    hopper = _source("cuda:sm_90a", TMA=False, WS=False)
    assert "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16" in hopper
    assert "fence.proxy.async.shared::cta;" in hopper
    assert "__align__(1024)" in hopper
    # Five stages of 128 x 32 and 32 x 256 operands; the scratch area the unaligned fallback
    # loop stages its operands in shares their bytes.
    assert f"{5 * (128 * 32 + 32 * 256) * 2} bytes of shared memory" in hopper
    assert "cp.async.bulk" not in hopper and "cp.async.cg" in hopper  # TMA=true asks for TMA
    # The lone product stays in flight across iterations; the loop's exit waits for it.
    assert "wgmma.wait_group.sync.aligned 1;" in hopper
    assert "wgmma.wait_group.sync.aligned 0;" in hopper
    assert "mma.sync" not in hopper.split("} else {")[0]
    for portable in ("cuda:sm_90", "cuda:sm_80"):
        source = _source(portable)
        assert "wgmma" not in source and "mma.sync.aligned.m16n8k16" in source


def test_two_stages_leave_no_product_in_flight() -> None:
    """With two stages the ring has no slot to spare for a running product."""
    source = _source("cuda:sm_90a", STAGES=2)
    assert "wgmma.wait_group.sync.aligned 1;" not in source
    assert "wgmma.wait_group.sync.aligned 0;" in source
