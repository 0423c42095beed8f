"""Loop IR: the imperative level both code generators read.

A :class:`LoopKernel` describes what one *thread* of one block does, in terms of scalar
expressions, buffers and structured control flow. Everything about tiles and layouts has been
decided by the time a kernel reaches this level: a register tile is now a ``local`` buffer of
the values one thread holds, a shared tile a ``shared`` buffer with an explicit offset, and a
global tensor a ``global`` buffer addressed by a flattened element index.

The same Loop IR serves both targets. On CUDA a block has ``block_threads`` threads and
:class:`ThreadIdx` is ``threadIdx.x``; on the CPU a block is one thread (``block_threads == 1``),
:class:`ThreadIdx` is ``0``, barriers vanish, and blocks are spread over the cores.

Nodes are immutable; build new ones instead of editing. Expressions are typed (``dtype``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cache

from .dtypes import DType, boolean, i32, i64, u32, u64


class Scope(Enum):
    GLOBAL = "global"
    SHARED = "shared"
    LOCAL = "local"
    PARAM = "param"  # a kernel parameter passed by value (a TMA tensor map)


# ----------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Expr:
    """A scalar expression. Subclasses define ``dtype``."""

    @property
    def dtype(self) -> DType:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def children(self) -> tuple[Expr, ...]:
        return ()


@dataclass(frozen=True)
class Const(Expr):
    value: int | float | bool
    type: DType = i64

    @property
    def dtype(self) -> DType:
        return self.type


@dataclass(frozen=True)
class Var(Expr):
    """A named scalar: a kernel argument, a size symbol, a loop variable, or a ``Let``."""

    name: str
    type: DType = i64

    @property
    def dtype(self) -> DType:
        return self.type


@dataclass(frozen=True)
class ThreadIdx(Expr):
    """The thread's index within its block (``threadIdx.x``; ``0`` on the CPU)."""

    @property
    def dtype(self) -> DType:
        return i32


@dataclass(frozen=True)
class BlockIdx(Expr):
    """The block's index along grid axis 0, 1 or 2 (x, y, z)."""

    axis: int

    @property
    def dtype(self) -> DType:
        return i32


class BinaryOp(Enum):
    ADD = "+"
    SUB = "-"
    MUL = "*"
    DIV = "/"  # true division for floats; C (truncating) division for integers
    FLOORDIV = "//"  # floor division (integers)
    MOD = "%"  # floor modulo (integers): sign of the divisor, like Python
    MIN = "min"
    MAX = "max"
    POW = "pow"
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    EQ = "=="
    NE = "!="
    AND = "&&"  # logical, on bools
    OR = "||"
    BITAND = "&"
    BITOR = "|"
    BITXOR = "^"
    SHL = "<<"
    SHR = ">>"

    @property
    def is_comparison(self) -> bool:
        return self in _COMPARISONS

    @property
    def is_logical(self) -> bool:
        return self in (BinaryOp.AND, BinaryOp.OR)


_COMPARISONS = frozenset(
    {BinaryOp.LT, BinaryOp.LE, BinaryOp.GT, BinaryOp.GE, BinaryOp.EQ, BinaryOp.NE}
)


class UnaryOp(Enum):
    NEG = "neg"
    NOT = "not"  # logical not on bools
    BITNOT = "bitnot"
    ABS = "abs"
    EXP = "exp"
    EXP2 = "exp2"
    LOG = "log"
    LOG2 = "log2"
    SQRT = "sqrt"
    RSQRT = "rsqrt"
    TANH = "tanh"
    ERF = "erf"
    SIN = "sin"
    COS = "cos"
    FLOOR = "floor"
    CEIL = "ceil"


@dataclass(frozen=True)
class Binary(Expr):
    """``lhs op rhs``. Operands have the same dtype; comparisons and logic give ``bool``."""

    op: BinaryOp
    lhs: Expr
    rhs: Expr

    @property
    def dtype(self) -> DType:
        if self.op.is_comparison or self.op.is_logical:
            return boolean
        return self.lhs.dtype

    def children(self) -> tuple[Expr, ...]:
        return (self.lhs, self.rhs)


