"""Inputs, references and tolerances for examples/quant_gemm.tg (see quant_gemv.py)."""

from pathlib import Path

import ml_dtypes
import numpy as np
from tegula.compiler.checking import load_companion
from tegula.ir import lowbit
from tegula.ir.dtypes import dtype, f4e2m1
from tegula.ir.packing import unpack
from tegula.runtime.quant import quantize

# The helpers that quantize and dequantize weights live beside the GEMV example.
_gemv = load_companion(Path(__file__).with_name("quant_gemv.tg"))
assert _gemv is not None

MX_BLOCK = 32
NV_BLOCK = 16  # NVFP4: one e4m3 scale per 16 elements
I4 = dtype("i4")


def _weight_only_inputs(dtype: str, symmetric: bool = True, activations: str = "f16"):
    """Inputs of a weight-only GEMM (``a`` and ``c``), as the GEMV's."""
    return _gemv.weight_only_inputs(dtype, symmetric, activations, names=("a", "c"))


def _weight_only_reference(dtype: str):
    def reference(a, w, s, c, z=None, **_):
        # The kernel dequantizes in the activations' type (the slab feeds an f16 or bf16
        # product): each weight rounds once there, and the rest is exact in float64.
        weights = _gemv.dequantized(w, s, dtype, c.shape[1], z).astype(a.dtype)
        return {"c": a.astype(np.float64) @ weights.astype(np.float64)}

    return reference


