"""Inputs, references and tolerances for examples/rmsnorm.tg (rmsnorm and layernorm)."""

import numpy as np

EPS = 1e-5


def _rmsnorm_inputs(rng: np.random.Generator, M: int, N: int) -> dict[str, object]:
    return {
        "x": rng.standard_normal((M, N), dtype=np.float32),
        "w": rng.uniform(0.5, 1.5, N).astype(np.float32),
        "y": np.full((M, N), np.nan, dtype=np.float32),
        "eps": np.float32(EPS),
    }


def _rmsnorm_reference(x: np.ndarray, w: np.ndarray, eps: float, **_: object) -> dict:
    x64 = x.astype(np.float64)
    rms = np.sqrt((x64 * x64).mean(axis=1, keepdims=True) + float(eps))
    return {"y": x64 / rms * w.astype(np.float64)}


def _layernorm_inputs(rng: np.random.Generator, M: int, N: int) -> dict[str, object]:
    return {
        "x": (rng.standard_normal((M, N)) * 2 + 3).astype(np.float32),
        "w": rng.uniform(0.5, 1.5, N).astype(np.float32),
        "b": rng.standard_normal(N, dtype=np.float32),
        "y": np.full((M, N), np.nan, dtype=np.float32),
        "eps": np.float32(EPS),
    }


def _layernorm_reference(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float, **_: object
) -> dict:
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=1, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=1, keepdims=True)
    return {"y": (x64 - mean) / np.sqrt(var + float(eps)) * w + b}


KERNELS = {
    "rmsnorm": {
        "sizes": {"M": 300, "N": 1000},
        "inputs": _rmsnorm_inputs,
        "reference": _rmsnorm_reference,
        "tolerance": {"rtol": 1e-5, "atol": 1e-5},
        "constants": {"BN": 512},
    },
    "layernorm": {
        "sizes": {"M": 300, "N": 1000},
        "inputs": _layernorm_inputs,
        "reference": _layernorm_reference,
        "tolerance": {"rtol": 1e-5, "atol": 1e-5},
        "constants": {"BN": 512},
    },
}
