"""What a kernel's header says, as plain JSON-able values.

Everything that ``tg.compile`` and a call-time specialized kernel need to know about a
kernel without its body: its parameters, its compile-time params (their defaults and
candidates in the JSON form of :mod:`constexpr`, and which size symbols and other params
each depends on), and where each size symbol is read from the arguments. A
:class:`ModuleIndex` holds the headers of one source file; it is cached on disk, so a warm
``tg.compile`` never parses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from tegula.ir import dtypes
from tegula.ir.target import cpu_target

from . import constexpr as cx
from . import syntax as ast
from .constexpr import ConstEvalError, ConstJSON, Scalar

__all__ = [
    "ConstParamInfo",
    "IndexFormatError",
    "KernelHeader",
    "ModuleIndex",
    "SymbolSource",
    "declares_dtype",
    "kernel_header",
]

INDEX_FORMAT = 3


class IndexFormatError(ValueError):
    """A module index read back from the cache does not have the expected shape."""


@dataclass(frozen=True)
class ConstParamInfo:
    """One compile-time param: default and candidates (JSON form; None where the text is
    not a constant expression, which the front end reports), and the size symbols and
    earlier params they name."""

    name: str
    default: ConstJSON | None
    candidates: tuple[ConstJSON | None, ...]
    symbols: tuple[str, ...]
    params: tuple[str, ...]

    @property
    def is_dtype(self) -> bool:
        """Whether the param's value is a dtype (its default, or first candidate, is one:
        the front end checks that the rest agree)."""
        first = self.default if self.default is not None else next(iter(self.candidates), None)
        return first is not None and first[:1] == ["dtype"]


@dataclass(frozen=True)
class SymbolSource:
    """Size symbol ``symbol`` is ``shape[dim]`` of argument ``position`` (``param``), or, when
    ``bits`` is set, the number of ``bits``-wide elements the ``shape[dim]`` bytes of a packed
    sub-byte tensor's last dim hold (``floor(8 * bytes / bits)``, docs/quantization.md).

    When the tensor's element type is a dtype param (``w: WT[K, N]``), ``dtype_param`` names
    it and the last dim's ``bits`` are known only once its value is: :meth:`resolved` gives
    the source for that value."""

    symbol: str
    param: str
    position: int
    dim: int
    bits: int  # 0: an ordinary dim
    type_text: str  # the parameter's declared type, for messages: "f32[M, N]"
    dtype_param: str = ""  # the dtype param naming the element type of a last dim, if any

    @property
    def may_pack(self) -> bool:
        """Whether the dim may count packed bytes (and give the symbol only up to padding)."""
        return bool(self.bits or self.dtype_param)

    def resolved(self, constants: Mapping[str, Scalar]) -> SymbolSource:
        """This source with ``bits`` set from the dtype param's value in ``constants``."""
        if not self.dtype_param:
            return self
        value = constants[self.dtype_param]
        assert isinstance(value, str), f"{self.dtype_param} is not a dtype: {value!r}"
        return dataclasses.replace(self, bits=_packed_bits(value), dtype_param="")


