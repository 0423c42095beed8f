"""The CPU target beside NumPy, in GB/s (each input read once, each output written once), against
a NumPy copy's bandwidth. GB/s keeps every row comparable with the copy ceiling; for one row,
tegula's time over NumPy's is the inverse of the GB/s ratio. The f32 GEMM rows (tegula's
`examples/matmul.tg` beside NumPy's `a @ b`, OpenBLAS on all cores) are in GFLOP/s instead,
counted and checked as in the gemm suite (2·M·N·K per call, one buffer set: compute-bound).

NumPy is written the efficient way: outputs and scratch allocated once, operations in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import devices
from ..checks import compare, random_array
from ..compare import TEGULA, Buffers, Case, Impl, host_timer, measure_case
from ..harness import Call, Settings, bench_host, gbps
from ..kernels import tegula_impl
from ..report import summary_line
from ..schema import Row
from . import Suite, formulas, gemm, quant

EPS = 1e-5
F32 = 4  # bytes


@dataclass(frozen=True)
class Sizes:
    square: tuple[int, int]  # softmax, rmsnorm, transpose, row_sum
    wide: tuple[int, int]  # softmax, rmsnorm: few long rows
    vector: int


FULL = Sizes(square=(4096, 4096), wide=(1024, 8192), vector=2**24)
QUICK = Sizes(square=(256, 256), wide=(64, 1024), vector=2**16)
COPY_BYTES = {False: 2**30, True: 2**24}  # by `quick`
GEMM_SIZES = {False: (("medium", 1024), ("large", 2048)),  # by `quick`: (label, size)
              True: (("medium", 256), ("large", 512))}
# Against a float64 product: f32 accumulation over K <= 2048 lands near 1e-6.
GEMM_TOLERANCE = 1e-5


def _buffers(inputs: dict[str, tuple[int, ...]], out_shape: tuple[int, ...], seed: int,
             out: str = "y") -> Buffers:
    arrays = {name: random_array(np, shape, 8 * seed + i)
              for i, (name, shape) in enumerate(inputs.items())}
    return Buffers(arrays, {out: np.empty(out_shape, dtype=np.float32)})


# NumPy, written the efficient way.

def _numpy_softmax(b: Buffers) -> Call:
    x, y = b["x"], b["y"]
    per_row = np.empty((x.shape[0], 1), dtype=np.float32)

    def call() -> Any:
        np.max(x, axis=1, keepdims=True, out=per_row)
        np.subtract(x, per_row, out=y)
        np.exp(y, out=y)
        np.sum(y, axis=1, keepdims=True, out=per_row)
        np.divide(y, per_row, out=y)
        return y

    return call


def _numpy_rmsnorm(b: Buffers) -> Call:
    x, w, y = b["x"], b["w"], b["y"]
    scale = np.empty(x.shape[0], dtype=np.float32)

    def call() -> Any:
        np.einsum("ij,ij->i", x, x, out=scale)  # sum of squares without an M x N temporary
        np.multiply(scale, 1.0 / x.shape[1], out=scale)
        np.add(scale, EPS, out=scale)
        np.sqrt(scale, out=scale)
        np.divide(x, scale[:, None], out=y)
        np.multiply(y, w, out=y)
        return y

    return call


def _numpy(fn: Any, *names: str) -> Impl:
    def bind(b: Buffers) -> Call:
        arrays = [b[name] for name in names]
        return lambda: fn(*arrays)

    return Impl(bind)


def _tegula(file: str, kernel: str, args: tuple[str, ...], *scalars: float, out: str = "y"
            ) -> Impl:
    return tegula_impl("cpu", file, kernel, args, out, *scalars)


def cases(sizes: Sizes) -> list[tuple[Case, dict[str, Impl]]]:
    """Every (case, implementations) pair of the suite."""
    result = []
    for shape_label, (m, n) in (("square", sizes.square), ("wide", sizes.wide)):
        result.append((
            Case(f"softmax/{shape_label}", f"softmax f32 {m}x{n}", 2 * m * n * F32,
                 lambda s, m=m, n=n: _buffers({"x": (m, n)}, (m, n), s),
                 lambda b: formulas.softmax(b["x"].astype(np.float64))),
            {TEGULA: _tegula("softmax.tg", "softmax", ("x", "y")),
             "NumPy": Impl(_numpy_softmax)},
        ))
        result.append((
            Case(f"rmsnorm/{shape_label}", f"rmsnorm f32 {m}x{n}", (2 * m * n + n) * F32,
                 lambda s, m=m, n=n: _buffers({"x": (m, n), "w": (n,)}, (m, n), s),
                 lambda b: formulas.rmsnorm(b["x"].astype(np.float64),
                                            b["w"].astype(np.float64), EPS)),
            {TEGULA: _tegula("rmsnorm.tg", "rmsnorm", ("x", "w", "y"), EPS),
             "NumPy": Impl(_numpy_rmsnorm)},
        ))
    n = sizes.vector
    m, k = sizes.square
    result += [
        (Case("vector_add/large", f"vector_add f32 {n}", 3 * n * F32,
              lambda s: _buffers({"x": (n,), "y": (n,)}, (n,), s, out="z"),
              lambda b: b["x"].astype(np.float64) + b["y"]),
         {TEGULA: _tegula("vector_add.tg", "vector_add", ("x", "y", "z"), out="z"),
          "NumPy": _numpy(lambda x, y, z: np.add(x, y, out=z), "x", "y", "z")}),
        (Case("transpose/square", f"transpose f32 {m}x{k}", 2 * m * k * F32,
              lambda s: _buffers({"x": (m, k)}, (k, m), s),
              lambda b: b["x"].T.astype(np.float64)),
         {TEGULA: _tegula("transpose.tg", "transpose", ("x", "y")),
          "NumPy": _numpy(lambda x, y: (np.copyto(y, x.T), y)[1], "x", "y")}),
        (Case("row_sum/square", f"row_sum f32 {m}x{k}", (m * k + m) * F32,
              lambda s: _buffers({"x": (m, k)}, (m,), s),
              lambda b: b["x"].astype(np.float64).sum(axis=1), tolerance=1e-4),
         {TEGULA: _tegula("reduce.tg", "row_sum", ("x", "y")),
          "NumPy": _numpy(lambda x, y: np.sum(x, axis=1, out=y), "x", "y")}),
    ]
    return result


def gemm_cases(quick: bool) -> list[gemm.GemmCase]:
    return [gemm.square_case("f32", size, label, GEMM_TOLERANCE)
            for label, size in GEMM_SIZES[quick]]


def _numpy_matmul(b: Buffers) -> Call:
    a, w, c = b["a"], b["b"], b["c"]

    def call() -> Any:
        np.matmul(a, w, out=c)
        return c

    return call


def measure_gemm_case(case: gemm.GemmCase, settings: Settings, notes: list[str]) -> Row:
    """tegula's matmul.tg beside NumPy on one f32 GEMM, in GFLOP/s."""
    buffer_sets = gemm.make_buffer_sets(
        case.shape, 1, lambda shape, seed: random_array(np, shape, seed),
        lambda shape: np.empty(shape, dtype=np.float32))
    reference = buffer_sets[0]["a"].astype(np.float64) @ buffer_sets[0]["b"].astype(np.float64)
    impls = {TEGULA: _tegula("matmul.tg", "matmul", ("a", "b", "c"), out="c"),
             "NumPy": Impl(_numpy_matmul, destination=True)}
    return gemm.measure_gemm(case, buffer_sets, reference, impls, host_timer(settings),
                             metric=gemm.GFLOPS, extra_notes=notes)


