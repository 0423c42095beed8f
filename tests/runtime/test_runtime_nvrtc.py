"""NVRTC: CUDA C to cubins with no GPU, errors with the source line, ptxas resources."""

from __future__ import annotations

import pytest
from tegula.runtime.errors import CudaCompileError
from tegula.runtime.nvrtc import (
    compile_cuda,
    cuda_include_dir,
    nvrtc_available,
    nvrtc_version,
    parse_ptxas_resources,
)

pytestmark = pytest.mark.skipif(
    not nvrtc_available(), reason="NVRTC is not installed (pip install 'tegula[nvrtc]')"
)

HALF_KERNEL = """\
#include <cuda_fp16.h>

extern "C" __global__ void widen(const __half* x, float* y, long long n) {
    __shared__ float staged[256];
    long long i = (long long)blockIdx.x * 256 + threadIdx.x;
    staged[threadIdx.x] = i < n ? __half2float(x[i]) : 0.0f;
    __syncthreads();
    if (i < n) y[i] = staged[threadIdx.x] * 2.0f;
}
"""


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_compiles_to_a_cubin_with_cuda_headers(arch: str) -> None:
    binary = compile_cuda(HALF_KERNEL, "widen", arch)
    assert binary.cubin is not None and binary.cubin[:4] == b"\x7fELF"
    assert ".entry widen" in binary.ptx
    assert binary.arch == arch
    if "ptxas" not in binary.log:  # NVRTC 13.0 drops the report; 13.5 forwards it
        pytest.skip(f"NVRTC {nvrtc_version()} does not forward the ptxas -v report")
    usage = binary.resources
    assert usage is not None and usage.registers > 0 and not usage.spills
    assert usage.shared_bytes == 256 * 4


def test_virtual_arch_gives_ptx_only() -> None:
    binary = compile_cuda(HALF_KERNEL, "widen", "compute_90")
    assert binary.cubin is None and ".target sm_90" in binary.ptx


def test_syntax_error_names_the_line() -> None:
    source = HALF_KERNEL.replace("__syncthreads();", "__syncthreads()\n    int broken = ;")
    with pytest.raises(CudaCompileError, match="at line 8") as info:
        compile_cuda(source, "widen", "sm_80")
    error = info.value
    assert "error" in error.log
    assert ">  8 |     int broken = ;" in error.source_excerpt
    assert error.source_excerpt in str(error)


def test_bad_arch_is_refused() -> None:
    with pytest.raises(ValueError, match="'90'"):
        compile_cuda(HALF_KERNEL, "widen", "90")


def test_headers_and_version_are_found() -> None:
    include = cuda_include_dir()
    assert include is not None and (include / "cuda_bf16.h").is_file()
    major, _minor = nvrtc_version()
    assert major >= 12


def test_parse_ptxas_resources() -> None:
    log = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'gemm' for 'sm_90a'
ptxas info    : Function properties for gemm
ptxas         .     16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 168 registers, used 1 barriers, 49152 bytes smem, 400 bytes cmem[0]
ptxas info    : Function properties for helper
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers
"""
    found = parse_ptxas_resources(log)
    gemm = found["gemm"]
    assert (gemm.registers, gemm.spill_stores, gemm.spill_loads) == (168, 8, 12)
    assert (gemm.stack_frame, gemm.shared_bytes, gemm.barriers) == (16, 49152, 1)
    assert gemm.spills and not found["helper"].spills
