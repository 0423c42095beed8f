"""Inputs, reference and tolerance for examples/reduce.tg."""

import numpy as np

KERNELS = {
    "row_sum": {
        "sizes": {"M": 300, "N": 1000},
        "inputs": lambda rng, M, N: {
            "x": rng.standard_normal((M, N), dtype=np.float32),
            "y": np.full(M, np.nan, dtype=np.float32),
        },
        "reference": lambda x, **_: {"y": x.astype(np.float64).sum(axis=1)},
        # f32 sums of 1000 N(0, 1) terms: absolute error grows with sqrt(N) * eps * |terms|.
        "tolerance": {"rtol": 1e-5, "atol": 1e-4},
    }
}
