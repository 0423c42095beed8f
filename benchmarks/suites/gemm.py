"""Matrix multiplication in FLOP/s: tegula's tensor-core GEMMs (`examples/gemm.tg`) beside
cuBLAS, PyTorch and Triton on the GPU; and the row logic the cpu suite's f32 GEMM rows share.

Rows, all c = a @ b with a: [M, K], b: [K, N], c: [M, N], row-major:

- square: fp16 and bf16 at 4096 and 8192 (`--quick`: 512 and 1024), named `fp16 4096x4096x4096`
  (M x N x K);
- LLM projections: fp16, M in (16, 128, 2048, 8192) x (K, N) in ((4096, 4096), (4096, 14336),
  (14336, 4096), (8192, 28672)), named `fp16 M=16 K=4096 N=4096` (`--quick`: M in (16, 512),
  K = N = 1024);
- `fp16 LLM shapes geomean`: each implementation's figure is the geometric mean of its TFLOP/s
  over every LLM row. An implementation missing from any LLM row gets no figure there (its note
  names the rows), so every figure in the summary covers the same shapes and tegula/cuBLAS in
  it equals the geometric mean of the per-row tegula/cuBLAS ratios.

FLOPs: 2·M·N·K per call (a multiply-add counts two), whatever an implementation executes.
The cuBLAS column (`cupy.matmul`, which calls cublasGemmEx) is also each row's ceiling.
tegula's kernels are compiled once per tile choice: the config `tegula tune --cold-l2` found
for the row's shape where the suite's tuning database (TUNING_DB, records of the GPU they were
measured on) has one, else their defaults, except MEMORY_BOUND_TILES on memory-bound rows.
Each row records its choice in `tegula_params` and where it came from in
`tegula_params_from`; the mma.sync and cp.async columns keep the untuned choice.

Method: the harness's device-event timer (warm-up, median of many samples; calls under 50 us
replayed from a verified CUDA graph). Inputs are fresh standard-normal data; each output is
poisoned with NaN, then checked against a @ b computed in float32 by cuBLAS (relative Frobenius
error at most 1e-2 for f16/bf16; the error goes in the row's `check`) before anything is timed.
Rows with M <= 128 are memory-bound on b (the weights): b and c rotate through enough buffer
sets to exceed twice the L2, with a shared (activations are small, and hot in practice); the
others are compute-bound and use one set. Buffers stay under GPU_MEMORY_BUDGET_BYTES: fewer
sets, with a note, where the rotation would not fit.

bf16 operands are PyTorch tensors, since CuPy (before its ml_dtypes support) has no bfloat16;
the cuBLAS column then comes from `torch.matmul` when CuPy cannot take them, as the notes say.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .. import devices
from ..checks import array_module, compare, poison, random_array
from ..compare import TEGULA, Buffers, Impl, Timer, failure_reason, gpu_timer
from ..harness import Call, Capture, Settings, buffer_sets_needed
from ..kernels import EXAMPLES
from ..kernels import tegula_impl as example_impl
from ..peers import torch_cuda, triton_kernels
from ..report import summary_line
from ..schema import Row
from . import Suite

Precision = Literal["fp16", "bf16", "f32"]
ITEMSIZE: Mapping[Precision, int] = {"fp16": 2, "bf16": 2, "f32": 4}

TFLOPS = "TFLOP/s"
GFLOPS = "GFLOP/s"
METRIC_SCALE: Mapping[str, float] = {TFLOPS: 1e12, GFLOPS: 1e9}

CUBLAS = "cuBLAS"
PYTORCH = "PyTorch"
TRITON = "Triton"

# f32 accumulation, one rounding to 16 bits: about 3e-4 (f16) and 2e-3 (bf16) in practice.
HALF_TOLERANCE = 1e-2

# Rows with at most this many rows of a are memory-bound on b: their arithmetic intensity,
# about M flop per byte of b, is far below an H100's ~300 flop/byte balance point.
MEMORY_BOUND_MAX_M = 128

GPU_MEMORY_BUDGET_BYTES = 40 * 10**9

TEGULA_KERNELS: Mapping[Precision, str] = {"fp16": "gemm_f16", "bf16": "gemm_bf16"}

# Tile parameters tegula's GEMMs get on memory-bound rows, until the tuner picks them per
# shape: narrower blocks put twice as many blocks across N, and deeper K steps halve the
# K-loop trips. Compute-bound rows use the kernels' defaults (examples/gemm.tg).
MEMORY_BOUND_TILES: Mapping[str, int] = {"BM": 64, "BN": 64, "BK": 64, "WARPS": 4}

# What `tegula tune examples/gemm.tg --kernel gemm_f16 --cold-l2 --db benchmarks/tuned/gemm.jsonl
# --shape M=.. --shape N=.. --shape K=..` recorded for the suite's shapes (benchmarks/README.md):
# tegula's column runs the best config measured for its row's exact shape, as tg.compile
# picks it from a tuning database.
TUNING_DB = Path(__file__).resolve().parents[1] / "tuned" / "gemm.jsonl"

SQUARE_SIZES: Mapping[bool, tuple[tuple[str, int], ...]] = {  # by `quick`: (label, size)
    False: (("medium", 4096), ("large", 8192)),
    True: (("medium", 512), ("large", 1024)),
}
LLM_M: Mapping[bool, tuple[int, ...]] = {False: (16, 128, 2048, 8192), True: (16, 512)}
LLM_KN: Mapping[bool, tuple[tuple[int, int], ...]] = {
    False: ((4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672)),
    True: ((1024, 1024),),
}
CUBLAS_F16 = "cuBLAS f16"
# tegula's portable path (mma.sync, what sm_80 GPUs get) where the GPU has a faster one.
TEGULA_MMA_SYNC = "tegula mma.sync"
# Where the kernels copy operands by TMA from a producer warpgroup (sm_90a: their TMA and WS
# params default to true there), the same kernels with both false, every thread issuing
# cp.async copies, measured beside them.
TEGULA_CP_ASYNC = "tegula cp.async"
LLM_GEOMEAN_CASE = "fp16/llm/geomean"
LLM_GEOMEAN_NAME = "fp16 LLM shapes geomean"


# ------------------------------------------------------------------------------ the cases

@dataclass(frozen=True)
class GemmShape:
    """c[M, N] = a[M, K] @ b[K, N]."""

    m: int
    n: int
    k: int

    def __post_init__(self) -> None:
        if min(self.m, self.n, self.k) <= 0:
            raise ValueError(f"GEMM dimensions must be positive, got M={self.m} N={self.n} "
                             f"K={self.k}")

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k

    @property
    def memory_bound(self) -> bool:
        return self.m <= MEMORY_BOUND_MAX_M


@dataclass(frozen=True)
class GemmCase:
    case: str  # stable key for targets, the same in --quick runs
    name: str  # the row's name
    precision: Precision
    shape: GemmShape
    tolerance: float


def square_case(precision: Precision, size: int, label: str, tolerance: float) -> GemmCase:
    shape = GemmShape(size, size, size)
    return GemmCase(f"{precision}/square/{label}", f"{precision} {size}x{size}x{size}",
                    precision, shape, tolerance)


def llm_case(m: int, k: int, n: int) -> GemmCase:
    return GemmCase(f"fp16/llm/M={m},K={k},N={n}", f"fp16 M={m} K={k} N={n}", "fp16",
                    GemmShape(m, n, k), HALF_TOLERANCE)


def square_cases(quick: bool) -> list[GemmCase]:
    return [square_case(precision, size, label, HALF_TOLERANCE)
            for precision in ("fp16", "bf16") for label, size in SQUARE_SIZES[quick]]


def llm_cases(quick: bool) -> list[GemmCase]:
    return [llm_case(m, k, n) for m in LLM_M[quick] for k, n in LLM_KN[quick]]


def flop_rate(flops: int, seconds: float, metric: str) -> float:
    """FLOPs per second in the metric's unit (TFLOP/s or GFLOP/s)."""
    if metric not in METRIC_SCALE:
        raise ValueError(f"unknown FLOP-rate metric {metric!r} (known: {', '.join(METRIC_SCALE)})")
    return flops / seconds / METRIC_SCALE[metric]


