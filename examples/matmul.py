"""Inputs, reference and tolerance for examples/matmul.tg."""

import numpy as np

KERNELS = {
    "matmul": {
        "sizes": {"M": 300, "N": 200, "K": 130},
        "inputs": lambda rng, M, N, K: {
            "a": rng.standard_normal((M, K), dtype=np.float32),
            "b": rng.standard_normal((K, N), dtype=np.float32),
            "c": np.full((M, N), np.nan, dtype=np.float32),
        },
        "reference": lambda a, b, **_: {"c": a.astype(np.float64) @ b.astype(np.float64)},
        "tolerance": {"rtol": 1e-4, "atol": 1e-4},
    }
}
