"""The front end: examples build verified Tile IR; SSA, broadcasting, promotion, params."""

from pathlib import Path

import numpy as np
import pytest
from tegula.compiler import syntax as ast
from tegula.compiler.builtins import BUILTINS, markdown_table
from tegula.compiler.checking import entry_kernel, load_companion
from tegula.compiler.diagnostics import DSLError
from tegula.compiler.frontend import build_tile_kernel, param_space, size_symbols
from tegula.compiler.parser import parse
from tegula.ir import dtypes
from tegula.ir import tile as ir
from tegula.ir.printer_tile import print_tile_kernel
from tegula.ir.verify_tile import verify_tile_kernel

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.tg"))


def build(body: str, header: str = "x: f32[M, N], v: f16[64], s: f32", **constants):
    src = f"kernel k({header})\n    params BN = 64\n    grid (M)\n{{\n{body}\n}}\n"
    kernel = build_tile_kernel(parse(src, "t.tg"), "k", constants)
    verify_tile_kernel(kernel)
    return kernel


def ops(kernel: ir.TileKernel) -> list[ir.Op]:
    return list(ir.walk_ops(kernel.body))


def named(kernel: ir.TileKernel, name: str) -> ir.Op:
    return next(op for op in ops(kernel) if any(r.name == name for r in op.results))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_build_verified_tile_ir(path: Path) -> None:
    program = parse(path.read_text(), path.name)
    module = load_companion(path)
    assert module is not None, f"{path.name} has no companion"
    # Every kernel has an entry; an entry may check a kernel at given constants.
    assert {entry_kernel(n, e) for n, e in module.KERNELS.items()} == {
        k.name for k in program.kernels
    }
    for name, entry in module.KERNELS.items():
        kernel_def = program.kernel(entry_kernel(name, entry))
        assert kernel_def is not None
        symbols = {k: v for k, v in entry["sizes"].items() if k in size_symbols(kernel_def)}
        kernel = build_tile_kernel(program, kernel_def.name, entry.get("constants", {}), symbols)
        verify_tile_kernel(kernel)
        assert f"kernel {kernel_def.name}(" in print_tile_kernel(kernel)
        assert any(p.writes for p in kernel.params)
        # The companion's inputs are random, poisoned where written, and its reference fits.
        data = entry["inputs"](np.random.default_rng(0), **entry["sizes"])
        written = {p.name for p in kernel.params if p.writes}
        assert all(np.isnan(data[name]).all() for name in written)
        assert {p.name for p in kernel.params} == set(data)
        expected = entry["reference"](**data)
        assert set(expected) == written
        assert all(np.isfinite(v).all() for v in expected.values())


def test_softmax_ssa_and_names() -> None:
    path = ROOT / "examples" / "softmax.tg"
    kernel = build_tile_kernel(parse(path.read_text(), "softmax.tg"), "softmax", {"BN": 128})
    loop = next(op for op in ir.walk_ops(kernel.body) if isinstance(op, ir.ForOp))
    assert [r.name for r in loop.results] == ["m.2", "s.3"]
    assert [a.name for a in loop.body.args] == ["j", "m.1", "s.1"]
    assert [v.name for v in loop.inits] == ["m", "s"]
    assert loop.body.terminator.values[0].name == "m_new"
    assert all(r.type == ir.TileType(dtypes.f32, ()) for r in loop.results)
    load = next(op for op in ir.walk_ops(loop.body) if isinstance(op, ir.LoadOp))
    assert load.window.sizes == (1, 128) and load.window.squeeze == (True, False)
    assert load.result.type == ir.TileType(dtypes.f32, (128,))
    assert kernel.grid == ("M", "1", "1")
    assert kernel.num_warps == 4
    assert dict(kernel.constants) == {"BN": 128, "WARPS": 4}
    assert [s.name for s in kernel.symbols] == ["M", "N"]
    assert [(p.name, p.writes) for p in kernel.params] == [("x", False), ("y", True)]
    text = print_tile_kernel(kernel)
    assert "%t = load %x[%row, %2:+128] other" in text  # the single-pass branch
    assert "%t.1 = load %x[%row, %j:+128] other" in text  # the streaming branch
    assert "// softmax.tg:25" in text


def test_if_yields_names_assigned_in_either_branch() -> None:
    k = build(
        "    a = 1.0\n    b = 2.0\n    r = bid.x\n"
        "    if r > 0 {\n        a = s * 2.0\n        c = 1\n    } else {\n        b = s\n    }\n"
        "    d = a + b"
    )
    branch = next(op for op in k.body.ops if isinstance(op, ir.IfOp))
    assert [r.name for r in branch.results] == ["a.1", "b"]
    assert len(branch.then.terminator.values) == len(branch.otherwise.terminator.values) == 2
    assert named(k, "d").args == branch.results


def test_a_constant_if_takes_one_branch() -> None:
    k = build("    params_ok = 0\n    if BN > 32 {\n        t = zeros(f32, [BN])\n    }")
    assert not any(isinstance(op, ir.IfOp) for op in ops(k))
    assert any(isinstance(op, ir.FullOp) and op.result.tile.shape == (64,) for op in ops(k))


def test_nested_loops_carry_through_both_levels() -> None:
    k = build(
        "    acc = zeros(f32, [BN])\n"
        "    for i in range(0, 4) {\n        for j in range(0, N, BN) {\n"
        "            acc = acc + load(x[i, j : +BN])\n        }\n    }\n"
        "    store(x[0, 0 : +BN], acc)"
    )
    outer = next(op for op in k.body.ops if isinstance(op, ir.ForOp))
    inner = next(op for op in outer.body.ops if isinstance(op, ir.ForOp))
    assert outer.inits[0].name == "acc" and inner.inits == (outer.body.args[1],)
    assert outer.body.terminator.values == inner.results


