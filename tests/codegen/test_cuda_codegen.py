"""CUDA C generation: every hand-built kernel compiles with NVRTC and reads well."""

from __future__ import annotations

import math

import pytest
from conftest import ARCHES
from handmade_kernels import (
    all_kernels,
    block_sum_cuda,
    mixed_math,
    row_sum,
    vector_add,
    vector_add4,
)
from tegula.codegen.cuda import generate_cuda
from tegula.codegen.cuda_expr import format_float, format_int
from tegula.ir.dtypes import f32, f64, i32, i64, u32
from tegula.ir.verify_loop import verify_loop_kernel


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("kernel", all_kernels(cpu=False), ids=lambda k: k.name)
def test_every_kernel_compiles_to_a_cubin(kernel, arch, compile_cuda):
    verify_loop_kernel(kernel)
    cubin = compile_cuda(generate_cuda(kernel), kernel.name, arch)
    assert len(cubin) > 0


def test_vector_add_reads_like_handwritten_code():
    src = generate_cuda(vector_add(cpu=False))
    assert 'extern "C" __global__ void __launch_bounds__(256) vector_add(' in src
    assert "const float* __restrict__ a," in src and "long long N)" in src
    assert "// c[i] = a[i] + b[i]  # vadd.tg:4" in src
    assert "c[i] = a[i] + b[i];" in src
    body = src[src.index("{") :]
    assert "((" not in body  # no redundant parentheses
    assert "#include" not in src and "floordiv" not in src  # only what is used


def test_vector_copies_unroll_and_masks():
    src = generate_cuda(vector_add4(cpu=False))
    assert "*reinterpret_cast<float4*>(&ra[0]) = *reinterpret_cast<const float4*>(&a[i]);" in src
    assert "#pragma unroll\n        for (long long lane = 0; lane < 4; ++lane) {" in src
    assert "if (i + 3 < N) c[i + 3] = ra[3];" in src
    assert "float ra[4];" in src


def test_descending_loop_and_rebound_names():
    src = generate_cuda(row_sum(cpu=False))
    assert "for (long long k = 3; k > 0; --k) {" in src
    assert "float total_1 = acc[0];" in src  # a second Let of `total` gets its own name
    assert "#pragma unroll 3\n" in generate_cuda(row_sum(cpu=False, unroll=3))
    assert "#pragma unroll 3" not in src


def test_floor_division_helpers_and_half_types_only_when_used():
    src = generate_cuda(mixed_math(cpu=False))
    assert "#include <cuda_fp16.h>" in src and "#include <cuda_bf16.h>" in src
    assert "fdiv[i] = floordiv(qv, d);" in src
    assert "fmod7[i] = floormod(wv, 7LL);" in src
    assert "__half* __restrict__ half_," in src  # `half` is a CUDA type name


def test_shared_memory_barrier_and_shuffles():
    src = generate_cuda(block_sum_cuda())
    assert "extern __shared__ __align__(16) unsigned char smem[];" in src
    assert "float* partial = reinterpret_cast<float*>(smem + 0);" in src
    assert "__syncthreads();" in src
    assert "__shfl_xor_sync(0xffffffffu, v0, 16)" in src
    assert "atomicAdd(&out[0], w0_sum);" in src
    assert "int lane = tid & 0x1f;" in src


@pytest.mark.parametrize(
    ("value", "dtype", "text"),
    [
        (0.1, f32, "0.1f"),
        (3.0, f32, "3.0f"),
        (1e-30, f32, "1e-30f"),
        (0.1, f64, "0.1"),
        (math.inf, f32, "__int_as_float(0x7f800000)"),
        (-math.inf, f64, "__longlong_as_double(0xfff0000000000000ULL)"),
        (math.nan, f32, "__int_as_float(0x7fffffff)"),
    ],
)
def test_float_literals_are_exact(value, dtype, text):
    assert format_float(value, dtype) == text


def test_integer_literals_carry_their_type_where_needed():
    assert format_int(5, i64, pinned=True) == "5"
    assert format_int(5, i64, pinned=False) == "5LL"
    assert format_int(1 << 40, i64, pinned=True) == "1099511627776LL"
    assert format_int(-(1 << 63), i64, pinned=True) == "(-9223372036854775807LL - 1)"
    assert format_int(-(1 << 31), i32, pinned=True) == "(-2147483647 - 1)"
    assert format_int(255, u32, pinned=True, hexadecimal=True) == "0xffu"
