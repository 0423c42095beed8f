"""Inputs, reference and tolerance for examples/kv_attention.tg."""

import numpy as np
from tegula.ir.packing import pack

HEAD_DIM = 128


def inputs(rng: np.random.Generator, H: int, M: int, T: int) -> dict[str, np.ndarray]:
    codes = rng.integers(0, 16, size=(H, T, HEAD_DIM), dtype=np.uint8)
    return {
        "q": rng.standard_normal((H, M, HEAD_DIM)).astype(np.float16),
        "k": pack(codes, 4),
        "ks": rng.uniform(0.01, 0.1, size=(H, T)).astype(np.float16),
        "scores": np.full((H, M, T), np.nan, np.float32),
    }


def _codes(k: np.ndarray, T: int) -> np.ndarray:
    # two codes a byte, low nibble first (the bitstream format of docs/quantization.md)
    low, high = k & 0x0F, k >> 4
    return np.stack([low, high], axis=-1).reshape(k.shape[0], T, HEAD_DIM)


def reference(q, k, ks, scores, **_):
    keys = (_codes(k, scores.shape[2]).astype(np.float64) - 8.0) * ks.astype(np.float64)[..., None]
    # the kernel rounds the dequantized keys to f16 before the product
    keys = keys.astype(np.float16).astype(np.float64)
    return {"scores": q.astype(np.float64) @ np.swapaxes(keys, 1, 2) / np.sqrt(HEAD_DIM)}


KERNELS = {
    "attention_scores_u4": {
        "sizes": {"H": 3, "M": 20, "T": 100},
        "inputs": inputs,
        "reference": reference,
        "tolerance": {"rtol": 2e-3, "atol": 2e-3},
    }
}
