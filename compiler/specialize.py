"""Kernels specialized at call time on the shapes of their arguments.

A kernel whose compile-time params' defaults name size symbols
(``params BN = min(pow2ceil(N), 8192)``) cannot be compiled before its arguments are seen.
:class:`SpecializedKernel` stands in for it: a call reads the symbols it needs from the
arguments' shapes, and runs the variant compiled for the constants they give. Variants are
keyed by constant values, not by shapes (N = 1000 and N = 1024 share BN = 1024), and
compiled through :func:`compile_kernel`, so the disk cache applies to them as to any kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tegula.ir.target import Target
from tegula.runtime.arrays import describe
from tegula.runtime.errors import ArgumentError
from tegula.runtime.kernel import Kernel
from tegula.runtime.spec import KernelSpec

from .constexpr import ConstEvalError, Scalar
from .driver import CompileResult, ProgramSource, compile_kernel, phase_times
from .headers import KernelHeader
from .tuned import TunedConfigs

__all__ = ["SpecializedKernel", "VariantKey"]

VariantKey = tuple[tuple[str, Scalar], ...]  # every compile-time param's (name, value)

# Shapes remembered per kernel; past this many the memo starts over (the variants, which
# are few, stay), so a stream of ever-new shapes cannot grow memory without bound.
_SHAPE_MEMO_LIMIT = 4096

_MISSING = object()


class SpecializedKernel:
    """A kernel compiled per call for constants computed from its arguments' shapes.

    Called like :class:`~tegula.runtime.kernel.Kernel` (positional or keyword arguments).
    ``variants`` maps each compiled variant's constants to its Kernel; ``compile_for(N=...)``
    compiles (or finds) the variant for given symbol values. ``spec`` and ``timings`` are
    those of the variant compiled or chosen most recently, once there is one.
    """

    def __init__(
        self,
        header: KernelHeader,
        source_text: str,
        filename: str,
        target: Target,
        pinned: Mapping[str, Scalar],
        program: ProgramSource,
        *,
        use_cache: bool = True,
        dump_dir: Path | None = None,
        tuned: TunedConfigs | None = None,
    ) -> None:
        self.header = header
        self.target = target
        self.pinned = dict(pinned)
        self.tuned = tuned
        # Tuned configs are recorded per exact shapes, so a tuned kernel reads every symbol.
        readable = {s.symbol for s in header.sources}
        self.symbols = (
            tuple(s for s in header.size_symbols if s in readable)
            if tuned is not None
            else header.specialization_symbols(self.pinned)
        )
        self.variants: dict[VariantKey, Kernel] = {}
        self.results: dict[VariantKey, CompileResult] = {}
        self._source_text = source_text
        self._filename = filename
        self._program = program
        self._use_cache = use_cache
        self._dump_dir = dump_dir
        self._latest: CompileResult | None = None
        by_symbol = {s.symbol: s for s in header.sources}
        if unread := [s for s in self.symbols if s not in by_symbol]:
            raise TypeError(
                f"kernel {header.name}: a compile-time param's default depends on size symbol "
                f"{unread[0]}, which no tensor dim gives (only a stride); set the param"
            )
        # A dim of a tensor typed by a dtype param packs or not by that param's value, fixed
        # for this kernel (pinned, or the default: dtype params are never tuned).
        try:
            dtype_values = header.dtype_values(self.pinned)
        except ConstEvalError as exc:
            # Any sizes will do: the front end finds the dtype that is wrong before any call.
            raise self._explained(exc, dict.fromkeys(header.size_symbols, 1)) from None
        self._sources = tuple(by_symbol[s].resolved(dtype_values) for s in self.symbols)
        # What a call reads: (argument position, dim, element bits of a packed dim or 0).
        self._reads = tuple((s.position, s.dim, s.bits) for s in self._sources)
        self._arity = len(header.params)
        self._by_shape: dict[tuple[int, ...], Kernel] = {}

    # -- the call ------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs or len(args) != self._arity:
            args = self._arrange(args, kwargs)
        try:
            shape = tuple(
                [args[p].shape[d] * 8 // b if b else args[p].shape[d] for p, d, b in self._reads]
            )
        except (AttributeError, IndexError, TypeError):
            raise self._unreadable(args) from None
        kernel = self._by_shape.get(shape)
        if kernel is None:
            kernel = self._kernel_for_shape(shape)
        kernel(*args)

    def _kernel_for_shape(self, shape: tuple[int, ...]) -> Kernel:
        kernel = self.compile_for(**dict(zip(self.symbols, shape, strict=True)))
        if len(self._by_shape) >= _SHAPE_MEMO_LIMIT:
            self._by_shape.clear()
        self._by_shape[shape] = kernel
        return kernel

    def compile_for(self, **symbols: int) -> Kernel:
        """The variant for these size-symbol values (compiled, or loaded from the disk
        cache, the first time its constants are seen)."""
        return self.result_for(**symbols).kernel

    def result_for(self, **symbols: int) -> CompileResult:
        """As :meth:`compile_for`, with everything the compilation produced."""
        missing = [s for s in self.symbols if s not in symbols]
        stray = [s for s in symbols if s not in self.symbols]
        if missing or stray:
            raise TypeError(
                f"kernel {self.name} is specialized on {', '.join(self.symbols)}; "
                + (f"missing {', '.join(missing)}" if missing else f"got {', '.join(stray)}")
            )
        for name, value in symbols.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"size symbol {name} must be an int; got {value!r}")
        constants = self.constants_for(**symbols)
        key: VariantKey = tuple(constants.items())
        result = self.results.get(key)
        if result is None:
            dump = None
            if self._dump_dir is not None:
                dump = self._dump_dir / ",".join(f"{k}={v}" for k, v in key)
            result = compile_kernel(
                self._source_text,
                self._filename,
                self.name,
                self.target,
                constants,
                program=self._program,
                use_cache=self._use_cache,
                dump_dir=dump,
            )
            self.results[key] = result
            self.variants[key] = result.kernel
        self._latest = result
        return result

    def constants_for(self, **symbols: int) -> dict[str, Scalar]:
        """Every compile-time param's value for these size-symbol values: the tuning
        database's best config for exactly these shapes where it has one, else the
        declared defaults."""
        pinned = dict(self.pinned)
        if self.tuned is not None:
            best = self.tuned.config_for(symbols) or {}
            # A dtype param changes what the kernel computes: a record never sets it.
            declared = {p.name for p in self.header.const_params if not p.is_dtype}
            pinned.update({k: v for k, v in best.items() if k in declared and k not in self.pinned})
        try:
            return self.header.constants_for(symbols, pinned, self.target.constants())
        except ConstEvalError as exc:
            raise self._explained(exc, symbols) from None

    def _explained(self, exc: ConstEvalError, symbols: Mapping[str, int]) -> Exception:
        """The front end's error for what ``exc`` found (it says what is wrong, at the
        source: parse to let it), else ``exc`` as a TypeError."""
        from .frontend import build_tile_kernel

        program = self._program() if callable(self._program) else self._program
        build_tile_kernel(program, self.name, self.pinned, symbols, self.target.constants())
        return TypeError(f"kernel {self.name}: {exc}")

    # -- arguments -----------------------------------------------------------------------

    def _arrange(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        params = self.header.params
        if len(args) > len(params):
            raise ArgumentError(
                f"kernel {self.name!r} takes {len(params)} arguments "
                f"({', '.join(params)}); got {len(args)}"
            )
        slots: list[Any] = [*args, *[_MISSING] * (len(params) - len(args))]
        for name, value in kwargs.items():
            if name not in params:
                raise ArgumentError(
                    f"kernel {self.name!r} has no parameter {name!r} "
                    f"(parameters: {', '.join(params)})"
                )
            position = params.index(name)
            if slots[position] is not _MISSING:
                raise ArgumentError(f"kernel {self.name!r} got two values for parameter {name!r}")
            slots[position] = value
        if missing := [p for p, v in zip(params, slots, strict=True) if v is _MISSING]:
            raise ArgumentError(
                f"kernel {self.name!r} is missing argument{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(repr, missing))}"
            )
        return tuple(slots)

    def _unreadable(self, args: tuple[Any, ...]) -> ArgumentError:
        for s in self._sources:
            arg = args[s.position]
            shape = getattr(arg, "shape", None)
            if not isinstance(shape, tuple | list):  # torch.Size is a tuple
                break
            if len(shape) <= s.dim:
                break
        return ArgumentError(
            f"parameter {s.param!r} expects a tensor {s.type_text} (its dim {s.dim} gives "
            f"{s.symbol}, which kernel {self.name!r} is specialized on); got {describe(arg)}"
        )

    # -- description ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.header.name

    @property
    def spec(self) -> KernelSpec:
        if self._latest is None:
            raise AttributeError(
                f"kernel {self.name!r} is specialized on {', '.join(self.symbols)} at call "
                "time and has no spec until a first call (or compile_for)"
            )
        return self._latest.spec

    @property
    def source(self) -> str | None:
        """The generated code of the latest variant (None before any)."""
        return self._latest.source if self._latest is not None else None

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per compile phase of the latest variant (empty before any)."""
        return phase_times(self._latest.timings) if self._latest is not None else {}

    def __repr__(self) -> str:
        count = len(self.variants)
        return (
            f"<tegula.SpecializedKernel {self.name}({', '.join(self.header.params)}) on "
            f"{self.target}, constants from {', '.join(self.symbols)}: "
            f"{count} variant{'s' if count != 1 else ''}>"
        )
