"""The search space of one kernel at one set of shapes, and what makes a point legal.

The space is the product of the candidates each tunable compile-time param declares
(``params BM in (32, 64, 128)``); params with a single value are fixed, and so are dtype
params (``params WT = i4 in (i2, i4)``), at the value the compile sets: they change what
the kernel computes, not how fast. Two kinds of rule prune it:

* **before anything is built** (:meth:`SearchSpace.from_kernel`): a ``warps`` count that
  gives more threads than the target allows, and a tile that only adds padding — a window
  size candidate larger than another candidate that already covers its whole dim at the
  shapes at hand (the smaller tile does the same work with fewer masked lanes);
* **after lowering, before code generation** (:func:`legality`): shared memory, threads per
  block and an estimate of registers per thread against the target's budgets.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from tegula.compiler import syntax as ast
from tegula.compiler.constexpr import Scalar
from tegula.compiler.frontend import dtype_params, param_defaults, param_space
from tegula.ir.loop import LoopKernel, Scope
from tegula.ir.target import Target
from tegula.passes.analysis.register_pressure import peak_local_words

Config = dict[str, Scalar]

# A thread may hold this many 32-bit words of local buffers live at once before the register
# estimate (:func:`~tegula.passes.analysis.register_pressure.peak_local_words`) calls the
# point illegal on CUDA: 255 registers, with room for the copies ptxas folds (a carried
# accumulator and its next value share registers) and the spills it handles well. Past it a
# candidate spills so much that measuring it is a waste of a trial.
MAX_LOCAL_WORDS_PER_THREAD = 2 * 255


def config_key(config: Mapping[str, Any]) -> str:
    """The canonical text of a config: JSON with sorted keys and no spaces."""
    return json.dumps(dict(config), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class SearchSpace:
    """The legal points of one kernel's tunable params at fixed shapes.

    ``params`` lists each tunable param with the candidates that survived pruning, in
    declaration order; ``fixed`` the params with one value; ``pruned`` says, for each
    candidate removed before building, why.
    """

    kernel: str
    params: tuple[tuple[str, tuple[Scalar, ...]], ...]
    fixed: tuple[tuple[str, Scalar], ...] = ()
    pruned: tuple[str, ...] = ()

    @classmethod
    def from_kernel(
        cls,
        kernel: ast.KernelDef,
        shapes: Mapping[str, int],
        target: Target,
        constants: Mapping[str, Scalar] | None = None,
    ) -> SearchSpace:
        """The space at ``shapes``; ``constants`` sets dtype params (else their defaults)."""
        declared = param_space(kernel, shapes)
        covering = _window_params(kernel)
        params: list[tuple[str, tuple[Scalar, ...]]] = []
        fixed: list[tuple[str, Scalar]] = list(dtype_params(kernel, constants).items())
        pruned: list[str] = []
        for name, candidates in declared.items():
            kept = list(candidates)
            if target.is_cuda and _is_warps_param(kernel, name):
                limit = target.max_block_threads // target.warp_size
                pruned += [f"{name}={v}: {v} warps > {limit}" for v in kept if v > limit]
                kept = [v for v in kept if v <= limit]
            extents = [shapes[s] for s in covering.get(name, ()) if s in shapes]
            if extents and all(isinstance(v, int) for v in kept):
                need = max(extents)
                covers = sorted(v for v in kept if v >= need)
                if len(covers) > 1:
                    pruned += [f"{name}={v}: {covers[0]} already covers {need}" for v in covers[1:]]
                    kept = [v for v in kept if v < need or v == covers[0]]
            if not kept:
                raise ValueError(f"kernel {kernel.name}: no candidate of {name} is legal "
                                 f"on {target} ({'; '.join(pruned)})")
            if len(kept) == 1:
                fixed.append((name, kept[0]))
            else:
                params.append((name, tuple(kept)))
        return cls(kernel.name, tuple(params), tuple(fixed), tuple(pruned))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.params)

    @property
    def size(self) -> int:
        return math.prod(len(c) for _, c in self.params)

    def complete(self, point: Mapping[str, Scalar]) -> Config:
        """``point`` with the fixed params added: the constants to compile with."""
        return {**dict(self.fixed), **point}

    def default(self) -> Config:
        """The first candidate of every param (the header's default when it is the first)."""
        return {name: c[0] for name, c in self.params}

    def declared(self, kernel: ast.KernelDef, shapes: Mapping[str, int],
                 target: Target) -> Config | None:
        """The point a compile that sets nothing builds at ``shapes`` on ``target`` (the
        header's defaults), or None where it is not a point of this space (a default
        outside its own candidates, or pruned)."""
        values = param_defaults(kernel, shapes, target.constants())
        point = {name: values[name] for name in self.names if name in values}
        return point if self.contains(point) else None

    def configs(self) -> Iterator[Config]:
        """Every point, in declaration order (the last param fastest)."""
        names = self.names
        for values in itertools.product(*(c for _, c in self.params)):
            yield dict(zip(names, values, strict=True))

    def contains(self, config: Mapping[str, Any]) -> bool:
        return set(config) == set(self.names) and all(
            config[name] in cands for name, cands in self.params
        )

    def sample(self, rng: np.random.Generator) -> Config:
        return {name: c[int(rng.integers(len(c)))] for name, c in self.params}

    def neighbor(self, config: Mapping[str, Scalar], rng: np.random.Generator) -> Config:
        """``config`` with one param moved to an adjacent candidate (its list order)."""
        if not self.params:
            return dict(config)
        out = dict(config)
        name, cands = self.params[int(rng.integers(len(self.params)))]
        i = cands.index(out[name])
        steps = [j for j in (i - 1, i + 1) if 0 <= j < len(cands)]
        out[name] = cands[steps[int(rng.integers(len(steps)))]] if steps else cands[i]
        return out


def legality(loop: LoopKernel, target: Target) -> str | None:
    """Why the lowered kernel cannot run well on ``target`` (None when it can)."""
    if loop.smem_bytes > target.max_smem_bytes:
        return f"shared memory {loop.smem_bytes} B > {target.max_smem_bytes} B"
    if loop.block_threads > target.max_block_threads:
        return f"{loop.block_threads} threads per block > {target.max_block_threads}"
    if target.is_cuda:
        words = peak_local_words(loop)
        if words > MAX_LOCAL_WORDS_PER_THREAD:
            return (f"about {words} 32-bit words of local buffers live at once per thread "
                    f"> {MAX_LOCAL_WORDS_PER_THREAD}")
    return None


def local_words_per_thread(loop: LoopKernel) -> int:
    """32-bit words of every local buffer one thread declares, live or not (a model
    feature; legality uses the live-range peak)."""
    return sum(
        (b.size or 0) * max(1, b.dtype.bits // 32)
        for b in loop.buffers
        if b.scope is Scope.LOCAL
    )


# ----------------------------------------------------------------------------- header scans


def _is_warps_param(kernel: ast.KernelDef, name: str) -> bool:
    return isinstance(kernel.warps, ast.Name) and kernel.warps.id == name


def _window_params(kernel: ast.KernelDef) -> dict[str, set[str]]:
    """Param → the size symbols of the tensor dims it is the window size of (``x[i : +P]``)."""
    dims = {p.name: tuple(d.value for d in p.shape or ()) for p in kernel.params}
    declared = {c.name for c in kernel.const_params}
    found: dict[str, set[str]] = {}
    for node in _walk(kernel.body):
        if not (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)):
            continue
        shape = dims.get(node.value.id)
        if shape is None or len(shape) != len(node.items):
            continue
        for item, dim in zip(node.items, shape, strict=True):
            if (isinstance(item, ast.SizedSlice) and isinstance(item.size, ast.Name)
                    and item.size.id in declared and isinstance(dim, str)):
                found.setdefault(item.size.id, set()).add(dim)
    return found


def _walk(node: Any) -> Iterator[Any]:
    """Every syntax node under ``node`` (the AST is made of frozen dataclasses and tuples)."""
    if isinstance(node, tuple):
        for item in node:
            yield from _walk(item)
        return
    if not dataclasses.is_dataclass(node) or isinstance(node, ast.Span | ast.SourceText):
        return
    yield node
    for f in dataclasses.fields(node):
        yield from _walk(getattr(node, f.name))
