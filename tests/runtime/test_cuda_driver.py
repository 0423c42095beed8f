"""Launch arguments packed for ``cuLaunchKernel``: codes from a spec, values where the
pointers say, each aligned; and on a GPU, scalars of every C width arrive intact."""

from __future__ import annotations

import ctypes
import struct

import numpy as np
import pytest
from tegula.runtime import KernelSpec, ParamSpec, load_cuda_kernel
from tegula.runtime.cuda_driver import PackedArguments
from tegula.runtime.cuda_launch import cuda_unavailable_reason, launch_argument_codes
from tegula.runtime.tensor_map import MAP_DTYPE, TensorMapSpec

_NO_GPU = cuda_unavailable_reason()

SCALAR_TYPES = ("f16", "bf16", "f32", "f64", "i8", "u8", "i16", "u16", "i32", "u32", "i64",
                "u64", "bool")


def _spec(*scalars: str, maps: bool = False) -> KernelSpec:
    return KernelSpec(
        name="k",
        params=(ParamSpec("out", "tensor", "f64", ("N",), writes=True),
                *(ParamSpec(f"s{i}", "scalar", dt) for i, dt in enumerate(scalars))),
        symbols=("N",), grid=("1", "1", "1"), block_threads=32, smem_bytes=0,
        target="cuda:sm_90a",
        tensor_maps=(TensorMapSpec("out", (8,), 0),) if maps else (),
    )


def test_codes_follow_the_launch_order_with_c_widths() -> None:
    codes = launch_argument_codes(_spec("f16", "bf16", "f32", "i8", "u64", "bool", maps=True))
    assert codes == ("Q", "e", "H", "f", "b", "Q", "?", "q", "128s")


def test_values_land_where_the_pointers_point_each_aligned() -> None:
    codes = ("Q", "e", "b", "d", "?", "i", "q", "128s")
    packed = PackedArguments(codes)
    rng = np.random.default_rng()
    the_map = np.zeros(1, MAP_DTYPE)
    the_map["bits"] = rng.integers(0, 1 << 62, size=16)
    values = [int(rng.integers(1, 1 << 62)), np.float16(rng.standard_normal()),
              int(rng.integers(-128, 127)), float(rng.standard_normal()), True,
              int(rng.integers(-(1 << 31), 1 << 31)), int(rng.integers(1, 1 << 40)),
              the_map[0].tobytes()]
    packed.pack(values)
    base = ctypes.addressof(packed.buffer)
    for code, value, pointer in zip(codes, values, packed.pointers, strict=True):
        offset = pointer - base
        size = struct.calcsize("<" + code)
        assert offset % (64 if code == "128s" else min(size, 8)) == 0
        (read,) = struct.unpack_from("<" + code, packed.buffer, offset)
        assert read == (float(value) if code == "e" else value)


@pytest.mark.gpu
@pytest.mark.skipif(_NO_GPU is not None, reason=f"needs a CUDA GPU: {_NO_GPU}")
def test_gpu_scalars_of_every_width_arrive_intact() -> None:
    """A kernel that writes each scalar back, as a double: every C width, through the
    driver-call launch, twice with different values (the buffer is reused)."""
    import cupy
    from tegula.runtime.nvrtc import compile_cuda, default_arch

    ctypes_of = {"f16": "__half", "bf16": "__nv_bfloat16", "f32": "float", "f64": "double",
                 "i8": "signed char", "u8": "unsigned char", "i16": "short",
                 "u16": "unsigned short", "i32": "int", "u32": "unsigned int",
                 "i64": "long long", "u64": "unsigned long long", "bool": "bool"}
    params = ", ".join(f"{ctypes_of[dt]} s{i}" for i, dt in enumerate(SCALAR_TYPES))
    stores = "\n".join(f"    out[{i}] = (double)(float)s{i};" if dt in ("f16", "bf16")
                       else f"    out[{i}] = (double)s{i};" for i, dt in enumerate(SCALAR_TYPES))
    source = ("#include <cuda_fp16.h>\n#include <cuda_bf16.h>\n"
              f'extern "C" __global__ void k(double* out, {params}, long long n) {{\n'
              f"{stores}\n    out[{len(SCALAR_TYPES)}] = (double)n;\n}}\n")
    arch = default_arch()
    assert arch is not None
    kernel = load_cuda_kernel(_spec(*SCALAR_TYPES), compile_cuda(source, "k", arch).cubin)
    rng = np.random.default_rng()
    for _ in range(2):
        values = [float(np.float16(rng.standard_normal())), 1.5 + int(rng.integers(0, 8)),
                  float(np.float32(rng.standard_normal())), float(rng.standard_normal()),
                  int(rng.integers(-128, 128)), int(rng.integers(0, 256)),
                  int(rng.integers(-(1 << 15), 1 << 15)), int(rng.integers(0, 1 << 16)),
                  int(rng.integers(-(1 << 31), 1 << 31)), int(rng.integers(0, 1 << 32)),
                  int(rng.integers(-(1 << 52), 1 << 52)), int(rng.integers(0, 1 << 52)),
                  bool(rng.integers(0, 2))]
        n = len(SCALAR_TYPES) + 1
        out = cupy.full(n, cupy.nan, cupy.float64)
        kernel(out, *values)
        np.testing.assert_array_equal(cupy.asnumpy(out), [*map(float, values), n])
