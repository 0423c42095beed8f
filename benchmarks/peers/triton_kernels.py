"""Triton peers, written the way Triton's tutorials write them (vector add, fused softmax,
matrix multiplication), taking their outputs as arguments like tegula's kernels. Importing this
needs Triton."""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl

VECTOR_ADD_BLOCK = 1024


@triton.jit
def _vector_add_kernel(x_ptr, y_ptr, z_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(axis=0)
    offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask)
    y = tl.load(y_ptr + offsets, mask=mask)
    tl.store(z_ptr + offsets, x + y, mask=mask)


def vector_add(x: Any, y: Any, z: Any) -> Any:
    """z = x + y for contiguous 1-D torch tensors."""
    n = z.numel()
    _vector_add_kernel[(triton.cdiv(n, VECTOR_ADD_BLOCK),)](x, y, z, n,
                                                            BLOCK_SIZE=VECTOR_ADD_BLOCK)
    return z


@triton.jit
def _softmax_kernel(y_ptr, x_ptr, x_row_stride, y_row_stride, n_cols,
                    BLOCK_SIZE: tl.constexpr):
    # One program per row; the whole row lives in registers.
    row = tl.program_id(0)
    offsets = tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_cols
    x = tl.load(x_ptr + row * x_row_stride + offsets, mask=mask, other=-float("inf"))
    x = x - tl.max(x, axis=0)
    numerator = tl.exp(x)
    y = numerator / tl.sum(numerator, axis=0)
    tl.store(y_ptr + row * y_row_stride + offsets, y, mask=mask)


def softmax(x: Any, y: Any) -> Any:
    """Row-wise softmax of a 2-D torch tensor into `y`."""
    n_rows, n_cols = x.shape
    block = triton.next_power_of_2(n_cols)
    num_warps = 16 if block >= 4096 else 8 if block >= 2048 else 4
    _softmax_kernel[(n_rows,)](y, x, x.stride(0), y.stride(0), n_cols,
                               BLOCK_SIZE=block, num_warps=num_warps)
    return y


def _matmul_configs() -> list[Any]:
    # The tutorial's CUDA autotune list trimmed to five, so each shape tunes in seconds: the
    # large tiles for big square problems, the narrow ones for few-row (memory-bound) problems.
    def config(bm: int, bn: int, bk: int, stages: int, warps: int) -> Any:
        return triton.Config({"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": bn, "BLOCK_SIZE_K": bk,
                              "GROUP_SIZE_M": 8}, num_stages=stages, num_warps=warps)

    return [
        config(128, 256, 64, 3, 8),
        config(64, 256, 32, 4, 4),
        config(128, 128, 32, 4, 4),
        config(64, 128, 32, 4, 4),
        config(32, 64, 32, 5, 2),
    ]


@triton.autotune(configs=_matmul_configs(), key=["M", "N", "K"])
@triton.jit
def _matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K,
                   stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                   BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr,
                   BLOCK_SIZE_K: tl.constexpr, GROUP_SIZE_M: tl.constexpr):
    # Program ids in grouped order: GROUP_SIZE_M block-rows share their B columns in L2.
    pid = tl.program_id(axis=0)
    num_pid_m = tl.cdiv(M, BLOCK_SIZE_M)
    num_pid_n = tl.cdiv(N, BLOCK_SIZE_N)
    num_pid_in_group = GROUP_SIZE_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_SIZE_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_SIZE_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    offs_am = (pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)) % M
    offs_bn = (pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)) % N
    offs_k = tl.arange(0, BLOCK_SIZE_K)
    a_ptrs = a_ptr + (offs_am[:, None] * stride_am + offs_k[None, :] * stride_ak)
    b_ptrs = b_ptr + (offs_k[:, None] * stride_bk + offs_bn[None, :] * stride_bn)

    accumulator = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_SIZE_K)):
        a = tl.load(a_ptrs, mask=offs_k[None, :] < K - k * BLOCK_SIZE_K, other=0.0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < K - k * BLOCK_SIZE_K, other=0.0)
        accumulator = tl.dot(a, b, accumulator)
        a_ptrs += BLOCK_SIZE_K * stride_ak
        b_ptrs += BLOCK_SIZE_K * stride_bk
    c = accumulator.to(c_ptr.dtype.element_ty)

    offs_cm = pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    offs_cn = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    c_ptrs = c_ptr + stride_cm * offs_cm[:, None] + stride_cn * offs_cn[None, :]
    c_mask = (offs_cm[:, None] < M) & (offs_cn[None, :] < N)
    tl.store(c_ptrs, c, mask=c_mask)


def matmul(a: Any, b: Any, c: Any) -> Any:
    """c = a @ b for 2-D f16 or bf16 torch tensors, accumulated in f32. The first call for a
    new (M, N, K) autotunes over the configs above (running the kernel, into `c`, once per
    config)."""
    (m, k), (k_b, n) = a.shape, b.shape
    if k != k_b or tuple(c.shape) != (m, n):
        raise ValueError(f"matmul shapes do not agree: a {tuple(a.shape)}, b {tuple(b.shape)}, "
                         f"c {tuple(c.shape)}")

    def grid(meta: dict[str, Any]) -> tuple[int]:
        return (triton.cdiv(m, meta["BLOCK_SIZE_M"]) * triton.cdiv(n, meta["BLOCK_SIZE_N"]),)

    _matmul_kernel[grid](a, b, c, m, n, k, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                         c.stride(0), c.stride(1))
    return c
