"""Element data types.

A :class:`DType` names a scalar element type and says how wide it is, how it is stored, and
what NumPy, CUDA C and LLVM call it. Types narrower than a byte (``u4``, ``i3``, ``f4e2m1``…)
are listed here too: they are stored packed into words by a layout of their own, and the
quantization passes give them meaning beyond storage.

Every dtype is a singleton: compare with ``is`` or ``==``, look one up with :func:`dtype`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np


class Kind(Enum):
    """What the bits of a value mean."""

    FLOAT = "float"
    SIGNED = "signed"
    UNSIGNED = "unsigned"
    BOOL = "bool"


@dataclass(frozen=True, eq=False)
class DType:
    """A scalar element type.

    ``exponent``/``mantissa`` describe floats; ``cuda``/``llvm`` are the register types the
    code generators use for arithmetic on it (``None`` where the type has no native
    arithmetic and is computed on after a cast, as for sub-byte types).
    """

    name: str
    bits: int
    kind: Kind
    cuda: str | None = None
    llvm: str | None = None
    numpy: str | None = None
    exponent: int = 0
    mantissa: int = 0

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


def _define(dt: DType) -> DType:
    _REGISTRY[dt.name] = dt
    return dt


# Floats. f16/bf16 compute in f32 registers on the CPU; on CUDA they use the native types.
f64 = _define(DType("f64", 64, Kind.FLOAT, "double", "double", "float64", 11, 52))
f32 = _define(DType("f32", 32, Kind.FLOAT, "float", "float", "float32", 8, 23))
tf32 = _define(DType("tf32", 19, Kind.FLOAT, None, None, None, 8, 10))
f16 = _define(DType("f16", 16, Kind.FLOAT, "__half", "half", "float16", 5, 10))
bf16 = _define(DType("bf16", 16, Kind.FLOAT, "__nv_bfloat16", "bfloat", "ml_dtypes.bfloat16", 8, 7))
f8e4m3 = _define(DType("f8e4m3", 8, Kind.FLOAT, None, None, "ml_dtypes.float8_e4m3fn", 4, 3))
f8e5m2 = _define(DType("f8e5m2", 8, Kind.FLOAT, None, None, "ml_dtypes.float8_e5m2", 5, 2))
f6e3m2 = _define(DType("f6e3m2", 6, Kind.FLOAT, None, None, None, 3, 2))
f6e2m3 = _define(DType("f6e2m3", 6, Kind.FLOAT, None, None, None, 2, 3))
f4e2m1 = _define(DType("f4e2m1", 4, Kind.FLOAT, None, None, None, 2, 1))
e8m0 = _define(DType("e8m0", 8, Kind.FLOAT, None, None, None, 8, 0))

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

nf4 = _define(DType("nf4", 4, Kind.FLOAT))  # a 16-entry look-up table type
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