def _mx_inputs(rng: np.random.Generator, M: int, N: int, K: int) -> dict[str, np.ndarray]:
    blocks = -(-K // MX_BLOCK)
    qt = quantize(rng.standard_normal((blocks * MX_BLOCK, N)), "f4e2m1", mx=True)
    return {
        "a": rng.standard_normal((M, K)).astype(ml_dtypes.bfloat16),
        "w": np.ascontiguousarray(qt.data[:K]),
        "s": qt.scales,
        "c": np.full((M, N), np.nan, ml_dtypes.bfloat16),
    }


def _mx_reference(a, w, s, c, **_):
    values = lowbit.decode(unpack(w, 4, c.shape[1]), f4e2m1).astype(np.float64)
    scales = s.astype(np.float64)[np.arange(w.shape[0]) // MX_BLOCK]
    return {"c": a.astype(np.float64) @ (values * scales)}


def _nvfp4_inputs(rng: np.random.Generator, M: int, N: int, K: int) -> dict[str, np.ndarray]:
    blocks = -(-K // NV_BLOCK)
    qt = quantize(rng.standard_normal((blocks * NV_BLOCK, N)), "f4e2m1", group_size=NV_BLOCK,
                  scale_dtype="f8e4m3")
    # The last block's rows past K are cut off: its scale still covers the rows kept.
    return {
        "a": rng.standard_normal((M, K)).astype(np.float16),
        "w": np.ascontiguousarray(qt.data[:K]),
        "s": qt.scales,
        "st": np.float32(qt.tensor_scale),
        "c": np.full((M, N), np.nan, np.float16),
    }


def _nvfp4_reference(a, w, s, st, c, **_):
    values = lowbit.decode(unpack(w, 4, c.shape[1]), f4e2m1).astype(np.float64)
    scales = s.astype(np.float64)[np.arange(w.shape[0]) // NV_BLOCK] * float(st)
    return {"c": a.astype(np.float64) @ (values * scales)}


def _mxint8_inputs(rng: np.random.Generator, M: int, N: int, K: int) -> dict[str, np.ndarray]:
    blocks = -(-K // MX_BLOCK)
    qt = quantize(rng.standard_normal((blocks * MX_BLOCK, N)), "i8", mx=True)
    return {
        "a": rng.standard_normal((M, K)).astype(ml_dtypes.bfloat16),
        "w": np.ascontiguousarray(qt.data[:K].view(np.int8)),
        "s": qt.scales,
        "c": np.full((M, N), np.nan, ml_dtypes.bfloat16),
    }


def _mxint8_reference(a, w, s, c, **_):
    scales = s.astype(np.float64)[np.arange(w.shape[0]) // MX_BLOCK]
    return {"c": a.astype(np.float64) @ (w.astype(np.float64) * 2.0**-6 * scales)}


def _w8a8_inputs(rng: np.random.Generator, M: int, N: int, K: int) -> dict[str, np.ndarray]:
    """Per-token activation codes and per-channel weight codes (`w` stored [N, K])."""
    a = quantize(rng.standard_normal((M, K)), "i8", axis=1, scale_dtype="f32")
    w = quantize(rng.standard_normal((N, K)), "i8", axis=1, scale_dtype="f32")
    return {
        "a": a.data.view(np.int8),
        "w": w.data.view(np.int8),
        "sa": a.scales.reshape(M),
        "sw": w.scales.reshape(N),
        "c": np.full((M, N), np.nan, np.float16),
    }


def _w4a4_inputs(rng: np.random.Generator, M: int, N: int, K: int) -> dict[str, np.ndarray]:
    """4-bit codes, packed: per-token scales for `a`, per-channel for `w` (stored [N, K])."""
    a = quantize(rng.standard_normal((M, K)), "i4", axis=1, scale_dtype="f32")
    w = quantize(rng.standard_normal((N, K)), "i4", axis=1, scale_dtype="f32")
    return {
        "a": a.data,
        "w": w.data,
        "sa": a.scales.reshape(M),
        "sw": w.scales.reshape(N),
        "c": np.full((M, N), np.nan, np.float16),
    }


def _i4_codes(packed: np.ndarray) -> np.ndarray:
    """The integers of packed i4 rows. A row of odd length ends in a padding code of 0, which
    adds nothing to a product, so every code the bytes hold is decoded."""
    return lowbit.decode(unpack(packed, 4, 2 * packed.shape[1]), I4).astype(np.int64)


def _w4a4_reference(a, w, sa, sw, c, **_):
    return {"c": _w8a8_product(_i4_codes(a), _i4_codes(w), sa, sw)}


def _w8a8_outlier_inputs(rng: np.random.Generator, M: int, N: int, K: int, KO: int
                         ) -> dict[str, np.ndarray]:
    inputs = _w8a8_inputs(rng, M, N, K)
    # Outlier channels: activations far larger than the quantized ones'.
    inputs["xo"] = (20 * rng.standard_normal((M, KO))).astype(np.float16)
    inputs["wo"] = rng.standard_normal((KO, N)).astype(np.float16)
    return inputs


def _w8a8_product(a, w, sa, sw):
    exact = a.astype(np.int64) @ w.astype(np.int64).T  # what the i32 accumulator holds
    return exact * sa.astype(np.float64)[:, None] * sw.astype(np.float64)[None, :]


def _w8a8_reference(a, w, sa, sw, c, **_):
    return {"c": _w8a8_product(a, w, sa, sw)}


def _w8a8_outlier_reference(a, w, sa, sw, xo, wo, c, **_):
    outliers = xo.astype(np.float64) @ wo.astype(np.float64)
    return {"c": _w8a8_product(a, w, sa, sw) + outliers}


# An f16 output rounds once by up to 2^-11 relative, a bf16 one by up to 2^-8; the sums in
# between are f32.
F16_TOLERANCE = {"rtol": 2e-3, "atol": 2e-2}
BF16_TOLERANCE = {"rtol": 1e-2, "atol": 1e-1}
SIZES = {"M": 130, "N": 136, "K": 300}  # ragged against every tile: masked edges, a partial slab

def _generic_entry(weights: str, activations: str) -> dict:
    """The entry of quant_gemm_w at weight type ``weights`` and activations' type
    ``activations`` (its params WT and AT)."""
    return {
        "kernel": "quant_gemm_w",
        "constants": {"WT": weights, "AT": activations},
        "sizes": SIZES,
        "inputs": _weight_only_inputs(weights, activations=activations),
        "reference": _weight_only_reference(weights),
        "tolerance": F16_TOLERANCE if activations == "f16" else BF16_TOLERANCE,
    }


KERNELS = {
    # Weights dequantized in the activations' type (as the reference does), f16 or bf16
    # products, f32 sums, one rounding of the output.
    "quant_gemm_i4": {
        "sizes": SIZES,
        "inputs": _weight_only_inputs("i4"),
        "reference": _weight_only_reference("i4"),
        "tolerance": F16_TOLERANCE,
    },
    # The generic kernel at each weight type it declares but i4 (quant_gemm_i4 above), and
    # at i4 with bf16 activations.
    **{
        f"quant_gemm_w[{name}]": _generic_entry(name, "f16")
        for name in ("i2", "i3", "i5", "i6", "i7", "i8")
    },
    "quant_gemm_w[i4,bf16]": _generic_entry("i4", "bf16"),
    "quant_gemm_u1_zeros": {
        "sizes": SIZES,
        "inputs": _weight_only_inputs("u1", symmetric=False),
        "reference": _weight_only_reference("u1"),
        "tolerance": F16_TOLERANCE,
    },
    "quant_gemm_mxfp4": {
        "sizes": {"M": 136, "N": 130, "K": 200},
        "inputs": _mx_inputs,
        "reference": _mx_reference,
        "tolerance": BF16_TOLERANCE,
    },
    # Exactly dequantized weights, f16 products, f32 accumulation, one rounding to f16.
    "quant_gemm_nvfp4": {
        "sizes": {"M": 130, "N": 136, "K": 200},
        "inputs": _nvfp4_inputs,
        "reference": _nvfp4_reference,
        "tolerance": F16_TOLERANCE,
    },
    "quant_gemm_mxint8": {
        "sizes": {"M": 136, "N": 130, "K": 200},
        "inputs": _mxint8_inputs,
        "reference": _mxint8_reference,
        "tolerance": BF16_TOLERANCE,
    },
    # An exact integer product, scaled in f32 and rounded once to f16.
    "quant_gemm_w8a8": {
        "sizes": {"M": 136, "N": 130, "K": 320},
        "inputs": _w8a8_inputs,
        "reference": _w8a8_reference,
        "tolerance": F16_TOLERANCE,
    },
    # 4-bit codes: the same exact product and one rounding (K odd: a padding code per row).
    "quant_gemm_w4a4": {
        "sizes": {"M": 136, "N": 130, "K": 321},
        "inputs": _w4a4_inputs,
        "reference": _w4a4_reference,
        "tolerance": F16_TOLERANCE,
    },
    "quant_gemm_w8a8_outliers": {
        "sizes": {"M": 136, "N": 130, "K": 320, "KO": 40},
        "inputs": _w8a8_outlier_inputs,
        "reference": _w8a8_outlier_reference,
        "tolerance": {"rtol": 2e-3, "atol": 5e-2},
    },
}
