"""`dot` of 8-bit integer tiles into an i32 accumulator: on CUDA the s8 tensor-core atom
(mma.sync m16n8k32), whose B fragment holds four consecutive k of one column per register,
so B reaches shared memory n-major and ldmatrix reads it untransposed; on the CPU the
register-blocked micro-kernel. Results are exact, so they are compared for equality with an
int64 NumPy product, on fresh random codes with poisoned outputs."""

from __future__ import annotations

import re

import numpy as np
import pytest
from quant_kernel_helpers import INTEGER_DOT_KERNEL, N_MAJOR_B

import tegula as tg

# B stored [K, N] (loaded k-major: its registers are turned n-major on the way to shared
# memory) and [N, K] (a linear layer's layout, transposed in registers: already n-major).
SOURCE = INTEGER_DOT_KERNEL.format(
    name="dot_kn", a_type="i8", b_type="i8", b_dims="K, N", b_tile="load(b[k : +BK, j : +BN])"
) + INTEGER_DOT_KERNEL.format(
    name="dot_nk", a_type="i8", b_type="i8", b_dims="N, K", b_tile=N_MAJOR_B
)

# Multiples of the tiles, and ragged shapes (masked edges, a partial k slab).
SHAPES = [(128, 64, 192), (77, 45, 100)]


def check(target: str, to_device, to_host, kernel: str, stages: int) -> None:
    module = tg.compile(SOURCE, target=target, cache=False, STAGES=stages)
    rng = np.random.default_rng()
    for m, n, k in SHAPES:
        a = rng.integers(-128, 128, (m, k), dtype=np.int8)
        b_nk = rng.integers(-128, 128, (n, k), dtype=np.int8)
        b = b_nk if kernel == "dot_nk" else np.ascontiguousarray(b_nk.T)
        c = to_device(np.full((m, n), -(2**31), np.int32))
        module[kernel](to_device(a), to_device(b), c)
        want = a.astype(np.int64) @ b_nk.T.astype(np.int64)
        np.testing.assert_array_equal(to_host(c), want, err_msg=f"{kernel} at {(m, n, k)}")


@pytest.mark.parametrize("kernel", ["dot_kn", "dot_nk"])
def test_int8_dot_on_cpu(kernel: str) -> None:
    check("cpu", np.asarray, np.asarray, kernel, stages=2)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_int8_dot_uses_the_s8_atom(arch: str) -> None:
    """mma.sync's s8 atom on sm_80; on sm_90a the warpgroup one, whose operands are both
    K-major (B n-major in shared memory, read through a descriptor without transpose)."""
    module = tg.compile(SOURCE, target=f"cuda:{arch}", cache=False)
    for kernel in ("dot_kn", "dot_nk"):
        source = module.results[kernel].source
        if arch == "sm_90a":
            assert "wgmma.mma_async.sync.aligned.m64n64k32.s32.s8.s8" in source
            assert "mma.sync" not in source and "ldmatrix" not in source
        else:
            assert "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32" in source
            # Both operands' ldmatrix loads are untransposed: B is n-major in shared memory.
            assert "ldmatrix" in source and ".trans" not in source
        log = module.results[kernel].backend_log
        assert "spill" not in log or " 0 bytes spill stores" in log
    # The [N, K] slab reaches shared memory in 16-byte stores, the [K, N] one a byte at a time.
    assert re.search(r"uint4\*>\(&scratch_i8", module.results["dot_nk"].source)


@pytest.mark.gpu
@pytest.mark.parametrize("stages", [1, 3])
@pytest.mark.parametrize("kernel", ["dot_kn", "dot_nk"])
def test_int8_dot_on_gpu(kernel: str, stages: int) -> None:
    import cupy

    check("cuda", cupy.asarray, cupy.asnumpy, kernel, stages)
