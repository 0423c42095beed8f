"""Tile IR printer and verifier, on kernels built by hand."""

import pytest
from tegula.ir import dtypes
from tegula.ir import tile as ir
from tegula.ir.printer_tile import print_tile_kernel
from tegula.ir.verify_tile import TileIRError, verify_tile_kernel

F32 = dtypes.f32
I32 = dtypes.i32
LOC = ir.SourceLoc("k.tg", 3, 5)


def tile(name: str, dtype=F32, shape=(), **kw) -> ir.Value:
    return ir.Value(name, ir.TileType(dtype, shape, **kw))


X = ir.Value("x", ir.TensorType(F32, ("N",)))
N = tile("N", dtypes.i64)


def kernel(*ops: ir.Op) -> ir.TileKernel:
    return ir.TileKernel(
        name="k",
        params=(ir.Param("x", X, writes=True),),
        symbols=(N,),
        grid=("cdiv(N, 64)", "1", "1"),
        num_warps=4,
        body=ir.Block((), ops),
    )


def window(*starts: ir.Value, sizes=(64,), squeeze=(False,)) -> ir.SliceSpec:
    return ir.SliceSpec(starts=starts, sizes=sizes, squeeze=squeeze)


ZERO = tile("zero", I32)
ONE = tile("one", I32)
FOUR = tile("four", I32)
T = tile("t", shape=(64,))


def base_ops() -> list[ir.Op]:
    return [
        ir.FullOp(results=(ZERO,), value=0),
        ir.FullOp(results=(ONE,), value=1),
        ir.FullOp(results=(FOUR,), value=4),
        ir.LoadOp(results=(T,), tensor=X, window=window(ZERO), loc=LOC),
    ]


def summing_loop() -> ir.ForOp:
    i, acc, acc1, acc2 = tile("i", I32), T, tile("acc.1", shape=(64,)), tile("acc.2", shape=(64,))
    body = ir.Block(
        (i, acc1),
        (
            ir.ElementwiseOp(results=(acc2,), fn="add", args=(acc1, acc1)),
            ir.YieldOp(values=(acc2,)),
        ),
    )
    return ir.ForOp(
        results=(tile("acc.3", shape=(64,)),),
        start=ZERO,
        stop=FOUR,
        step=ONE,
        inits=(acc,),
        body=body,
        loc=LOC,
    )


def test_a_well_formed_kernel_verifies_and_prints() -> None:
    loop = summing_loop()
    k = kernel(
        *base_ops(),
        loop,
        ir.StoreOp(tensor=X, window=window(ZERO), value=loop.result),
    )
    verify_tile_kernel(k)
    text = print_tile_kernel(k)
    assert text.splitlines()[0] == (
        "kernel k(%x: f32[N] writes) symbols(%N) grid(cdiv(N, 64), 1, 1) warps 4 {"
    )
    assert "%t = load %x[%zero:+64] : f32[64]" in text
    assert text.count("// k.tg:3") == 2
    assert (
        "%acc.3 = for %i = %zero to %four step %one iter_args(%acc.1 = %t) -> (f32[64]) {" in text
    )
    assert "\n    %acc.2 = add %acc.1, %acc.1 : f32[64]\n    yield %acc.2\n  }\n" in text
    assert "store %acc.3 to %x[%zero:+64]" in text


