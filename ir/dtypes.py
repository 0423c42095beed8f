"""Element data types.

A :class:`DType` names a scalar element type and says how wide it is, how it is stored, and
what NumPy, CUDA C and LLVM call it. Types narrower than a byte (``u4``, ``i3``, ``f4e2m1``…)
are listed here too: they are stored packed into words by a layout of their own, and the
quantization passes give them meaning beyond storage.

Every dtype is a singleton: compare with ``is`` or ``==``, look one up with :func:`dtype`.

The low-bit types and what encoding a value into them does (:mod:`tegula.ir.lowbit`
implements it; ``docs/quantization.md`` has the full table):

=========  ====  =====  ====  ==========  ========  =======================================
type       bits  E/M    bias  max finite  inf/NaN   on overflow (``saturate=True``/``False``)
=========  ====  =====  ====  ==========  ========  =======================================
f8e4m3     8     4/3    7     448         no / 1    ±448 / NaN (the ``fn`` variant:
                                                    NaN is S.1111.111, no inf)
f8e5m2     8     5/2    15    57344       yes / yes ±57344 / ±inf (IEEE-like)
f6e3m2     6     3/2    3     28          no / no   ±28 either way (nothing else to give)
f6e2m3     6     2/3    1     7.5         no / no   ±7.5 either way
f4e2m1     4     2/1    1     6           no / no   ±6 either way
e8m0       8     8/0    127   2^127       no / 0xFF 2^127 / NaN; unsigned, no zero
i1…i8      1–8   —      —     2^(b-1)-1   no / no   clamp to [-2^(b-1), 2^(b-1)-1]
u1…u8      1–8   —      —     2^b-1       no / no   clamp to [0, 2^b-1]
nf4, LUTs  ≤8    —      —     table max   no / no   the nearest table entry
=========  ====  =====  ====  ==========  ========  =======================================

Rounding is to nearest, ties to even, everywhere except ``e8m0`` (no mantissa bit to be
even: ties go to the larger power of two, as ml_dtypes does) and table types (ties to the
lower code). Saturation clamps ±inf too. A NaN input encodes to NaN where the type has one
and is an error where it has none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np


class NanEncoding(Enum):
    """Which codes of a float type are NaN."""

    NONE = "none"  # no NaN code (f6, f4, table types)
    IEEE = "ieee"  # all-ones exponent with a non-zero mantissa (f8e5m2, f16, f32…)
    ALL_ONES = "all_ones"  # only the all-ones magnitude (f8e4m3 S.1111.111, e8m0 0xFF)


class Kind(Enum):
    """What the bits of a value mean."""

    FLOAT = "float"
    SIGNED = "signed"
    UNSIGNED = "unsigned"
    BOOL = "bool"


@dataclass(frozen=True, eq=False)
class DType:
    """A scalar element type.

    ``exponent``/``mantissa``/``bias`` describe floats (``bias`` defaults to the IEEE
    ``2^(exponent-1) - 1``); ``has_inf``, ``nan`` and ``has_sign`` say which codes are
    special. ``table`` holds the values of a look-up-table type (code ``c`` means
    ``table[c]``). ``cuda``/``llvm`` are the register types the code generators use for
    arithmetic on it (``None`` where the type has no native arithmetic and is computed on
    after a cast, as for sub-byte types).
    """

    name: str
    bits: int
    kind: Kind
    cuda: str | None = None
    llvm: str | None = None
    numpy: str | None = None
    exponent: int = 0
    mantissa: int = 0
    bias: int | None = None
    has_inf: bool = False
    nan: NanEncoding = NanEncoding.NONE
    has_sign: bool = True
    table: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.bias is None and self.kind is Kind.FLOAT and self.exponent:
            object.__setattr__(self, "bias", (1 << (self.exponent - 1)) - 1)

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__

    def __reduce__(self) -> str:  # singletons survive copy/deepcopy
        return self.name

    @property
    def is_float(self) -> bool:
        return self.kind is Kind.FLOAT

    @property
    def is_int(self) -> bool:
        return self.kind in (Kind.SIGNED, Kind.UNSIGNED)

    @property
    def is_signed(self) -> bool:
        return self.kind is Kind.SIGNED or self.kind is Kind.FLOAT

    @property
    def is_bool(self) -> bool:
        return self.kind is Kind.BOOL

    @property
    def is_subbyte(self) -> bool:
        return self.bits < 8

    @property
    def itemsize(self) -> int:
        """Bytes one element takes when stored unpacked (sub-byte types round up)."""
        return max(1, (self.bits + 7) // 8)

    @property
    def is_lut(self) -> bool:
        """Whether codes index a table of values (``nf4``, :func:`lut_type` types)."""
        return self.table is not None

    @property
    def is_lowbit(self) -> bool:
        """Whether :mod:`tegula.ir.lowbit` encodes and decodes it: 8 bits or fewer, and not
        bool."""
        return self.bits <= 8 and not self.is_bool

    @property
    def int_range(self) -> tuple[int, int]:
        """``(lowest, highest)`` value of an integer type."""
        if not self.is_int:
            raise TypeError(f"{self.name} is not an integer type")
        if self.kind is Kind.SIGNED:
            return -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
        return 0, (1 << self.bits) - 1

    @property
    def max_finite(self) -> float:
        """The largest finite value the type holds."""
        if self.table is not None:
            return max(self.table)
        if self.is_int:
            return float(self.int_range[1])
        if not self.is_float:
            raise TypeError(f"{self.name} has no finite maximum")
        assert self.bias is not None
        top_exponent = (1 << self.exponent) - 1
        top_mantissa = (1 << self.mantissa) - 1
        if self.has_inf or self.nan is NanEncoding.IEEE:
            top_exponent -= 1  # the all-ones exponent is inf/NaN
        elif self.nan is NanEncoding.ALL_ONES:
            if self.mantissa == 0:
                top_exponent -= 1
            else:
                top_mantissa -= 1
        if self.mantissa == 0:
            return 2.0 ** (top_exponent - self.bias)
        return (1 + top_mantissa / (1 << self.mantissa)) * 2.0 ** (top_exponent - self.bias)

    @property
    def min_normal(self) -> float:
        """The smallest positive normal value of a float type."""
        if not self.is_float or self.bias is None:
            raise TypeError(f"{self.name} is not an exponent/mantissa float type")
        # Without a mantissa there are no subnormals: code 0 is the smallest value.
        return 2.0 ** ((1 if self.mantissa else 0) - self.bias)

    @property
    def min_subnormal(self) -> float:
        """The smallest positive value of a float type (subnormal where it has them)."""
        return self.min_normal / (1 << self.mantissa)

    @property
    def max_exponent(self) -> int:
        """``floor(log2(max_finite))``: the OCP MX spec's ``emax_elem``."""
        return int(np.floor(np.log2(self.max_finite)))

    @property
    def has_native_arithmetic(self) -> bool:
        return self.cuda is not None and self.llvm is not None

    def to_numpy(self) -> np.dtype:
        """The NumPy dtype arrays of this type have (ml_dtypes for the narrow floats)."""
        if self.numpy is None:
            raise TypeError(f"{self.name} has no NumPy dtype; it is stored packed")
        if self.numpy.startswith("ml_dtypes."):
            import ml_dtypes

            return np.dtype(getattr(ml_dtypes, self.numpy.split(".", 1)[1]))
        return np.dtype(self.numpy)


