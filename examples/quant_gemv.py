"""Inputs, references and tolerances for examples/quant_gemv.tg.

Weights are quantized with tegula.runtime.quant.quantize; the reference multiplies in float64
by the weights decoded from the packed bytes the kernel reads (tegula.ir.packing.unpack and
tegula.ir.lowbit.decode), so it checks the kernel's decoding, not the quantizer's error.
"""

import numpy as np
from tegula.ir import dtypes, lowbit
from tegula.ir.packing import unpack
from tegula.runtime.quant import quantize

GROUP = 128  # the kernels' G


def quantized_weight(rng: np.random.Generator, dtype: str, K: int, N: int, *,
                     symmetric: bool = True, group: int = GROUP,
                     scale_dtype: str = "f16") -> dict[str, np.ndarray]:
    """A random [K, N] weight quantized to ``dtype`` in groups of ``group`` rows: ``w`` (the
    packed codes), ``s`` (scales, [ceil(K / group), N]) and for ``symmetric=False``
    ``z`` (zero-point codes). K need not be a multiple of the group: the weight is
    quantized with its last group padded, and the padding rows are dropped."""
    groups = -(-K // group)
    full = rng.standard_normal((groups * group, N)).astype(np.float32)
    qt = quantize(full, dtype, group_size=group, symmetric=symmetric, scale_dtype=scale_dtype)
    out = {"w": _stored(qt.data[:K], dtype), "s": qt.scales}
    if qt.zeros is not None:
        out["z"] = qt.zeros
    return out


def quantized_weight_nk(rng: np.random.Generator, dtype: str, K: int, N: int, *,
                        group: int = GROUP) -> dict[str, np.ndarray]:
    """A random weight stored [N, K] (K contiguous), quantized symmetrically to ``dtype`` in
    groups of ``group`` along K: ``w`` (packed codes, [N, ceil(K * bits / 8)] bytes) and ``s``
    ([N, ceil(K / group)]). Padding columns of a partial last group are dropped."""
    row_bytes = -(-K * dtypes.dtype(dtype).bits // 8)  # a row ends on a byte boundary
    groups = -(-K // group)
    full = rng.standard_normal((N, groups * group)).astype(np.float32)
    qt = quantize(full, dtype, group_size=group, axis=1)
    return {"w": _stored(qt.data[:, :row_bytes], dtype), "s": qt.scales}


def _stored(codes: np.ndarray, dtype: str) -> np.ndarray:
    """Packed codes as a kernel takes them: bytes, but i8 and the like as their own type."""
    data = np.ascontiguousarray(codes)
    dt = dtypes.dtype(dtype)
    return data.view(dt.to_numpy()) if dt.numpy is not None else data


def _values(w: np.ndarray, dtype: str, row_length: int) -> np.ndarray:
    """The float64 values of the packed ``dtype`` codes ``w``, rows of ``row_length``."""
    dt = dtypes.dtype(dtype)
    return lowbit.decode(unpack(w.view(np.uint8), dt.bits, row_length), dt).astype(np.float64)


def dequantized(w: np.ndarray, s: np.ndarray, dtype: str, N: int,
                z: np.ndarray | None = None, group: int = GROUP) -> np.ndarray:
    """The float64 weights ``w`` (packed ``dtype`` codes) and its group scales stand for."""
    dt = dtypes.dtype(dtype)
    values = _values(w, dtype, N)
    rows = np.arange(w.shape[0]) // group
    if z is not None:
        values = values - lowbit.decode(z, dt).astype(np.float64)[rows]
    return values * s.astype(np.float64)[rows]


def weight_only_inputs(dtype: str, symmetric: bool = True, activations: str = "f16",
                       names: tuple[str, str] = ("x", "y"), nk: bool = False):
    """Inputs of a weight-only product with ``dtype`` weights: the activations and the
    poisoned output under ``names``; ``activations`` is also the scales' and the output's
    type. ``nk``: the weights stored [N, K] (symmetric, f16 scales)."""
    act = dtypes.dtype(activations).to_numpy()
    x, y = names
    if nk and not (symmetric and activations == "f16"):
        raise ValueError("[N, K] weights are made symmetric, with f16 scales")

    def make(rng: np.random.Generator, M: int, N: int, K: int) -> dict[str, np.ndarray]:
        weights = (quantized_weight_nk(rng, dtype, K, N) if nk else
                   quantized_weight(rng, dtype, K, N, symmetric=symmetric,
                                    scale_dtype=activations))
        return {
            x: rng.standard_normal((M, K)).astype(act),
            **weights,
            y: np.full((M, N), np.nan, act),
        }

    return make


def _reference(dtype: str):
    def reference(x, w, s, y, z=None, **_):
        return {"y": x.astype(np.float64) @ dequantized(w, s, dtype, y.shape[1], z)}

    return reference


def dequantized_nk(w: np.ndarray, s: np.ndarray, dtype: str, K: int,
                   group: int = GROUP) -> np.ndarray:
    """The float64 [N, K] weights that ``w`` ([N, K] packed ``dtype`` codes) and its group
    scales ([N, ceil(K / group)]) stand for."""
    return _values(w, dtype, K) * s.astype(np.float64)[:, np.arange(K) // group]


def _nk_reference(dtype: str):
    def reference(x, w, s, y, **_):
        return {"y": x.astype(np.float64) @ dequantized_nk(w, s, dtype, x.shape[1]).T}

    return reference


# f32 accumulation, one rounding to f16 at the end (~5e-4 relative).
_TOLERANCE = {"rtol": 2e-3, "atol": 2e-2}
_SIZES = {"M": 3, "N": 300, "K": 520}

KERNELS = {
    f"quant_gemv_{name}": {
        "sizes": _SIZES,
        "inputs": weight_only_inputs(name),
        "reference": _reference(name),
        "tolerance": _TOLERANCE,
    }
    for name in ("i4", "i8", "i2", "i3", "i5", "i6", "i7", "nf4", "f4e2m1")
}
KERNELS["quant_gemv_u4_zeros"] = {
    "sizes": _SIZES,
    "inputs": weight_only_inputs("u4", symmetric=False),
    "reference": _reference("u4"),
    "tolerance": _TOLERANCE,
}
KERNELS["quant_gemv_u1_zeros"] = {
    "sizes": _SIZES,
    "inputs": weight_only_inputs("u1", symmetric=False),
    "reference": _reference("u1"),
    "tolerance": _TOLERANCE,
}
# The bf16 output keeps 8 significant bits: one rounding of up to ~4e-3 relative.
KERNELS["quant_gemv_i4_bf16"] = {
    "sizes": _SIZES,
    "inputs": weight_only_inputs("i4", activations="bf16"),
    "reference": _reference("i4"),
    "tolerance": {"rtol": 8e-3, "atol": 1e-1},
}


def _nk_entries(kernel: str, names: tuple[str, ...], tolerance: dict[str, float]
                ) -> dict[str, dict]:
    """Entries of a generic [N, K] GEMV (its param WT) at each weight type of ``names``."""
    return {
        f"{kernel}[{name}]": {
            "kernel": kernel,
            "constants": {"WT": name},
            "sizes": _SIZES,
            "inputs": weight_only_inputs(name, nk=True),
            "reference": _nk_reference(name),
            "tolerance": tolerance,
        }
        for name in names
    }


# The [N, K] layout at every weight type (quant_gemv_nk's param WT).
KERNELS.update(_nk_entries("quant_gemv_nk", ("i4", "i2", "i3", "i5", "i6", "i7", "i8", "nf4",
                                             "f4e2m1"), _TOLERANCE))
# f16 products and slab sums: each of the 128 products and the partial sums of a slab rounds
# to f16 (2^-11 relative to the slab's sum, which random inputs keep near the result's size).
KERNELS.update(_nk_entries("quant_gemv_nk_f16", ("i4", "i2", "i8", "nf4"),
                           {"rtol": 1e-2, "atol": 2e-1}))
