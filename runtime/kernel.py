"""A compiled kernel as a Python callable: check the arguments, bind symbols, launch.

Everything that does not depend on the arguments (which symbol each dimension binds or
checks, dtypes, scalar converters, the compiled grid function) is worked out once, when the
:class:`Kernel` is made; a call then does one pass over its arguments. Only when something
is wrong does it build a message, naming the parameter and saying what was expected and
what came.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from tegula.ir.dtypes import DType, u8

from .arrays import _READERS as _READER_CACHE
from .arrays import CPU, ArrayReader, describe, reader_for
from .errors import ArgumentError, SpecError
from .spec import KernelSpec, ParamSpec
from .tensor_map import TensorMapEncoder


class Launcher(Protocol):
    """What a :class:`Kernel` needs from a back end (``CpuLauncher``, ``CudaLauncher``)."""

    device_kind: str  # "cpu" or "cuda"

    def scalar_converter(self, dt: DType) -> Callable[[Any], Any]: ...

    def launch(
        self, grid: tuple[int, int, int], args: list[Any], device: str, library: str
    ) -> None: ...


# Where every CUDA tensor's data must start: the generated code reads and writes aligned
# vectors of up to 16 bytes, testing element offsets (not the base) for alignment.
CUDA_BASE_ALIGNMENT = 16


class _TensorPlan:
    """What a call checks for one tensor parameter, precomputed from its spec."""

    __slots__ = (
        "binds", "checks", "contiguous", "dtype", "fixed", "name", "packed_bind", "packed_bits",
        "packed_check", "packed_fixed", "param", "rank", "storage", "stride_binds",
        "stride_checks", "stride_fixed", "writes",
    )  # fmt: skip

    def __init__(self, param: ParamSpec, symbol_index: dict[str, int],
                 binder: dict[str, tuple[str, int, bool]], unpacked_symbols: set[str]) -> None:
        self.param = param
        self.name = param.name
        self.rank = param.rank
        self.dtype = param.element_type
        self.writes = param.writes
        self.contiguous = param.strides is None
        self.storage = self.dtype  # the element type of the array passed
        # Sub-byte elements travel as uint8 bytes, each row of the last dimension a packed
        # bitstream (tegula.ir.packing). The byte count fixes the element count only up to
        # the padding, so the last dimension is handled apart from the others.
        self.packed_bits = 0
        self.packed_fixed: int | None = None  # the last extent, where the header fixes it
        self.packed_bind: int | None = None  # symbol bound from the byte count
        self.packed_check: int | None = None  # symbol bound elsewhere, checked after binding
        shape = param.shape
        if param.is_packed:
            self.packed_bits = self.dtype.bits
            self.storage = u8
            last = shape[-1]
            shape = shape[:-1]
            if isinstance(last, int):
                self.packed_fixed = last
            elif last not in unpacked_symbols and binder.setdefault(
                last, (self.name, self.rank - 1, False)
            ) == (self.name, self.rank - 1, False):
                self.packed_bind = symbol_index[last]
            else:
                self.packed_check = symbol_index[last]
        self.fixed, self.binds, self.checks = self._split(shape, False, symbol_index, binder)
        self.stride_fixed, self.stride_binds, self.stride_checks = self._split(
            param.strides or (), True, symbol_index, binder
        )

    def _split(self, entries: Sequence[int | str], is_stride: bool,
               symbol_index: dict[str, int], binder: dict[str, tuple[str, int, bool]]
               ) -> tuple[tuple[tuple[int, int], ...], ...]:
        fixed, binds, checks = [], [], []
        for dim, entry in enumerate(entries):
            if isinstance(entry, int):
                fixed.append((dim, entry))
            elif binder.setdefault(entry, (self.name, dim, is_stride)) == (
                self.name, dim, is_stride
            ):
                binds.append((dim, symbol_index[entry]))
            else:
                checks.append((dim, symbol_index[entry]))
        return tuple(fixed), tuple(binds), tuple(checks)


class _ScalarPlan:
    __slots__ = ("convert", "dtype", "fast_types", "name", "param")

    def __init__(self, param: ParamSpec, convert: Callable[[Any], Any]) -> None:
        self.param = param
        self.name = param.name
        self.dtype = param.element_type
        self.convert = convert
        # Python types accepted without a closer look (the common case of a call).
        self.fast_types = (float, int) if self.dtype.is_float else (int,)


def _is_number(value: object, dt: DType) -> bool:
    if isinstance(value, bool | np.bool_):
        return True  # a bool is a fine 0/1 for any scalar type
    if dt.is_float:
        return isinstance(value, int | float | np.integer | np.floating)
    return isinstance(value, int | np.integer)


class Kernel:
    """A compiled kernel, callable on arrays: ``kernel(x, y, out)`` or by parameter name.

    ``spec`` describes the kernel; ``launcher`` runs it (see :class:`Launcher`); ``source``
    is the generated code (CUDA C or LLVM IR) where it is known.
    """

    def __init__(self, spec: KernelSpec, launcher: Launcher, *, source: str | None = None
                 ) -> None:
        expected_kind = "cuda" if spec.is_cuda else "cpu"
        if launcher.device_kind != expected_kind:
            raise SpecError(
                f"kernel {spec.name!r} targets {spec.target} but its launcher runs on "
                f"{launcher.device_kind}"
            )
        self.spec = spec
        self.source = source
        self._launcher = launcher
        self._launch = launcher.launch
        self._grid = spec.grid_function
        self._nsymbols = len(spec.symbols)
        self._arity = len(spec.params)
        self._on_cuda = spec.is_cuda
        symbol_index = {s: i for i, s in enumerate(spec.symbols)}
        # symbol -> (parameter, dim, is_stride) of its first use, which binds it; a packed
        # last dimension binds only symbols that no unpacked dimension or stride names.
        self._binder: dict[str, tuple[str, int, bool]] = {}
        unpacked_symbols = {
            entry
            for p in spec.params
            for entry in (*(p.shape[:-1] if p.is_packed else p.shape), *(p.strides or ()))
            if isinstance(entry, str)
        }
        self._plans: tuple[_TensorPlan | _ScalarPlan, ...] = tuple(
            _TensorPlan(p, symbol_index, self._binder, unpacked_symbols)
            if p.is_tensor
            else _ScalarPlan(p, launcher.scalar_converter(p.element_type))
            for p in spec.params
        )
        self._index_limit = (1 << (spec.index_bits - 1)) - 1
        # A 32-bit kernel also needs every tensor's span to fit, with room to spare for the
        # (masked) offsets of windows that reach past a tensor's end.
        self._extent_limit = 1 << (spec.index_bits - 2) if spec.index_bits < 64 else 0
        self._wide_factory: Callable[[], Kernel] | None = None
        self._wide: Kernel | None = None
        self._map_encoder: TensorMapEncoder | None = None
        if spec.tensor_maps:
            index = spec.param_index
            self._map_args = tuple(index[m.param] for m in spec.tensor_maps)
            self._map_encoder = TensorMapEncoder(
                spec.tensor_maps, tuple(spec.params[i].element_type for i in self._map_args)
            )

    def set_wide_twin(self, factory: Callable[[], Kernel]) -> None:
        """Where calls too large for this kernel's 32-bit indices go: a 64-bit build of the
        same kernel, made by ``factory`` at the first such call."""
        self._wide_factory = factory

    # -- the call ------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs or len(args) != self._arity:
            args = self._arrange(args, kwargs)
        values: list[Any] = [None] * self._nsymbols
        launch_args: list[Any] = []
        device = None
        library = ""
        packed_checks: list[tuple[_TensorPlan, tuple[int, ...]]] = []
        readers = _READER_CACHE
        for plan, arg in zip(self._plans, args, strict=True):
            if type(plan) is _ScalarPlan:
                launch_args.append(self._scalar(plan, arg))
                continue
            reader = readers.get(type(arg)) or reader_for(type(arg))
            if reader is None:
                raise self._expected_tensor(plan, arg)
            try:
                shape = reader.shape(arg)
            except TypeError as unreadable:  # e.g. device memory offered only through DLPack
                raise ArgumentError(f"parameter {plan.name!r}: {unreadable}") from None
            if len(shape) != plan.rank or reader.dtype(arg) is not plan.storage:
                raise self._type_mismatch(plan, reader, arg)
            where = reader.device(arg)
            if (where == CPU) is self._on_cuda:
                raise self._wrong_device(plan, arg, where)
            if device is None:
                device, library, first = where, reader.library_of(arg), plan.name
            elif where != device:
                raise ArgumentError(
                    f"parameter {plan.name!r} is on {where} but {first!r} is on {device}; "
                    f"all arrays of one call must be on the same device"
                )
            if plan.contiguous:
                if not reader.is_c_contiguous(arg):
                    raise self._not_contiguous(plan, reader, arg)
                if self._extent_limit and math.prod(shape) > self._extent_limit:
                    return self._too_large_for_32_bits(args, plan.name, math.prod(shape))
            else:
                strides = reader.strides(arg)
                if self._extent_limit:
                    extent = 1 + sum((n - 1) * abs(s) for n, s in zip(shape, strides, strict=True))
                    if extent > self._extent_limit:
                        return self._too_large_for_32_bits(args, plan.name, extent)
                for dim, sym in plan.stride_binds:
                    values[sym] = strides[dim]
                for dim, sym in plan.stride_checks:
                    if strides[dim] != values[sym]:
                        raise self._inconsistent(plan, sym, dim, strides[dim], values, True)
                for dim, stride in plan.stride_fixed:
                    if strides[dim] != stride and shape[dim] != 1:
                        raise self._stride_mismatch(plan, dim, stride, strides)
            if plan.packed_bits:
                if plan.packed_bind is not None:
                    values[plan.packed_bind] = 8 * shape[-1] // plan.packed_bits
                elif plan.packed_fixed is not None:
                    if shape[-1] != -(-plan.packed_fixed * plan.packed_bits // 8):
                        raise self._packed_mismatch(plan, plan.packed_fixed, shape)
                else:
                    packed_checks.append((plan, shape))
            for dim, sym in plan.binds:
                values[sym] = shape[dim]
            for dim, sym in plan.checks:
                if shape[dim] != values[sym]:
                    raise self._inconsistent(plan, sym, dim, shape[dim], values, False)
            for dim, extent in plan.fixed:
                if shape[dim] != extent:
                    raise self._dim_mismatch(plan, dim, extent, shape)
            if plan.writes and reader.is_readonly(arg):
                raise ArgumentError(
                    f"parameter {plan.name!r} is written by kernel {self.spec.name!r}, "
                    "but the array given is read-only"
                )
            pointer = reader.pointer(arg)
            if self._on_cuda and pointer % CUDA_BASE_ALIGNMENT:
                raise ArgumentError(
                    f"parameter {plan.name!r}: its data starts at {pointer:#x}, not on a "
                    f"{CUDA_BASE_ALIGNMENT}-byte boundary; CUDA kernels access memory in "
                    "aligned vectors of up to 16 bytes (pass a copy, or a view that starts "
                    "at an aligned element)"
                )
            launch_args.append(pointer)
        for plan, shape in packed_checks:
            n = values[plan.packed_check]  # type: ignore[index]
            if shape[-1] != -(-n * plan.packed_bits // 8):
                raise self._packed_mismatch(plan, n, shape)
        if self._index_limit < (1 << 62) and values and max(values) > self._index_limit:
            if self._wide_factory is not None:
                return self._wide_kernel()(*args)
            self._index_overflow(values)
        grid = self._grid(*values)
        if grid[0] <= 0 or grid[1] <= 0 or grid[2] <= 0:
            return
        launch_args.extend(values)
        if self._map_encoder is not None:
            launch_args.extend(self._tensor_maps(args))
        self._launch(grid, launch_args, device or CPU, library)

    def _tensor_maps(self, args: tuple[Any, ...]) -> list[Any]:
        """The TMA tensor maps of this call's arrays (checked already), in spec order."""
        encoder = self._map_encoder
        assert encoder is not None
        maps = []
        for index, position in enumerate(self._map_args):
            arg = args[position]
            reader = _READER_CACHE.get(type(arg)) or reader_for(type(arg))
            assert reader is not None
            maps.append(encoder.encode(index, reader.pointer(arg), tuple(reader.shape(arg)),
                                       tuple(reader.strides(arg))))
        return maps

    def _scalar(self, plan: _ScalarPlan, value: Any) -> Any:
        if type(value) not in plan.fast_types and not _is_number(value, plan.dtype):
            raise ArgumentError(
                f"parameter {plan.name!r} expects a scalar {plan.dtype}; got {describe(value)}"
            )
        try:
            return plan.convert(value)
        except (OverflowError, ValueError, TypeError) as exc:
            raise ArgumentError(
                f"parameter {plan.name!r} expects a scalar {plan.dtype}; {value!r} does not "
                f"fit ({exc})"
            ) from None

    # -- binding arguments to parameters -------------------------------------------------

    def _arrange(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        params = self.spec.params
        if len(args) > len(params):
            raise ArgumentError(
                f"kernel {self.spec.name!r} takes {len(params)} arguments "
                f"({', '.join(p.name for p in params)}); got {len(args)}"
            )
        slots: list[Any] = list(args) + [_MISSING] * (len(params) - len(args))
        index = self.spec.param_index
        for name, value in kwargs.items():
            position = index.get(name)
            if position is None:
                raise ArgumentError(
                    f"kernel {self.spec.name!r} has no parameter {name!r} "
                    f"(parameters: {', '.join(p.name for p in params)})"
                )
            if slots[position] is not _MISSING:
                raise ArgumentError(
                    f"kernel {self.spec.name!r} got two values for parameter {name!r}"
                )
            slots[position] = value
        if missing := [p.name for p, v in zip(params, slots, strict=True) if v is _MISSING]:
            raise ArgumentError(
                f"kernel {self.spec.name!r} is missing argument"
                f"{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; "
                f"signature: {self.spec.signature()}"
            )
        return tuple(slots)

    # -- error messages (built only when something is wrong) ---------------------------

    def _expected(self, plan: _TensorPlan) -> str:
        return f"a {plan.rank}-d tensor {plan.param.type_text()}"

    def _expected_tensor(self, plan: _TensorPlan, arg: Any) -> ArgumentError:
        return ArgumentError(
            f"parameter {plan.name!r} expects {self._expected(plan)}; got {describe(arg)}"
        )

    def _type_mismatch(self, plan: _TensorPlan, reader: ArrayReader, arg: Any
                       ) -> ArgumentError:
        shape = reader.shape(arg)
        if len(shape) != plan.rank:
            return self._expected_tensor(plan, arg)
        got = reader.dtype(arg)
        got_name = got.name if got is not None else reader.dtype_name(arg)
        hint = ""
        if plan.packed_bits:
            hint = (
                f" ({plan.dtype} is passed packed: give uint8 storage of shape "
                f"{self._packed_shape_text(plan)})"
            )
        return ArgumentError(
            f"parameter {plan.name!r} expects element type {plan.dtype} "
            f"({plan.param.type_text()}); got {got_name} in {describe(arg)}{hint}"
        )

    def _packed_shape_text(self, plan: _TensorPlan) -> str:
        dims = [str(d) for d in plan.param.shape[:-1]]
        last = plan.param.shape[-1]
        bits = plan.packed_bits
        extent = -(-last * bits // 8) if isinstance(last, int) else f"ceil({last}*{bits}/8)"
        return f"({', '.join([*dims, str(extent)])}{',' if not dims else ''})"

    def _packed_mismatch(self, plan: _TensorPlan, n: int, shape: tuple[int, ...]
                         ) -> ArgumentError:
        last = plan.param.shape[-1]
        bits = plan.packed_bits
        expected = (*shape[:-1], -(-n * bits // 8))
        return ArgumentError(
            f"parameter {plan.name!r} ({plan.param.type_text()}) is passed as packed uint8 "
            f"bytes: {last} = {n} {plan.dtype} elements a row take ceil({n}*{bits}/8) = "
            f"{expected[-1]} bytes, so the expected shape is {expected}; got shape "
            f"{tuple(shape)}"
        )

    def _wrong_device(self, plan: _TensorPlan, arg: Any, where: str) -> ArgumentError:
        if self._on_cuda:
            wanted = f"a GPU array (CuPy or PyTorch CUDA); kernel targets {self.spec.target}"
        else:
            wanted = "a CPU array (NumPy or PyTorch CPU); kernel targets cpu"
        return ArgumentError(
            f"parameter {plan.name!r} expects {wanted}; got {describe(arg)}"
            + ("" if " on " in describe(arg) else f" on {where}")
        )

    def _not_contiguous(self, plan: _TensorPlan, reader: ArrayReader, arg: Any
                        ) -> ArgumentError:
        return ArgumentError(
            f"parameter {plan.name!r} expects a C-contiguous {plan.param.type_text()}; got "
            f"{describe(arg)} with strides {tuple(reader.strides(arg))} (in elements); "
            "make it contiguous first (e.g. numpy.ascontiguousarray)"
        )

    def _where_bound(self, sym: int) -> str:
        name = self.spec.symbols[sym]
        param, dim, is_stride = self._binder[name]
        return f"{param!r} ({'stride of ' if is_stride else ''}dim {dim})"

    def _inconsistent(self, plan: _TensorPlan, sym: int, dim: int, got: int,
                      values: list[Any], is_stride: bool) -> ArgumentError:
        name = self.spec.symbols[sym]
        what = "stride" if is_stride else ""
        return ArgumentError(
            f"{name} = {values[sym]} from {self._where_bound(sym)} but {plan.name!r} has "
            f"{got} at {what + ' of ' if what else ''}dim {dim} "
            f"(kernel {self.spec.signature()})"
        )

    def _dim_mismatch(self, plan: _TensorPlan, dim: int, extent: int,
                      shape: tuple[int, ...]) -> ArgumentError:
        return ArgumentError(
            f"parameter {plan.name!r} expects extent {extent} at dim {dim} "
            f"({plan.param.type_text()}); got shape {tuple(shape)}"
        )

    def _stride_mismatch(self, plan: _TensorPlan, dim: int, stride: int,
                         strides: tuple[int, ...]) -> ArgumentError:
        return ArgumentError(
            f"parameter {plan.name!r} expects stride {stride} (elements) at dim {dim}; "
            f"got strides {tuple(strides)}"
        )

    def _wide_kernel(self) -> Kernel:
        if self._wide is None:
            assert self._wide_factory is not None
            self._wide = self._wide_factory()
        return self._wide

    def _too_large_for_32_bits(self, args: tuple[Any, ...], name: str, extent: int) -> None:
        if self._wide_factory is not None:
            return self._wide_kernel()(*args)
        raise ArgumentError(
            f"parameter {name!r} spans {extent} elements, more than kernel "
            f"{self.spec.name!r}'s {self.spec.index_bits}-bit indexing allows "
            f"({self._extent_limit})"
        )

    def _index_overflow(self, values: list[Any]) -> None:
        for sym, value in enumerate(values):
            if value > self._index_limit:
                raise ArgumentError(
                    f"{self.spec.symbols[sym]} = {value} from {self._where_bound(sym)} "
                    f"overflows kernel {self.spec.name!r}'s {self.spec.index_bits}-bit indexing"
                )

    # -- description ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def launcher(self) -> Launcher:
        return self._launcher

    def __repr__(self) -> str:
        return f"<tegula.Kernel {self.spec.signature()} on {self.spec.target}>"


_MISSING = object()


def load_cpu_kernel(spec: KernelSpec, obj: bytes, *, source: str | None = None,
                    threads: int | None = None) -> Kernel:
    """A :class:`Kernel` from CPU object code (as :func:`cpu_jit.compile_llvm_ir` makes)."""
    from .cpu_jit import CpuLauncher, load_object

    return Kernel(spec, CpuLauncher(load_object(obj, spec.name), threads=threads),
                  source=source)


def load_cuda_kernel(spec: KernelSpec, image: bytes | str, *, source: str | None = None
                     ) -> Kernel:
    """A :class:`Kernel` from a cubin (bytes) or PTX (str); the GPU module loads lazily, on
    the first call, on the device of the arrays."""
    from .cuda_launch import CudaLauncher, launch_argument_codes

    launcher = CudaLauncher(image, spec.name, block_threads=spec.block_threads,
                            smem_bytes=spec.smem_bytes,
                            argument_codes=launch_argument_codes(spec))
    return Kernel(spec, launcher, source=source)
