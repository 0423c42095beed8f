"""Checks that a Tile IR kernel is well formed; :class:`TileIRError` names the first fault.

What is checked: value names are unique; every operand is defined before its use and in
scope (a value defined in a loop body or branch is not visible after it); each op's operand
and result shapes, dtypes and memory scopes follow its rule; loop-carried values and yields
agree in type; windows have the tensor's rank.
"""

from __future__ import annotations

from collections.abc import Callable

from . import tile as ir
from .dtypes import DType

__all__ = ["TileIRError", "verify_tile_kernel"]


class TileIRError(ValueError):
    """Tile IR that breaks a rule. The message names the op and its source place."""


def _fail(op: ir.Op | None, message: str) -> TileIRError:
    if op is None:
        return TileIRError(message)
    where = f" ({op.loc})" if op.loc is not None else ""
    return TileIRError(f"{op.opname}{where}: {message}")


def _tile(op: ir.Op, v: ir.Value, what: str) -> ir.TileType:
    if not isinstance(v.type, ir.TileType):
        raise _fail(op, f"{what} {v} is a global tensor, not a tile")
    return v.type


def _register(op: ir.Op, v: ir.Value, what: str) -> ir.TileType:
    t = _tile(op, v, what)
    if t.scope is not ir.MemScope.REGISTER:
        raise _fail(op, f"{what} {v} is a {t.scope.value} tile; a register tile is required")
    return t


def _same(op: ir.Op, a: ir.TileType, b: ir.TileType, what: str) -> None:
    if (a.dtype, a.shape) != (b.dtype, b.shape):
        raise _fail(op, f"{what}: {a} and {b} differ")


def _int_scalar(op: ir.Op, v: ir.Value, what: str) -> None:
    t = _tile(op, v, what)
    if t.shape or not t.dtype.is_int:
        raise _fail(op, f"{what} {v} must be an integer scalar; it is {t}")


def _check_full(op: ir.FullOp) -> None:
    t = _tile(op, op.result, "result")
    ok = (
        isinstance(op.value, bool)
        if t.dtype.is_bool
        else isinstance(op.value, int | float) and not isinstance(op.value, bool)
        if t.dtype.is_float
        else type(op.value) is int
    )
    if not ok:
        raise _fail(op, f"value {op.value!r} is not a {t.dtype}")


def _check_arange(op: ir.ArangeOp) -> None:
    t = _tile(op, op.result, "result")
    if t.rank != 1 or t.dtype.name != "i32":
        raise _fail(op, f"result must be a 1-D i32 tile; it is {t}")


def _check_index(op: ir.BlockIndexOp | ir.ThreadIndexOp) -> None:
    t = _tile(op, op.result, "result")
    if t.shape or t.dtype.name != "i32":
        raise _fail(op, f"result must be an i32 scalar; it is {t}")
    if isinstance(op, ir.BlockIndexOp) and op.axis not in (0, 1, 2):
        raise _fail(op, f"axis {op.axis} is not 0, 1 or 2")


def _elementwise_dtype_rule(op: ir.ElementwiseOp, operand: DType, result: DType) -> None:
    fn = op.fn
    if fn in ir.COMPARISON_OPS:
        if not result.is_bool:
            raise _fail(op, f"{fn} gives bool, not {result}")
        return
    if fn in ("and", "or", "not") and not operand.is_bool:
        raise _fail(op, f"{fn} takes bool operands, not {operand}")
    if fn in ir.FLOAT_ONLY_OPS and not operand.is_float:
        raise _fail(op, f"{fn} takes float operands, not {operand}")
    if fn in ir.INT_ONLY_OPS and not operand.is_int:
        raise _fail(op, f"{fn} takes integer operands, not {operand}")
    if operand is not result:
        raise _fail(op, f"{fn} of {operand} operands cannot give {result}")


