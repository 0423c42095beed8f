"""TMA tensor maps: in the kernel spec (validated, JSON round trip), their encoding on the
host (arrays the kernel's own test turns away get zeros; the rest reach the driver, once per
array), and on a GPU the Hopper GEMM that takes them, on ragged and misaligned arrays."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tegula.ir.dtypes import bf16, dtype, f16
from tegula.runtime import KernelSpec, ParamSpec
from tegula.runtime import tensor_map as tm
from tegula.runtime.errors import LaunchError, SpecError
from tegula.runtime.tensor_map import TensorMapEncoder, TensorMapSpec

import tegula as tg

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _spec(**overrides: Any) -> KernelSpec:
    fields: dict[str, Any] = {
        "name": "copy_tile",
        "params": (ParamSpec("a", "tensor", "f16", ("M", "K")),),
        "symbols": ("M", "K"),
        "grid": ("1", "1", "1"),
        "block_threads": 128,
        "smem_bytes": 0,
        "target": "cuda:sm_90a",
        "tensor_maps": (TensorMapSpec("a", (32, 8), 64),),
    }
    fields.update(overrides)
    return KernelSpec(**fields)


def test_spec_carries_its_maps_through_json() -> None:
    spec = _spec()
    again = KernelSpec.from_json(spec.to_json())
    assert again == spec and again.tensor_maps[0].box == (32, 8)
    assert "tensor_maps" not in _spec(tensor_maps=()).to_dict()  # no maps, no key


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tensor_maps": (TensorMapSpec("b", (32, 8)),)}, "not an unpacked tensor"),
        ({"tensor_maps": (TensorMapSpec("a", (32,)),)}, "1-d box for a 2-d tensor"),
        ({"target": "cpu"}, "CUDA targets only"),
    ],
)
def test_spec_refuses_maps_it_cannot_launch(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        _spec(**overrides)


@pytest.mark.parametrize(
    ("box", "swizzle", "message"),
    [((32, 300), 64, "1..256"), ((), 0, "1 to 5"), ((32, 8), 48, "swizzle 48")],
)
def test_map_spec_checks_its_box(box: tuple[int, ...], swizzle: int, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        TensorMapSpec("a", box, swizzle)


def test_element_types() -> None:
    assert tm.data_type(f16) == 6 and tm.data_type(bf16) == 9
    with pytest.raises(SpecError, match="no element type"):
        tm.data_type(dtype("i4"))


class _RecordingDriver:
    def __init__(self, status: int = 0) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.status = status

    def encode(self):  # type: ignore[no-untyped-def]
        def encode(out: int, dtype: int, rank: int, address: int, dims, strides, box, unit,
                   interleave: int, swizzle: int, promotion: int, fill: int) -> int:
            self.calls.append((dtype, rank, address, list(dims)[:rank],
                               list(strides)[: rank - 1], list(box)[:rank], swizzle))
            ctypes.memset(out, 7, 128)
            return self.status

        return encode


def test_encoder_passes_the_driver_shape_strides_and_box_innermost_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    driver = _RecordingDriver()
    monkeypatch.setattr(tm, "_DRIVER", driver)
    encoder = TensorMapEncoder((TensorMapSpec("a", (32, 8), 64),), (f16,))
    first = encoder.encode(0, 4096, (200, 72), (72, 1))
    assert driver.calls == [(6, 2, 4096, [72, 200], [144], [32, 8], 2)]
    assert bytes(first) == bytes([7]) * 128
    encoder.encode(0, 4096, (200, 72), (72, 1))
    assert len(driver.calls) == 1  # the same array: encoded once
    encoder.encode(0, 8192, (200, 72), (72, 1))
    assert len(driver.calls) == 2  # another array


def test_a_view_walks_tensor_dimensions_in_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows in groups of 8, the two halves 64 rows apart, 4 groups 8 rows apart, then 32-row
    steps as far as the tensor goes (a wgmma A operand's stored order); and columns in
    64-wide blocks, rows, then blocks (a B operand)."""
    driver = _RecordingDriver()
    monkeypatch.setattr(tm, "_DRIVER", driver)
    a_view = TensorMapSpec("a", (32, 8, 2, 4, 2), 64,
                           ((1, 0, 1), (0, 8, 1), (0, 2, 64), (0, 4, 8), (0, 0, 32)))
    b_view = TensorMapSpec("b", (64, 32, 4), 128, ((1, 64, 1), (0, 0, 1), (1, 0, 64)))
    encoder = TensorMapEncoder((a_view, b_view), (f16, f16))
    encoder.encode(0, 4096, (200, 72), (72, 1))
    encoder.encode(1, 8192, (72, 136), (136, 1))
    assert driver.calls == [
        (6, 5, 4096, [72, 8, 2, 4, 7], [144, 64 * 144, 8 * 144, 32 * 144], [32, 8, 2, 4, 2], 2),
        (6, 3, 8192, [64, 72, 3], [272, 128], [64, 32, 4], 3),
    ]
    with pytest.raises(SpecError, match="steps by one element"):
        TensorMapSpec("a", (32, 8), 64, ((0, 0, 8), (1, 0, 1)))
    with pytest.raises(SpecError, match="views dimensions"):
        _spec(tensor_maps=(TensorMapSpec("a", (32, 8), 64, ((0, 0, 1), (1, 0, 1))),))


