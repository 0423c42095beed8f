"""Tile IR as text, MLIR-like::

    kernel softmax(%x: f32[M, N], %y: f32[M, N] writes) symbols(%M, %N) grid(M, 1, 1) warps 4 {
      %row = block_index x : i32                                 // softmax.tg:6
      %t = load %x[%row, %j:+1024] other %3 : f32[1024]           // softmax.tg:10
      ...
    }

Each operation is one line (blocks nested and indented) with its result type, the tile's
layout (``#…``) when it has one, and its source line as a trailing comment.
"""

from __future__ import annotations

from collections.abc import Callable

from . import tile as ir

__all__ = ["print_tile_kernel", "print_tile_op"]

_INDENT = "  "
_COMMENT_COLUMN = 64


def _values(values: tuple[ir.Value, ...]) -> str:
    return ", ".join(str(v) for v in values)


def _window(tensor: ir.Value, window: ir.SliceSpec) -> str:
    parts = []
    for start, size, squeeze in zip(window.starts, window.sizes, window.squeeze, strict=True):
        parts.append(str(start) if squeeze else f"{start}:+{size}")
    return f"{tensor}[{', '.join(parts)}]"


def _masked(op: ir.LoadOp | ir.StoreOp | ir.AtomicAddOp) -> str:
    return f" mask {op.mask}" if op.mask is not None else ""


def _body_load(op: ir.LoadOp) -> str:
    other = f" other {op.other}" if op.other is not None else ""
    return f"load {_window(op.tensor, op.window)}{_masked(op)}{other}"


def _body_store(op: ir.StoreOp | ir.AtomicAddOp) -> str:
    return f"{op.opname} {op.value} to {_window(op.tensor, op.window)}{_masked(op)}"


def _body_full(op: ir.FullOp) -> str:
    value = op.value
    text = str(value).lower() if isinstance(value, bool) else repr(value)
    return f"full {text}"


_BODIES: dict[type, Callable[[ir.Op], str]] = {
    ir.FullOp: _body_full,  # type: ignore[dict-item]
    ir.ArangeOp: lambda op: "arange",
    ir.BlockIndexOp: lambda op: f"block_index {'xyz'[op.axis]}",  # type: ignore[attr-defined]
    ir.ThreadIndexOp: lambda op: "thread_index",
    ir.ElementwiseOp: lambda op: f"{op.fn} {_values(op.args)}",  # type: ignore[attr-defined]
    ir.CastOp: lambda op: f"cast {op.source} : {op.source.type} ->",  # type: ignore[attr-defined]
    ir.BroadcastOp: lambda op: f"broadcast {op.source} : {op.source.type} ->",  # type: ignore[attr-defined]
    ir.ExpandDimsOp: lambda op: f"expand_dims {op.source} axis {op.axis}",  # type: ignore[attr-defined]
    ir.ReduceOp: lambda op: (  # type: ignore[attr-defined]
        f"reduce_{op.kind.value} {op.source} axis {op.axis}"
        + (f" in {op.result.tile.dtype}" if op.exact_type else "")
    ),
    ir.TransposeOp: lambda op: f"transpose {op.source} perm {list(op.perm)}",  # type: ignore[attr-defined]
    ir.LoadOp: _body_load,  # type: ignore[dict-item]
    ir.StoreOp: _body_store,  # type: ignore[dict-item]
    ir.AtomicAddOp: _body_store,  # type: ignore[dict-item]
    ir.ToSharedOp: lambda op: f"to_shared {op.source}",  # type: ignore[attr-defined]
    ir.FromSharedOp: lambda op: f"from_shared {op.source}",  # type: ignore[attr-defined]
    ir.DotOp: lambda op: f"dot {op.a}, {op.b}, {op.acc}",  # type: ignore[attr-defined]
    ir.ConvertLayoutOp: lambda op: (  # type: ignore[attr-defined]
        f"convert_layout{' pinned' if op.pinned else ''} {op.source} : {op.source.type} ->"
    ),
}


def _with_loc(line: str, loc: ir.SourceLoc | None) -> str:
    if loc is None:
        return line
    return f"{line.ljust(_COMMENT_COLUMN)}  // {loc.file}:{loc.line}"


def _result_prefix(op: ir.Op) -> str:
    return f"{_values(op.results)} = " if op.results else ""


def _types(op: ir.Op) -> str:
    return ", ".join(str(r.type) for r in op.results)


def print_tile_op(op: ir.Op, depth: int = 0) -> list[str]:
    """The lines of one operation (several for ops with blocks)."""
    pad = _INDENT * depth
    if isinstance(op, ir.ForOp):
        iv, *args = op.body.args
        head = f"{pad}{_result_prefix(op)}for {iv} = {op.start} to {op.stop} step {op.step}"
        if args:
            pairs = ", ".join(f"{a} = {i}" for a, i in zip(args, op.inits, strict=True))
            head += f" iter_args({pairs}) -> ({_types(op)})"
        if op.pipeline_stages > 1:
            head += f" stages {op.pipeline_stages}"
        if op.pipeline_tma:
            head += " tma"
        if op.pipeline_warp_specialize:
            head += " warp_specialize"
        return [_with_loc(head + " {", op.loc), *_block(op.body, depth + 1), pad + "}"]
    if isinstance(op, ir.IfOp):
        head = f"{pad}{_result_prefix(op)}if {op.cond}"
        if op.results:
            head += f" -> ({_types(op)})"
        lines = [_with_loc(head + " {", op.loc), *_block(op.then, depth + 1)]
        if op.otherwise.ops:
            lines += [pad + "} else {", *_block(op.otherwise, depth + 1)]
        return [*lines, pad + "}"]
    if isinstance(op, ir.YieldOp):
        return [_with_loc(f"{pad}yield {_values(op.values)}".rstrip(), op.loc)]
    body = _BODIES[type(op)](op)
    line = f"{pad}{_result_prefix(op)}{body}"
    if op.results:
        line += ("" if body.endswith("->") else " :") + f" {_types(op)}"
    return [_with_loc(line, op.loc)]


def _block(block: ir.Block, depth: int) -> list[str]:
    lines: list[str] = []
    for op in block.ops:
        lines += print_tile_op(op, depth)
    return lines


def print_tile_kernel(kernel: ir.TileKernel) -> str:
    """The whole kernel as text."""
    params = ", ".join(
        f"{p.value}: {p.value.type}{' writes' if p.writes else ''}" for p in kernel.params
    )
    head = f"kernel {kernel.name}({params})"
    if kernel.symbols:
        head += f" symbols({_values(kernel.symbols)})"
    head += f" grid({', '.join(kernel.grid)}) warps {kernel.num_warps}"
    if kernel.constants:
        head += " constants(" + ", ".join(f"{k}={v!r}" for k, v in kernel.constants) + ")"
    return "\n".join([head + " {", *_block(kernel.body, 1), "}"]) + "\n"
