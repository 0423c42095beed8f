"""Compile-time params may depend on the target (``CUDA``, ``SM``, ``select``)."""

from __future__ import annotations

import numpy as np
from tegula.compiler.frontend import build_tile_kernel
from tegula.compiler.parser import parse
from tegula.ir.target import cpu_target, cuda_target

import tegula as tg

SOURCE = """
kernel scale(x: f32[N], y: f32[N])
    params BN = select(CUDA, 512, 64) in (64, 512), BIG = SM >= 90, WIDE = select(WGMMA, 2, 1)
    grid (cdiv(N, BN))
{
    i = bid.x * BN
    store(y[i : +BN], load(x[i : +BN]) * 2.0)
}
"""


def _constants(target) -> dict:
    kernel = build_tile_kernel(parse(SOURCE), "scale", {}, None, target.constants())
    return dict(kernel.constants)


def test_defaults_follow_the_target() -> None:
    assert _constants(cpu_target()) == {"BN": 64, "BIG": False, "WIDE": 1}
    assert _constants(cuda_target("sm_80")) == {"BN": 512, "BIG": False, "WIDE": 1}
    assert _constants(cuda_target("sm_90")) == {"BN": 512, "BIG": True, "WIDE": 1}
    assert _constants(cuda_target("sm_90a")) == {"BN": 512, "BIG": True, "WIDE": 2}


def test_the_cpu_is_assumed_without_a_target() -> None:
    kernel = build_tile_kernel(parse(SOURCE), "scale", {})
    assert dict(kernel.constants)["BN"] == 64


def test_compiled_kernels_take_their_targets_constants() -> None:
    cpu = tg.compile(SOURCE, target="cpu", cache=False)
    gpu = tg.compile(SOURCE, target="cuda:sm_90a", cache=False)
    assert cpu.results["scale"].spec.grid[0] == "cdiv(N, 64)"
    assert gpu.results["scale"].spec.grid[0] == "cdiv(N, 512)"
    x = np.random.default_rng().standard_normal(1000).astype(np.float32)
    y = np.full_like(x, np.nan)
    cpu.scale(x, y)
    np.testing.assert_array_equal(y, x * 2.0)