@dataclass(frozen=True)
class KernelHeader:
    name: str
    params: tuple[str, ...]
    const_params: tuple[ConstParamInfo, ...]
    size_symbols: tuple[str, ...]
    sources: tuple[SymbolSource, ...]
    kernel_hash: str = ""  # sha256 of the kernel's own text: what tuning records are keyed by
    dtypes: tuple[tuple[str, str], ...] = ()  # (param, dtype) in header order

    @property
    def declared(self) -> tuple[str, ...]:
        """The names of the compile-time params, in order."""
        return tuple(p.name for p in self.const_params)

    def specialization_symbols(self, pinned: Collection[str] = ()) -> tuple[str, ...]:
        """The size symbols the params' defaults depend on (directly or through earlier
        params), leaving out the params in ``pinned``; in header order."""
        needs: dict[str, set[str]] = {}
        for p in self.const_params:
            if p.name in pinned:
                needs[p.name] = set()
                continue
            found = set(p.symbols)
            for q in p.params:
                found |= needs.get(q, set())
            needs[p.name] = found
        used = set().union(*needs.values()) if needs else set()
        return tuple(s for s in self.size_symbols if s in used)

    def dtype_values(self, pinned: Mapping[str, Scalar]) -> dict[str, str]:
        """Each dtype param's value: ``pinned``'s, else its default (a dtype name, which
        depends on no size symbol, so it is known before any call). Raises
        :class:`ConstEvalError` for a pinned value that is not one of its candidates (the
        front end then says so, at the source)."""
        values: dict[str, str] = {}
        for p in self.const_params:
            if not p.is_dtype:
                continue
            cands = tuple(cx.evaluate_json(c, {}) for c in p.candidates if c is not None)
            value = pinned[p.name] if p.name in pinned else cx.evaluate_json(
                p.default if p.default is not None else p.candidates[0], {}
            )
            if not isinstance(value, str) or (cands and value not in cands):
                raise ConstEvalError(f"{p.name} is a dtype among {cands}; got {value!r}")
            values[p.name] = value
        return values

    def constants_for(
        self,
        symbols: Mapping[str, int],
        pinned: Mapping[str, Scalar],
        target: Mapping[str, Scalar] | None = None,
    ) -> dict[str, Scalar]:
        """Every compile-time param's value: ``pinned`` ones as given, the others from
        their defaults over ``symbols`` and the ``target``'s constants (``CUDA``, ``SM``).
        Raises :class:`ConstEvalError` where a default has no value (the front end then
        says why, at the source)."""
        values: dict[str, Scalar] = {}
        base = dict(target) if target is not None else cpu_target().constants()
        for p in self.const_params:
            if p.name in pinned:
                values[p.name] = pinned[p.name]
                continue
            env = {**base, **symbols, **values}
            if any(c is None for c in p.candidates) or (p.default is None and not p.candidates):
                raise ConstEvalError(f"{p.name} has a candidate that is not constant")
            cands = tuple(cx.evaluate_json(c, env) for c in p.candidates)
            value = cx.evaluate_json(p.default, env) if p.default is not None else cands[0]
            if cands and value not in cands:
                raise ConstEvalError(f"the default {value!r} of {p.name} is not a candidate")
            values[p.name] = value
        return values

    # -- JSON

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": list(self.params),
            "const_params": [
                {
                    "name": p.name,
                    "default": p.default,
                    "candidates": list(p.candidates),
                    "symbols": list(p.symbols),
                    "params": list(p.params),
                }
                for p in self.const_params
            ],
            "size_symbols": list(self.size_symbols),
            "sources": [
                [s.symbol, s.param, s.position, s.dim, s.bits, s.type_text, s.dtype_param]
                for s in self.sources
            ],
            "kernel_hash": self.kernel_hash,
            "dtypes": [list(pair) for pair in self.dtypes],
        }

    @classmethod
    def from_dict(cls, data: Any) -> KernelHeader:
        """The header ``data`` describes; :class:`IndexFormatError` if it is malformed."""
        try:
            consts = tuple(
                ConstParamInfo(
                    _str(c["name"]),
                    _expr(c["default"]),
                    tuple(_expr(e) for e in _list(c["candidates"])),
                    _strs(c["symbols"]),
                    _strs(c["params"]),
                )
                for c in _list(data["const_params"])
            )
            sources = []
            for entry in _list(data["sources"]):
                symbol, param, position, dim, bits, type_text, dtype_param = _list(entry)
                sources.append(
                    SymbolSource(
                        _str(symbol), _str(param), _int(position), _int(dim), _int(bits),
                        _str(type_text), _str(dtype_param),
                    )
                )
            header = cls(
                _str(data["name"]),
                _strs(data["params"]),
                consts,
                _strs(data["size_symbols"]),
                tuple(sources),
                _str(data["kernel_hash"]),
                tuple((_str(a), _str(b)) for a, b in _list(data["dtypes"])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"malformed kernel header: {exc!r}") from None
        for s in header.sources:
            if not 0 <= s.position < len(header.params) or header.params[s.position] != s.param:
                raise IndexFormatError(f"symbol {s.symbol} names a parameter out of place")
            if s.dtype_param and s.dtype_param not in header.declared:
                raise IndexFormatError(f"symbol {s.symbol} names no dtype param")
        return header


@dataclass(frozen=True)
class ModuleIndex:
    """The headers of every kernel of one source file, in order."""

    kernels: tuple[KernelHeader, ...]

    @classmethod
    def from_program(cls, program: ast.Program) -> ModuleIndex:
        return cls(tuple(kernel_header(k) for k in program.kernels))

    def kernel(self, name: str) -> KernelHeader | None:
        return next((k for k in self.kernels if k.name == name), None)

    def to_json(self) -> str:
        return json.dumps(
            {"format": INDEX_FORMAT, "kernels": [k.to_dict() for k in self.kernels]},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ModuleIndex:
        """Parse and check an index; :class:`IndexFormatError` when it is not one."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise IndexFormatError(f"module index is not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
            raise IndexFormatError("module index has another format")
        kernels = data.get("kernels")
        if not isinstance(kernels, list):
            raise IndexFormatError("module index has no kernel list")
        return cls(tuple(KernelHeader.from_dict(k) for k in kernels))


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {v!r}")
    return v


def _int(v: Any) -> int:
    if not cx.is_int(v) or v < 0:
        raise TypeError(f"expected a non-negative int, got {v!r}")
    return int(v)


def _list(v: Any) -> list[Any]:
    if not isinstance(v, list):
        raise TypeError(f"expected a list, got {v!r}")
    return v


def _strs(v: Any) -> tuple[str, ...]:
    return tuple(_str(x) for x in _list(v))


def _expr(v: Any) -> ConstJSON | None:
    if v is not None and not isinstance(v, list):
        raise TypeError(f"expected an expression, got {v!r}")
    return v


# ----------------------------------------------------------------------------- from the AST


def kernel_header(kernel: ast.KernelDef) -> KernelHeader:
    """``kernel``'s header as values (no checking: the front end reports mistakes)."""
    declared = {c.name for c in kernel.const_params}
    dtype_params = {c.name for c in kernel.const_params if declares_dtype(c)}
    scalars = {p.name for p in kernel.params if p.shape is None}
    symbols: list[str] = []
    sources: dict[str, SymbolSource] = {}
    for position, p in enumerate(kernel.params):
        for dim, d in enumerate(p.shape or ()):
            if isinstance(d.value, str) and d.value not in declared | scalars:
                if d.value not in symbols:
                    symbols.append(d.value)
                last = dim == len(p.shape or ()) - 1
                typed = last and p.dtype in dtype_params
                source = SymbolSource(
                    d.value, p.name, position, dim, _packed_bits(p.dtype) if last else 0,
                    _type_text(p), p.dtype if typed else "",
                )
                # An ordinary dim gives the exact value; a packed one only up to padding, and
                # one whose type is a param may be either (which is preferred to one sure
                # to be packed).
                known = sources.get(d.value)
                if known is None or _rank(source) < _rank(known):
                    sources[d.value] = source
        for d in p.strides or ():
            if isinstance(d.value, str) and d.value not in declared | scalars | set(symbols):
                symbols.append(d.value)
    infos: list[ConstParamInfo] = []
    earlier: set[str] = set()
    for c in kernel.const_params:
        names: set[str] = set()
        for e in (c.default, *c.candidates):
            if e is not None:
                names |= cx.names_in(e)
        infos.append(
            ConstParamInfo(
                c.name,
                cx.to_json(c.default) if c.default is not None else None,
                tuple(cx.to_json(e) for e in c.candidates),
                tuple(s for s in symbols if s in names),
                tuple(sorted(names & earlier)),
            )
        )
        earlier.add(c.name)
    return KernelHeader(
        kernel.name,
        tuple(p.name for p in kernel.params),
        tuple(infos),
        tuple(symbols),
        tuple(sources[s] for s in symbols if s in sources),
        kernel_text_hash(kernel),
        tuple((p.name, p.dtype) for p in kernel.params),
    )


def _rank(source: SymbolSource) -> int:
    """How exactly ``source`` gives its symbol: 0 exactly, 1 maybe padded, 2 padded."""
    return 2 if source.bits else 1 if source.dtype_param else 0


def declares_dtype(decl: ast.ConstParamDecl) -> bool:
    """Whether ``decl``'s value is a dtype, judged as :attr:`ConstParamInfo.is_dtype` does
    (the front end reports a param whose default and candidates disagree)."""
    first = decl.default if decl.default is not None else next(iter(decl.candidates), None)
    return first is not None and (cx.to_json(first) or [])[:1] == ["dtype"]


def kernel_text_hash(kernel: ast.KernelDef) -> str:
    """sha256 of the kernel's own lines: edits elsewhere in its file do not change it, so
    tuning records survive them."""
    lines = kernel.source.text.splitlines()[kernel.span.line - 1 : kernel.span.end_line]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _packed_bits(dtype_name: str) -> int:
    """The element width when ``dtype_name`` travels packed (sub-byte types), else 0."""
    if not dtypes.is_dtype_name(dtype_name):
        return 0
    dt = dtypes.dtype(dtype_name)
    return dt.bits if dt.is_subbyte else 0


def _type_text(p: ast.ParamDecl) -> str:
    dims = ", ".join(str(d.value) for d in p.shape or ())
    return f"{p.dtype}[{dims}]"