def _check_elementwise(op: ir.ElementwiseOp) -> None:
    arity = (
        1
        if op.fn in ir.UNARY_OPS
        else 2
        if op.fn in ir.BINARY_OPS
        else (3 if op.fn == "where" else None)
    )
    if arity is None:
        raise _fail(op, f"unknown function '{op.fn}'")
    if len(op.args) != arity:
        raise _fail(op, f"{op.fn} takes {arity} operands; it has {len(op.args)}")
    rt = _register(op, op.result, "result")
    types = [_register(op, a, "operand") for a in op.args]
    for a, t in zip(op.args, types, strict=True):
        if t.shape != rt.shape:
            raise _fail(op, f"operand {a} has shape {list(t.shape)}, the result {list(rt.shape)}")
    if op.fn == "where":
        if not types[0].dtype.is_bool:
            raise _fail(op, f"the condition {op.args[0]} must be bool; it is {types[0]}")
        data = types[1:]
    else:
        data = types
    if any(t.dtype is not data[0].dtype for t in data):
        raise _fail(op, "operands differ in dtype: " + ", ".join(str(t) for t in data))
    if op.fn == "where":
        if data[0].dtype is not rt.dtype:
            raise _fail(op, f"where of {data[0].dtype} values cannot give {rt.dtype}")
        return
    _elementwise_dtype_rule(op, data[0].dtype, rt.dtype)


def _check_cast(op: ir.CastOp) -> None:
    s, r = _register(op, op.source, "source"), _register(op, op.result, "result")
    if s.shape != r.shape:
        raise _fail(op, f"cast changes the shape: {s} -> {r}")


def _check_broadcast(op: ir.BroadcastOp) -> None:
    s, r = _register(op, op.source, "source"), _register(op, op.result, "result")
    if s.dtype is not r.dtype:
        raise _fail(op, f"broadcast changes the dtype: {s} -> {r}")
    if s.shape and (
        s.rank != r.rank or any(a not in (1, b) for a, b in zip(s.shape, r.shape, strict=True))
    ):
        raise _fail(op, f"cannot broadcast {s} to {r}")


def _check_expand_dims(op: ir.ExpandDimsOp) -> None:
    s, r = _tile(op, op.source, "source"), _tile(op, op.result, "result")
    if not 0 <= op.axis <= s.rank:
        raise _fail(op, f"axis {op.axis} is out of range for {s}")
    expected = (*s.shape[: op.axis], 1, *s.shape[op.axis :])
    if r.shape != expected or r.dtype is not s.dtype:
        raise _fail(op, f"expand_dims of {s} at {op.axis} is not {r}")


def _check_reduce(op: ir.ReduceOp) -> None:
    s, r = _register(op, op.source, "source"), _register(op, op.result, "result")
    if not 0 <= op.axis < s.rank:
        raise _fail(op, f"axis {op.axis} is out of range for {s}")
    expected = s.shape[: op.axis] + s.shape[op.axis + 1 :]
    if r.shape != expected or r.dtype is not s.dtype:
        raise _fail(op, f"reducing {s} along {op.axis} does not give {r}")


def _check_transpose(op: ir.TransposeOp) -> None:
    s, r = _tile(op, op.source, "source"), _tile(op, op.result, "result")
    if sorted(op.perm) != list(range(s.rank)):
        raise _fail(op, f"perm {list(op.perm)} is not a permutation of {s.rank} dims")
    expected = tuple(s.shape[p] for p in op.perm)
    if r.shape != expected or r.dtype is not s.dtype or r.scope is not s.scope:
        raise _fail(op, f"transposing {s} by {list(op.perm)} does not give {r}")


def _check_window(op: ir.LoadOp | ir.StoreOp | ir.AtomicAddOp) -> tuple[ir.TensorType, ir.TileType]:
    if not isinstance(op.tensor.type, ir.TensorType):
        raise _fail(op, f"{op.tensor} is not a global tensor")
    tt = op.tensor.type
    w = op.window
    if not len(w.starts) == len(w.sizes) == len(w.squeeze) == tt.rank:
        raise _fail(op, f"{op.tensor} has {tt.rank} dims; the window has {len(w.sizes)}")
    for start in w.starts:
        _int_scalar(op, start, "window start")
    if any(s < 1 for s in w.sizes):
        raise _fail(op, f"window sizes {list(w.sizes)} must be positive")
    if any(q and s != 1 for s, q in zip(w.sizes, w.squeeze, strict=True)):
        raise _fail(op, "a squeezed window dim must have size 1")
    tile = ir.TileType(tt.dtype, w.tile_shape)
    if op.mask is not None:
        m = _register(op, op.mask, "mask")
        if not m.dtype.is_bool or m.shape != tile.shape:
            raise _fail(op, f"mask {op.mask} must be bool{list(tile.shape)}; it is {m}")
    return tt, tile


