"""LLVM IR generation: JIT-compiled hand-built kernels checked against NumPy."""

from __future__ import annotations

import math
import re

import ml_dtypes
import numpy as np
import pytest
from handmade_kernels import (
    MIXED_MATH_OUTPUTS,
    all_kernels,
    block_sum_cuda,
    mixed_math,
    row_sum,
    vector_add,
    vector_add4,
)
from tegula.codegen.llvm import generate_llvm
from tegula.ir.verify_loop import LoopIRError, verify_loop_kernel

RNG = np.random.default_rng()


def blocks(n: int, per_block: int) -> list[int]:
    return [-(-n // per_block), 1, 1]


@pytest.mark.parametrize("kernel", all_kernels(cpu=True), ids=lambda k: k.name)
def test_generated_ir_parses_and_verifies(kernel, jit):
    verify_loop_kernel(kernel)
    text = generate_llvm(kernel)
    assert f'define void @"{kernel.name}"(ptr %"argv", i64 %"begin", i64 %"end")' in text
    jit(text, kernel.name)


@pytest.mark.parametrize("n", [1, 255, 1000])
def test_vector_add_matches_numpy_and_respects_the_ragged_tail(n, jit):
    k = vector_add(cpu=True)
    fn = jit(generate_llvm(k), k.name)
    a, b = (RNG.standard_normal(n).astype(np.float32) for _ in range(2))
    c = np.full(n + 8, np.nan, np.float32)  # poisoned, with a guard zone past the end
    fn([a, b, c], [n], blocks(n, 256))
    np.testing.assert_array_equal(c[:n], a + b)
    assert np.isnan(c[n:]).all()


def test_vectorize_loop_becomes_simd(jit):
    k = vector_add(cpu=True)
    text = generate_llvm(k)
    # The body branches (the ragged tail), so vectorization is not forced (forcing a loop
    # LLVM cannot vectorize only prints a warning); LLVM vectorizes it on its own.
    assert "llvm.loop.vectorize.enable" not in text
    assert " x float>" in jit(text, k.name).optimized_ir


def test_straight_line_vectorize_loops_are_forced():
    from dataclasses import replace

    from tegula.ir.dtypes import f32, i64
    from tegula.ir.loop import Buffer, For, LoopKind, Scope, Store, Var, const
    from tegula.ir.loop import Load as LoadExpr

    k = vector_add(cpu=True)
    local = Buffer("tmp", f32, Scope.LOCAL, 64)
    i = Var("i", i64)
    loop = For(i, const(0), const(64), const(1),
               Store(local, i, LoadExpr(local, i)), LoopKind.VECTORIZE)
    k2 = replace(k, buffers=(*k.buffers, local), body=loop)
    assert "llvm.loop.vectorize.enable" in generate_llvm(k2)


def test_local_buffers_start_on_a_cache_line():
    """A vector stored to a local buffer and read back is forwarded from the store only if
    neither access splits a cache line: every local buffer is 64-byte aligned."""
    text = generate_llvm(row_sum(cpu=True))
    allocas = re.findall(r"alloca \[.*?\](.*)", text)
    assert allocas and all(a.endswith("align 64") for a in allocas)


def test_axpy4_vector_copies_and_masked_tail(jit):
    k = vector_add4(cpu=True)
    text = generate_llvm(k)
    assert "<4 x float>" in text and "llvm.loop.unroll.full" in text
    fn = jit(text, k.name)
    n = 1000 + 2  # a ragged last vector
    a, b = (RNG.standard_normal(n).astype(np.float32) for _ in range(2))
    c = np.full(n + 6, np.nan, np.float32)
    alpha = float(RNG.uniform(0.5, 2.0))
    fn([a, b, c, alpha], [n], blocks(n, 256))
    np.testing.assert_allclose(c[:n], a * np.float32(alpha) + b, rtol=1e-6, atol=1e-6)
    assert np.isnan(c[n:]).all()


def test_vector_copies_assume_only_element_alignment_of_arguments(jit):
    """An argument may be a NumPy view that starts anywhere: its vector accesses promise
    4-byte alignment (an f32), the kernel's own local buffers the whole vector's."""
    k = vector_add4(cpu=True)
    text = generate_llvm(k)
    assert re.search(r"load <4 x float>, ptr %\S+, align 4", text)
    fn = jit(text, k.name)
    n = 1000
    base = [RNG.standard_normal(n + 1).astype(np.float32) for _ in range(2)]
    a, b = (x[1:] for x in base)  # 4 bytes past a 16-byte boundary
    c = np.full(n + 1, np.nan, np.float32)[1:]
    assert a.ctypes.data % 16 and c.ctypes.data % 16
    fn([a, b, c, 2.0], [n], blocks(n, 256))
    np.testing.assert_allclose(c, a * np.float32(2.0) + b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("unroll", [1, 2])
def test_row_sum_with_local_buffer_and_descending_loop(jit, unroll):
    k = row_sum(cpu=True, unroll=unroll)
    text = generate_llvm(k)
    assert ("llvm.loop.unroll.count" in text) is (unroll > 1)  # the hint reaches LLVM
    fn = jit(text, k.name)
    rows, cols = 7, 37
    x = RNG.standard_normal((rows, cols)).astype(np.float32)
    out = np.full(rows, np.nan, np.float32)
    fn([x, out], [rows, cols], [rows, 1, 1])
    np.testing.assert_allclose(out, x.astype(np.float64).sum(axis=1), rtol=1e-5, atol=1e-5)


def test_mixed_math_matches_numpy_and_python_floor_division(jit):
    k = mixed_math(cpu=True)
    fn = jit(generate_llvm(k), k.name)
    n = 700
    x = (RNG.standard_normal(n) * 3).astype(np.float32)
    q = RNG.integers(-1000, 1000, n).astype(np.int32)
    w = RNG.integers(-(10**12), 10**12, n).astype(np.int64)
    outs = {name: np.zeros(n, dt.to_numpy()) for name, dt in MIXED_MATH_OUTPUTS.items()}
    for arr in outs.values():
        arr.view(np.uint8)[:] = 0xA5  # poison
    d, scale = -int(RNG.integers(2, 9)), float(RNG.uniform(0.5, 1.5))
    fn([x, q, w, *outs.values(), d, scale], [n], blocks(n, 256))

    # Floor division and modulo: exactly Python's, negative operands included.
    assert [int(v) for v in outs["fdiv"]] == [int(a) // d for a in q]
    assert [int(v) for v in outs["fmod"]] == [int(a) % d for a in q]
    assert [int(v) for v in outs["fdiv3"]] == [int(a) // -3 for a in q]
    assert [int(v) for v in outs["fmod7"]] == [int(a) % 7 for a in w]

    x64, pos = x.astype(np.float64), x > 0
    erf = np.vectorize(math.erf)
    smooth = np.exp(x64 * -0.5) * np.tanh(x64) + erf(x64) + 1 / np.sqrt(1 + x64 * x64)
    rough = (
        np.sqrt(abs(x64)) + np.log(abs(x64) + 1) + np.floor(x * np.float32(scale)) + np.ceil(x64)
    )
    np.testing.assert_allclose(outs["sel"], np.where(pos, smooth, rough), rtol=1e-5, atol=1e-5)
    trig = (
        np.sin(x64) * np.cos(x64)
        + np.exp2(np.minimum(x64, 3))
        + np.log2(abs(x64) + 2)
        + (abs(x64) + 0.5) ** 1.5
    )
    np.testing.assert_allclose(outs["trig"], trig, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(outs["trunc"], (x * np.float32(10)).astype(np.int32) + pos)
    np.testing.assert_array_equal(outs["tofloat"], (w + q).astype(np.float32))
    np.testing.assert_array_equal(outs["flag"], pos & (q < 0))
    np.testing.assert_allclose(outs["dbl"], x64 * x64 + np.sqrt(abs(x64) + 1), rtol=1e-14)

    # Half precision rounds after every operation, exactly like NumPy's float16.
    h = x.astype(np.float16)
    with np.errstate(over="ignore"):
        half = (h + np.float16(1)) * np.exp(-h.astype(np.float32)).astype(np.float16)
    np.testing.assert_array_equal(outs["half"], half)
    bh = x.astype(ml_dtypes.bfloat16)
    other = (np.float32(0.25) - bh.astype(np.float32)).astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(
        outs["bf"], np.maximum(bh.astype(np.float32), other.astype(np.float32))
    )


def test_names_and_blocks_are_readable():
    text = generate_llvm(row_sum(cpu=True))
    for fragment in ('%"row" =', '%"j" = phi', "for.j.header:", "for.u.body:", "if.then:"):
        assert fragment in text
    assert "; acc = zeros(f32, [4])" in text  # Comments arrive as IR comments.


def test_shuffle_has_no_cpu_lowering():
    with pytest.raises(LoopIRError, match="ShuffleXor"):
        generate_llvm(block_sum_cuda())


def test_explicit_triple_leaves_out_host_attributes():
    text = generate_llvm(vector_add(cpu=True), triple="aarch64-unknown-linux-gnu")
    assert 'target triple = "aarch64-unknown-linux-gnu"' in text
    assert "target-cpu" not in text