def tegula_tile_params(shape: GemmShape) -> dict[str, int]:
    """The compile-time tile parameters tegula's GEMM gets for `shape` without tuning ({} =
    its defaults)."""
    return dict(MEMORY_BOUND_TILES) if shape.memory_bound else {}


def tuned_tile_params(precision: Precision, shape: GemmShape, database: Path = TUNING_DB,
                      target: str = "cuda") -> dict[str, int] | None:
    """The config the tuning database holds as fastest for tegula's GEMM at exactly `shape`
    on `target` (the GPU here), or None (no database, no record of this shape)."""
    if not database.exists():
        return None
    tuned = _tuned_configs(TEGULA_KERNELS[precision], database, target)
    found = None if tuned is None else tuned.config_for(
        {"M": shape.m, "N": shape.n, "K": shape.k})
    return None if found is None else dict(found)


@functools.cache
def _tuned_configs(kernel: str, database: Path, target: str) -> Any:
    """The kernel's tuned configs as `tg.compile` reads them (once a run: every row asks)."""
    import tegula as tg

    compiled = tg.compile(EXAMPLES / "gemm.tg", target=target, kernels=[kernel],
                          tuning_db=database)[kernel]
    return getattr(compiled, "tuned", None)


# ------------------------------------------------------------------------- buffer sets

