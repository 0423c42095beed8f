"""Triton peers, written the way Triton's tutorials write them (vector add, fused softmax),
taking their outputs as arguments like tegula's kernels. Importing this needs Triton."""

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