def _check_load(op: ir.LoadOp) -> None:
    _, tile = _check_window(op)
    r = _register(op, op.result, "result")
    _same(op, r, tile, "the result and the window")
    if op.other is not None:
        o = _register(op, op.other, "other")
        if o.shape or o.dtype is not tile.dtype:
            raise _fail(op, f"other {op.other} must be a {tile.dtype} scalar; it is {o}")


def _check_store(op: ir.StoreOp | ir.AtomicAddOp) -> None:
    _, tile = _check_window(op)
    _same(op, _register(op, op.value, "value"), tile, "the value and the window")


def _check_to_shared(op: ir.ToSharedOp) -> None:
    s, r = _register(op, op.source, "source"), _tile(op, op.result, "result")
    if r.scope is not ir.MemScope.SHARED:
        raise _fail(op, f"result {op.result} must be a shared tile")
    _same(op, s, r, "source and result")


def _check_from_shared(op: ir.FromSharedOp) -> None:
    s, r = _tile(op, op.source, "source"), _register(op, op.result, "result")
    if s.scope is not ir.MemScope.SHARED:
        raise _fail(op, f"source {op.source} must be a shared tile")
    _same(op, s, r, "source and result")


def _check_dot(op: ir.DotOp) -> None:
    a, b = _register(op, op.a, "a"), _register(op, op.b, "b")
    acc, r = _register(op, op.acc, "acc"), _register(op, op.result, "result")
    if a.rank != 2 or b.rank != 2 or a.shape[1] != b.shape[0]:
        raise _fail(op, f"cannot multiply {a} by {b}")
    if a.dtype is not b.dtype:
        raise _fail(op, f"operands differ in dtype: {a} and {b}")
    if acc.shape != (a.shape[0], b.shape[1]):
        raise _fail(op, f"accumulator {acc} does not match {a} @ {b}")
    _same(op, acc, r, "accumulator and result")


def _check_convert(op: ir.ConvertLayoutOp) -> None:
    s, r = _tile(op, op.source, "source"), _tile(op, op.result, "result")
    _same(op, s, r, "source and result")
    if s.scope is not r.scope:
        raise _fail(op, f"convert_layout changes the memory scope: {s} -> {r}")


_RULES: dict[type, Callable] = {
    ir.FullOp: _check_full,
    ir.ArangeOp: _check_arange,
    ir.BlockIndexOp: _check_index,
    ir.ThreadIndexOp: _check_index,
    ir.ElementwiseOp: _check_elementwise,
    ir.CastOp: _check_cast,
    ir.BroadcastOp: _check_broadcast,
    ir.ExpandDimsOp: _check_expand_dims,
    ir.ReduceOp: _check_reduce,
    ir.TransposeOp: _check_transpose,
    ir.LoadOp: _check_load,
    ir.StoreOp: _check_store,
    ir.AtomicAddOp: _check_store,
    ir.ToSharedOp: _check_to_shared,
    ir.FromSharedOp: _check_from_shared,
    ir.DotOp: _check_dot,
    ir.ConvertLayoutOp: _check_convert,
}

_NO_RESULTS = (ir.StoreOp, ir.AtomicAddOp, ir.YieldOp)


