"""Loop IR printer and verifier."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from tegula.ir.dtypes import boolean, f16, f32, i16, i32, u32
from tegula.ir.loop import (
    Binary,
    BinaryOp,
    Bitcast,
    Buffer,
    Cast,
    Const,
    Copy,
    For,
    If,
    Let,
    Load,
    LoopKernel,
    LoopParam,
    Scope,
    Select,
    Store,
    Var,
    seq,
)
from tegula.ir.printer_loop import format_expr, print_loop_kernel
from tegula.ir.verify_loop import LoopIRError, verify_loop_kernel

sys.path.insert(0, str(Path(__file__).parents[1] / "codegen"))
from handmade_kernels import all_kernels, row_sum, vector_add

X = Buffer("x", f32, Scope.GLOBAL)
N = Var("N")


def kernel(body, buffers=(), smem_bytes=0) -> LoopKernel:
    return LoopKernel(
        name="k",
        params=(LoopParam("x", buffer=X),),
        symbols=(N,),
        grid=(N, Const(1), Const(1)),
        block_threads=1,
        buffers=tuple(buffers),
        smem_bytes=smem_bytes,
        body=body,
    )


@pytest.mark.parametrize("k", [*all_kernels(cpu=True), *all_kernels(cpu=False)], ids=str)
def test_handmade_kernels_verify(k):
    verify_loop_kernel(k)


def test_printer_shows_header_and_indented_body():
    text = print_loop_kernel(vector_add(cpu=False))
    assert text.startswith("kernel vector_add(a: global f32* readonly, b: global f32* readonly")
    assert "grid ((N + 255) // 256, 1, 1)  threads 256  smem 0 bytes" in text
    assert "    # c[i] = a[i] + b[i]  # vadd.tg:4\n" in text
    assert "    if i < N:\n        c[i] = a[i] + b[i]\n" in text
    assert "buffer acc: local f32[4]" in print_loop_kernel(row_sum(cpu=True))


def test_printer_parenthesizes_only_where_needed():
    a, b, c = Var("a"), Var("b"), Var("c")
    assert format_expr(Binary(BinaryOp.MUL, Binary(BinaryOp.ADD, a, b), c)) == "(a + b) * c"
    assert format_expr(Binary(BinaryOp.ADD, a, Binary(BinaryOp.MUL, b, c))) == "a + b * c"
    assert format_expr(Binary(BinaryOp.SUB, a, Binary(BinaryOp.SUB, b, c))) == "a - (b - c)"
    assert format_expr(Cast(f16, Const(1.5, f32))) == "f16(1.5)"


def test_undefined_variable_is_named():
    with pytest.raises(LoopIRError, match="variable 'y' is used but not defined"):
        verify_loop_kernel(kernel(Store(X, Var("y"), Const(1.0, f32))))


def test_let_is_not_visible_outside_its_loop_body():
    j, t = Var("j"), Var("t", f32)
    body = seq(
        For(j, Const(0), N, Const(1), Let(t, Load(X, j))),
        Store(X, Const(0), t),
    )
    with pytest.raises(LoopIRError, match="variable 't' is used but not defined"):
        verify_loop_kernel(kernel(body))
    # ...but it is visible to later statements of the same body.
    inside = For(j, Const(0), N, Const(1), seq(Let(t, Load(X, j)), Store(X, j, t)))
    verify_loop_kernel(kernel(inside))


def test_let_in_a_branch_stays_in_the_branch():
    t = Var("t", f32)
    body = seq(If(Const(True, boolean), Let(t, Const(1.0, f32))), Store(X, Const(0), t))
    with pytest.raises(LoopIRError, match="'t' is used but not defined"):
        verify_loop_kernel(kernel(body))


def test_binary_operands_must_agree():
    bad = Store(X, Const(0), Binary(BinaryOp.ADD, Const(1.0, f32), Cast(i32, Const(1.0, f32))))
    with pytest.raises(LoopIRError, match=r"operands of '\+' have dtypes f32 and i32"):
        verify_loop_kernel(kernel(bad))


def test_bitcast_keeps_the_width():
    word = Const(0x4B000000, u32)
    assert format_expr(Bitcast(f32, word)) == "bitcast<f32>(u32(1258291200))"
    verify_loop_kernel(kernel(Store(X, Const(0), Bitcast(f32, word))))
    narrow = Bitcast(f32, Const(1, i16))
    with pytest.raises(LoopIRError, match="bitcast from i16 to f32: needs two number types"):
        verify_loop_kernel(kernel(Store(X, Const(0), narrow)))


def test_select_and_store_types():
    sel = Select(Const(1), Const(1.0, f32), Const(2.0, f32))
    with pytest.raises(LoopIRError, match="select condition has dtype i64, expected bool"):
        verify_loop_kernel(kernel(Store(X, Const(0), sel)))
    with pytest.raises(LoopIRError, match="value stored to 'x' has dtype i64, expected f32"):
        verify_loop_kernel(kernel(Store(X, Const(0), Const(3))))


def test_floor_division_needs_integers():
    bad = Let(Var("q", f32), Binary(BinaryOp.FLOORDIV, Const(1.0, f32), Const(2.0, f32)))
    with pytest.raises(LoopIRError, match="expected integers"):
        verify_loop_kernel(kernel(bad))


def test_unknown_buffer_and_read_only_writes():
    stray = Buffer("stray", f32, Scope.LOCAL, 4)
    with pytest.raises(LoopIRError, match="buffer 'stray', which is neither"):
        verify_loop_kernel(kernel(Store(stray, Const(0), Const(1.0, f32))))
    k = kernel(Store(X, Const(0), Const(1.0, f32)))
    ro = dataclasses.replace(X, read_only=True)
    k = dataclasses.replace(
        k, params=(LoopParam("x", buffer=ro),), body=Store(ro, Const(0), Const(1.0, f32))
    )
    with pytest.raises(LoopIRError, match="read-only buffer 'x'"):
        verify_loop_kernel(k)


def test_shared_buffers_fit_in_shared_memory():
    tile = Buffer("tile", f32, Scope.SHARED, 64, smem_offset=128)
    body = Store(tile, Const(0), Const(1.0, f32))
    verify_loop_kernel(kernel(body, [tile], smem_bytes=384))
    with pytest.raises(LoopIRError, match=r"spans bytes \[128, 384\) outside smem_bytes=256"):
        verify_loop_kernel(kernel(body, [tile], smem_bytes=256))


def test_copy_lanes_and_dtypes():
    regs = Buffer("r", f32, Scope.LOCAL, 8)
    halves = Buffer("h", f16, Scope.LOCAL, 8)
    with pytest.raises(LoopIRError, match="has 3 lanes"):
        verify_loop_kernel(kernel(Copy(regs, Const(0), X, Const(0), lanes=3), [regs]))
    with pytest.raises(LoopIRError, match="mixes dtypes f32 and f16"):
        verify_loop_kernel(kernel(Copy(halves, Const(0), X, Const(0), lanes=4), [halves]))


def test_variable_used_with_another_dtype():
    body = Store(X, Const(0), Cast(f32, Var("N", i32)))
    with pytest.raises(LoopIRError, match="'N' is used as i32 but defined as i64"):
        verify_loop_kernel(kernel(body))


def test_grid_uses_only_symbols():
    k = dataclasses.replace(kernel(seq()), grid=(Var("M"), Const(1), Const(1)))
    with pytest.raises(LoopIRError, match="grid uses 'M', which is not a symbol"):
        verify_loop_kernel(k)


def test_stmt_buffers_names_every_buffer_a_statement_touches_itself() -> None:
    from tegula.ir import loop as L
    from tegula.ir.dtypes import f32, i64

    def buf(name: str) -> L.Buffer:
        return L.Buffer(name, f32, L.Scope.LOCAL, 4)

    a, b, c, d, e = (buf(n) for n in "abcde")
    zero = L.Const(0, i64)
    store = L.Store(a, zero, L.Load(b, zero))
    assert [x.name for x in L.stmt_buffers(store)] == ["a", "b"]
    copy = L.Copy(c, zero, d, zero)
    assert [x.name for x in L.stmt_buffers(copy)] == ["c", "d"]
    assert [x.name for x in L.stmt_buffers(L.Prefetch(e, zero))] == ["e"]
    asm = L.Asm("mov.b32 %0, %1;", ((a, zero),), ("=f",), (L.Address(b, zero),), ("l",))
    assert [x.name for x in L.stmt_buffers(asm)] == ["a", "b"]
    # A loop's own buffers are those of its bounds; its body's statements answer for theirs.
    bounds = L.Buffer("bounds", i64, L.Scope.LOCAL, 1)
    loop = L.For(L.Var("k"), zero, L.Load(bounds, zero), L.Const(1, i64), store)
    assert [x.name for x in L.stmt_buffers(loop)] == ["bounds"]


def test_unroll_factors_are_positive_and_only_on_serial_loops():
    from tegula.ir.loop import LoopKind

    j = Var("j")
    loop = For(j, Const(0), N, Const(1), Store(X, j, Const(1.0, f32)), unroll=4)
    verify_loop_kernel(kernel(loop))
    assert "for j in range(0, N):  # unroll 4" in print_loop_kernel(kernel(loop))
    with pytest.raises(LoopIRError, match="loop 'j' has unroll factor 0"):
        verify_loop_kernel(kernel(dataclasses.replace(loop, unroll=0)))
    with pytest.raises(LoopIRError, match="vectorize loop 'j' has unroll factor 4"):
        verify_loop_kernel(kernel(dataclasses.replace(loop, kind=LoopKind.VECTORIZE)))


def test_tensor_maps_are_params_whose_address_alone_is_taken():
    """A TMA tensor map: a 128-byte by-value parameter of a tensor's; the body may take its
    address (the operand of a bulk copy) and nothing else."""
    from tegula.ir.dtypes import u8
    from tegula.ir.loop import Address, Asm, TensorMap

    tensor_map = TensorMap(Buffer("x_map", u8, Scope.PARAM, 128), X, (32, 8), 64)
    use = Asm("prefetch.tensormap [%0];", inputs=(Address(tensor_map.buffer, Const(0)),),
              input_constraints=("l",), memory=True)
    k = dataclasses.replace(kernel(use), tensor_maps=(tensor_map,))
    verify_loop_kernel(k)
    text = print_loop_kernel(k)
    assert "tensor map x_map of x: box 8 x 32, swizzle 64 B" in text
    read = Store(X, Const(0), Cast(f32, Load(tensor_map.buffer, Const(0))))
    with pytest.raises(LoopIRError, match="load from tensor map 'x_map'"):
        verify_loop_kernel(dataclasses.replace(k, body=read))
    stray = TensorMap(Buffer("y_map", u8, Scope.PARAM, 128), Buffer("y", f32, Scope.GLOBAL),
                      (32, 8), 64)
    with pytest.raises(LoopIRError, match="describes 'y', not a tensor parameter"):
        verify_loop_kernel(dataclasses.replace(k, tensor_maps=(stray,)))
    odd = dataclasses.replace(tensor_map, box=(3, 8))
    with pytest.raises(LoopIRError, match="whole 16 bytes"):
        verify_loop_kernel(dataclasses.replace(k, tensor_maps=(odd,)))


def test_named_barriers_take_whole_warps_and_returns_print():
    """A barrier of the kernel's first N threads (what remains once a producer warp has
    left) prints with its count and must count whole warps; a return prints as such."""
    from tegula.ir.loop import Barrier, Return, Seq

    k = kernel(Seq((Barrier(), Barrier(256), Return())))
    verify_loop_kernel(k)
    text = print_loop_kernel(k)
    assert "barrier()" in text and "barrier(256 threads)" in text and "return" in text
    for odd in (40, 0):
        with pytest.raises(LoopIRError, match=f"named barrier of {odd} threads"):
            verify_loop_kernel(kernel(Barrier(odd)))