@dataclass(frozen=True)
class BufferPlan:
    sets: int  # buffer sets used
    wanted: int  # the sets that would exceed twice the cache

    @property
    def capped(self) -> bool:
        return self.sets < self.wanted


def plan_buffer_sets(shape: GemmShape, itemsize: int, cache_bytes: int,
                     memory_budget: int = GPU_MEMORY_BUDGET_BYTES) -> BufferPlan:
    """How many (b, c) sets a row rotates through: one for compute-bound shapes; enough to
    exceed twice the cache for memory-bound ones, as far as the memory budget allows (a is
    shared by every set)."""
    if not shape.memory_bound:
        return BufferPlan(1, 1)
    per_set = (shape.k * shape.n + shape.m * shape.n) * itemsize
    shared = shape.m * shape.k * itemsize
    wanted = buffer_sets_needed(per_set, cache_bytes)
    fits = max(1, (memory_budget - shared) // per_set)
    return BufferPlan(min(wanted, fits), wanted)


def make_buffer_sets(shape: GemmShape, n_sets: int,
                     random_operand: Callable[[tuple[int, int], int], Any],
                     empty_operand: Callable[[tuple[int, int]], Any]) -> list[Buffers]:
    """`n_sets` sets sharing one `a`, each with its own random `b` and output `c`."""
    a = random_operand((shape.m, shape.k), 0)
    return [Buffers({"a": a, "b": random_operand((shape.k, shape.n), 1 + index)},
                    {"c": empty_operand((shape.m, shape.n))})
            for index in range(n_sets)]


def _is_torch(array: Any) -> bool:
    return type(array).__module__.split(".", 1)[0] == "torch"


def as_float32(array: Any) -> Any:
    """A float32 copy as a NumPy or CuPy array: what outputs are checked, and references
    computed, in. PyTorch tensors (bf16 has no CuPy dtype) go through PyTorch's own cast."""
    if _is_torch(array):
        return _cupy().from_dlpack(array.float())
    return array.astype(array_module(array).float32)


def poison_output(array: Any) -> None:
    """NaN into an output, so an element left unwritten fails the check."""
    if _is_torch(array):
        array.fill_(float("nan"))
    else:
        poison([array])


# ------------------------------------------------------------------------------ one row

def _verifier(buffer_sets: Sequence[Buffers], reference: Any, tolerance: float
              ) -> Callable[[Call], None]:
    """Checks that one run of a batch (e.g. a graph replay) writes the first set's output."""

    def verify(run: Call) -> None:
        for buffers in buffer_sets:
            for out in buffers.outputs.values():
                poison_output(out)
        run()
        compare(as_float32(buffer_sets[0]["c"]), reference, tolerance)

    return verify


def measure_gemm(case: GemmCase, buffer_sets: Sequence[Buffers], reference: Any,
                 impls: Mapping[str, Impl], timer: Timer, *, metric: str,
                 ceiling_peer: str | None = None, extra_notes: Iterable[str] = (),
                 extra: Mapping[str, Any] | None = None) -> Row:
    """Check every implementation on the first buffer set, time it over all of them, and
    return the FLOP-rate row. One that fails to build, run or match `reference` is left out,
    with the reason in the row's notes. `ceiling_peer`'s figure, when measured, is also the
    row's ceiling."""
    figures: dict[str, float] = {}
    checks: dict[str, str] = {}
    timings: dict[str, dict[str, object]] = {}
    notes = list(extra_notes)
    for name, impl in impls.items():
        try:
            # A peer that computes in a narrower type is checked at its own tolerance.
            tolerance = case.tolerance if impl.tolerance is None else impl.tolerance
            verify = _verifier(buffer_sets, reference, tolerance)
            calls = [impl.bind(buffers) for buffers in buffer_sets]
            poison_output(buffer_sets[0]["c"])
            out = calls[0]()
            checks[name] = str(compare(as_float32(out), reference, tolerance))
            stats = timer(calls, impl.capture, verify if impl.destination else None)
        except Exception as error:  # one failing implementation must not sink the row
            notes.append(f"{name} left out: {failure_reason(error)}")
            continue
        figures[name] = flop_rate(case.shape.flops, stats.median_s, metric)
        timings[name] = stats.to_json()
    row_extra: dict[str, Any] = {
        "case": case.case,
        "shape": {"M": case.shape.m, "N": case.shape.n, "K": case.shape.k},
        "flops": case.shape.flops,
        "buffer_sets": len(buffer_sets),
        **(extra or {}),
    }
    if TEGULA in timings:
        row_extra["tegula_ms"] = timings[TEGULA]["median_ms"]
    row_extra |= {"check": checks, "timing": timings}
    if notes:
        row_extra["notes"] = "; ".join(notes)
    ceiling = {ceiling_peer: figures[ceiling_peer]} if ceiling_peer in figures else {}
    return Row(name=case.name, metric=metric, higher_is_better=True,
               tegula=figures.pop(TEGULA, None), peers=figures, ceiling=ceiling,
               extra=row_extra)


def unmeasured_row(case: GemmCase, metric: str, reason: str) -> Row:
    """A row whose buffers or reference could not be made: no figures, the reason noted."""
    return Row(name=case.name, metric=metric, higher_is_better=True, tegula=None,
               extra={"case": case.case, "notes": f"tegula left out: row not measured: {reason}"})


def geomean_row(rows: Sequence[Row], *, name: str, case: str,
                ceiling_peer: str | None = CUBLAS) -> Row:
    """A summary row: each implementation's geometric mean over `rows`, only for those with a
    figure in every row (so every figure covers the same rows, and a ratio of two of them is
    the geometric mean of the per-row ratios)."""
    if not rows:
        raise ValueError(f"{name}: a summary needs at least one row")
    metrics = sorted({row.metric for row in rows})
    if len(metrics) > 1:
        raise ValueError(f"{name}: rows in different metrics ({', '.join(metrics)})")
    impls = [TEGULA, *dict.fromkeys(peer for row in rows for peer in row.peers)]
    figures: dict[str, float] = {}
    notes = [f"geometric mean over the {len(rows)} rows {rows[0].name} ... {rows[-1].name} of "
             "each implementation's figure; only an implementation measured in every one of "
             "them gets a figure, so a ratio here is the geometric mean of the per-row ratios"]
    for impl in impls:
        values = [row.tegula if impl == TEGULA else row.peers.get(impl) for row in rows]
        missing = [row.name for row, value in zip(rows, values, strict=True) if value is None]
        if not missing:
            figures[impl] = statistics.geometric_mean(values)  # type: ignore[arg-type]
        elif len(missing) == len(rows):
            notes.append(f"{impl} left out: no figure in any of the rows")
        else:
            notes.append(f"{impl} left out: no figure for {', '.join(missing)}")
    ceiling = {ceiling_peer: figures[ceiling_peer]} if ceiling_peer in figures else {}
    return Row(name=name, metric=metrics[0], higher_is_better=True,
               tegula=figures.pop(TEGULA, None), peers=figures, ceiling=ceiling,
               extra={"case": case, "of": [row.name for row in rows],
                      "notes": "; ".join(notes)})


# ------------------------------------------------------------------ GPU implementations

def _cupy() -> Any:
    import cupy

    return cupy


def _torch_or_raise() -> Any:
    torch = torch_cuda()
    if torch is None:
        raise RuntimeError("bf16 operands need PyTorch with CUDA (CuPy has no bfloat16)")
    return torch


def random_gpu_operand(precision: Precision, shape: tuple[int, int], seed: int) -> Any:
    data = random_array(_cupy(), shape, seed)
    if precision == "fp16":
        return data.astype(_cupy().float16)
    if precision == "bf16":
        torch = _torch_or_raise()
        return torch.from_dlpack(data).to(torch.bfloat16)
    raise ValueError(f"no GPU GEMM rows in {precision!r}")


def empty_gpu_operand(precision: Precision, shape: tuple[int, int]) -> Any:
    if precision == "fp16":
        return _cupy().empty(shape, dtype=_cupy().float16)
    torch = _torch_or_raise()
    return torch.empty(shape, dtype=torch.bfloat16, device="cuda")


def gpu_reference(buffers: Buffers) -> Any:
    """a @ b in float32 by cuBLAS (CuPy's matmul), from the low-precision inputs."""
    return _cupy().matmul(as_float32(buffers["a"]), as_float32(buffers["b"]))


def _capture(precision: Precision) -> Capture:
    """Graph capture for launches on this precision's operands: kernels given PyTorch tensors
    (bf16) launch on PyTorch's current stream, the rest on CuPy's."""
    return "torch" if precision == "bf16" else "cupy"


@functools.cache
def _tegula_gemm(kernel: str, params: tuple[tuple[str, int | bool | str], ...], target: str
                 ) -> Any:
    import tegula as tg

    return tg.compile(EXAMPLES / "gemm.tg", target=target, kernels=[kernel],
                      **dict(params))[kernel]


def portable_target() -> str | None:
    """This GPU's architecture without the "a" features (wgmma, TMA): the mma.sync code an
    sm_80 GPU runs, built for and measured on this one. None where the GPU has no "a"."""
    from tegula import resolve_target

    best = str(resolve_target("cuda"))
    portable = best.removesuffix("a")
    return portable if portable != best else None


def tegula_impl(precision: Precision, params: Mapping[str, int | bool],
                target: str = "cuda") -> Impl:
    """tegula's GEMM for ``precision`` with ``params`` on ``target``."""
    kernel = TEGULA_KERNELS[precision]
    pinned = tuple(sorted(params.items()))

    def bind(b: Buffers) -> Call:
        compiled = _tegula_gemm(kernel, pinned, target)
        a, w, c = b["a"], b["b"], b["c"]

        def call() -> Any:
            compiled(a, w, c)
            return c

        return call

    return Impl(bind, _capture(precision), destination=True)


def _cupy_matmul(view: Callable[[Any], Any]) -> Impl:
    def bind(b: Buffers) -> Call:
        a, w, c = view(b["a"]), view(b["b"]), view(b["c"])

        def call() -> Any:
            _cupy().matmul(a, w, out=c)
            return b["c"]

        return call

    return Impl(bind, "cupy", destination=True)


def _torch_impl(torch: Any, fn: Callable[[Any, Any, Any], Any]) -> Impl:
    """A PyTorch-launched implementation writing into c, on PyTorch views of the buffers."""

    def view(array: Any) -> Any:
        return array if _is_torch(array) else torch.from_dlpack(array)

    def bind(b: Buffers) -> Call:
        a, w, c = view(b["a"]), view(b["b"]), view(b["c"])

        def call() -> Any:
            fn(a, w, c)
            return b["c"]

        return call

    return Impl(bind, "torch", destination=True)


@functools.cache
def _cupy_takes_bf16() -> bool:
    """Whether this CuPy can view PyTorch bf16 tensors and multiply them (with ml_dtypes)."""
    torch = torch_cuda()
    if torch is None:
        return False
    try:
        view = _cupy().from_dlpack(torch.ones((16, 16), dtype=torch.bfloat16, device="cuda"))
        product = _cupy().matmul(view, view)
        return bool((product.astype(_cupy().float32) == 16).all())
    except Exception:  # no bfloat16 in this CuPy
        return False


def gpu_impls(precision: Precision, params: Mapping[str, int],
              tuned: Mapping[str, int] | None = None) -> tuple[dict[str, Impl], list[str]]:
    """tegula (with the ``tuned`` config where given, else ``params``, which its other paths
    take) and each peer available here, and a note for each peer that is not."""
    impls = {TEGULA: tegula_impl(precision, params if tuned is None else tuned)}
    notes = []
    portable = portable_target()
    if portable is not None:
        impls[TEGULA_MMA_SYNC] = tegula_impl(precision, params, portable)
        if int(portable.removeprefix("cuda:sm_")) >= 90:
            impls[TEGULA_CP_ASYNC] = tegula_impl(precision,
                                                 {**params, "TMA": False, "WS": False})
    torch = torch_cuda()
    if precision == "fp16":
        impls[CUBLAS] = _cupy_matmul(lambda array: array)
    elif _cupy_takes_bf16():
        impls[CUBLAS] = _cupy_matmul(_cupy().from_dlpack)
    elif torch is not None:
        impls[CUBLAS] = _torch_impl(torch, lambda a, w, c: torch.matmul(a, w, out=c))
        notes.append(f"{CUBLAS} measured through torch.matmul: this CuPy has no bfloat16")
    if torch is None:
        notes.append(f"{PYTORCH} left out: PyTorch with CUDA is not installed")
    else:
        impls[PYTORCH] = _torch_impl(torch, lambda a, w, c: torch.matmul(a, w, out=c))
    kernels = triton_kernels()
    if kernels is None:
        notes.append(f"{TRITON} left out: Triton (with PyTorch and CUDA) is not installed")
    else:
        impls[TRITON] = _torch_impl(torch, kernels.matmul)
    return impls, notes


# ------------------------------------------------------------------------------ W8A8 rows

def w8a8_case(size: int, label: str) -> GemmCase:
    return GemmCase(f"w8a8/square/{label}", f"w8a8 {size}x{size}x{size}", "fp16",
                    GemmShape(size, size, size), HALF_TOLERANCE)


def w8a8_cases(quick: bool) -> list[GemmCase]:
    return [w8a8_case(size, label) for label, size in SQUARE_SIZES[quick]]


def measure_w8a8_case(case: GemmCase, timer: Timer) -> Row:
    """`quant_gemm_w8a8` of examples/quant_gemm.tg (i8 codes, per-token and per-channel f32
    scales, i32 accumulation on integer tensor cores) beside cuBLAS multiplying the same
    values dequantized to f16: what the 8-bit product is meant to beat. Checked against the
    scaled integer product computed by cuBLAS in float32."""
    cp = _cupy()
    m, n, k = case.shape.m, case.shape.n, case.shape.k
    rng = cp.random.default_rng(0)
    a = rng.integers(-127, 128, (m, k), dtype=cp.int8)
    w = rng.integers(-127, 128, (n, k), dtype=cp.int8)  # [N, K], as a linear layer stores it
    sa = (rng.random(m, dtype=cp.float32) + 0.5) / 127
    sw = (rng.random(n, dtype=cp.float32) + 0.5) / 127
    a16 = (a.astype(cp.float32) * sa[:, None]).astype(cp.float16)
    w16 = (w.T.astype(cp.float32) * sw[None, :]).astype(cp.float16)
    buffers = Buffers({"a": a, "w": w, "sa": sa, "sw": sw, "a16": a16,
                       "w16": cp.ascontiguousarray(w16)},
                      {"c": cp.empty((m, n), dtype=cp.float16)})
    exact = cp.matmul(a.astype(cp.float32), w.T.astype(cp.float32))
    reference = exact * sa[:, None] * sw[None, :]

    def cublas_bind(b: Buffers) -> Call:
        out = cp.empty((m, n), dtype=cp.float16)

        def call() -> Any:
            cp.matmul(b["a16"], b["w16"], out=out)
            return out

        return call

    impls = {TEGULA: example_impl("cuda", "quant_gemm.tg", "quant_gemm_w8a8",
                                  ("a", "w", "sa", "sw", "c"), "c"),
             CUBLAS_F16: Impl(cublas_bind, "cupy")}
    return measure_gemm(case, [buffers], reference, impls, timer, metric=TFLOPS,
                        ceiling_peer=None, extra_notes=[
                            f"{CUBLAS_F16} multiplies the same values dequantized to f16; "
                            "TFLOP/s counts 2*M*N*K operations for both"])


# ------------------------------------------------------------------------------- the suite

def release_memory() -> None:
    """Hand cached device memory back between rows, so the large ones fit one after another."""
    _cupy().get_default_memory_pool().free_all_blocks()
    torch = torch_cuda()
    if torch is not None:
        torch.cuda.empty_cache()


def measure_gpu_case(case: GemmCase, timer: Timer, l2_bytes: int) -> Row:
    params = tegula_tile_params(case.shape)
    notes = []
    try:
        tuned = tuned_tile_params(case.precision, case.shape)
    except Exception as error:  # the row runs untuned and says why
        tuned = None
        notes.append(f"tuning database not used: {failure_reason(error)}")
    params_from = (f"tegula tune records ({TUNING_DB.parent.name}/{TUNING_DB.name})"
                   if tuned is not None else "untuned")
    plan = plan_buffer_sets(case.shape, ITEMSIZE[case.precision], l2_bytes)
    if tuned is not None:
        config = " ".join(f"{k}={v}" for k, v in sorted(tuned.items()))
        notes.append(f"tegula runs the config {params_from} hold as fastest here: {config}")
    if plan.capped:
        notes.append(f"{plan.sets} buffer sets, not the {plan.wanted} that exceed twice the L2: "
                     f"kept under {GPU_MEMORY_BUDGET_BYTES / 1e9:.0f} GB of device memory")
    try:
        buffer_sets = make_buffer_sets(
            case.shape, plan.sets,
            lambda shape, seed: random_gpu_operand(case.precision, shape, seed),
            lambda shape: empty_gpu_operand(case.precision, shape))
        reference = gpu_reference(buffer_sets[0])
    except Exception as error:
        return unmeasured_row(case, TFLOPS, failure_reason(error))
    impls, missing = gpu_impls(case.precision, params, tuned)
    return measure_gemm(case, buffer_sets, reference, impls, timer, metric=TFLOPS,
                        ceiling_peer=CUBLAS, extra_notes=[*notes, *missing],
                        extra={"tegula_params": tuned if tuned is not None else params,
                               "tegula_params_from": params_from})


def run(settings: Settings, quick: bool) -> list[Row]:
    timer = gpu_timer(settings)
    l2 = devices.gpu_l2_bytes()

    def measure(case: GemmCase) -> Row:
        row = measure_gpu_case(case, timer, l2)
        release_memory()
        print(summary_line(row), flush=True)
        return row

    square_rows = [measure(case) for case in square_cases(quick)]
    w8a8_rows = []
    for case in w8a8_cases(quick):
        w8a8_rows.append(measure_w8a8_case(case, timer))
        release_memory()
        print(summary_line(w8a8_rows[-1]), flush=True)
    llm_rows = [measure(case) for case in llm_cases(quick)]
    summary = geomean_row(llm_rows, name=LLM_GEOMEAN_NAME, case=LLM_GEOMEAN_CASE)
    print(summary_line(summary), flush=True)
    return [*square_rows, *w8a8_rows, *llm_rows, summary]


SUITE = Suite("gemm", needs_gpu=True, describe_device=devices.describe_gpu, run=run)