def copy_ceiling(nbytes: int, settings: Settings) -> float:
    """NumPy copy bandwidth in GB/s (bytes read + bytes written), median."""
    src = random_array(np, (nbytes // F32,), 12345)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    compare(dst, src.astype(np.float64), 0.0)
    stats = bench_host([lambda: np.copyto(dst, src)], settings)
    return gbps(2 * src.nbytes, stats.median_s)


def run(settings: Settings, quick: bool) -> list[Row]:
    ceiling = {"copy": copy_ceiling(COPY_BYTES[quick], settings)}
    threads = f"threading environment: {devices.thread_environment()}"
    rows = []
    for case, impls in cases(QUICK if quick else FULL):
        rows.append(measure_case(case, impls, host_timer(settings),
                                 cache_bytes=devices.cpu_cache_bytes(), ceiling=ceiling,
                                 extra_notes=[threads]))
        print(summary_line(rows[-1]), flush=True)
    for gemm_case in gemm_cases(quick):
        rows.append(measure_gemm_case(gemm_case, settings, [threads]))
        print(summary_line(rows[-1]), flush=True)
    rows += quant.measure(quant.cpu_cases(quick), quant.cpu_placement(), host_timer(settings),
                          cache_bytes=devices.cpu_cache_bytes(), ceiling=ceiling,
                          notes=(threads,))
    return rows


SUITE = Suite("cpu", needs_gpu=False, describe_device=devices.describe_cpu, run=run)
