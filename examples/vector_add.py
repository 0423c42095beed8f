"""Inputs, reference and tolerance for examples/vector_add.tg."""

import numpy as np

KERNELS = {
    "vector_add": {
        "sizes": {"N": 100_003},
        "inputs": lambda rng, N: {
            "x": rng.standard_normal(N, dtype=np.float32),
            "y": rng.standard_normal(N, dtype=np.float32),
            "z": np.full(N, np.nan, dtype=np.float32),
        },
        "reference": lambda x, y, **_: {"z": x.astype(np.float64) + y.astype(np.float64)},
        "tolerance": {"rtol": 1e-6, "atol": 1e-6},
    }
}