_REGISTRY: dict[str, DType] = {}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _define(dt: DType) -> DType:
    _REGISTRY[dt.name] = dt
    return dt


# Floats. f16/bf16 compute in f32 registers on the CPU; on CUDA they use the native types.
_IEEE = {"has_inf": True, "nan": NanEncoding.IEEE}
f64 = _define(DType("f64", 64, Kind.FLOAT, "double", "double", "float64", 11, 52, **_IEEE))
f32 = _define(DType("f32", 32, Kind.FLOAT, "float", "float", "float32", 8, 23, **_IEEE))
tf32 = _define(DType("tf32", 19, Kind.FLOAT, None, None, None, 8, 10, **_IEEE))
f16 = _define(DType("f16", 16, Kind.FLOAT, "__half", "half", "float16", 5, 10, **_IEEE))
bf16 = _define(DType("bf16", 16, Kind.FLOAT, "__nv_bfloat16", "bfloat", "ml_dtypes.bfloat16", 8, 7,
                     **_IEEE))
# OCP 8-bit floats (OFP8): E4M3 is the "fn" variant (ml_dtypes float8_e4m3fn): no inf, one
# NaN magnitude S.1111.111, max 448. E5M2 is IEEE-like: inf and NaN, max 57344.
f8e4m3 = _define(DType("f8e4m3", 8, Kind.FLOAT, None, None, "ml_dtypes.float8_e4m3fn", 4, 3,
                       nan=NanEncoding.ALL_ONES))
