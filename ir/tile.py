"""Tile IR: what one thread block computes, in typed SSA values that are whole tiles.

A :class:`TileKernel` holds a :class:`Block` of operations. Every value is a :class:`Value`
with a type: a global :class:`TensorType` (kernel parameters), or a :class:`TileType` — a
fixed-shape array with a dtype, a memory :class:`MemScope` and a layout. A tile of shape
``()`` is a scalar, uniform across the block. Register tiles are spread over the block's
threads by their layout (``ir/distributed.py``); shared tiles are placed in shared memory by a
``Layout``/``SwizzledLayout`` from the layout algebra. Layouts start open (``None``); layout
inference fills every one in.

Structured control flow follows MLIR's ``scf``: a :class:`ForOp` carries loop values
(``iter_args``) and its body ends in a :class:`YieldOp`; so does each branch of an
:class:`IfOp` that produces values. Operations are immutable; passes build new ones
(``dataclasses.replace``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .dtypes import DType

# ----------------------------------------------------------------------------- source places


@dataclass(frozen=True)
class SourceLoc:
    """A place in DSL source: 1-based line and column, and the source line's text."""

    file: str
    line: int
    column: int
    text: str = ""
    end_column: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


# ----------------------------------------------------------------------------- types


class MemScope(Enum):
    REGISTER = "register"
    SHARED = "shared"


Dim = int | str  # a fixed extent, or the name of a size symbol bound at call time


@dataclass(frozen=True)
class TensorType:
    """A global-memory tensor parameter: dtype, shape, strides (``None``: C-contiguous)."""

    dtype: DType
    shape: tuple[Dim, ...]
    strides: tuple[Dim, ...] | None = None

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        s = f"{self.dtype}[{dims}]"
        if self.strides is not None:
            s += " strides(" + ", ".join(str(d) for d in self.strides) + ")"
        return s


@dataclass(frozen=True)
class TileType:
    """A tile: ``shape`` (static), ``dtype``, ``scope`` and ``layout`` (``None`` until inferred).

    For register tiles ``layout`` is a register layout from ``ir/distributed.py``; for
    shared tiles it is a layout-algebra function from the row-major element index to the
    shared-memory element offset.
    """

    dtype: DType
    shape: tuple[int, ...]
    scope: MemScope = MemScope.REGISTER
    layout: Any = None

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def is_scalar(self) -> bool:
        return not self.shape

    def with_layout(self, layout: Any) -> TileType:
        return TileType(self.dtype, self.shape, self.scope, layout)

    def with_dtype(self, dtype: DType) -> TileType:
        return TileType(dtype, self.shape, self.scope, self.layout)

    def __str__(self) -> str:
        if self.is_scalar:
            return str(self.dtype)
        s = f"{self.dtype}[{', '.join(map(str, self.shape))}]"
        if self.scope is MemScope.SHARED:
            s = "shared " + s
        if self.layout is not None:
            s += f" #{self.layout}"
        return s


Type = TensorType | TileType


@dataclass(frozen=True)
class Value:
    """An SSA value. ``name`` is unique within its kernel; identity is the name."""

    name: str
    type: Type

    def __str__(self) -> str:
        return f"%{self.name}"

    @property
    def tile(self) -> TileType:
        assert isinstance(self.type, TileType), f"{self} is not a tile"
        return self.type


# ----------------------------------------------------------------------------- operations


@dataclass(frozen=True, kw_only=True)
class Op:
    """Base of all operations. ``results`` are the values it defines."""

    results: tuple[Value, ...] = ()
    loc: SourceLoc | None = None

    # Names of dataclass fields that hold operand Values (single or tuples, None allowed).
    operand_fields: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    @property
    def result(self) -> Value:
        assert len(self.results) == 1, f"{type(self).__name__} has {len(self.results)} results"
        return self.results[0]

    def operands(self) -> tuple[Value, ...]:
        out: list[Value] = []
        for name in self.operand_fields:
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, tuple):
                out.extend(x for x in v if x is not None)
            else:
                out.append(v)
        return tuple(out)

    def blocks(self) -> tuple[Block, ...]:
        return ()

    @property
    def opname(self) -> str:
        return _OPNAMES[type(self)]


