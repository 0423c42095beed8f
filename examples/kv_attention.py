"""Inputs, reference and tolerance for examples/kv_attention.tg."""

from functools import partial

import numpy as np
from tegula.ir.packing import pack, unpack

HEAD_DIM = 128
CENTRE = {4: 8.0, 2: 1.5}  # the code the symmetric grid is centred on, by width


def inputs(rng: np.random.Generator, H: int, M: int, T: int, *, bits: int
           ) -> dict[str, np.ndarray]:
    codes = rng.integers(0, 1 << bits, size=(H, T, HEAD_DIM), dtype=np.uint8)
    return {
        "q": rng.standard_normal((H, M, HEAD_DIM)).astype(np.float16),
        "k": pack(codes, bits),
        "ks": rng.uniform(0.01, 0.1, size=(H, T)).astype(np.float16),
        "scores": np.full((H, M, T), np.nan, np.float32),
    }


def reference(q, k, ks, scores, *, bits: int, **_):
    # the bitstream format of docs/quantization.md: the first code in the low bits
    codes = unpack(k, bits, HEAD_DIM).astype(np.float64)
    keys = (codes - CENTRE[bits]) * ks.astype(np.float64)[..., None]
    # the kernel rounds the dequantized keys to f16 before the product
    keys = keys.astype(np.float16).astype(np.float64)
    return {"scores": q.astype(np.float64) @ np.swapaxes(keys, 1, 2) / np.sqrt(HEAD_DIM)}


KERNELS = {
    f"attention_scores_u{bits}": {
        "sizes": {"H": 3, "M": 20, "T": 100},
        "inputs": partial(inputs, bits=bits),
        "reference": partial(reference, bits=bits),
        "tolerance": {"rtol": 2e-3, "atol": 2e-3},
    }
    for bits in (4, 2)
}
