"""Kernel calls: argument checking, symbol binding, grid evaluation, the launch handed over.

A recording launcher stands in for the back end, so every check runs without a compiler or
a GPU. ``FakeCupyArray`` has CuPy's array surface and a type that lives in a ``cupy``
module, so the runtime reads it as a CuPy array on ``cuda:0``.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from tegula.runtime import ArgumentError, Kernel, KernelSpec, ParamSpec, SpecError
from tegula.runtime.cpu_jit import CpuLauncher


class RecordingLauncher:
    def __init__(self, device_kind: str = "cpu") -> None:
        self.device_kind = device_kind
        self.calls: list[tuple[Any, ...]] = []

    def scalar_converter(self, dt: Any) -> Any:
        return float if dt.is_float else int

    def launch(self, grid: Any, args: list[Any], device: str, library: str) -> None:
        self.calls.append((grid, list(args), device, library))


class FakeCupyArray:
    def __init__(self, shape: tuple[int, ...], dtype: str = "float32", device: int = 0,
                 ptr: int = 0x7F0000001000) -> None:
        host = np.empty(shape, dtype)
        self.shape = host.shape
        self.strides = host.strides
        self.itemsize = host.itemsize
        self.dtype = host.dtype
        self.flags = host.flags
        self.data = SimpleNamespace(ptr=ptr)
        self.device = SimpleNamespace(id=device)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        raise AssertionError("the runtime reads CuPy arrays through their own attributes")


FakeCupyArray.__module__ = "cupy._core.core"


def spec(target: str = "cpu", **overrides: Any) -> KernelSpec:
    fields: dict[str, Any] = dict(
        name="scale_add",
        params=(
            ParamSpec("x", "tensor", "f32", ("M", "N")),
            ParamSpec("y", "tensor", "f32", ("M", "N")),
            ParamSpec("out", "tensor", "f32", ("M", "N"), writes=True),
            ParamSpec("alpha", "scalar", "f32"),
        ),
        symbols=("M", "N"),
        grid=("cdiv(N, 64)", "M", "1"),
        block_threads=64,
        smem_bytes=0,
        target=target,
    )
    fields.update(overrides)
    return KernelSpec(**fields)


def arrays(shape: tuple[int, ...] = (5, 130), dtype: Any = np.float32) -> list[np.ndarray]:
    rng = np.random.default_rng()
    return [rng.standard_normal(shape).astype(dtype) for _ in range(3)]


def make(target: str = "cpu", **overrides: Any) -> tuple[Kernel, RecordingLauncher]:
    launcher = RecordingLauncher("cuda" if target.startswith("cuda") else "cpu")
    return Kernel(spec(target, **overrides), launcher, source="// text"), launcher


def test_binds_symbols_evaluates_grid_and_passes_abi_order() -> None:
    kernel, launcher = make()
    x, y, out = arrays()
    kernel(x, y, out, 0.5)
    (grid, args, device, library), = launcher.calls
    assert grid == (3, 5, 1)
    assert args == [x.ctypes.data, y.ctypes.data, out.ctypes.data, 0.5, 5, 130]
    assert (device, library) == ("cpu", "numpy")


def test_arguments_by_name_and_mixed() -> None:
    kernel, launcher = make()
    x, y, out = arrays()
    kernel(x, alpha=2.0, out=out, y=y)
    kernel(out=out, y=y, x=x, alpha=2)
    assert launcher.calls[0][1] == [*launcher.calls[1][1][:3], 2.0, 5, 130]


def test_empty_grid_launches_nothing() -> None:
    kernel, launcher = make()
    kernel(*arrays((0, 7)), 1.0)
    assert launcher.calls == []


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: [a[0][0], *a[1:]],
         r"parameter 'x' expects a 2-d tensor f32\[M, N\]; got a 1-d float32 numpy array of "
         r"shape \(130,\)"),
        (lambda a: [a[0].astype(np.float64), *a[1:]],
         r"parameter 'x' expects element type f32 \(f32\[M, N\]\); got f64"),
        (lambda a: [a[0], a[1][:, :129].copy(), a[2]],
         r"N = 130 from 'x' \(dim 1\) but 'y' has 129 at dim 1"),
        (lambda a: [a[0], a[1], a[2][:4]],
         r"M = 5 from 'x' \(dim 0\) but 'out' has 4 at dim 0"),
        (lambda a: [np.asfortranarray(a[0]), *a[1:]],
         r"parameter 'x' expects a C-contiguous f32\[M, N\]; got .* strides \(1, 5\)"),
        (lambda a: [a[0][:, ::2], *a[1:]], r"parameter 'x' expects a C-contiguous"),
        (lambda a: [a[0], 3.0, a[2]],
         r"parameter 'y' expects a 2-d tensor f32\[M, N\]; got a float \(3.0\)"),
        (lambda a: [a[0], a[1].tolist(), a[2]], r"parameter 'y' expects .*; got a list"),
        (lambda a: [a[0], a[1], a[2].astype(np.complex64)],
         r"parameter 'out' expects element type f32 .*got complex64"),
    ],
)
def test_bad_tensor_arguments_name_the_parameter(mutate: Any, message: str) -> None:
    kernel, launcher = make()
    with pytest.raises(ArgumentError, match=message):
        kernel(*mutate(arrays()), 1.0)
    assert launcher.calls == []


def test_read_only_output_is_refused() -> None:
    kernel, _ = make()
    x, y, out = arrays()
    out.flags.writeable = False
    with pytest.raises(ArgumentError, match=r"'out' is written by kernel 'scale_add'.*read-only"):
        kernel(x, y, out, 1.0)
    x.flags.writeable = False  # read-only inputs are fine
    out.flags.writeable = True
    kernel(x, y, out, 1.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda k, a: k(*a), r"missing argument 'alpha'; signature: scale_add\(x: f32\[M, N\]"),
        (lambda k, a: k(a[0]), r"missing arguments 'y', 'out', 'alpha'"),
        (lambda k, a: k(*a, 1.0, 2.0), r"takes 4 arguments \(x, y, out, alpha\); got 5"),
        (lambda k, a: k(*a, 1.0, beta=2), r"has no parameter 'beta'"),
        (lambda k, a: k(*a, 1.0, x=a[0]), r"two values for parameter 'x'"),
        (lambda k, a: k(*a, a[0]),
         r"parameter 'alpha' expects a scalar f32; got a 2-d float32 numpy array"),
        (lambda k, a: k(*a, "1.0"), r"parameter 'alpha' expects a scalar f32; got a str"),
    ],
)
def test_bad_calls_are_named(call: Any, message: str) -> None:
    kernel, _ = make()
    with pytest.raises(ArgumentError, match=message):
        call(kernel, arrays())


def test_fixed_dims_and_strides() -> None:
    params = (
        ParamSpec("a", "tensor", "f32", ("M", 16), strides=("lda", 1)),
        ParamSpec("b", "tensor", "i32", ("M",), strides=("sb",)),
    )
    kernel, launcher = make(params=params, symbols=("M", "lda", "sb"), grid=("M", "1", "1"))
    a = np.random.default_rng().standard_normal((9, 40)).astype(np.float32)
    b = np.arange(27, dtype=np.int32)
    kernel(a[:, 3:19], b[::3])
    args = launcher.calls[0][1]
    assert args[0] == a[:, 3:19].ctypes.data and args[2:] == [9, 40, 3]
    with pytest.raises(ArgumentError, match=r"'a' expects extent 16 at dim 1 .*shape \(9, 15\)"):
        kernel(a[:, 3:18], b[::3])
    with pytest.raises(ArgumentError, match=r"'a' expects stride 1 \(elements\) at dim 1"):
        kernel(a[:, 3:35:2], b[::3])
    with pytest.raises(ArgumentError, match="'b' expects element type i32"):
        kernel(a[:, 3:19], b.astype(np.int64))


def test_stride_symbol_shared_between_tensors_is_checked() -> None:
    params = (
        ParamSpec("a", "tensor", "f32", ("M", "N"), strides=("ld", 1)),
        ParamSpec("b", "tensor", "f32", ("M", "N"), strides=("ld", 1)),
    )
    kernel, _ = make(params=params, symbols=("M", "N", "ld"), grid=("M", "1", "1"))
    base = np.random.default_rng().standard_normal((4, 32)).astype(np.float32)
    kernel(base[:, :8], base[:, 8:16])
    with pytest.raises(ArgumentError, match=r"ld = 32 from 'a' \(stride of dim 0\) but 'b' has 8"):
        kernel(base[:, :8], np.ascontiguousarray(base[:, 8:16]))


def test_scalars_are_range_checked_and_typed() -> None:
    params = (
        ParamSpec("x", "tensor", "u8", ("N",)),
        ParamSpec("count", "scalar", "i8"),
        ParamSpec("big", "scalar", "u64"),
        ParamSpec("scale", "scalar", "f64"),
    )
    launcher = CpuLauncher.__new__(CpuLauncher)  # only its scalar converters are used
    recorder = RecordingLauncher()
    recorder.scalar_converter = launcher.scalar_converter  # type: ignore[method-assign]
    kernel = Kernel(spec(params=params, symbols=("N",), grid=("N", "1", "1")), recorder)
    x = np.arange(4, dtype=np.uint8)
    kernel(x, np.int8(-7), 2**64 - 1, -2.5)
    args = recorder.calls[0][1]
    assert args[1:4] == [-7, -1, np.float64(-2.5).view(np.int64)]
    with pytest.raises(ArgumentError, match=r"'count' expects a scalar i8; 128 does not fit"):
        kernel(x, 128, 1, 1.0)
    with pytest.raises(ArgumentError, match=r"'count' expects a scalar i8; got a float"):
        kernel(x, 1.5, 1, 1.0)


def test_subbyte_tensors_travel_packed() -> None:
    params = (ParamSpec("w", "tensor", "u4", ("K", "N")), ParamSpec("o", "tensor", "f32", ("N",)))
    kernel, launcher = make(params=params, symbols=("K", "N"), grid=("K", "1", "1"))
    packed = np.random.default_rng().integers(0, 255, (6, 8), dtype=np.uint8)
    kernel(packed, np.ones(16, np.float32))
    assert launcher.calls[0][1][2:] == [6, 16]
    # N is bound from the unpacked 'o', so an odd N takes ceil(N/2) bytes a row.
    kernel(packed, np.ones(15, np.float32))
    assert launcher.calls[1][1][2:] == [6, 15]
    with pytest.raises(ArgumentError, match=r"passed packed: give uint8 storage of shape "
                                            r"\(K, ceil\(N\*4/8\)\)"):
        kernel(packed.astype(np.int32), np.ones(16, np.float32))
    with pytest.raises(ArgumentError, match=r"'w' \(u4\[K, N\]\) is passed as packed uint8 "
                                            r"bytes: N = 18 .* expected shape is \(6, 9\); "
                                            r"got shape \(6, 8\)"):
        kernel(packed, np.ones(18, np.float32))
    with pytest.raises(SpecError, match="rank >= 1 and no explicit strides"):
        ParamSpec("w", "tensor", "u3", ("K",), strides=("s",))


def test_32_bit_indexing_refuses_huge_symbols() -> None:
    params = (ParamSpec("x", "tensor", "u8", ("N",), strides=("s",)),)
    kernel, _ = make(params=params, symbols=("N", "s"), grid=("1", "1", "1"), index_bits=32)
    # One element: the span is fine, the stride symbol is not.
    x = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (1,), (2**31,))
    with pytest.raises(ArgumentError, match=r"s = 2147483648 from 'x' .*32-bit indexing"):
        kernel(x)


def test_32_bit_kernels_hand_large_calls_to_their_64_bit_twin() -> None:
    """A tensor spanning more than 2^30 elements (a stride-0 view: no memory needed) is too
    large for 32-bit indices: without a twin the call is refused by parameter name; with
    one it goes there, arguments unchanged, and the twin is built once."""
    params = (ParamSpec("x", "tensor", "u8", ("N",), strides=("s",)),)
    narrow, narrow_launcher = make(params=params, symbols=("N", "s"), grid=("1", "1", "1"),
                                   index_bits=32)
    wide, wide_launcher = make(params=params, symbols=("N", "s"), grid=("1", "1", "1"))
    small = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (2**20,), (1,))
    large = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (2**20,), (2**11,))
    narrow(small)
    assert len(narrow_launcher.calls) == 1
    with pytest.raises(ArgumentError, match=r"'x' spans \d+ elements, more than kernel .*"
                                            r"32-bit indexing allows \(1073741824\)"):
        narrow(large)
    built = []
    narrow.set_wide_twin(lambda: built.append(1) or wide)
    narrow(large)
    narrow(x=large)
    assert built == [1] and len(narrow_launcher.calls) == 1
    assert [call[1][1:] for call in wide_launcher.calls] == [[2**20, 2**11]] * 2


def test_device_checks() -> None:
    cpu_kernel, _ = make("cpu")
    x, y, out = arrays()
    with pytest.raises(ArgumentError, match=r"'y' expects a CPU array .*cupy array .* on cuda:0"):
        cpu_kernel(x, FakeCupyArray(x.shape), out, 1.0)
    cuda_kernel, launcher = make("cuda:sm_90a")
    with pytest.raises(ArgumentError, match=r"'x' expects a GPU array .*numpy array"):
        cuda_kernel(x, y, out, 1.0)
    gx, gy, go = (FakeCupyArray((5, 130), ptr=0x1000 * (i + 1)) for i in range(3))
    cuda_kernel(gx, gy, go, 1.0)
    assert launcher.calls[0] == ((3, 5, 1), [0x1000, 0x2000, 0x3000, 1.0, 5, 130],
                                 "cuda:0", "cupy")
    with pytest.raises(ArgumentError, match="'out' is on cuda:1 but 'x' is on cuda:0"):
        cuda_kernel(gx, gy, FakeCupyArray((5, 130), device=1), 1.0)
    # A view starting one element into an allocation: CUDA kernels read aligned vectors.
    with pytest.raises(ArgumentError, match=r"'y': its data starts at 0x2004, not on a 16-byte"):
        cuda_kernel(gx, FakeCupyArray((5, 130), ptr=0x2004), go, 1.0)
    assert len(launcher.calls) == 1


def test_launcher_must_match_target() -> None:
    with pytest.raises(SpecError, match="targets cuda:sm_90a but its launcher runs on cpu"):
        Kernel(spec("cuda:sm_90a"), RecordingLauncher("cpu"))


def test_description() -> None:
    kernel, _ = make()
    assert repr(kernel) == (
        "<tegula.Kernel scale_add(x: f32[M, N], y: f32[M, N], out: f32[M, N], alpha: f32) on cpu>"
    )
    assert kernel.source == "// text" and kernel.spec.name == kernel.name == "scale_add"


class NoopLauncher:
    device_kind = "cpu"

    def scalar_converter(self, dt: Any) -> Any:
        return float

    def launch(self, grid: Any, args: Any, device: Any, library: Any) -> None:
        pass


def test_call_overhead_is_a_few_microseconds() -> None:
    """Checking and binding 3 tensors + 1 scalar, with a launcher that does nothing.

    The bound is loose (slow CI machines); the measured figure is in docs/runtime.md.
    """
    kernel = Kernel(spec(), NoopLauncher())
    x, y, out = arrays()
    kernel(x, y, out, 1.0)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(2000):
            kernel(x, y, out, 1.0)
        best = min(best, (time.perf_counter() - start) / 2000)
    assert best < 50e-6, f"{best * 1e6:.1f} µs per call"


class HostDLPackOnly:
    """An array of a library the runtime does not know, offering only DLPack."""

    def __init__(self, array: np.ndarray, device: tuple[int, int] = (1, 0)) -> None:
        self._array = array
        self._device = device

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._device


def test_host_arrays_offering_only_dlpack_are_read_without_a_copy() -> None:
    kernel, launcher = make()
    x, y, out = arrays()
    kernel(HostDLPackOnly(x), HostDLPackOnly(y), HostDLPackOnly(out), 0.5)
    (grid, args, device, library), = launcher.calls
    assert args == [x.ctypes.data, y.ctypes.data, out.ctypes.data, 0.5, 5, 130]
    assert (grid, device, library) == ((3, 5, 1), "cpu", "dlpack")
    with pytest.raises(ArgumentError, match=r"'x' expects element type f32.*float64 dlpack"):
        kernel(HostDLPackOnly(x.astype(np.float64)), y, out, 0.5)
    with pytest.raises(ArgumentError, match=r"'y'.*C-contiguous|'y'.*strides"):
        kernel(x, HostDLPackOnly(np.asfortranarray(y)), out, 0.5)
    out.flags.writeable = False
    with pytest.raises(ArgumentError, match=r"'out' is written.*read-only"):
        kernel(x, y, HostDLPackOnly(out), 0.5)


def test_device_memory_offered_only_through_dlpack_is_refused_by_name() -> None:
    kernel, _ = make()
    x, y, out = arrays()
    with pytest.raises(ArgumentError, match=r"parameter 'x':.*device memory only through "
                                            r"DLPack.*cupy.from_dlpack"):
        kernel(HostDLPackOnly(x, device=(2, 0)), y, out, 0.5)


def test_an_array_whose_library_lacks_the_type_is_passed_reinterpreted() -> None:
    from tegula.runtime.arrays import array_info, reinterpret

    params = (ParamSpec("s", "tensor", "e8m0", ("N",)), ParamSpec("o", "tensor", "f32", ("N",)))
    kernel, launcher = make("cuda:sm_90a", params=params, symbols=("N",), grid=("N", "1", "1"))
    raw = FakeCupyArray((7,), "uint8", ptr=0x7F0000002000)
    out = FakeCupyArray((7,), "float32")
    with pytest.raises(ArgumentError, match=r"'s'.*e8m0.*uint8"):
        kernel(raw, out)  # bytes alone are not scales: the type is still checked
    kernel(reinterpret(raw, "e8m0"), out)
    assert launcher.calls[0][1][0] == 0x7F0000002000 and launcher.calls[0][3] == "cupy"
    info = array_info(reinterpret(raw, "e8m0"))
    assert (info.dtype.name, info.shape, info.device) == ("e8m0", (7,), "cuda:0")
    assert "e8m0 (as uint8)" in info.dtype_name
    with pytest.raises(TypeError, match="needs elements of 8 bits"):
        reinterpret(out, "e8m0")
    with pytest.raises(TypeError, match="packed"):
        reinterpret(raw, "u4")
    with pytest.raises(TypeError, match="needs an array"):
        reinterpret([1, 2], "e8m0")


def test_a_reinterpreted_array_runs_a_kernel_like_the_typed_one() -> None:
    """MX scales as ml_dtypes e8m0 and as their bytes reinterpreted: the same result."""
    import ml_dtypes
    from tegula.runtime.arrays import reinterpret
    from tegula.runtime.quant import quantize

    import tegula as tg

    path = Path(__file__).resolve().parents[2] / "examples" / "quant_gemm.tg"
    kernel = tg.compile(path, target="cpu", kernels=["quant_gemm_mxint8"])["quant_gemm_mxint8"]
    rng = np.random.default_rng()
    m, k, n = 5, 64, 48
    a = rng.standard_normal((m, k)).astype(ml_dtypes.bfloat16)
    qt = quantize(rng.standard_normal((k, n)).astype(np.float32), "i8", mx=True)
    w = qt.data.view(np.int8)
    assert qt.scales.dtype == ml_dtypes.float8_e8m0fnu
    typed, raw = (np.full((m, n), np.nan, ml_dtypes.bfloat16) for _ in range(2))
    kernel(a, w, qt.scales, typed)
    kernel(a, w, reinterpret(qt.scales.view(np.uint8), "e8m0"), raw)
    assert np.isfinite(typed.astype(np.float32)).all()
    np.testing.assert_array_equal(raw.view(np.uint16), typed.view(np.uint16))