def _operands(*names: str) -> Any:
    return field(default=names, init=False, repr=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class FullOp(Op):
    """A tile (or scalar) with every element ``value``."""

    value: int | float | bool


@dataclass(frozen=True, kw_only=True)
class ArangeOp(Op):
    """``[0, 1, …, n-1]`` as a 1-D i32 tile (n is the result's shape)."""


@dataclass(frozen=True, kw_only=True)
class BlockIndexOp(Op):
    """The block's index along grid axis 0/1/2 (``bid.x``/``.y``/``.z``), an i32 scalar."""

    axis: int


@dataclass(frozen=True, kw_only=True)
class ThreadIndexOp(Op):
    """The thread's index in its block (``tid``) — for kernels that want it explicitly."""


class ElementwiseKind(Enum):
    UNARY = 1
    BINARY = 2
    TERNARY = 3


UNARY_OPS = frozenset(
    [
        "neg",
        "not",
        "bitnot",
        "abs",
        "exp",
        "exp2",
        "log",
        "log2",
        "sqrt",
        "rsqrt",
        "tanh",
        "erf",
        "sin",
        "cos",
        "floor",
        "ceil",
    ]
)
BINARY_OPS = frozenset(
    [
        "add",
        "sub",
        "mul",
        "div",
        "floordiv",
        "mod",
        "min",
        "max",
        "pow",
        "lt",
        "le",
        "gt",
        "ge",
        "eq",
        "ne",
        "and",
        "or",
        "bitand",
        "bitor",
        "bitxor",
        "shl",
        "shr",
    ]
)
COMPARISON_OPS = frozenset(["lt", "le", "gt", "ge", "eq", "ne"])
FLOAT_ONLY_OPS = frozenset(
    ["exp", "exp2", "log", "log2", "sqrt", "rsqrt", "tanh", "erf", "sin", "cos", "floor", "ceil"]
)
INT_ONLY_OPS = frozenset(["bitand", "bitor", "bitxor", "shl", "shr", "bitnot"])


@dataclass(frozen=True, kw_only=True)
class ElementwiseOp(Op):
    """``fn`` applied element by element. Operands have exactly the result's shape.

    ``fn`` is one of UNARY_OPS, BINARY_OPS, or ``where`` (condition, if-true, if-false).
    Broadcasting has been made explicit with :class:`BroadcastOp` by the front end.
    """

    fn: str
    args: tuple[Value, ...]
    operand_fields: tuple[str, ...] = _operands("args")


@dataclass(frozen=True, kw_only=True)
class CastOp(Op):
    source: Value
    operand_fields: tuple[str, ...] = _operands("source")


@dataclass(frozen=True, kw_only=True)
class BroadcastOp(Op):
    """Repeat ``source`` along its size-1 dims (everywhere, for a scalar) to the result shape."""

    source: Value
    operand_fields: tuple[str, ...] = _operands("source")


@dataclass(frozen=True, kw_only=True)
class ExpandDimsOp(Op):
    """Insert a size-1 dim at ``axis``."""

    source: Value
    axis: int
    operand_fields: tuple[str, ...] = _operands("source")


class ReduceKind(Enum):
    SUM = "sum"
    MAX = "max"
    MIN = "min"


@dataclass(frozen=True, kw_only=True)
class ReduceOp(Op):
    """Combine ``source`` along ``axis`` with ``kind``; the axis is dropped from the shape.

    ``exact_type``: the accumulators are of the result's type itself (``sum(x, dtype=f16)``);
    otherwise f16/bf16 values are combined in f32 and the result rounded once."""

    source: Value
    axis: int
    kind: ReduceKind
    exact_type: bool = False
    operand_fields: tuple[str, ...] = _operands("source")


@dataclass(frozen=True, kw_only=True)
class TransposeOp(Op):
    """Permute dims (register or shared tile); a change of layout, no data movement."""

    source: Value
    perm: tuple[int, ...]
    operand_fields: tuple[str, ...] = _operands("source")


@dataclass(frozen=True, kw_only=True)
class SliceSpec:
    """A window of a global tensor: per dim a start (scalar Value) and a static size.

    ``squeeze[d]`` drops dim d from the tile (an integer index rather than a slice).
    """

    starts: tuple[Value, ...]
    sizes: tuple[int, ...]
    squeeze: tuple[bool, ...]

    @property
    def tile_shape(self) -> tuple[int, ...]:
        return tuple(s for s, q in zip(self.sizes, self.squeeze, strict=True) if not q)


@dataclass(frozen=True, kw_only=True)
class LoadOp(Op):
    """Read a window of global ``tensor`` into a register tile.

    Elements outside the tensor's bounds, or where ``mask`` is false, are not read and take
    ``other`` (a scalar; zero when absent).
    """

    tensor: Value
    window: SliceSpec
    mask: Value | None = None
    other: Value | None = None
    operand_fields: tuple[str, ...] = _operands("tensor", "mask", "other")

    def operands(self) -> tuple[Value, ...]:
        return super().operands() + self.window.starts


@dataclass(frozen=True, kw_only=True)
class StoreOp(Op):
    """Write register tile ``value`` to a window of global ``tensor``.

    Elements outside the tensor's bounds, or where ``mask`` is false, are not written.
    """

    tensor: Value
    window: SliceSpec
    value: Value
    mask: Value | None = None
    operand_fields: tuple[str, ...] = _operands("tensor", "value", "mask")

    def operands(self) -> tuple[Value, ...]:
        return super().operands() + self.window.starts


@dataclass(frozen=True, kw_only=True)
class AtomicAddOp(Op):
    """``tensor[window] += value`` atomically (element by element)."""

    tensor: Value
    window: SliceSpec
    value: Value
    mask: Value | None = None
    operand_fields: tuple[str, ...] = _operands("tensor", "value", "mask")

    def operands(self) -> tuple[Value, ...]:
        return super().operands() + self.window.starts


@dataclass(frozen=True, kw_only=True)
class ToSharedOp(Op):
    """Place a register tile in shared memory (the result is a shared tile)."""

    source: Value
    operand_fields: tuple[str, ...] = _operands("source")


@dataclass(frozen=True, kw_only=True)
class FromSharedOp(Op):
    """Read a shared tile into a register tile."""

    source: Value
    operand_fields: tuple[str, ...] = _operands("source")


@dataclass(frozen=True, kw_only=True)
class DotOp(Op):
    """``a @ b + acc`` for tiles ``a: [M, K]``, ``b: [K, N]``, ``acc: [M, N]``."""

    a: Value
    b: Value
    acc: Value
    operand_fields: tuple[str, ...] = _operands("a", "b", "acc")


@dataclass(frozen=True, kw_only=True)
class ConvertLayoutOp(Op):
    """The same tile in another layout (the result's). Inserted by layout inference, or
    written by the user to pin a layout (``pinned``: inference must not change it)."""

    source: Value
    pinned: bool = False
    operand_fields: tuple[str, ...] = _operands("source")


@dataclass(frozen=True, kw_only=True)
class YieldOp(Op):
    """Ends a loop body or branch, giving the values it produces."""

    values: tuple[Value, ...] = ()
    operand_fields: tuple[str, ...] = _operands("values")


@dataclass(frozen=True)
class Block:
    """A sequence of operations with block arguments (loop variable and loop-carried values)."""

    args: tuple[Value, ...]
    ops: tuple[Op, ...]

    @property
    def terminator(self) -> YieldOp | None:
        return self.ops[-1] if self.ops and isinstance(self.ops[-1], YieldOp) else None


@dataclass(frozen=True, kw_only=True)
class ForOp(Op):
    """``for i in range(start, stop, step)`` carrying ``inits`` through the body.

    ``body.args`` are the induction variable then one value per loop-carried value; the
    body ends with a YieldOp of the next values; ``results`` are the final values.
    ``pipeline_stages`` > 1 asks the pipeliner to overlap loads with compute;
    ``pipeline_tma`` asks it to fill tensor-core operand rings by TMA where the target has it;
    ``pipeline_warp_specialize`` asks for those copies from a producer warp of their own.
    """

    start: Value
    stop: Value
    step: Value
    inits: tuple[Value, ...]
    body: Block
    pipeline_stages: int = 1
    pipeline_tma: bool = False
    pipeline_warp_specialize: bool = False
    operand_fields: tuple[str, ...] = _operands("start", "stop", "step", "inits")

    def blocks(self) -> tuple[Block, ...]:
        return (self.body,)


@dataclass(frozen=True, kw_only=True)
class IfOp(Op):
    """``if cond`` (a bool scalar) with ``then``/``otherwise`` blocks yielding ``results``."""

    cond: Value
    then: Block
    otherwise: Block
    operand_fields: tuple[str, ...] = _operands("cond")

    def blocks(self) -> tuple[Block, ...]:
        return (self.then, self.otherwise)


_OPNAMES: dict[type, str] = {
    FullOp: "full",
    ArangeOp: "arange",
    BlockIndexOp: "block_index",
    ThreadIndexOp: "thread_index",
    ElementwiseOp: "elementwise",
    CastOp: "cast",
    BroadcastOp: "broadcast",
    ExpandDimsOp: "expand_dims",
    ReduceOp: "reduce",
    TransposeOp: "transpose",
    LoadOp: "load",
    StoreOp: "store",
    AtomicAddOp: "atomic_add",
    ToSharedOp: "to_shared",
    FromSharedOp: "from_shared",
    DotOp: "dot",
    ConvertLayoutOp: "convert_layout",
    YieldOp: "yield",
    ForOp: "for",
    IfOp: "if",
}


# ----------------------------------------------------------------------------- kernels


@dataclass(frozen=True)
class Param:
    """A kernel parameter: a global tensor, or a scalar passed by value.

    ``writes``: the kernel stores to (or atomically adds into) this tensor.
    """

    name: str
    value: Value
    loc: SourceLoc | None = None
    writes: bool = False

    @property
    def is_tensor(self) -> bool:
        return isinstance(self.value.type, TensorType)


@dataclass(frozen=True)
class TileKernel:
    """One kernel: parameters, size symbols, launch shape, and the body.

    ``symbols`` are the size/stride symbols of the tensor parameters (i64 scalars, bound
    from the arrays at call time), in the order the runtime passes them. ``grid`` holds
    three expressions over the symbols in the runtime's grid grammar (``cdiv(M, 64)``).
    ``constants`` are the compile-time parameters this instance was built with.
    """

    name: str
    params: tuple[Param, ...]
    symbols: tuple[Value, ...]
    grid: tuple[str, str, str]
    num_warps: int
    body: Block
    constants: tuple[tuple[str, int | float | bool], ...] = ()
    loc: SourceLoc | None = None
    source_file: str = "<string>"


# ----------------------------------------------------------------------------- traversal


def walk_ops(block: Block) -> Iterator[Op]:
    """Every op in ``block`` and its nested blocks, pre-order."""
    for op in block.ops:
        yield op
        for inner in op.blocks():
            yield from walk_ops(inner)


def defined_values(kernel: TileKernel) -> Iterator[Value]:
    """Every value the kernel defines: params, symbols, block args and op results."""
    for p in kernel.params:
        yield p.value
    yield from kernel.symbols
    yield from _block_values(kernel.body)


def _block_values(block: Block) -> Iterator[Value]:
    yield from block.args
    for op in block.ops:
        yield from op.results
        for inner in op.blocks():
            yield from _block_values(inner)
