"""Weight-only quantized GEMV (`examples/quant_gemv.tg`; for a batch of decode rows the
tensor-core `examples/quant_gemm.tg`) beside a GEMV on the dequantized weights, in GB/s of the
quantized problem's bytes, against the copy ceiling.

Bytes counted: the packed weight codes, their f16 group scales, the f16 activations read once
and the f16 output written once: what a kernel at the bandwidth limit must move. Every
implementation in a row is divided into the same bytes, so a row's GB/s ratio is the inverse of
its time ratio. The peers multiply by weights already dequantized (f16 through cuBLAS on a GPU,
f32 through NumPy's BLAS on the CPU): the cost a user pays for not quantizing.

Weights are quantized with `tegula.runtime.quant.quantize`; the reference multiplies in float64
by the weights decoded from the packed codes the kernel reads (`examples/quant_gemv.py`), so a
row checks decoding as well as arithmetic. Each buffer set has its own weights, so rotating the
sets past the cache keeps the weights cold.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from tegula.compiler.checking import load_companion
from tegula.ir import dtypes, lowbit
from tegula.ir.packing import packed_extent, unpack

from .. import devices
from ..compare import TEGULA, Buffers, Case, Impl, Timer, gpu_timer, measure_case
from ..harness import Call, Settings
from ..kernels import EXAMPLES, tegula_impl
from ..peers import torch_cuda
from ..report import summary_line
from ..schema import Row
from . import Suite

F16 = 2  # bytes
GROUP = 128  # the group size the example kernels are written for
# f32 accumulation over K <= 8192 with one rounding to f16: ~5e-4 relative.
TOLERANCE = 2e-3
# quant_gemv_nk_f16: f16 products and slab sums (about twice the f32 form's error, measured).
F16_SUMS_TOLERANCE = 1e-2
# PyTorch's int4 kernel takes bf16 activations and bf16 scales: each rounding is up to 2^-9
# relative, ~3e-3 on the result when measured.
BF16_TOLERANCE = 1e-2
TORCH_INT4 = "PyTorch int4"


# The [N, K] layouts: the GEMV that reads each, and the suffix of its rows' names.
_NK_GEMVS = {"nk": ("quant_gemv_nk", " w[N,K]"),
             "nk_f16": ("quant_gemv_nk_f16", " w[N,K] f16 sums")}


@dataclass(frozen=True)
class GemvCase:
    dtype: str  # the weights' code type, e.g. "i4"
    m: int  # activation rows: 1 for decode
    k: int
    n: int
    prefill: bool = False  # a prompt's rows (compute-bound), keyed apart from decode rows
    # "kn": w is [K, N] (quant_gemv_<dtype>); the others are [N, K], K contiguous
    # (_NK_GEMVS: quant_gemv_nk, and quant_gemv_nk_f16 with f16 products and slab sums)
    layout: str = "kn"

    @property
    def nk(self) -> bool:
        return self.layout != "kn"

    @property
    def label(self) -> str:
        """`w4a16`: weight bits, activation bits, as the field names these kernels."""
        bits = int("".join(ch for ch in self.dtype if ch.isdigit()))
        return f"w{bits}a16"

    @property
    def case(self) -> str:
        case = f"{self.label}/prefill" if self.prefill else f"{self.label}/M={self.m}"
        return case if self.layout == "kn" else f"{case}/{self.layout}"

    @property
    def name(self) -> str:
        name = f"{self.label} g{GROUP} M={self.m} {self.k}x{self.n}"
        return name + (_NK_GEMVS[self.layout][1] if self.nk else "")

    @property
    def example(self) -> tuple[str, str]:
        """(file, kernel) of tegula's kernel for the row: the GEMV for one row; for a batch
        of rows the tensor-core GEMM, which streams the weights once for all of them."""
        if self.nk:
            kernel = _NK_GEMVS[self.layout][0]
            if self.m != 1:
                raise ValueError(f"{kernel}'s rows are GEMVs, M = 1")
            return "quant_gemv.tg", kernel
        if self.m == 1:
            return "quant_gemv.tg", f"quant_gemv_{self.dtype}"
        if self.dtype != "i4":
            raise ValueError(f"examples/quant_gemm.tg has no {self.dtype} kernel")
        return "quant_gemm.tg", "quant_gemm_i4"

    @property
    def constants(self) -> dict[str, str]:
        """The example kernel's dtype params: the generic [N, K] GEMV takes the width."""
        return {"WT": self.dtype} if self.nk else {}

    def nbytes(self, packed_weight_bytes: int) -> int:
        scales = -(-self.k // GROUP) * self.n * F16
        return packed_weight_bytes + scales + (self.m * self.k + self.m * self.n) * F16


# Decode at M=1 for every width the example has, over [K, N] weights (the targets' rows) and
# over [N, K] ones (quant_gemv_nk), and M=16 for W4 (the batched-decode target).
GPU_SHAPE = {False: (8192, 8192), True: (1024, 1024)}  # by `quick`: (K, N)
CPU_SHAPE = {False: (4096, 4096), True: (512, 512)}
GPU_WIDTHS = ("i4", "i2", "i3", "i5", "i6", "i8")


def gpu_cases(quick: bool) -> list[GemvCase]:
    k, n = GPU_SHAPE[quick]
    return ([GemvCase(dtype, 1, k, n) for dtype in GPU_WIDTHS]
            + [GemvCase(dtype, 1, k, n, layout="nk") for dtype in GPU_WIDTHS]
            + [GemvCase("i4", 1, k, n, layout="nk_f16"), GemvCase("i4", 16, k, n)])


# Prefill: a long prompt's rows through the same weights, compute-bound, in TFLOP/s.
PREFILL_M = {False: 4096, True: 256}


def prefill_case(quick: bool) -> GemvCase:
    k, n = GPU_SHAPE[quick]
    return GemvCase("i4", PREFILL_M[quick], k, n, prefill=True)


def cpu_cases(quick: bool) -> list[GemvCase]:
    k, n = CPU_SHAPE[quick]
    return [GemvCase("i4", 1, k, n)]


@functools.cache
def _companion() -> ModuleType:
    module = load_companion(EXAMPLES / "quant_gemv.tg")
    assert module is not None, "examples/quant_gemv.py is missing"
    return module


@dataclass(frozen=True)
class Placement:
    """Where a row's buffers live: NumPy arrays for the CPU target, CuPy arrays for CUDA."""

    target: str  # "cpu" or "cuda"
    xp: Any  # numpy or cupy
    peer: str  # the dequantized GEMV's name in the row
    peer_dtype: Any  # the dtype the peer multiplies in

    @property
    def peer_note(self) -> str:
        return f"{self.peer} multiplies by the dequantized weights in {np.dtype(self.peer_dtype)}"

    def to_device(self, array: np.ndarray) -> Any:
        """A copy of its own (on the CPU too): buffer sets that share weights must still sit
        at distinct addresses to rotate past the cache."""
        return self.xp.array(array)

    def to_host(self, array: Any) -> np.ndarray:
        return array if self.xp is np else array.get()


def cpu_placement() -> Placement:
    return Placement("cpu", np, "NumPy", np.float32)


def gpu_placement() -> Placement:
    import cupy

    return Placement("cuda", cupy, "cuBLAS", cupy.float16)


def make_case(gemv: GemvCase, place: Placement) -> tuple[Case, dict[str, Impl]]:
    """One row: tegula's quantized GEMV and the peer's GEMV on the dequantized weights."""
    companion = _companion()
    bits = dtypes.dtype(gemv.dtype).bits
    nk = gemv.nk
    packed_bytes = (gemv.n * packed_extent(gemv.k, bits) if nk
                    else gemv.k * packed_extent(gemv.n, bits))

    def weights(w: np.ndarray, s: np.ndarray) -> np.ndarray:
        """The float64 [K, N] weights the packed codes and scales stand for."""
        if nk:
            return companion.dequantized_nk(w, s, gemv.dtype, gemv.k).T
        return companion.dequantized(w, s, gemv.dtype, gemv.n)

    @functools.cache
    def host_weight() -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The row's quantized weights and the peer's dequantized ones, made once: each buffer
        set holds its own device copy (distinct addresses are what defeat the cache), and
        quantizing an 8192 x 8192 matrix again for every set took most of a row's time."""
        rng = np.random.default_rng(0)
        weight = (companion.quantized_weight_nk if nk else companion.quantized_weight)(
            rng, gemv.dtype, gemv.k, gemv.n)
        return weight, weights(weight["w"], weight["s"]).astype(place.peer_dtype)

    def make_buffers(seed: int) -> Buffers:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((gemv.m, gemv.k)).astype(np.float16)
        weight, peer_weight = host_weight()
        arrays = {
            "x": x, "w": weight["w"], "s": weight["s"],
            # The peer's operands, in its own dtype; never read by tegula's kernel.
            "x_peer": x.astype(place.peer_dtype), "w_peer": peer_weight,
        }
        inputs = {name: place.to_device(array) for name, array in arrays.items()}
        return Buffers(inputs, {"y": place.xp.empty((gemv.m, gemv.n), dtype=place.xp.float16)})

    def reference(b: Buffers) -> Any:
        host = {name: place.to_host(b[name]) for name in ("x", "w", "s")}
        return place.to_device(host["x"].astype(np.float64) @ weights(host["w"], host["s"]))

    case = Case(gemv.case, gemv.name, gemv.nbytes(packed_bytes), make_buffers, reference,
                F16_SUMS_TOLERANCE if gemv.layout == "nk_f16" else TOLERANCE)
    impls = {
        TEGULA: tegula_impl(place.target, *gemv.example, ("x", "w", "s", "y"), "y",
                            constants=gemv.constants),
        place.peer: _peer_gemv(place),
    }
    if place.target == "cuda" and gemv.dtype == "i4" and torch_cuda() is not None:
        impls[TORCH_INT4] = _torch_int4(gemv, place)
    return case, impls


def _peer_gemv(place: Placement) -> Impl:
    def bind(b: Buffers) -> Call:
        x, w = b["x_peer"], b["w_peer"]
        out = place.xp.empty((x.shape[0], w.shape[1]), dtype=place.peer_dtype)

        def call() -> Any:
            place.xp.matmul(x, w, out=out)
            return out

        return call

    return Impl(bind, "cupy" if place.target == "cuda" else None)


def _torch_int4(gemv: GemvCase, place: Placement) -> Impl:
    """PyTorch's int4 weight-only GEMM (`torch._weight_int4pack_mm`, the tinygemm kernel) on
    the row's own weights: the signed codes become its unsigned ones (code + 8, which its
    dequantization subtracts again), packed its way with `_convert_weight_to_int4pack`; the
    group scales travel with zero offsets. It takes bf16 operands only, so the activations
    and scales are rounded to bf16 (checked at BF16_TOLERANCE)."""
    import torch

    nk = gemv.nk

    def bind(b: Buffers) -> Call:
        codes = unpack(place.to_host(b["w"]).view(np.uint8), 4, gemv.k if nk else gemv.n)
        values = lowbit.decode(codes, dtypes.dtype("i4")).astype(np.int32)  # -8 .. 7
        by_column = values if nk else values.T  # its [N, K] layout
        unsigned = torch.from_numpy(np.ascontiguousarray(by_column + 8)).cuda().to(torch.uint8)
        packed = torch._convert_weight_to_int4pack(
            (unsigned[:, ::2] << 4 | unsigned[:, 1::2]).contiguous(), 8)
        scales = torch.from_dlpack(b["s"]).to(torch.bfloat16)
        if nk:  # [N, KG] -> its [KG, N]
            scales = scales.t().contiguous()
        scales_and_zeros = torch.stack([scales, torch.zeros_like(scales)], dim=-1).contiguous()
        x = torch.from_dlpack(b["x"]).to(torch.bfloat16)

        def call() -> Any:
            return torch._weight_int4pack_mm(x, packed, GROUP, scales_and_zeros)

        return call

    return Impl(bind, "torch", tolerance=BF16_TOLERANCE)


def measure(cases: list[GemvCase], place: Placement, timer: Timer, *, cache_bytes: int,
            ceiling: dict[str, float], notes: tuple[str, ...] = (),
            after_each: Callable[[], None] = lambda: None) -> list[Row]:
    rows = []
    for gemv in cases:
        case, impls = make_case(gemv, place)
        file, kernel = gemv.example
        runs = (f"tegula runs {kernel} of examples/{file}",) if gemv.m > 1 else ()
        rows.append(measure_case(case, impls, timer, cache_bytes=cache_bytes, ceiling=ceiling,
                                 extra_notes=(place.peer_note, *notes, *runs)))
        print(summary_line(rows[-1]), flush=True)
        after_each()
    return rows


def measure_prefill(gemv: GemvCase, place: Placement, timer: Timer) -> Row:
    """The W4A16 GEMM at a prefill's M in TFLOP/s (2*M*N*K), beside cuBLAS multiplying by
    the dequantized f16 weights (and PyTorch's int4 kernel): compute-bound, so one buffer
    set, checked against the float32 product with the decoded weights."""
    from .gemm import CUBLAS_F16, TFLOPS, GemmCase, GemmShape, measure_gemm

    companion = _companion()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((gemv.m, gemv.k)).astype(np.float16)
    weight = companion.quantized_weight(rng, gemv.dtype, gemv.k, gemv.n)
    dequantized = companion.dequantized(weight["w"], weight["s"], gemv.dtype, gemv.n)
    arrays = {"x": x, "w": weight["w"], "s": weight["s"],
              "x_peer": x.astype(place.peer_dtype), "w_peer": dequantized.astype(place.peer_dtype)}
    buffers = Buffers({name: place.to_device(a) for name, a in arrays.items()},
                      {"c": place.xp.empty((gemv.m, gemv.n), dtype=place.xp.float16)})
    reference = place.xp.matmul(place.to_device(x.astype(np.float32)),
                                place.to_device(dequantized.astype(np.float32)))
    case = GemmCase(gemv.case, gemv.name, "fp16", GemmShape(gemv.m, gemv.n, gemv.k), TOLERANCE)
    file, kernel = gemv.example
    impls = {TEGULA: tegula_impl(place.target, file, kernel, ("x", "w", "s", "c"), "c"),
             CUBLAS_F16: _peer_gemv(place)}
    if place.target == "cuda" and torch_cuda() is not None:
        impls[TORCH_INT4] = _torch_int4(gemv, place)
    return measure_gemm(case, [buffers], reference, impls, timer, metric=TFLOPS,
                        extra_notes=[f"{CUBLAS_F16} multiplies by the dequantized weights in "
                                     "float16", f"tegula runs {kernel} of examples/{file}"])


def run(settings: Settings, quick: bool) -> list[Row]:
    from . import memory

    ceiling = {"copy": memory.copy_ceiling(memory.COPY_BYTES[quick], settings)}
    memory.release_memory()
    timer = gpu_timer(settings)
    rows = measure(gpu_cases(quick), gpu_placement(), timer,
                   cache_bytes=devices.gpu_l2_bytes(), ceiling=ceiling,
                   notes=_torch_notes(),
                   after_each=memory.release_memory)
    rows.append(measure_prefill(prefill_case(quick), gpu_placement(), timer))
    print(summary_line(rows[-1]), flush=True)
    memory.release_memory()
    return rows


def _torch_notes() -> tuple[str, ...]:
    if torch_cuda() is None:
        return ("PyTorch's int4 weight-only kernel not measured: no PyTorch with CUDA",)
    return (f"{TORCH_INT4} (torch._weight_int4pack_mm) multiplies bf16 activations by the same "
            "4-bit codes and bf16 group scales, on the W4 rows",)


SUITE = Suite("quant", needs_gpu=True, describe_device=devices.describe_gpu, run=run)
