"""The contract between the code generators and the runtime.

A compiled kernel is described by a :class:`KernelSpec`: its name (also the symbol in the
binary), its header parameters, the size/stride symbols it takes, the launch grid as
expressions over those symbols, the block size, dynamic shared memory and target. The spec
is plain JSON (``to_json``/``from_json``), so an ahead-of-time artifact can carry it beside
the binary and a loader can call the kernel without the compiler.

ABI (what the generated code must accept)
-----------------------------------------
CUDA: ``extern "C" __global__ void <name>(...)`` taking each header parameter in order
(tensor → device pointer to its element type, scalar → its C type), then each symbol in
``symbols`` order as ``long long``, then each of ``tensor_maps`` (a TMA tensor map of one
tensor parameter, 128 bytes by value; :mod:`tegula.runtime.tensor_map`). Launched on ``grid``
with block ``(block_threads, 1, 1)`` and ``smem_bytes`` of dynamic shared memory.

CPU: an LLVM function ``void <name>(i64* argv, i64 begin, i64 end)`` that runs the blocks
whose linear index lies in ``[begin, end)``, x fastest (``bid.x = b % gx``,
``bid.y = (b // gx) % gy``, ``bid.z = b // (gx * gy)``). ``argv`` holds 64-bit slots: each
header parameter (a pointer as an integer; an integer scalar sign-extended; a float scalar
as the bits of a C ``double``), then each symbol, then ``gx, gy, gz``.

A tensor of a sub-byte type (``u4``, ``i3``, ``f4e2m1``…) is passed as C-contiguous ``uint8``
storage in the format of :mod:`tegula.ir.packing`: logical ``(..., n)`` with ``b``-bit
elements is ``(..., ceil(n*b/8))`` bytes. A symbol named by such a last dimension is bound
from an unpacked dimension where the header has one, and otherwise from the packed one as
``floor(8*bytes/b)``; a packed dimension whose extent is known is checked to take exactly
``ceil(n*b/8)`` bytes.

Tensor shapes list ints or symbol names; ``strides=None`` means C-contiguous, otherwise each
stride is an int or a symbol bound from the array's strides in elements. A symbol is bound
from the first tensor dimension (or stride) that names it, in header order; every later
use must agree.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from typing import Any, Literal

from tegula.ir import dtypes

from .errors import ExprError, SpecError
from .exprs import GridFunction, compile_grid
from .tensor_map import MAX_RANK, TensorMapSpec

ParamKind = Literal["tensor", "scalar"]
Dim = int | str

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TARGET = re.compile(r"cpu\Z|cuda:sm_[0-9]+[a-z]?\Z")
_MAX_BLOCK_THREADS = 1024


def _check_dim(owner: str, what: str, entry: object) -> Dim:
    if isinstance(entry, bool) or not isinstance(entry, int | str):
        raise SpecError(f"{owner}: {what} entry {entry!r} is neither an int nor a symbol name")
    if isinstance(entry, int) and entry < 0:
        raise SpecError(f"{owner}: {what} entry {entry} is negative")
    if isinstance(entry, str) and not _IDENTIFIER.match(entry):
        raise SpecError(f"{owner}: {what} entry {entry!r} is not a valid symbol name")
    return entry


@dataclass(frozen=True)
class ParamSpec:
    """One header parameter: a tensor (passed by pointer) or a scalar (passed by value)."""

    name: str
    kind: ParamKind
    dtype: str
    shape: tuple[Dim, ...] = ()
    strides: tuple[Dim, ...] | None = None
    writes: bool = False

    def __post_init__(self) -> None:
        owner = f"parameter {self.name!r}"
        if not isinstance(self.name, str) or not _IDENTIFIER.match(self.name):
            raise SpecError(f"parameter name {self.name!r} is not an identifier")
        if self.kind not in ("tensor", "scalar"):
            raise SpecError(f"{owner}: kind must be 'tensor' or 'scalar', not {self.kind!r}")
        if not dtypes.is_dtype_name(self.dtype):
            raise SpecError(f"{owner}: unknown dtype {self.dtype!r}")
        object.__setattr__(
            self, "shape", tuple(_check_dim(owner, "shape", d) for d in self.shape)
        )
        if self.strides is not None:
            strides = tuple(_check_dim(owner, "strides", s) for s in self.strides)
            if len(strides) != len(self.shape):
                raise SpecError(
                    f"{owner}: {len(strides)} strides for a {len(self.shape)}-d shape"
                )
            object.__setattr__(self, "strides", strides)
        if self.is_packed and (not self.shape or self.strides is not None):
            raise SpecError(
                f"{owner}: {self.dtype} tensors are passed as C-contiguous bytes packed "
                "along the last dimension (tegula.ir.packing); that needs rank >= 1 and no "
                "explicit strides"
            )
        if self.kind == "scalar":
            if self.shape or self.strides is not None or self.writes:
                raise SpecError(f"{owner}: a scalar has no shape or strides and is not written")
            if not self.element_type.has_native_arithmetic:
                raise SpecError(f"{owner}: a scalar cannot have storage-only dtype {self.dtype}")

    @property
    def element_type(self) -> dtypes.DType:
        return dtypes.dtype(self.dtype)

    @property
    def is_tensor(self) -> bool:
        return self.kind == "tensor"

    @property
    def is_packed(self) -> bool:
        """Whether the tensor is passed as packed ``uint8`` bytes (a sub-byte element type):
        each row of its last dimension a little-endian bitstream padded to whole bytes."""
        return self.kind == "tensor" and self.element_type.is_subbyte

    @property
    def rank(self) -> int:
        return len(self.shape)

    def type_text(self) -> str:
        """How the header writes the type, e.g. ``f32[M, N]`` or ``i32``."""
        if self.kind == "scalar":
            return self.dtype
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"

    def symbols_used(self) -> tuple[str, ...]:
        names = [d for d in self.shape if isinstance(d, str)]
        names += [s for s in self.strides or () if isinstance(s, str)]
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class KernelSpec:
    """Everything the runtime needs to check arguments for and launch one compiled kernel."""

    name: str
    params: tuple[ParamSpec, ...]
    symbols: tuple[str, ...]
    grid: tuple[str, str, str]
    block_threads: int
    smem_bytes: int
    target: str
    index_bits: int = 64
    tensor_maps: tuple[TensorMapSpec, ...] = ()

    # ``grid_function(*symbol_values) -> (gx, gy, gz)``: compiled once, in __post_init__.
    grid_function: GridFunction = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        owner = f"kernel {self.name!r}"
        if not isinstance(self.name, str) or not _IDENTIFIER.match(self.name):
            raise SpecError(f"kernel name {self.name!r} is not an identifier")
        object.__setattr__(self, "params", tuple(self.params))
        object.__setattr__(self, "symbols", tuple(self.symbols))
        object.__setattr__(self, "grid", tuple(str(g) for g in self.grid))
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise SpecError(f"{owner}: duplicate parameter names in {names}")
        if len(set(self.symbols)) != len(self.symbols):
            raise SpecError(f"{owner}: duplicate symbols in {list(self.symbols)}")
        for sym in self.symbols:
            if not isinstance(sym, str) or not _IDENTIFIER.match(sym):
                raise SpecError(f"{owner}: symbol {sym!r} is not an identifier")
            if sym in names:
                raise SpecError(f"{owner}: symbol {sym!r} has a parameter's name")
        bound = {s for p in self.params for s in p.symbols_used()}
        if unknown := sorted(bound - set(self.symbols)):
            raise SpecError(f"{owner}: shapes name symbols {unknown} missing from `symbols`")
        if unbound := [s for s in self.symbols if s not in bound]:
            raise SpecError(
                f"{owner}: symbols {unbound} appear in no tensor shape or stride, "
                "so no call could bind them"
            )
        if len(self.grid) != 3:
            raise SpecError(f"{owner}: grid needs 3 expressions, got {len(self.grid)}")
        if not isinstance(self.block_threads, int) or not (
            1 <= self.block_threads <= _MAX_BLOCK_THREADS
        ):
            raise SpecError(f"{owner}: block_threads {self.block_threads!r} not in 1..1024")
        if not isinstance(self.smem_bytes, int) or self.smem_bytes < 0:
            raise SpecError(f"{owner}: smem_bytes {self.smem_bytes!r} is not a size")
        if not isinstance(self.target, str) or not _TARGET.match(self.target):
            raise SpecError(
                f"{owner}: target {self.target!r} is neither 'cpu' nor like 'cuda:sm_90a'"
            )
        if self.index_bits not in (32, 64):
            raise SpecError(f"{owner}: index_bits must be 32 or 64, not {self.index_bits!r}")
        object.__setattr__(self, "tensor_maps", tuple(self.tensor_maps))
        by_name = {p.name: p for p in self.params}
        for m in self.tensor_maps:
            param = by_name.get(m.param)
            if param is None or not param.is_tensor or param.is_packed:
                raise SpecError(f"{owner}: tensor map of {m.param!r}, not an unpacked tensor")
            if m.dims and (m.dims[0][0] != param.rank - 1
                           or any(d >= param.rank for d, _, _ in m.dims)):
                raise SpecError(f"{owner}: tensor map of {m.param!r} views dimensions "
                                f"{m.dims} of a {param.rank}-d tensor")
            if not m.dims and (len(m.box) != param.rank or param.rank > MAX_RANK):
                raise SpecError(
                    f"{owner}: tensor map of {m.param!r} has a {len(m.box)}-d box for a "
                    f"{param.rank}-d tensor"
                )
            if not self.is_cuda:
                raise SpecError(f"{owner}: tensor maps are for CUDA targets only")
        try:
            grid_function = compile_grid(self.grid, self.symbols)
        except ExprError as exc:
            raise SpecError(f"{owner}: {exc}") from None
        # Not a field: derived, so it stays out of equality, repr and JSON.
        object.__setattr__(self, "grid_function", grid_function)

    # -- derived facts -------------------------------------------------------------------

    @property
    def is_cuda(self) -> bool:
        return self.target.startswith("cuda:")

    @property
    def arch(self) -> str | None:
        """The CUDA architecture (``"sm_90a"``), or ``None`` for the CPU."""
        return self.target.split(":", 1)[1] if self.is_cuda else None

    @cached_property
    def param_index(self) -> dict[str, int]:
        return {p.name: i for i, p in enumerate(self.params)}

    def signature(self) -> str:
        """The header as a user reads it: ``gemm(a: f16[M, K], b: f16[K, N], ...)``."""
        args = ", ".join(f"{p.name}: {p.type_text()}" for p in self.params)
        return f"{self.name}({args})"

    # -- JSON ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        data["params"] = [asdict(p) for p in self.params]
        # Written only where there are maps, so specs without any read as they always did.
        maps = data.pop("tensor_maps")
        if maps:
            data["tensor_maps"] = [asdict(m) for m in maps]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KernelSpec:
        data = dict(data)
        try:
            raw_params = data.pop("params")
            params = tuple(
                ParamSpec(
                    **{
                        **p,
                        "shape": tuple(p.get("shape", ())),
                        "strides": None if p.get("strides") is None else tuple(p["strides"]),
                    }
                )
                for p in raw_params
            )
            maps = tuple(TensorMapSpec(**m) for m in data.pop("tensor_maps", ()))
            return cls(params=params, tensor_maps=maps, **data)
        except (KeyError, TypeError) as exc:
            raise SpecError(f"malformed kernel spec: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> KernelSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"kernel spec is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise SpecError("kernel spec JSON must be an object")
        return cls.from_dict(data)