@dataclass(frozen=True)
class Unary(Expr):
    op: UnaryOp
    operand: Expr

    @property
    def dtype(self) -> DType:
        return boolean if self.op is UnaryOp.NOT else self.operand.dtype

    def children(self) -> tuple[Expr, ...]:
        return (self.operand,)


@dataclass(frozen=True)
class Select(Expr):
    """``cond ? if_true : if_false``."""

    cond: Expr
    if_true: Expr
    if_false: Expr

    @property
    def dtype(self) -> DType:
        return self.if_true.dtype

    def children(self) -> tuple[Expr, ...]:
        return (self.cond, self.if_true, self.if_false)


@dataclass(frozen=True)
class Conversion(Expr):
    """An expression of ``type`` made from ``operand`` (the kind says how)."""

    type: DType
    operand: Expr

    @property
    def dtype(self) -> DType:
        return self.type

    def children(self) -> tuple[Expr, ...]:
        return (self.operand,)


@dataclass(frozen=True)
class Cast(Conversion):
    """Value conversion (float↔int rounds toward zero, narrowing floats round to nearest)."""


@dataclass(frozen=True)
class Bitcast(Conversion):
    """The bits of ``operand`` read as ``type``, a number type of the same width (no
    conversion): how exact bit-level decodings (an integer code ORed into a float's
    mantissa) reach a float without a conversion instruction."""


@dataclass(frozen=True)
class Load(Expr):
    """One element of ``buffer`` at flattened element ``index``."""

    buffer: Buffer
    index: Expr

    @property
    def dtype(self) -> DType:
        return self.buffer.dtype

    def children(self) -> tuple[Expr, ...]:
        return (self.index,)


@dataclass(frozen=True)
class ShuffleXor(Expr):
    """``__shfl_xor_sync(full mask, value, lane_mask)``: the value held by lane ``lane ^ mask``.

    Only emitted for CUDA (the CPU target has one thread per block and never needs it).
    """

    value: Expr
    lane_mask: int

    @property
    def dtype(self) -> DType:
        return self.value.dtype

    def children(self) -> tuple[Expr, ...]:
        return (self.value,)


@dataclass(frozen=True)
class Address(Expr):
    """The address of ``buffer[index]`` as an operand for inline PTX.

    For a shared buffer: the 32-bit address in the shared window (``u32``); for a global
    buffer or a by-value parameter (a tensor map): the generic 64-bit pointer (``u64``).
    Only the CUDA back end accepts it.
    """

    buffer: Buffer
    index: Expr

    @property
    def dtype(self) -> DType:
        return u32 if self.buffer.scope is Scope.SHARED else u64

    def children(self) -> tuple[Expr, ...]:
        return (self.index,)


# ----------------------------------------------------------------------------- buffers


@dataclass(frozen=True)
class Buffer:
    """A named region of memory holding elements of ``dtype``.

    ``global`` buffers are kernel arguments (pointers); ``shared`` buffers live at
    ``smem_offset`` bytes into the block's dynamic shared memory; ``local`` buffers are a
    thread's own arrays (registers on CUDA once their indices are constants; stack on CPU).
    ``size`` counts elements (``None`` for global buffers, whose extent the caller owns).
    """

    name: str
    dtype: DType
    scope: Scope
    size: int | None = None
    smem_offset: int = 0
    read_only: bool = False

    def __repr__(self) -> str:
        return f"{self.name}:{self.scope.value} {self.dtype}[{self.size if self.size else ''}]"


# ----------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class Stmt:
    def children(self) -> tuple[Stmt, ...]:
        return ()


@dataclass(frozen=True)
class Seq(Stmt):
    body: tuple[Stmt, ...]

    def children(self) -> tuple[Stmt, ...]:
        return self.body


@dataclass(frozen=True)
class Comment(Stmt):
    """A comment carried into the generated code: the DSL source line a region came from."""

    text: str