def test_broadcasting_is_explicit() -> None:
    k = build("    a = zeros(f32, [16, 1])\n    b = zeros(f32, [8])\n    c = a + b")
    add = named(k, "c")
    assert add.result.type == ir.TileType(dtypes.f32, (16, 8))
    sources = {type(named(k, v.name)) for v in add.args}
    assert sources == {ir.BroadcastOp}
    expand = [op for op in ops(k) if isinstance(op, ir.ExpandDimsOp)]
    assert [op.result.tile.shape for op in expand] == [(1, 8)]


@pytest.mark.parametrize(
    ("expr", "dtype"),
    [
        ("v * 2.0", "f16"),  # a float literal is weak
        ("v * 2", "f16"),  # an int literal with a float tile takes the float type
        ("arange(8) * 2", "i32"),
        ("arange(8) * 2.0", "f32"),
        ("arange(8) / 2", "f32"),  # `/` on ints is true division in f32
        ("arange(8) // 2", "i32"),
        ("v + s", "f32"),
        ("cast(v, bf16) + v", "f32"),
        ("arange(8) < 3", "bool"),
        ("(arange(8) < 3) & (arange(8) > 1)", "bool"),
        ("cast(arange(8), i64) + arange(8)", "i64"),
    ],
)
def test_promotion(expr: str, dtype: str) -> None:
    k = build(f"    w = load(v[:])\n    r = {expr.replace('v', 'w')}")
    assert named(k, "r").result.tile.dtype is dtypes.dtype(dtype)


def test_constant_folding_keeps_literals_out_of_the_ir() -> None:
    k = build("    n = BN * 2 + cdiv(7, 2)\n    t = zeros(f32, [n])")
    (full,) = [op for op in ops(k) if isinstance(op, ir.FullOp)]
    assert full.result.tile.shape == (132,)


def test_constants_override_defaults_and_candidates_are_reported() -> None:
    src = (
        "kernel k(x: f32[N])\n    params BN = 64 in (32, 64), EPS = 1e-5, HALF = BN // 2\n"
        "    grid (cdiv(N, BN))\n{\n    store(x[0 : +HALF], zeros(f32, [HALF]))\n}\n"
    )
    program = parse(src)
    kernel = build_tile_kernel(program, "k", {"BN": 128, "EPS": 1})
    assert dict(kernel.constants) == {"BN": 128, "EPS": 1.0, "HALF": 64}
    assert kernel.grid == ("cdiv(N, 128)", "1", "1")
    assert param_space(program.kernels[0]) == {"BN": (32, 64)}
    with pytest.raises(DSLError, match=r"no compile-time parameter 'BM' \(it has: BN, EPS, HALF\)"):
        build_tile_kernel(program, "k", {"BM": 1})
    with pytest.raises(DSLError, match=r"compile-time parameter BN is an int; got 1\.5"):
        build_tile_kernel(program, "k", {"BN": 1.5})
    with pytest.raises(DSLError, match="positive integer; HALF is 0"):
        build_tile_kernel(program, "k", {"BN": 1})
    with pytest.raises(DSLError, match="no kernel named 'kk'"):
        build_tile_kernel(program, "kk")


def test_window_forms() -> None:
    k = build(
        "    i = bid.x\n    a = load(x[i * BN : i * BN + BN, 0 : +4])\n"
        "    b = load(v[:])\n    m = load(v[0 : +64], mask=arange(64) < 10, other=1)",
    )
    a, b, m = (named(k, n) for n in "abm")
    assert a.window.sizes == (64, 4) and b.window.sizes == (64,)
    assert m.other.tile == ir.TileType(dtypes.f16, ())
    assert m.mask.tile == ir.TileType(dtypes.boolean, (64,))


def test_shared_swizzle_pad_and_convert() -> None:
    from tegula.ir.layout import Layout
    from tegula.ir.swizzle import Swizzle, SwizzledLayout
    from tegula.ir.tv_layout import local, spatial

    k = build(
        "    t = zeros(f32, [16, 32])\n    a = shared(t, swizzle=(3, 2, 3))\n"
        "    b = shared(t, pad=4)\n    c = convert(t, spatial(4, 32) * local(4, 1))"
    )
    a, b, c = (named(k, n).result.tile for n in "abc")
    assert a.scope is ir.MemScope.SHARED
    assert a.layout == SwizzledLayout(Swizzle(3, 2, 3), Layout((32, 16), (1, 32)))
    assert b.layout(0, 1) == 36  # element (1, 0) after a padded row of 36
    assert c.layout == spatial(4, 32) * local(4, 1)
    assert named(k, "c").pinned


def test_dot_and_transpose() -> None:
    k = build(
        "    a = zeros(f16, [16, 8])\n    b = zeros(f16, [8, 32])\n"
        "    c = dot(a, b)\n    d = dot(transpose(b), transpose(a), zeros(f32, [32, 16]))"
    )
    assert named(k, "c").result.tile == ir.TileType(dtypes.f32, (16, 32))
    assert named(k, "d").result.tile.shape == (32, 16)


def test_builtins_table_drives_the_docs() -> None:
    table = markdown_table()
    assert all(f"`{b.signature}`" in table for b in BUILTINS.values())
    docs = (ROOT / "docs" / "dsl.md").read_text()
    assert table in docs


def test_nodes_compare_without_spans() -> None:
    a = parse("kernel k(x: f32[N]) grid (N) {\n  y = 1 + 2\n}\n")
    b = parse("kernel k(x: f32[N])\n grid (N)\n{\n\n     y = 1   +   2\n}\n")
    assert a.kernels[0].body == b.kernels[0].body
    assert isinstance(a.kernels[0].body.stmts[0], ast.Assign)
