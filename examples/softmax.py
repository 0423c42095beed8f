"""Inputs, reference and tolerance for examples/softmax.tg."""

import numpy as np


def inputs(rng: np.random.Generator, M: int, N: int) -> dict[str, np.ndarray]:
    return {
        "x": (rng.standard_normal((M, N)) * 4).astype(np.float32),
        "y": np.full((M, N), np.nan, dtype=np.float32),
    }


def reference(x: np.ndarray, **_: object) -> dict[str, np.ndarray]:
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=1, keepdims=True))
    return {"y": e / e.sum(axis=1, keepdims=True)}


KERNELS = {
    "softmax": {
        "sizes": {"M": 300, "N": 1000},
        "inputs": inputs,
        "reference": reference,
        "tolerance": {"rtol": 1e-5, "atol": 1e-7},
        "constants": {"BN": 512},
    }
}
