"""Inputs, reference and tolerance for examples/transpose.tg."""

import numpy as np

KERNELS = {
    "transpose": {
        "sizes": {"M": 300, "N": 170},
        "inputs": lambda rng, M, N: {
            "x": rng.standard_normal((M, N), dtype=np.float32),
            "y": np.full((N, M), np.nan, dtype=np.float32),
        },
        "reference": lambda x, **_: {"y": x.astype(np.float64).T},
        "tolerance": {"rtol": 0.0, "atol": 0.0},
    }
}
