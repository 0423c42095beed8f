"""Inputs, references and tolerances for examples/gemm_layouts.tg."""

import numpy as np


def _f16(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float16)


def _poison(*shape: int) -> np.ndarray:
    return np.full(shape, np.nan, np.float16)


def _f64(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64)


# f32 accumulation, one rounding to f16 at the end.
_TOLERANCE = {"rtol": 2e-3, "atol": 2e-2}

KERNELS = {
    "gemm_nt": {
        "sizes": {"M": 200, "N": 136, "K": 72},
        "inputs": lambda rng, M, N, K: {"a": _f16(rng, M, K), "b": _f16(rng, N, K),
                                        "c": _poison(M, N)},
        "reference": lambda a, b, **_: {"c": _f64(a) @ _f64(b).T},
        "tolerance": _TOLERANCE,
    },
    "gemm_tn": {
        "sizes": {"M": 136, "N": 200, "K": 96},
        "inputs": lambda rng, M, N, K: {"a": _f16(rng, K, M), "b": _f16(rng, K, N),
                                        "c": _poison(M, N)},
        "reference": lambda a, b, **_: {"c": _f64(a).T @ _f64(b)},
        "tolerance": _TOLERANCE,
    },
    "gemm_batched": {
        "sizes": {"B": 3, "M": 130, "N": 72, "K": 40},
        "inputs": lambda rng, B, M, N, K: {"a": _f16(rng, B, M, K), "b": _f16(rng, B, K, N),
                                           "c": _poison(B, M, N)},
        "reference": lambda a, b, **_: {"c": _f64(a) @ _f64(b)},
        "tolerance": _TOLERANCE,
    },
}
