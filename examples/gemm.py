"""Inputs, references and tolerances for examples/gemm.tg."""

import ml_dtypes
import numpy as np
from scipy.special import erf as _erf


def _inputs(dtype):
    def make(rng: np.random.Generator, M: int, N: int, K: int) -> dict[str, np.ndarray]:
        return {
            "a": rng.standard_normal((M, K)).astype(dtype),
            "b": rng.standard_normal((K, N)).astype(dtype),
            "c": np.full((M, N), np.nan, dtype=dtype),
        }

    return make


def _product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a.astype(np.float64) @ b.astype(np.float64)


def _bias_inputs(rng: np.random.Generator, M: int, N: int, K: int) -> dict[str, np.ndarray]:
    out = _inputs(np.float16)(rng, M, N, K)
    out["bias"] = rng.standard_normal(N).astype(np.float32)
    return out


def _silu_residual_inputs(rng: np.random.Generator, M: int, N: int, K: int
                          ) -> dict[str, np.ndarray]:
    out = _bias_inputs(rng, M, N, K)
    out["residual"] = rng.standard_normal((M, N)).astype(np.float16)
    out["alpha"] = np.float32(rng.uniform(0.5, 2.0))
    return out


def _silu_residual(a, b, bias, residual, alpha, **_):
    h = float(alpha) * _product(a, b) + bias.astype(np.float64)[None, :]
    return {"c": h / (1.0 + np.exp(-h)) + residual.astype(np.float64)}


def _bias_gelu(a, b, bias, **_):
    h = _product(a, b) + bias.astype(np.float64)[None, :]
    return {"c": 0.5 * h * (1.0 + _erf(h / np.sqrt(2.0)))}


# f32 accumulation; the result is rounded once to 16 bits: ~1e-3 relative for f16, ~8e-3 bf16.
KERNELS = {
    "gemm_f16": {
        "sizes": {"M": 200, "N": 136, "K": 72},
        "inputs": _inputs(np.float16),
        "reference": lambda a, b, **_: {"c": _product(a, b)},
        "tolerance": {"rtol": 2e-3, "atol": 2e-2},
    },
    "gemm_bf16": {
        "sizes": {"M": 136, "N": 200, "K": 96},
        "inputs": _inputs(ml_dtypes.bfloat16),
        "reference": lambda a, b, **_: {"c": _product(a, b)},
        "tolerance": {"rtol": 1e-2, "atol": 1e-1},
    },
    "gemm_bias_gelu": {
        "sizes": {"M": 130, "N": 256, "K": 64},
        "inputs": _bias_inputs,
        "reference": _bias_gelu,
        "tolerance": {"rtol": 2e-3, "atol": 2e-2},
    },
    "gemm_silu_residual": {
        "sizes": {"M": 130, "N": 200, "K": 72},
        "inputs": _silu_residual_inputs,
        "reference": _silu_residual,
        "tolerance": {"rtol": 2e-3, "atol": 2e-2},
    },
}
