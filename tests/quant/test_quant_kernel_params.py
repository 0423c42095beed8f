"""Kernel parameters of every sub-byte width take the packed format of tegula.ir.packing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tegula.ir.packing import pack
from tegula.runtime import ArgumentError, Kernel, KernelSpec, ParamSpec


class RecordingLauncher:
    device_kind = "cpu"

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    def scalar_converter(self, dt: Any) -> Any:
        return float if dt.is_float else int

    def launch(self, grid: Any, args: list[Any], device: str, library: str) -> None:
        self.calls.append(list(args))


def kernel(*params: ParamSpec, symbols: tuple[str, ...]) -> tuple[Kernel, RecordingLauncher]:
    launcher = RecordingLauncher()
    spec = KernelSpec("k", params, symbols, (symbols[0], "1", "1"), 32, 0, "cpu")
    return Kernel(spec, launcher), launcher


@pytest.mark.parametrize("bits", range(1, 8))
def test_every_width_takes_the_bitstream(bits: int) -> None:
    rng = np.random.default_rng()
    n = 13
    w = pack(rng.integers(0, 1 << bits, (6, n), dtype=np.uint8), bits)
    # N bound from an unpacked tensor: the packed rows are checked to the byte.
    k, launcher = kernel(ParamSpec("w", "tensor", f"u{bits}", ("K", "N")),
                         ParamSpec("s", "tensor", "f32", ("N",)), symbols=("K", "N"))
    k(w, np.ones(n, np.float32))
    assert launcher.calls[-1][2:] == [6, n]
    too_long = np.zeros((6, w.shape[1] + 1), np.uint8)
    with pytest.raises(ArgumentError, match=rf"'w' \(u{bits}\[K, N\]\) is passed as packed "
                                            rf"uint8 bytes: N = {n} .* expected shape is "
                                            rf"\(6, {w.shape[1]}\); got shape \(6, "):
        k(too_long, np.ones(n, np.float32))
    # A fixed extent is checked the same way.
    k, _ = kernel(ParamSpec("w", "tensor", f"i{bits}", ("K", n)), symbols=("K",))
    k(w)
    with pytest.raises(ArgumentError, match=rf"expected shape is \(6, {w.shape[1]}\)"):
        k(too_long)
    # Alone, the packed dimension binds the most elements its bytes hold.
    k, launcher = kernel(ParamSpec("w", "tensor", f"u{bits}", ("K", "N")), symbols=("K", "N"))
    k(w)
    assert launcher.calls[-1][1:] == [6, 8 * w.shape[1] // bits]


def test_a_later_unpacked_dimension_binds_the_symbol() -> None:
    w = pack(np.ones((4, 7), np.uint8), 3)
    k, launcher = kernel(ParamSpec("w", "tensor", "u3", ("K", "N")),
                         ParamSpec("out", "tensor", "f32", ("N",), writes=True),
                         symbols=("K", "N"))
    k(w, np.zeros(7, np.float32))
    assert launcher.calls[-1][2:] == [4, 7]
    with pytest.raises(ArgumentError, match=r"N = 9 .* expected shape is \(4, 4\)"):
        k(w, np.zeros(9, np.float32))


def test_wrong_storage_type_names_the_packed_shape() -> None:
    k, _ = kernel(ParamSpec("w", "tensor", "f4e2m1", ("K", "N")), symbols=("K", "N"))
    with pytest.raises(ArgumentError, match=r"'w' expects element type f4e2m1 .*passed "
                                            r"packed: give uint8 storage of shape "
                                            r"\(K, ceil\(N\*4/8\)\)"):
        k(np.zeros((4, 4), np.float32))
