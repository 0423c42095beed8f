"""The low-bit types: their documented parameters, and table types."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tegula.ir import dtypes
from tegula.ir.dtypes import NanEncoding


@pytest.mark.parametrize(
    ("name", "bits", "exponent", "mantissa", "bias", "max_finite", "has_inf", "nan", "emax"),
    [
        ("f8e4m3", 8, 4, 3, 7, 448.0, False, NanEncoding.ALL_ONES, 8),
        ("f8e5m2", 8, 5, 2, 15, 57344.0, True, NanEncoding.IEEE, 15),
        ("f6e3m2", 6, 3, 2, 3, 28.0, False, NanEncoding.NONE, 4),
        ("f6e2m3", 6, 2, 3, 1, 7.5, False, NanEncoding.NONE, 2),
        ("f4e2m1", 4, 2, 1, 1, 6.0, False, NanEncoding.NONE, 2),
        ("e8m0", 8, 8, 0, 127, 2.0**127, False, NanEncoding.ALL_ONES, 127),
        ("f16", 16, 5, 10, 15, 65504.0, True, NanEncoding.IEEE, 15),
    ],
)
def test_float_type_parameters(name: str, bits: int, exponent: int, mantissa: int, bias: int,
                               max_finite: float, has_inf: bool, nan: NanEncoding,
                               emax: int) -> None:
    dt = dtypes.dtype(name)
    assert (dt.bits, dt.exponent, dt.mantissa, dt.bias) == (bits, exponent, mantissa, bias)
    assert dt.max_finite == max_finite
    assert (dt.has_inf, dt.nan) == (has_inf, nan)
    assert dt.max_exponent == emax  # the OCP MX spec's emax_elem


def test_ml_dtypes_agree_on_extremes() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    for name, ml_name in [("f8e4m3", "float8_e4m3fn"), ("f8e5m2", "float8_e5m2"),
                          ("f6e3m2", "float6_e3m2fn"), ("f6e2m3", "float6_e2m3fn"),
                          ("f4e2m1", "float4_e2m1fn")]:
        if not hasattr(ml_dtypes, ml_name):
            continue
        info = ml_dtypes.finfo(getattr(ml_dtypes, ml_name))
        dt = dtypes.dtype(name)
        assert dt.max_finite == float(info.max), name
        assert dt.min_normal == float(info.smallest_normal), name
        assert dt.min_subnormal == float(info.smallest_subnormal), name


def test_integer_ranges_every_width() -> None:
    for bits in range(1, 9):
        assert dtypes.dtype(f"i{bits}").int_range == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        assert dtypes.dtype(f"u{bits}").int_range == (0, 2**bits - 1)
        assert dtypes.dtype(f"u{bits}").is_lowbit
    with pytest.raises(TypeError, match="f16 is not an integer type"):
        dtypes.f16.int_range  # noqa: B018


def test_nf4_is_the_qlora_table() -> None:
    table = dtypes.nf4.table
    assert table is not None and len(table) == 16 and dtypes.nf4.bits == 4
    assert table[0] == -1.0 and table[7] == 0.0 and table[15] == 1.0
    assert list(table) == sorted(table)
    assert math.isclose(table[8], 0.07958029955625534)
    assert dtypes.nf4.is_lut and not dtypes.f4e2m1.is_lut


def test_lut_type_registers_once() -> None:
    values = [-2.0, -0.5, 0.0, 0.5, 2.0]
    dt = dtypes.lut_type("test_lut5", values)
    assert dt.bits == 3 and dt.table == tuple(values)
    assert dtypes.dtype("test_lut5") is dt
    assert dtypes.lut_type("test_lut5", values) is dt
    with pytest.raises(ValueError, match="'test_lut5' already exists"):
        dtypes.lut_type("test_lut5", [0.0, 1.0])
    with pytest.raises(ValueError, match="'f16' already exists"):
        dtypes.lut_type("f16", [0.0, 1.0])
    assert dtypes.lut_type("test_lut5_wide", values, bits=4).bits == 4
    with pytest.raises(ValueError, match=r"need 3\.\.8 bits, not 2"):
        dtypes.lut_type("test_lut_narrow", values, bits=2)
    with pytest.raises(ValueError, match="must be finite"):
        dtypes.lut_type("test_lut_nan", [0.0, np.nan])
    with pytest.raises(ValueError, match="2 to 256 values"):
        dtypes.lut_type("test_lut_huge", range(257))
    with pytest.raises(ValueError, match="not an identifier"):
        dtypes.lut_type("not a name", [0.0, 1.0])


def test_existing_behaviour_is_kept() -> None:
    assert dtypes.f8e4m3.to_numpy().name == "float8_e4m3fn"
    assert dtypes.dtype("e4m3") is dtypes.f8e4m3 and dtypes.dtype("fp4") is dtypes.f4e2m1
    assert dtypes.f4e2m1.is_subbyte and not dtypes.e8m0.is_subbyte
    with pytest.raises(TypeError, match="stored packed"):
        dtypes.f4e2m1.to_numpy()
