"""CUDA launching: with a fake module everywhere, and for real where a GPU is visible."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from tegula.runtime import Kernel, KernelSpec, ParamSpec, load_cuda_kernel
from tegula.runtime.cuda_launch import CudaLauncher, cuda_unavailable_reason
from tegula.runtime.errors import LaunchError

_NO_GPU = cuda_unavailable_reason()


class FakeFunction:
    def __init__(self) -> None:
        self.max_dynamic_shared_size_bytes = 0
        self.launches: list[tuple[Any, ...]] = []

    def __call__(self, grid: Any, block: Any, args: Any, shared_mem: int = 0,
                 stream: Any = None) -> None:
        self.launches.append((grid, block, list(args), shared_mem, stream))


class FakeModule:
    def __init__(self, image: bytes | str) -> None:
        self.image = image
        self.function = FakeFunction()

    def get_function(self, name: str) -> FakeFunction:
        if name != "vadd":
            raise KeyError(name)
        return self.function


class FakeCupyArray:
    def __init__(self, n: int, ptr: int) -> None:
        self.shape, self.strides, self.itemsize = (n,), (4,), 4
        self.dtype = np.dtype(np.float32)
        self.flags = SimpleNamespace(c_contiguous=True)
        self.data = SimpleNamespace(ptr=ptr)
        self.device = SimpleNamespace(id=0)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        raise AssertionError("not read for CuPy arrays")


FakeCupyArray.__module__ = "cupy._core.core"


def vadd_spec(smem_bytes: int = 0) -> KernelSpec:
    return KernelSpec(
        name="vadd",
        params=(*(ParamSpec(n, "tensor", "f32", ("N",), writes=n == "z") for n in "xyz"),
                ParamSpec("alpha", "scalar", "f32")),
        symbols=("N",),
        grid=("cdiv(N, 256)", "1", "1"),
        block_threads=256,
        smem_bytes=smem_bytes,
        target="cuda:sm_90a",
    )


def test_fake_module_launch_abi() -> None:
    modules: list[FakeModule] = []

    def loader(image: bytes | str) -> FakeModule:
        modules.append(FakeModule(image))
        return modules[-1]

    spec = vadd_spec(smem_bytes=100_000)
    launcher = CudaLauncher(b"\x7fELF...", "vadd", block_threads=256, smem_bytes=100_000,
                            module_loader=loader)
    kernel = Kernel(spec, launcher)
    x, y, z = (FakeCupyArray(1000, ptr) for ptr in (0x1000, 0x2000, 0x3000))
    kernel(x, y, z, 1.5)
    kernel(x, y, z, 2.5)
    (module,) = modules  # loaded once
    assert module.function.max_dynamic_shared_size_bytes == 100_000  # opted in above 48 KB
    first, second = module.function.launches
    grid, block, args, smem, stream = first
    assert (grid, block, smem, stream) == ((4, 1, 1), (256, 1, 1), 100_000, None)
    assert args == [0x1000, 0x2000, 0x3000, np.float32(1.5), 1000]
    assert type(args[3]) is np.float32  # passed by value at the C type's width
    assert second[2][3] == np.float32(2.5)


def test_bf16_scalars_travel_as_their_bits() -> None:
    convert = CudaLauncher(b"x", "k", block_threads=1, smem_bytes=0).scalar_converter(
        ParamSpec("a", "scalar", "bf16").element_type
    )
    value = convert(1.5)
    assert type(value) is np.uint16 and value == 0x3FC0


def test_grid_limits_and_load_errors() -> None:
    launcher = CudaLauncher(b"x", "missing", block_threads=32, smem_bytes=0,
                            module_loader=FakeModule)
    with pytest.raises(LaunchError, match="could not load CUDA kernel 'missing' on cuda:0"):
        launcher.launch((1, 1, 1), [], "cuda:0", "cupy")
    with pytest.raises(LaunchError, match="exceeds CUDA's limits"):
        launcher.launch((1, 70_000, 1), [], "cuda:0", "cupy")
    with pytest.raises(LaunchError, match="empty CUDA image"):
        CudaLauncher(b"", "k", block_threads=32, smem_bytes=0)


# ---- on a GPU -------------------------------------------------------------------------

VADD_CUDA = """\
#include <cuda_fp16.h>
extern "C" __global__ void vadd(const float* x, const float* y, float* z, float alpha,
                                long long n) {
    extern __shared__ float scratch[];
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    scratch[threadIdx.x] = i < n ? x[i] : 0.0f;
    __syncthreads();
    if (i < n) z[i] = alpha * scratch[threadIdx.x] + y[i];
}
"""


def _gpu_kernel(smem_bytes: int = 1024, ptx: bool = False) -> Kernel:
    from tegula.runtime.nvrtc import compile_cuda, default_arch

    arch = default_arch()
    assert arch is not None
    binary = compile_cuda(VADD_CUDA, "vadd", arch)
    image: bytes | str = binary.ptx if ptx else binary.cubin  # type: ignore[assignment]
    return load_cuda_kernel(vadd_spec(smem_bytes), image, source=VADD_CUDA)


@pytest.mark.gpu
@pytest.mark.skipif(_NO_GPU is not None, reason=f"needs a CUDA GPU: {_NO_GPU}")
@pytest.mark.parametrize(("smem_bytes", "ptx"), [(1024, False), (100 * 1024, False),
                                                 (1024, True)])
@pytest.mark.parametrize("n", [1, 1000, 1 << 20])
def test_gpu_vadd_cupy(n: int, smem_bytes: int, ptx: bool) -> None:
    import cupy

    kernel = _gpu_kernel(smem_bytes, ptx)
    x, y = (cupy.random.standard_normal(n, dtype=cupy.float32) for _ in range(2))
    z = cupy.full(n, cupy.nan, dtype=cupy.float32)
    kernel(x, y, z, 0.75)
    np.testing.assert_allclose(cupy.asnumpy(z), 0.75 * cupy.asnumpy(x) + cupy.asnumpy(y),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(_NO_GPU is not None, reason=f"needs a CUDA GPU: {_NO_GPU}")
def test_gpu_vadd_torch_on_its_stream() -> None:
    torch = pytest.importorskip("torch")
    kernel = _gpu_kernel()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        x, y = (torch.randn(5000, device="cuda") for _ in range(2))
        z = torch.full((5000,), float("nan"), device="cuda")
        kernel(x, y, z, -1.25)
        expected = -1.25 * x + y
    stream.synchronize()
    torch.testing.assert_close(z, expected)


@pytest.mark.gpu
@pytest.mark.skipif(_NO_GPU is not None, reason=f"needs a CUDA GPU: {_NO_GPU}")
def test_gpu_launch_overhead() -> None:
    import cupy

    kernel = _gpu_kernel()
    x, y, z = (cupy.random.standard_normal(4096, dtype=cupy.float32) for _ in range(3))
    kernel(x, y, z, 1.0)
    cupy.cuda.Device().synchronize()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(2000):
            kernel(x, y, z, 1.0)
        best = min(best, (time.perf_counter() - start) / 2000)
        cupy.cuda.Device().synchronize()
    print(f"tegula launch: {best * 1e6:.2f} us per call")
    assert best < 30e-6