class _Verifier:
    def __init__(self) -> None:
        self.names: set[str] = set()

    def define(self, v: ir.Value, op: ir.Op | None, scope: set[str]) -> None:
        if v.name in self.names:
            raise _fail(op, f"value name %{v.name} is defined twice")
        self.names.add(v.name)
        scope.add(v.name)

    def block(
        self,
        block: ir.Block,
        scope: set[str],
        yields: tuple[ir.Type, ...] | None,
        owner: ir.Op | None,
    ) -> None:
        """Check ``block`` with ``scope`` visible; ``yields`` are the types its YieldOp must
        give (None: it must have no YieldOp)."""
        inner = set(scope)
        for v in block.args:
            self.define(v, owner, inner)
        for k, op in enumerate(block.ops):
            for v in op.operands():
                if v.name not in inner:
                    raise _fail(op, f"{v} is used but not defined before it, in scope")
            if isinstance(op, ir.YieldOp):
                if k != len(block.ops) - 1:
                    raise _fail(op, "yield must end its block")
                got = tuple(v.type for v in op.values)
                if got != (yields or ()):
                    want = "nothing" if yields is None else f"({', '.join(map(str, yields))})"
                    raise _fail(op, f"yields ({', '.join(map(str, got))}) but {want} is expected")
            elif isinstance(op, ir.ForOp):
                self.for_op(op, inner)
            elif isinstance(op, ir.IfOp):
                self.if_op(op, inner)
            else:
                if isinstance(op, _NO_RESULTS) and op.results:
                    raise _fail(op, "has results but defines none")
                if not isinstance(op, _NO_RESULTS) and len(op.results) != 1:
                    raise _fail(op, f"must have one result; it has {len(op.results)}")
                _RULES[type(op)](op)
            for v in op.results:
                self.define(v, op, inner)
        if yields and block.terminator is None:
            raise _fail(owner, f"the block must end in a yield of ({', '.join(map(str, yields))})")

    def for_op(self, op: ir.ForOp, scope: set[str]) -> None:
        for what, v in (("start", op.start), ("stop", op.stop), ("step", op.step)):
            _int_scalar(op, v, what)
        if not op.body.args:
            raise _fail(op, "the body has no induction variable")
        iv, *args = op.body.args
        _int_scalar(op, iv, "induction variable")
        if not len(op.inits) == len(args) == len(op.results):
            raise _fail(
                op,
                f"{len(op.inits)} inits, {len(args)} body arguments and "
                f"{len(op.results)} results must agree",
            )
        for init, arg, res in zip(op.inits, args, op.results, strict=True):
            if not init.type == arg.type == res.type:
                raise _fail(
                    op,
                    f"loop-carried {arg} has types {init.type} (init), {arg.type} "
                    f"(body) and {res.type} (result)",
                )
        if op.pipeline_stages < 1:
            raise _fail(op, f"pipeline_stages {op.pipeline_stages} must be at least 1")
        types = tuple(v.type for v in op.results)
        self.block(op.body, scope, types if types else None, op)

    def if_op(self, op: ir.IfOp, scope: set[str]) -> None:
        c = _tile(op, op.cond, "condition")
        if c.shape or not c.dtype.is_bool:
            raise _fail(op, f"condition {op.cond} must be a bool scalar; it is {c}")
        types = tuple(v.type for v in op.results)
        for block in (op.then, op.otherwise):
            if block.args:
                raise _fail(op, "a branch takes no block arguments")
            self.block(block, scope, types if types else None, op)


def verify_tile_kernel(kernel: ir.TileKernel) -> None:
    """Raise :class:`TileIRError` if ``kernel`` breaks a Tile IR rule."""
    verifier = _Verifier()
    scope: set[str] = set()
    for p in kernel.params:
        verifier.define(p.value, None, scope)
    for s in kernel.symbols:
        verifier.define(s, None, scope)
        if not isinstance(s.type, ir.TileType) or s.type.shape or not s.type.dtype.is_int:
            raise TileIRError(f"symbol {s} must be an integer scalar")
    if len(kernel.grid) != 3:
        raise TileIRError(f"grid must have 3 expressions; it has {len(kernel.grid)}")
    if kernel.num_warps < 1:
        raise TileIRError(f"num_warps {kernel.num_warps} must be at least 1")
    verifier.block(kernel.body, scope, None, None)