f8e5m2 = _define(DType("f8e5m2", 8, Kind.FLOAT, None, None, "ml_dtypes.float8_e5m2", 5, 2,
                       **_IEEE))
# OCP MX element types: every code is a finite number (no inf, no NaN).
f6e3m2 = _define(DType("f6e3m2", 6, Kind.FLOAT, None, None, None, 3, 2))
f6e2m3 = _define(DType("f6e2m3", 6, Kind.FLOAT, None, None, None, 2, 3))
f4e2m1 = _define(DType("f4e2m1", 4, Kind.FLOAT, None, None, None, 2, 1))
# The OCP MX scale type: 2^(code - 127), unsigned, no zero, 0xFF is NaN.
e8m0 = _define(DType("e8m0", 8, Kind.FLOAT, None, None, "ml_dtypes.float8_e8m0fnu", 8, 0,
                     nan=NanEncoding.ALL_ONES, has_sign=False))

# Integers: the usual widths with native arithmetic, every width from 1 to 7 packed.
_CUDA_INT = {8: "signed char", 16: "short", 32: "int", 64: "long long"}
_CUDA_UINT = {
    8: "unsigned char",
    16: "unsigned short",
    32: "unsigned int",
    64: "unsigned long long",
}
for _bits in (8, 16, 32, 64):
    _define(DType(f"i{_bits}", _bits, Kind.SIGNED, _CUDA_INT[_bits], f"i{_bits}", f"int{_bits}"))
    _define(
        DType(f"u{_bits}", _bits, Kind.UNSIGNED, _CUDA_UINT[_bits], f"i{_bits}", f"uint{_bits}")
    )
for _bits in range(1, 8):
    _define(DType(f"i{_bits}", _bits, Kind.SIGNED))
    _define(DType(f"u{_bits}", _bits, Kind.UNSIGNED))

# NormalFloat4, the 16 quantiles of N(0, 1) scaled to [-1, 1] with an exact zero, from
# Dettmers et al., "QLoRA: Efficient Finetuning of Quantized LLMs" (arXiv:2305.14314),
# Appendix E, as bitsandbytes ships them (csrc/kernels.cu, dDequantizeNF4).
NF4_VALUES: tuple[float, ...] = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)
nf4 = _define(DType("nf4", 4, Kind.FLOAT, table=NF4_VALUES))
boolean = _define(DType("bool", 8, Kind.BOOL, "bool", "i1", "bool"))

i8, i16, i32, i64 = (_REGISTRY[n] for n in ("i8", "i16", "i32", "i64"))
u8, u16, u32, u64 = (_REGISTRY[n] for n in ("u8", "u16", "u32", "u64"))