@pytest.mark.parametrize(("pointer", "strides"), [(4098, (72, 1)), (4096, (71, 1))])
def test_arrays_tma_cannot_read_get_a_zero_map(
    monkeypatch: pytest.MonkeyPatch, pointer: int, strides: tuple[int, int]
) -> None:
    """The kernel tests the same alignment before it uses a map, and otherwise runs its
    plain path, which never reads it."""
    driver = _RecordingDriver()
    monkeypatch.setattr(tm, "_DRIVER", driver)
    encoder = TensorMapEncoder((TensorMapSpec("a", (32, 8), 64),), (f16,))
    assert bytes(encoder.encode(0, pointer, (200, 71), strides)) == bytes(128)
    assert driver.calls == []


def test_a_map_the_driver_refuses_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tm, "_DRIVER", _RecordingDriver(status=1))
    encoder = TensorMapEncoder((TensorMapSpec("a", (32, 8), 64),), (f16,))
    with pytest.raises(LaunchError, match=r"cuTensorMapEncodeTiled failed \(1\) for 'a'"):
        encoder.encode(0, 4096, (200, 72), (72, 1))


@pytest.mark.gpu
@pytest.mark.parametrize("warp_specialize", [False, True])
@pytest.mark.parametrize(
    ("m", "n", "k"),
    [(256, 512, 256), (200, 136, 72), (8, 8, 8), (130, 264, 520), (96, 200, 70),
     (384, 256, 2080)],
)
def test_hopper_gemm_through_tma(m: int, n: int, k: int, warp_specialize: bool) -> None:
    """Ragged M, N, K (zero-filled boxes past the edges), a single 8 x 8 x 8 product, rows
    of A 140 bytes apart, which TMA cannot read (the plain path, with a zero map), and 65
    slabs of K (every ring slot's barriers through many phases); with the copies issued by
    the kernel's warps or by a producer warpgroup of their own."""
    import cupy

    if int(cupy.cuda.Device().compute_capability) < 90:
        pytest.skip("TMA needs sm_90")
    module = tg.compile(EXAMPLES / "gemm.tg", target="cuda:sm_90a", kernels=["gemm_f16"],
                        TMA=True, WS=warp_specialize)
    kernel = module["gemm_f16"]
    assert kernel.spec.tensor_maps
    rng = np.random.default_rng(m * n + k)
    a = cupy.asarray(rng.standard_normal((m, k)).astype(np.float16))
    b = cupy.asarray(rng.standard_normal((k, n)).astype(np.float16))
    expected = cupy.asnumpy(a).astype(np.float64) @ cupy.asnumpy(b).astype(np.float64)
    c = cupy.empty((m, n), dtype=cupy.float16)
    for _ in range(2):  # the second call reuses the encoded maps
        c.fill(cupy.nan)
        kernel(a, b, c)
        np.testing.assert_allclose(cupy.asnumpy(c).astype(np.float64), expected,
                                   rtol=2e-3, atol=2e-2 * np.sqrt(k / 64))