@dataclass(frozen=True)
class Let(Stmt):
    """Declare an immutable scalar ``var = value`` visible to the rest of the enclosing Seq."""

    var: Var
    value: Expr


@dataclass(frozen=True)
class Store(Stmt):
    """``buffer[index] = value``."""

    buffer: Buffer
    index: Expr
    value: Expr


@dataclass(frozen=True)
class Copy(Stmt):
    """Copy ``lanes`` contiguous elements from ``src[src_index:]`` to ``dst[dst_index:]``.

    The vectorized move between memory levels: on CUDA one 4/8/16-byte access when
    ``aligned`` says both ends are aligned to ``lanes * itemsize`` bytes; on LLVM a vector
    load and store. When ``predicate`` is given and false, nothing is copied from ``src``
    and ``dst`` receives ``fill`` instead (when ``fill`` is None the destination is left
    untouched, as for a masked store to global memory). ``element_predicates``, when given,
    masks element by element (ragged edges inside one vector); then the copy is scalar.
    """

    dst: Buffer
    dst_index: Expr
    src: Buffer
    src_index: Expr
    lanes: int = 1
    predicate: Expr | None = None
    fill: Expr | None = None
    aligned: bool = False
    element_predicates: tuple[Expr, ...] | None = None


class LoopKind(Enum):
    SERIAL = "serial"
    UNROLL = "unroll"  # constant trip count; unroll fully (register arrays stay registers)
    VECTORIZE = "vectorize"  # independent iterations; the CPU back end asks LLVM to vectorize


@dataclass(frozen=True)
class For(Stmt):
    """``for var in range(start, stop, step)``; ``var`` is an integer :class:`Var`.

    ``unroll`` > 1 asks the back end to unroll a serial loop by that factor. A loop that
    rotates a ring of ``unroll`` register tiles (a ``pipeline`` loop's prefetches) needs it:
    unrolled by the ring's length, each tile keeps its registers and the rotation's copies
    vanish; rolled, the copy out of the newest tile waits on the load just issued into it,
    and the loop stalls on memory once per iteration however deep the ring is.
    """

    var: Var
    start: Expr
    stop: Expr
    step: Expr
    body: Stmt
    kind: LoopKind = LoopKind.SERIAL
    unroll: int = 1

    def children(self) -> tuple[Stmt, ...]:
        return (self.body,)


@dataclass(frozen=True)
class If(Stmt):
    cond: Expr
    then_body: Stmt
    else_body: Stmt | None = None

    def children(self) -> tuple[Stmt, ...]:
        return (self.then_body,) if self.else_body is None else (self.then_body, self.else_body)


@dataclass(frozen=True)
class Barrier(Stmt):
    """A barrier: block-wide (``__syncthreads()``), or with ``threads`` a named barrier of
    the block's first ``threads`` threads (``bar.sync 1, threads``), which a kernel whose
    producer warp has left uses among the warps that remain; nothing on a one-thread
    block."""

    threads: int | None = None


@dataclass(frozen=True)
class Return(Stmt):
    """The thread leaves the kernel (a producer warp whose copies are all issued)."""


@dataclass(frozen=True)
class Prefetch(Stmt):
    """A hint that ``buffer[index]`` is read soon: the CPU back end asks for its cache line
    ahead of the load (a prefetch never faults, so the element may lie outside the buffer).
    CUDA kernels keep their loads in flight with pipelining instead and never carry one."""

    buffer: Buffer
    index: Expr


@dataclass(frozen=True)
class AtomicAdd(Stmt):
    """``atomicAdd(&buffer[index], value)`` (relaxed); a plain add on the CPU target."""

    buffer: Buffer
    index: Expr
    value: Expr


