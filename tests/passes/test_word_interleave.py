"""Word-interleaved register tiles on the CPU: a tile of packed codes whose width divides 32
holds its run in the order of the bits of 32-bit words (``BlockedLayout.interleave``), so a
code is one shift from its word. The layout's value order, which tiles get it (CPU only),
what the lowering reads, and runs against float64 NumPy on fresh random inputs, with windows
inside the tensor, across its edges and starting mid-byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tegula.passes.pipeline  # registers the passes
from tegula.compiler.driver import lower_kernel
from tegula.compiler.frontend import build_tile_kernel
from tegula.compiler.parser import parse
from tegula.ir import loop as L
from tegula.ir import lowbit
from tegula.ir.distributed import BlockedLayout
from tegula.ir.packing import pack
from tegula.ir.target import cpu_target, cuda_target
from tegula.ir.tile import LoadOp, walk_ops
from tegula.passes.manager import PassContext, run_pipeline

import tegula as tg


def test_interleaved_value_order() -> None:
    """Value ``i * (spt / n) + l`` holds element ``l * n + i`` of the run; other dims keep
    their order, and the two maps are inverse."""
    lay = BlockedLayout((2, 32), (2, 32), (1, 1), (1, 1), (1, 0), interleave=8)
    words = 32 // 8
    for v in range(lay.num_values):
        row, rest = divmod(v, 32)
        i, word = divmod(rest, words)
        assert lay.coords(0, v) == (row, word * 8 + i)
        assert lay.value_index(lay.value_position(v)) == v
    assert "interleave=8" in str(lay)
    assert lay.contiguous_run() == 1  # not a vector run in register order


def test_interleave_must_divide_the_run() -> None:
    with pytest.raises(ValueError, match="interleave"):
        BlockedLayout((1, 12), (1, 12), (1, 1), (1, 1), (1, 0), interleave=8)


LOAD = """
kernel codes(w: {dtype}[R, C], y: f32[BR, BC])
    params BR = {rows}, BC = {cols}
    grid (1)
{{
    store(y[0 : +BR, 0 : +BC], cast(load(w[ROW : +BR, COL : +BC]), f32))
}}
"""


def _source(dtype: str, row: int, col: int, rows: int = 1, cols: int = 1024) -> str:
    text = LOAD.format(dtype=dtype, rows=rows, cols=cols)
    return text.replace("ROW", str(row)).replace("COL", str(col))


def _load_layout(source: str, target) -> BlockedLayout:
    tile = build_tile_kernel(parse(source), "codes", {}, target=target.constants())
    kernel = run_pipeline(tile, ("infer-layouts",), PassContext(target=target))
    (load,) = [op for op in walk_ops(kernel.body) if isinstance(op, LoadOp)]
    return load.result.tile.layout


@pytest.mark.parametrize(("dtype", "interleave"),
                         [("i4", 8), ("u2", 16), ("u1", 32), ("nf4", 8), ("i3", 1), ("i8", 1)])
def test_which_tiles_interleave(dtype: str, interleave: int) -> None:
    """Packed widths that divide 32 interleave a one-row tile of at least 32 words on the
    CPU; never on CUDA."""
    source = _source(dtype, 0, 0)
    assert _load_layout(source, cpu_target()).interleave == interleave
    assert _load_layout(source, cuda_target("sm_90a")).interleave == 1


@pytest.mark.parametrize(("rows", "cols"), [(2, 1024), (1, 128)])
def test_slabs_and_short_runs_keep_element_order(rows: int, cols: int) -> None:
    """Several rows (LLVM would vectorize across them) or fewer than 32 words (LLVM unrolls
    the word loop first): the tile keeps its element order."""
    assert _load_layout(_source("i4", 0, 0, rows, cols), cpu_target()).interleave == 1


def test_whole_words_are_read_as_words() -> None:
    """The in-bounds path stages the run as 32-bit words built from four bytes (one load
    once LLVM folds them); each value is a shift of its word."""
    target = cpu_target()
    tile = build_tile_kernel(parse(_source("i4", 0, 0, 1, 256)), "codes", {},
                             target=target.constants())
    loop, _ = lower_kernel(tile, target)
    (words,) = [b for b in loop.buffers if b.name.endswith("_words")]
    assert words.dtype == tg.dtypes.u32 and words.size == 256 // 8
    shifts = [e for s in L.walk_stmts(loop.body) for top in L.stmt_exprs(s)
              for e in L.walk_exprs(top)
              if isinstance(e, L.Binary) and e.op is L.BinaryOp.SHR
              and isinstance(e.lhs, L.Load) and e.lhs.buffer.name == words.name]
    assert shifts  # each code: its word shifted


def _codes(rng: np.random.Generator, dtype: str, shape: tuple[int, int]) -> np.ndarray:
    dt = tg.dtypes.dtype(dtype)
    count = len(dt.table) if dt.table is not None else 1 << dt.bits
    return rng.integers(0, count, shape).astype(np.uint8)


@pytest.mark.parametrize("dtype", ["i4", "u2", "u1", "nf4", "f4e2m1"])
@pytest.mark.parametrize(("rows", "cols", "row", "col"), [
    (4, 1024, 1, 0),     # inside, byte-aligned: the word path
    (3, 1090, 1, 64),    # inside, a row pitch that is no multiple of 4 bytes
    (4, 1100, 1, 3),     # starts mid-byte: code by code
    (3, 1000, 2, 40),    # runs past the last row and column: filled with zeros
    (2, 900, 3, 0),      # a row past the tensor's last: all zeros
])
def test_interleaved_loads_decode_every_code(dtype: str, rows: int, cols: int, row: int,
                                             col: int) -> None:
    dt = tg.dtypes.dtype(dtype)
    kernel = tg.compile(_source(dtype, row, col), target="cpu", cache=False).codes
    rng = np.random.default_rng()
    codes = _codes(rng, dtype, (rows, cols))
    y = np.full((1, 1024), np.nan, np.float32)
    kernel(pack(codes, dt.bits), y)
    values = lowbit.decode(codes, dt).astype(np.float64)
    ref = np.zeros((1, 1024))
    window = values[row:row + 1, col:col + 1024]
    ref[:window.shape[0], :window.shape[1]] = window
    np.testing.assert_array_equal(y, ref)


GEMV = """
kernel gemv(x: f32[K], w: i4[K, N], y: f32[N])
    params BK = 1, BN = 256
    grid (cdiv(N, BN))
{
    j = bid.x * BN
    acc = zeros(f32, [BK, BN])
    for k in range(0, K, BK) {
        acc = acc + load(x[k : +BK])[:, None] * cast(load(w[k : +BK, j : +BN]), f32)
    }
    store(y[j : +BN], sum(acc, axis=0))
}
"""


@pytest.mark.parametrize(("K", "N"), [(64, 512), (37, 300), (8, 7)])
def test_interleaved_sums_are_stored_in_place(K: int, N: int) -> None:
    """Sums kept in the interleaved order through a loop, reduced and stored (whole and
    ragged blocks) land at their columns."""
    kernel = tg.compile(GEMV, target="cpu", cache=False).gemv
    rng = np.random.default_rng()
    x = rng.standard_normal(K).astype(np.float32)
    codes = rng.integers(0, 16, (K, N)).astype(np.uint8)
    y = np.full(N, np.nan, np.float32)
    kernel(x, pack(codes, 4), y)
    weight = lowbit.decode(codes, tg.dtypes.dtype("i4")).astype(np.float64)
    ref = x.astype(np.float64) @ weight
    # f32 sums of K terms of size |x| * 8: a few ulps of the largest partial sum.
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6 * 8 * np.abs(x).sum())


def test_gemv_words_go_straight_to_registers() -> None:
    """In the W4A16 GEMV the staged words are a choice of source once LLVM has optimized
    the kernel: no buffer of words is left to store to and read back (a staged row read
    back right after its store cost a sixth of the time with cold weights)."""
    import llvmlite.binding as llvm
    from tegula.codegen.llvm import generate_llvm
    from tegula.runtime.cpu_jit import host_target_machine, parse_llvm_ir

    source = (Path(__file__).resolve().parents[2] / "examples" / "quant_gemv.tg").read_text()
    target = cpu_target()
    tile = build_tile_kernel(parse(source), "quant_gemv_i4", {}, target=target.constants())
    loop, _ = lower_kernel(tile, target)
    (words,) = [b.name for b in loop.buffers if b.name.endswith("_words")]
    text = generate_llvm(loop)
    assert f'%"{words}" = alloca' in text
    machine = host_target_machine(3)
    module = parse_llvm_ir(text)
    module.triple, module.data_layout = machine.triple, str(machine.target_data)
    builder = llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(3))
    builder.getModulePassManager().run(module, builder)
    assert f'%"{words}" = alloca' not in str(module)
