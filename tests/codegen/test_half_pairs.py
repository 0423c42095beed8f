"""f16x2 pairing of unrolled half-precision loops (tegula.codegen.cuda_pairs): which loops
pair, the pair decoding of integer codes checked exhaustively against the one-at-a-time
value, and every paired kernel built with NVRTC. The GPU results are checked bit for bit by
the decode and half-arithmetic tests and against float64 by the quantized GEMV tests."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from tegula.codegen.cuda_pairs import lane_decoding
from tegula.ir import dtypes

import tegula as tg

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# A register pair copied whole: what a rotation of half registers would become if paired.
_PAIR_COPY = (r"reinterpret_cast<__half2\*>\(\w+\)\[\d+\] = "
              r"reinterpret_cast<const __half2\*>\(\w+\)\[\d+\];")


def _nk_f16_source(wt: str) -> str:
    module = tg.compile(EXAMPLES / "quant_gemv.tg", target="cuda:sm_90a", cache=False,
                        kernels=["quant_gemv_nk_f16"], WT=wt)
    return module.results["quant_gemv_nk_f16"].source


@pytest.mark.parametrize("wt", ["i2", "i4", "i8"])
def test_gemv_slab_sum_runs_on_pairs_when_codes_share_bytes(wt: str) -> None:
    source = _nk_f16_source(wt)
    assert "__byte_perm(" in source and "__hadd2(" in source
    assert "| 0x6400" not in source  # no code is decoded one at a time
    # The register ring's rotation (plain copies, no arithmetic) keeps its loops: unrolled,
    # they are renamings, and pairing them would only lengthen the text.
    assert re.search(r"\b\w+\[(r_\d+)\] = \w+\[\1\];", source)
    assert not re.search(_PAIR_COPY, source)


@pytest.mark.parametrize("wt", ["i3", "i5", "nf4"])
def test_codes_that_straddle_bytes_or_use_tables_stay_scalar(wt: str) -> None:
    source = _nk_f16_source(wt)
    assert "__byte_perm(" not in source
    assert "__global__" in source


@pytest.mark.parametrize("half", ["f16", "bf16"])
@pytest.mark.parametrize("name", ["i1", "u1", "i2", "u2", "i4", "u4", "i7", "i8", "u8"])
def test_lane_decoding_is_exact_for_every_byte(name: str, half: str) -> None:
    """``(word & mask) ^ pattern`` read as two lanes, times ``scales`` plus ``adds``, is each
    field's value, for every byte and every field position that fits the mantissa."""
    dt, out = dtypes.dtype(name), dtypes.dtype(half)
    xor = 1 << (dt.bits - 1) if dt.is_signed else 0
    base = float(1 << out.mantissa) + xor
    mask = (1 << dt.bits) - 1
    as_half = out.to_numpy()
    units = int(np.asarray(2.0**out.mantissa, dtype=as_half).view(np.uint16))  # bits of 2^m
    byte = np.arange(256, dtype=np.uint32)
    shifts_seen = 0
    for shifts in [(a, b) for a in range(0, 8, dt.bits) for b in range(0, 8, dt.bits)]:
        d = lane_decoding(out, mask, shifts, xor, units, base)
        if any(mask << s >= 1 << out.mantissa for s in shifts) or dt.bits > out.mantissa:
            assert d is None
            continue
        assert d is not None
        shifts_seen += 1
        word = ((byte | byte << 16) & d.mask) ^ d.pattern
        for lane, shift in enumerate(shifts):
            bits = (word >> (16 * lane)) & 0xFFFF
            lanes = bits.astype(np.uint16).view(as_half).astype(np.float64)
            # one FMA: the exact product and sum, rounded once to the half type
            got = (lanes * d.scales[lane] + d.adds[lane]).astype(as_half).astype(np.float64)
            field = ((byte >> shift) & mask).astype(np.int64)
            want = ((field ^ xor) - xor).astype(np.float64)
            assert np.array_equal(got, want), (shifts, lane)
    assert shifts_seen > 0 or dt.bits > out.mantissa or half == "bf16"


def test_map_loops_store_pairs_with_constants_named_once() -> None:
    source = tg.compile(
        """
kernel scale_add(x: f16[N], y: f16[N], out: f16[N])
    grid (cdiv(N, 256))
{
    i = bid.x * 256
    store(out[i : +256], load(x[i : +256]) * 3.0 + load(y[i : +256]))
}
""",
        target="cuda:sm_90a",
        cache=False,
    ).results["scale_add"].source
    assert "reinterpret_cast<__half2*>" in source and "__hmul2(" in source
    assert source.count("0x42004200u") == 1  # the constant 3.0 in both lanes, named once


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_bf16_loops_pair_too(arch: str) -> None:
    source = tg.compile(
        """
kernel axpy(x: bf16[N], y: bf16[N], out: bf16[N])
    grid (cdiv(N, 256))
{
    i = bid.x * 256
    store(out[i : +256], load(x[i : +256]) * 0.5 - load(y[i : +256]))
}
""",
        target=f"cuda:{arch}",
        cache=False,
    ).results["axpy"].source
    assert "__nv_bfloat162" in source and "__hmul2(" in source and "__hsub2(" in source
    assert "bfloat162_from_bits(" in source