@dataclass(frozen=True)
class Asm(Stmt):
    """Inline PTX for one machine instruction (an atom of ``ir/atoms.py``).

    ``template`` uses ``%0, %1, …`` for the operands in order: first ``outputs`` (elements of
    local buffers the instruction writes, constraint ``"=r"``/``"=f"``, or read and written,
    ``"+r"``/``"+f"``), then ``inputs`` (expressions, constraint ``"r"``/``"f"``/``"l"``/``"n"``).
    Only the CUDA back end accepts it; the CPU has no such instructions.
    """

    template: str
    outputs: tuple[tuple[Buffer, Expr], ...] = ()
    output_constraints: tuple[str, ...] = ()
    inputs: tuple[Expr, ...] = ()
    input_constraints: tuple[str, ...] = ()
    memory: bool = False  # clobbers memory (orders against surrounding loads and stores)


# ----------------------------------------------------------------------------- kernels


@dataclass(frozen=True)
class TensorMap:
    """A TMA tensor map of a tensor parameter, passed by value after the symbols.

    ``buffer`` (scope ``param``, 128 bytes) names it in the body, where only its address is
    taken (the operand of ``cp.async.bulk.tensor``). The launcher encodes it from the array
    given for ``tensor``: every dimension of it, innermost first, with the copy box ``box``
    (innermost first, one entry a dimension) and the shared-memory swizzle
    ``swizzle_bytes`` (0, 32, 64 or 128) that the body's boxes land in.
    """

    buffer: Buffer
    tensor: Buffer
    box: tuple[int, ...]
    swizzle_bytes: int
    # A view of the tensor, innermost first: (tensor dim, extent or 0, step) a map dimension
    # (runtime.tensor_map.TensorMapSpec); empty for the tensor's own dimensions.
    dims: tuple[tuple[int, int, int], ...] = ()

    def view(self, rank: int) -> tuple[tuple[int, int, int], ...]:
        """The map's dimensions over a ``rank``-d tensor: ``dims``, or the tensor's own."""
        return self.dims or tensor_dims(rank)


def tensor_dims(rank: int) -> tuple[tuple[int, int, int], ...]:
    """A ``rank``-d tensor's own dimensions as a map's, innermost first: each walked whole,
    one element at a time."""
    return tuple((d, 0, 1) for d in reversed(range(rank)))


@dataclass(frozen=True)
class LoopParam:
    """A kernel argument: a global buffer (tensor) or a scalar :class:`Var`."""

    name: str
    buffer: Buffer | None = None
    var: Var | None = None

    @property
    def is_tensor(self) -> bool:
        return self.buffer is not None


@dataclass(frozen=True)
class LoopKernel:
    """One kernel at Loop IR level.

    Arguments come in the order of the runtime ABI (``docs/runtime.md``): ``params`` in
    header order, then ``symbols`` (the size and stride symbols, ``i64``), then
    ``tensor_maps``. ``grid`` gives
    the number of blocks along x, y, z as expressions over the symbols; ``block_threads``
    threads run ``body`` in each block. ``buffers`` lists every shared and local buffer the
    body uses (allocated once at kernel entry); ``smem_bytes`` is the dynamic shared memory
    the block needs, starting ``smem_align``-aligned. ``index_bits`` is the width of the
    body's index arithmetic: 64, or 32 after ``narrow-indices`` for callers whose sizes fit
    (the launcher checks them).
    """

    name: str
    params: tuple[LoopParam, ...]
    symbols: tuple[Var, ...]
    grid: tuple[Expr, Expr, Expr]
    block_threads: int
    buffers: tuple[Buffer, ...]
    smem_bytes: int
    body: Stmt
    source_name: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    index_bits: int = 64
    smem_align: int = 16  # bytes; wgmma's swizzled operands want 1024
    tensor_maps: tuple[TensorMap, ...] = ()


# ----------------------------------------------------------------------------- traversal


def walk_stmts(stmt: Stmt) -> Iterator[Stmt]:
    """Every statement in ``stmt``, pre-order."""
    yield stmt
    for child in stmt.children():
        yield from walk_stmts(child)


def walk_exprs(expr: Expr) -> Iterator[Expr]:
    """Every sub-expression of ``expr``, pre-order."""
    yield expr
    for child in expr.children():
        yield from walk_exprs(child)