def test_layouts_show_in_types() -> None:
    from tegula.ir.tv_layout import local, spatial

    layout = spatial(4, 8) * local(2, 1)
    src = tile("a", shape=(8, 8))
    out = ir.Value("b", src.tile.with_layout(layout))
    op = ir.ConvertLayoutOp(results=(out,), source=src, pinned=True)
    text = print_tile_kernel(kernel(ir.FullOp(results=(src,), value=1.0), op))
    assert f"%b = convert_layout pinned %a : f32[8, 8] -> f32[8, 8] #{layout}" in text


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        (
            lambda: [ir.ElementwiseOp(results=(tile("y"),), fn="exp", args=(tile("undefined"),))],
            "%undefined is used but not defined",
        ),
        (
            lambda: [*base_ops(), ir.FullOp(results=(T,), value=1.0)],
            "value name %t is defined twice",
        ),
        (
            lambda: [
                *base_ops(),
                summing_loop(),
                ir.ElementwiseOp(
                    results=(tile("z", shape=(64,)),), fn="neg", args=(tile("acc.2", shape=(64,)),)
                ),
            ],
            "%acc.2 is used but not defined",  # defined only inside the loop body
        ),
        (
            lambda: [
                *base_ops(),
                ir.ElementwiseOp(results=(tile("z", shape=(64,)),), fn="add", args=(T, ZERO)),
            ],
            "operand %zero has shape [], the result [64]",
        ),
        (
            lambda: [
                *base_ops(),
                ir.ElementwiseOp(results=(tile("z", I32),), fn="exp", args=(ZERO,)),
            ],
            "exp takes float operands, not i32",
        ),
        (
            lambda: [
                *base_ops(),
                ir.LoadOp(
                    results=(tile("w", shape=(64, 1)),),
                    tensor=X,
                    window=window(ZERO, ZERO, sizes=(64, 1), squeeze=(False, False)),
                ),
            ],
            "%x has 1 dims; the window has 2",
        ),
        (
            lambda: [
                *base_ops(),
                ir.ReduceOp(
                    results=(tile("r", shape=(64,)),), source=T, axis=0, kind=ir.ReduceKind.SUM
                ),
            ],
            "reducing f32[64] along 0 does not give f32[64]",
        ),
        (
            lambda: [*base_ops(), ir.BroadcastOp(results=(tile("b", shape=(32,)),), source=T)],
            "cannot broadcast f32[64] to f32[32]",
        ),
        (
            lambda: [*base_ops(), ir.DotOp(results=(tile("d", shape=(64, 64)),), a=T, b=T, acc=T)],
            "cannot multiply",
        ),
    ],
)
def test_verifier_rejects(ops, message: str) -> None:
    with pytest.raises(TileIRError, match=message.replace("[", r"\[").replace("]", r"\]")):
        verify_tile_kernel(kernel(*ops()))


def test_yield_types_must_match_the_loop() -> None:
    loop = summing_loop()
    wrong = tile("w", shape=(32,))
    body = ir.Block(
        loop.body.args,
        (ir.FullOp(results=(wrong,), value=0.0), ir.YieldOp(values=(wrong,))),
    )
    bad = ir.ForOp(
        results=loop.results, start=ZERO, stop=FOUR, step=ONE, inits=loop.inits, body=body
    )
    with pytest.raises(TileIRError, match=r"yields \(f32\[32\]\) but \(f32\[64\]\) is expected"):
        verify_tile_kernel(kernel(*base_ops(), bad))


def test_if_needs_a_bool_scalar_and_matching_branches() -> None:
    cond = tile("c", dtypes.boolean)
    a, b = tile("a"), tile("b")
    then = ir.Block((), (ir.FullOp(results=(a,), value=1.0), ir.YieldOp(values=(a,))))
    other = ir.Block((), (ir.FullOp(results=(b,), value=2.0), ir.YieldOp(values=(b,))))
    ok = ir.IfOp(results=(tile("r"),), cond=cond, then=then, otherwise=other)
    verify_tile_kernel(kernel(ir.FullOp(results=(cond,), value=True), ok))
    empty = ir.Block((), ())
    missing = ir.IfOp(results=(tile("r"),), cond=cond, then=then, otherwise=empty)
    with pytest.raises(TileIRError, match="must end in a yield"):
        verify_tile_kernel(kernel(ir.FullOp(results=(cond,), value=True), missing))
    not_bool = ir.IfOp(results=(), cond=ZERO, then=empty, otherwise=empty)
    with pytest.raises(TileIRError, match="must be a bool scalar"):
        verify_tile_kernel(kernel(ir.FullOp(results=(ZERO,), value=0), not_bool))