# Names a user may also write.
_ALIASES = {
    "float": "f32",
    "float32": "f32",
    "float64": "f64",
    "double": "f64",
    "half": "f16",
    "float16": "f16",
    "bfloat16": "bf16",
    "int": "i32",
    "int32": "i32",
    "int64": "i64",
    "e4m3": "f8e4m3",
    "e5m2": "f8e5m2",
    "fp4": "f4e2m1",
}


def lut_type(name: str, values: Sequence[float], *, bits: int | None = None) -> DType:
    """Register (or look up again) a look-up-table type: code ``c`` means ``values[c]``.

    ``bits`` defaults to the fewest bits that index every value (at most 8). Registering
    the same name with the same values again returns the same type; anything else that
    reuses a name is an error.
    """
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(f"lut_type: name {name!r} is not an identifier")
    table = tuple(float(v) for v in values)
    if not 2 <= len(table) <= 256:
        raise ValueError(f"lut_type {name!r}: a table has 2 to 256 values, got {len(table)}")
    if not all(np.isfinite(table)):
        raise ValueError(f"lut_type {name!r}: values must be finite, got {table}")
    needed = max(1, (len(table) - 1).bit_length())
    width = needed if bits is None else bits
    if not needed <= width <= 8:
        raise ValueError(
            f"lut_type {name!r}: {len(table)} values need {needed}..8 bits, not {bits}"
        )
    existing = _REGISTRY.get(_ALIASES.get(name, name))
    if existing is not None:
        if existing.table == table and existing.bits == width:
            return existing
        raise ValueError(f"lut_type: dtype {name!r} already exists with other values")
    return _define(DType(name, width, Kind.FLOAT, table=table))


def dtype(name: str | DType | np.dtype | type) -> DType:
    """Look a dtype up by tegula name, alias, or NumPy dtype."""
    if isinstance(name, DType):
        return name
    if isinstance(name, str):
        key = _ALIASES.get(name, name)
        if key in _REGISTRY:
            return _REGISTRY[key]
        raise KeyError(f"unknown dtype {name!r}")
    return from_numpy(np.dtype(name))


def from_numpy(np_dtype: np.dtype) -> DType:
    """The tegula dtype of a NumPy array (ml_dtypes types included)."""
    np_dtype = np.dtype(np_dtype)
    for dt in _REGISTRY.values():
        if dt.numpy is not None and dt.to_numpy() == np_dtype:
            return dt
    raise TypeError(f"no tegula dtype for NumPy dtype {np_dtype}")


def all_dtypes() -> tuple[DType, ...]:
    return tuple(_REGISTRY.values())


def is_dtype_name(name: str) -> bool:
    return _ALIASES.get(name, name) in _REGISTRY


def promote(a: DType, b: DType) -> DType:
    """The type two operands of a binary op are computed in.

    Floats win over integers; the wider float wins; f16 with bf16 gives f32. Integers: the
    wider wins, signed if either is. Mirrors what a user expects from C and NumPy without
    NumPy's value-dependent rules.
    """
    if a is b:
        return a
    if a.is_bool:
        return b
    if b.is_bool:
        return a
    if a.is_float and b.is_float:
        if {a.name, b.name} == {"f16", "bf16"}:
            return f32
        return a if a.bits >= b.bits else b
    if a.is_float:
        return a
    if b.is_float:
        return b
    bits = max(a.bits, b.bits)
    signed = a.kind is Kind.SIGNED or b.kind is Kind.SIGNED
    return _REGISTRY[f"{'i' if signed else 'u'}{max(bits, 8)}"]


def compute_type(dt: DType) -> DType:
    """The type arithmetic on ``dt`` happens in: f16/bf16 and narrow floats compute in f32."""
    if dt.is_float and dt.bits < 32:
        return f32
    if dt.is_int and dt.bits < 32:
        return _REGISTRY["i32"] if dt.kind is Kind.SIGNED else _REGISTRY["u32"]
    return dt