def stmt_exprs(stmt: Stmt) -> tuple[Expr, ...]:
    """The expressions a statement reads directly (not those of nested statements)."""
    match stmt:
        case Let(value=v):
            return (v,)
        case Store(index=i, value=v) | AtomicAdd(index=i, value=v):
            return (i, v)
        case Prefetch(index=i):
            return (i,)
        case Copy():
            exprs: list[Expr] = [stmt.dst_index, stmt.src_index]
            if stmt.predicate is not None:
                exprs.append(stmt.predicate)
            if stmt.fill is not None:
                exprs.append(stmt.fill)
            exprs.extend(stmt.element_predicates or ())
            return tuple(exprs)
        case For(start=a, stop=b, step=c):
            return (a, b, c)
        case Asm(outputs=outs, inputs=ins):
            return tuple(i for _, i in outs) + ins
        case If(cond=c):
            return (c,)
    return ()


def stmt_buffers(stmt: Stmt) -> Iterator[Buffer]:
    """The buffers a statement reads or writes directly: its own buffer operands and those
    its expressions load from or take the address of (not those of nested statements)."""
    match stmt:
        case Store(buffer=b) | AtomicAdd(buffer=b) | Prefetch(buffer=b):
            yield b
        case Copy(dst=d, src=s):
            yield d
            yield s
        case Asm(outputs=outs):
            for b, _ in outs:
                yield b
    for expr in stmt_exprs(stmt):
        for e in walk_exprs(expr):
            if isinstance(e, Load | Address):
                yield e.buffer


# ----------------------------------------------------------------------------- builders


def const(value: int | float | bool, dtype: DType | None = None) -> Const:
    if dtype is None:
        dtype = boolean if isinstance(value, bool) else (i64 if isinstance(value, int) else None)
        if dtype is None:
            from .dtypes import f32

            dtype = f32
    return Const(value, dtype)


def seq(*stmts: Stmt | None) -> Stmt:
    """A Seq of the given statements with nested Seqs flattened and ``None`` dropped."""
    flat: list[Stmt] = []
    for s in stmts:
        if s is None:
            continue
        if isinstance(s, Seq):
            flat.extend(s.body)
        else:
            flat.append(s)
    return flat[0] if len(flat) == 1 else Seq(tuple(flat))


def map_nodes(node: object, visit: Callable[[object], object | None]) -> object:
    """``node`` (a statement, expression, buffer or tuple of them) rebuilt top-down: where
    ``visit`` returns a value, it replaces the node and its children are not visited; where
    it returns None, the node's fields are mapped in turn. A node none of whose fields change
    is kept as it is, so a rewrite that touches little copies little.

    The one traversal behind every whole-tree rewrite of Loop IR (substitution, buffer
    renaming, index narrowing)."""
    replaced = visit(node)
    if replaced is not None:
        return replaced
    if isinstance(node, tuple):
        items = tuple(map_nodes(x, visit) for x in node)
        return node if all(a is b for a, b in zip(items, node, strict=True)) else items
    if not isinstance(node, Expr | Stmt | Buffer):
        return node
    changes = {}
    for name in _field_names(type(node)):
        old = getattr(node, name)
        new = map_nodes(old, visit)
        if new is not old:
            changes[name] = new
    return dataclasses.replace(node, **changes) if changes else node  # type: ignore[type-var]


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def substitute(expr: Expr, var: Var, value: Expr) -> Expr:
    """``expr`` with every occurrence of ``var`` replaced by ``value``."""
    return map_nodes(expr, lambda node: value if node == var else None)  # type: ignore[return-value]


def replace_buffers(node: Stmt, mapping: Mapping[Buffer, Buffer]) -> Stmt:
    """``node`` with every buffer operand (of loads, stores, copies, addresses, inline PTX)
    that ``mapping`` names replaced by its image."""
    return map_nodes(
        node, lambda b: mapping.get(b, b) if isinstance(b, Buffer) else None
    )  # type: ignore[return-value]
