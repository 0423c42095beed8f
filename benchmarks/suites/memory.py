"""GPU memory-bound kernels in GB/s, beside CuPy, PyTorch and Triton, against the copy ceiling.

Bytes counted: each input read once, each output written once. Each kernel runs at a large
size (moving at least 256 MB) and at a medium one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import devices
from ..checks import compare, random_array
from ..compare import TEGULA, Buffers, Case, Impl, gpu_timer, measure_case
from ..harness import Call, Settings, gbps, measure
from ..kernels import tegula_impl
from ..peers import torch_cuda, triton_kernels
from ..report import summary_line
from ..schema import Row
from . import Suite, formulas

EPS = 1e-5
F32 = 4  # bytes


@dataclass(frozen=True)
class Sizes:
    label: str  # "large" or "medium": the case key targets use
    vector: int  # elements of the vector operands
    rows: tuple[int, int]  # M x N for the row-wise kernels
    square: tuple[int, int]  # M x N for transpose


FULL_SIZES = (Sizes("large", 2**26, (32768, 8192), (16384, 16384)),
              Sizes("medium", 2**22, (4096, 2048), (4096, 4096)))
QUICK_SIZES = (Sizes("large", 2**22, (2048, 4096), (2048, 2048)),
               Sizes("medium", 2**16, (256, 1024), (512, 512)))
COPY_BYTES = {False: 2**30, True: 2**26}  # by `quick`


def _cupy() -> Any:
    import cupy

    return cupy


def _random(shape: tuple[int, ...], seed: int) -> Any:
    return random_array(_cupy(), shape, seed)


def _empty(shape: tuple[int, ...]) -> Any:
    cupy = _cupy()
    return cupy.empty(shape, dtype=cupy.float32)


def _f64(array: Any) -> Any:
    return array.astype(_cupy().float64)


# Implementations. Each binds to a buffer set and returns a call that yields the output.

def _cupy_impl(fn: Callable[..., Any], *names: str) -> Impl:
    def bind(b: Buffers) -> Call:
        arrays = [b[name] for name in names]
        return lambda: fn(*arrays)

    return Impl(bind, "cupy")


def _torch_impl(pick: Callable[[Any], Callable[..., Any] | None], *names: str) -> Impl | None:
    """A PyTorch peer: `pick(torch)` gives the function (None where this PyTorch lacks it)."""
    torch = torch_cuda()
    fn = None if torch is None else pick(torch)
    if fn is None:
        return None

    def bind(b: Buffers) -> Call:
        tensors = [torch.from_dlpack(b[name]) for name in names]
        return lambda: fn(*tensors)

    return Impl(bind, "torch")


def _triton_impl(pick: Callable[[Any], Callable[..., Any]], *names: str) -> Impl | None:
    """A Triton peer, on PyTorch views of the same buffers."""
    kernels = triton_kernels()
    return None if kernels is None else _torch_impl(lambda _: pick(kernels), *names)


def _available(impls: dict[str, Impl | None]) -> dict[str, Impl]:
    return {name: impl for name, impl in impls.items() if impl is not None}


# The cases: (Case, implementations) for each kernel at one size.

def vector_add(size: Sizes) -> tuple[Case, dict[str, Impl]]:
    n = size.vector
    case = Case(
        case=f"vector_add/{size.label}",
        name=f"vector_add f32 {n}",
        nbytes=3 * n * F32,
        make_buffers=lambda s: Buffers({"x": _random((n,), 3 * s), "y": _random((n,), 3 * s + 1)},
                                       {"z": _empty((n,))}),
        reference=lambda b: _f64(b["x"]) + _f64(b["y"]),
    )
    return case, _available({
        TEGULA: tegula_impl("cuda", "vector_add.tg", "vector_add", ("x", "y", "z"), "z"),
        "CuPy": _cupy_impl(lambda x, y, z: _cupy().add(x, y, out=z), "x", "y", "z"),
        "PyTorch": _torch_impl(lambda t: lambda x, y, z: t.add(x, y, out=z), "x", "y", "z"),
        "Triton": _triton_impl(lambda k: k.vector_add, "x", "y", "z"),
    })


def _row_buffers(m: int, n: int, seed: int, params: tuple[str, ...], out_shape: tuple[int, ...]
                 ) -> Buffers:
    inputs = {"x": _random((m, n), 8 * seed)}
    inputs |= {p: _random((n,), 8 * seed + 1 + i) for i, p in enumerate(params)}
    return Buffers(inputs, {"y": _empty(out_shape)})


def softmax(size: Sizes) -> tuple[Case, dict[str, Impl]]:
    m, n = size.rows
    case = Case(
        case=f"softmax/{size.label}",
        name=f"softmax f32 {m}x{n}",
        nbytes=2 * m * n * F32,
        make_buffers=lambda s: _row_buffers(m, n, s, (), (m, n)),
        reference=lambda b: formulas.softmax(_f64(b["x"])),
    )
    return case, _available({
        TEGULA: tegula_impl("cuda", "softmax.tg", "softmax", ("x", "y"), "y"),
        "CuPy": _cupy_impl(formulas.softmax, "x"),
        "PyTorch": _torch_impl(lambda t: lambda x: t.softmax(x, dim=1), "x"),
        "Triton": _triton_impl(lambda k: k.softmax, "x", "y"),
    })


def rmsnorm(size: Sizes) -> tuple[Case, dict[str, Impl]]:
    m, n = size.rows
    case = Case(
        case=f"rmsnorm/{size.label}",
        name=f"rmsnorm f32 {m}x{n}",
        nbytes=(2 * m * n + n) * F32,
        make_buffers=lambda s: _row_buffers(m, n, s, ("w",), (m, n)),
        reference=lambda b: formulas.rmsnorm(_f64(b["x"]), _f64(b["w"]), EPS),
    )

    def torch_rms_norm(torch: Any) -> Callable[..., Any] | None:
        rms_norm = getattr(torch.nn.functional, "rms_norm", None)  # PyTorch >= 2.4
        return None if rms_norm is None else lambda x, w: rms_norm(x, (n,), w, EPS)

    return case, _available({
        TEGULA: tegula_impl("cuda", "rmsnorm.tg", "rmsnorm", ("x", "w", "y"), "y", EPS),
        "CuPy": _cupy_impl(lambda x, w: formulas.rmsnorm(x, w, EPS), "x", "w"),
        "PyTorch": _torch_impl(torch_rms_norm, "x", "w"),
    })


def layernorm(size: Sizes) -> tuple[Case, dict[str, Impl]]:
    m, n = size.rows
    case = Case(
        case=f"layernorm/{size.label}",
        name=f"layernorm f32 {m}x{n}",
        nbytes=(2 * m * n + 2 * n) * F32,
        make_buffers=lambda s: _row_buffers(m, n, s, ("w", "b"), (m, n)),
        reference=lambda b: formulas.layernorm(_f64(b["x"]), _f64(b["w"]), _f64(b["b"]), EPS),
    )
    return case, _available({
        TEGULA: tegula_impl("cuda", "rmsnorm.tg", "layernorm", ("x", "w", "b", "y"), "y", EPS),
        "CuPy": _cupy_impl(lambda x, w, b: formulas.layernorm(x, w, b, EPS), "x", "w", "b"),
        "PyTorch": _torch_impl(
            lambda t: lambda x, w, b: t.nn.functional.layer_norm(x, (n,), w, b, EPS),
            "x", "w", "b"),
    })


def transpose(size: Sizes) -> tuple[Case, dict[str, Impl]]:
    m, n = size.square
    case = Case(
        case=f"transpose/{size.label}",
        name=f"transpose f32 {m}x{n}",
        nbytes=2 * m * n * F32,
        make_buffers=lambda s: _row_buffers(m, n, s, (), (n, m)),
        reference=lambda b: _f64(b["x"]).T,
    )
    return case, _available({
        TEGULA: tegula_impl("cuda", "transpose.tg", "transpose", ("x", "y"), "y"),
        "CuPy": _cupy_impl(lambda x: _cupy().ascontiguousarray(x.T), "x"),
        "PyTorch": _torch_impl(lambda t: lambda x: x.t().contiguous(), "x"),
    })


def row_sum(size: Sizes) -> tuple[Case, dict[str, Impl]]:
    m, n = size.rows
    case = Case(
        case=f"row_sum/{size.label}",
        name=f"row_sum f32 {m}x{n}",
        nbytes=(m * n + m) * F32,
        make_buffers=lambda s: _row_buffers(m, n, s, (), (m,)),
        reference=lambda b: _f64(b["x"]).sum(axis=1),
        tolerance=1e-4,  # a sum of N terms rounds more than an elementwise op
    )
    return case, _available({
        TEGULA: tegula_impl("cuda", "reduce.tg", "row_sum", ("x", "y"), "y"),
        "CuPy": _cupy_impl(lambda x, y: _cupy().sum(x, axis=1, out=y), "x", "y"),
        "PyTorch": _torch_impl(lambda t: lambda x, y: t.sum(x, dim=1, out=y), "x", "y"),
    })


KERNELS = (vector_add, softmax, rmsnorm, layernorm, transpose, row_sum)


def release_memory() -> None:
    """Hand cached device memory back between cases, so large cases fit one after another."""
    _cupy().get_default_memory_pool().free_all_blocks()
    torch = torch_cuda()
    if torch is not None:
        torch.cuda.empty_cache()


def copy_ceiling(nbytes: int, settings: Settings) -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + bytes written), median."""
    from ..harness import CudaEventClock

    src = _random((nbytes // F32,), 12345)
    dst = _empty(src.shape)

    def copy() -> None:
        dst.data.copy_from_device_async(src.data, src.nbytes)

    copy()
    compare(dst, _f64(src), 0.0)
    stats = measure(copy, CudaEventClock(), settings)
    return gbps(2 * src.nbytes, stats.median_s)


def run(settings: Settings, quick: bool) -> list[Row]:
    ceiling = {"copy": copy_ceiling(COPY_BYTES[quick], settings)}
    release_memory()
    l2 = devices.gpu_l2_bytes()
    timer = gpu_timer(settings)
    rows = []
    for size in QUICK_SIZES if quick else FULL_SIZES:
        for make_case in KERNELS:
            case, impls = make_case(size)
            rows.append(measure_case(case, impls, timer, cache_bytes=l2, ceiling=ceiling))
            print(summary_line(rows[-1]), flush=True)
            release_memory()
    return rows


SUITE = Suite("memory", needs_gpu=True, describe_device=devices.describe_gpu, run=run)
