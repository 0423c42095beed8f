"""Loop IR as readable pseudo-code, for dumps and error messages.

The header lists what a launch needs (parameters, symbols, grid, threads, buffers and where
shared ones sit); the body reads like a small imperative language with Python-style blocks::

    kernel vadd(a: global f32* readonly, b: global f32* readonly, c: global f32*)
        symbols N
        grid (cdiv(N, 256), 1, 1)  threads 256  smem 0 bytes
    {
        let i: i64 = i64(blockIdx.x) * 256 + i64(threadIdx.x)
        if i < N:
            c[i] = a[i] + b[i]
    }

Operators print with the fewest parentheses that keep their meaning (C precedence, as the
operator spellings are C's); ``//`` and ``%`` are floor division and modulo.
"""

from __future__ import annotations

from contextvars import ContextVar

from .loop import (
    Address,
    Asm,
    AtomicAdd,
    Barrier,
    Binary,
    BinaryOp,
    Bitcast,
    BlockIdx,
    Buffer,
    Cast,
    Comment,
    Const,
    Copy,
    Expr,
    For,
    If,
    Let,
    Load,
    LoopKernel,
    LoopKind,
    Prefetch,
    Return,
    Scope,
    Select,
    Seq,
    ShuffleXor,
    Stmt,
    Store,
    ThreadIdx,
    Unary,
    UnaryOp,
    Var,
)

INDENT = "    "

# Binding strength of infix operators; higher binds tighter (C's table).
# C's operator precedence: the Loop IR prints, like the CUDA back end, in C syntax.
C_PRECEDENCE: dict[BinaryOp, int] = {
    BinaryOp.MUL: 13,
    BinaryOp.DIV: 13,
    BinaryOp.FLOORDIV: 13,
    BinaryOp.MOD: 13,
    BinaryOp.ADD: 12,
    BinaryOp.SUB: 12,
    BinaryOp.SHL: 11,
    BinaryOp.SHR: 11,
    BinaryOp.LT: 10,
    BinaryOp.LE: 10,
    BinaryOp.GT: 10,
    BinaryOp.GE: 10,
    BinaryOp.EQ: 9,
    BinaryOp.NE: 9,
    BinaryOp.BITAND: 8,
    BinaryOp.BITXOR: 7,
    BinaryOp.BITOR: 6,
    BinaryOp.AND: 5,
    BinaryOp.OR: 4,
}
_UNARY_PRECEDENCE = 15
_ATOM = 16
_PREFIX = {UnaryOp.NEG: "-", UnaryOp.NOT: "!", UnaryOp.BITNOT: "~"}


# The integer type whose constants print bare: the kernel's index type while a kernel prints
# (i32 after narrow-indices), i64 otherwise; other types' constants print as `i32(4)`.
_BARE_INT: ContextVar[str] = ContextVar("bare_int", default="i64")


def format_expr(e: Expr) -> str:
    """One expression in the pseudo-code syntax."""
    return _expr(e)[0]


def _expr(e: Expr) -> tuple[str, int]:
    """The text of ``e`` and how tightly it binds."""
    match e:
        case Const(value=value, type=dt):
            if dt.is_bool:
                return ("true" if value else "false"), _ATOM
            text = repr(float(value)) if dt.is_float else str(value)
            if dt.name not in (_BARE_INT.get(), "f32", "bool"):
                text = f"{dt}({text})"  # the common types go unmarked
                return text, _ATOM
            return text, (_UNARY_PRECEDENCE if text.startswith("-") else _ATOM)
        case Var(name=name):
            return name, _ATOM
        case ThreadIdx():
            return "threadIdx.x", _ATOM
        case BlockIdx(axis=axis):
            return f"blockIdx.{'xyz'[axis]}", _ATOM
        case Binary(op=op, lhs=lhs, rhs=rhs) if op in C_PRECEDENCE:
            prec = C_PRECEDENCE[op]
            return f"{_operand(lhs, prec)} {op.value} {_operand(rhs, prec + 1)}", prec
        case Binary(op=op, lhs=lhs, rhs=rhs):
            return f"{op.value}({format_expr(lhs)}, {format_expr(rhs)})", _ATOM
        case Unary(op=op, operand=operand) if op in _PREFIX:
            return f"{_PREFIX[op]}{_operand(operand, _UNARY_PRECEDENCE)}", _UNARY_PRECEDENCE
        case Unary(op=op, operand=operand):
            return f"{op.value}({format_expr(operand)})", _ATOM
        case Select(cond=c, if_true=a, if_false=b):
            return f"select({format_expr(c)}, {format_expr(a)}, {format_expr(b)})", _ATOM
        case Cast(type=dt, operand=operand):
            return f"{dt}({format_expr(operand)})", _ATOM
        case Bitcast(type=dt, operand=operand):
            return f"bitcast<{dt}>({format_expr(operand)})", _ATOM
        case Load(buffer=buf, index=index):
            return f"{buf.name}[{format_expr(index)}]", _ATOM
        case ShuffleXor(value=value, lane_mask=mask):
            return f"shfl_xor({format_expr(value)}, {mask})", _ATOM
        case Address(buffer=buf, index=index):
            return f"&{buf.name}[{format_expr(index)}]", _ATOM
    raise TypeError(f"cannot print expression {e!r}")


def _operand(e: Expr, min_prec: int) -> str:
    text, prec = _expr(e)
    return text if prec >= min_prec else f"({text})"


def format_buffer(buf: Buffer) -> str:
    """``name: scope dtype[size]`` plus where a shared buffer sits."""
    if buf.scope is Scope.GLOBAL:
        text = f"{buf.name}: global {buf.dtype}*"
        return text + " readonly" if buf.read_only else text
    text = f"{buf.name}: {buf.scope.value} {buf.dtype}[{buf.size}]"
    if buf.scope is Scope.SHARED:
        end = buf.smem_offset + (buf.size or 0) * buf.dtype.itemsize
        text += f" @ smem[{buf.smem_offset}:{end}]"
    return text


def print_loop_kernel(k: LoopKernel) -> str:
    """The whole kernel: header, then the body indented. Integer constants of the kernel's
    index type print bare (the header says which type that is when it is not i64)."""
    grid = ", ".join(format_expr(g) for g in k.grid)  # host arithmetic: always i64
    token = _BARE_INT.set(f"i{k.index_bits}")
    try:
        return _print_kernel(k, grid)
    finally:
        _BARE_INT.reset(token)


def _print_kernel(k: LoopKernel, grid: str) -> str:
    params = ", ".join(
        format_buffer(p.buffer) if p.buffer is not None else f"{p.name}: {p.var.dtype}"  # type: ignore[union-attr]
        for p in k.params
    )
    lines = [f"kernel {k.name}({params})"]
    if k.source_name and k.source_name != k.name:
        lines.append(f"{INDENT}# from {k.source_name}")
    if k.symbols:
        lines.append(f"{INDENT}symbols {', '.join(s.name for s in k.symbols)}")
    for m in k.tensor_maps:
        box = " x ".join(str(b) for b in reversed(m.box))
        swizzle = f", swizzle {m.swizzle_bytes} B" if m.swizzle_bytes else ""
        view = f", view {list(m.dims)}" if m.dims else ""
        lines.append(
            f"{INDENT}tensor map {m.buffer.name} of {m.tensor.name}: box {box}{swizzle}{view}"
        )
    lines.append(f"{INDENT}grid ({grid})  threads {k.block_threads}  smem {k.smem_bytes} bytes")
    if k.index_bits != 64:
        lines.append(f"{INDENT}indices i{k.index_bits}")
    lines.extend(f"{INDENT}buffer {format_buffer(b)}" for b in k.buffers)
    lines.extend(f"{INDENT}# note: {note}" for note in k.notes)
    lines.append("{")
    _stmt(k.body, 1, lines)
    lines.append("}")
    return "\n".join(lines) + "\n"


def format_stmt(s: Stmt, depth: int = 0) -> str:
    """One statement (and what it nests), indented ``depth`` levels."""
    lines: list[str] = []
    _stmt(s, depth, lines)
    return "\n".join(lines)


def _stmt(s: Stmt, depth: int, out: list[str]) -> None:
    pad = INDENT * depth
    match s:
        case Seq(body=body):
            if not body:
                out.append(f"{pad}pass")
            for child in body:
                _stmt(child, depth, out)
        case Comment(text=text):
            out.extend(f"{pad}# {line}".rstrip() for line in text.splitlines() or [""])
        case Let(var=var, value=value):
            out.append(f"{pad}let {var.name}: {var.dtype} = {format_expr(value)}")
        case Store(buffer=buf, index=index, value=value):
            out.append(f"{pad}{buf.name}[{format_expr(index)}] = {format_expr(value)}")
        case AtomicAdd(buffer=buf, index=index, value=value):
            out.append(f"{pad}atomic {buf.name}[{format_expr(index)}] += {format_expr(value)}")
        case Barrier(threads=threads):
            out.append(f"{pad}barrier()" if threads is None else f"{pad}barrier({threads} threads)")
        case Return():
            out.append(f"{pad}return")
        case Prefetch(buffer=buf, index=index):
            out.append(f"{pad}prefetch {buf.name}[{format_expr(index)}]")
        case Copy():
            out.append(pad + _copy(s))
        case Asm(template=template, outputs=outputs, inputs=inputs):
            outs = ", ".join(f"{b.name}[{format_expr(i)}]" for b, i in outputs)
            ins = ", ".join(format_expr(e) for e in inputs)
            out.append(f"{pad}ptx \"{template}\" -> ({outs}) <- ({ins})")
        case For(var=var, start=start, stop=stop, step=step, body=body, kind=kind, unroll=unroll):
            bounds = f"{format_expr(start)}, {format_expr(stop)}"
            if not (isinstance(step, Const) and step.value == 1):
                bounds += f", {format_expr(step)}"
            tag = "" if kind is LoopKind.SERIAL else f"  # {kind.value}"
            if unroll > 1:
                tag += f"  # unroll {unroll}"
            out.append(f"{pad}for {var.name} in range({bounds}):{tag}")
            _stmt(body, depth + 1, out)
        case If(cond=cond, then_body=then_body, else_body=else_body):
            out.append(f"{pad}if {format_expr(cond)}:")
            _stmt(then_body, depth + 1, out)
            while isinstance(else_body, If):  # else-if chains stay flat
                out.append(f"{pad}elif {format_expr(else_body.cond)}:")
                _stmt(else_body.then_body, depth + 1, out)
                else_body = else_body.else_body
            if else_body is not None:
                out.append(f"{pad}else:")
                _stmt(else_body, depth + 1, out)
        case _:
            raise TypeError(f"cannot print statement {s!r}")


def _copy(c: Copy) -> str:
    def span(buf: Buffer, index: Expr) -> str:
        at = format_expr(index)
        return f"{buf.name}[{at}]" if c.lanes == 1 else f"{buf.name}[{at} : +{c.lanes}]"

    text = f"copy {span(c.dst, c.dst_index)} <- {span(c.src, c.src_index)}"
    if c.aligned:
        text += "  aligned"
    if c.predicate is not None:
        text += f"  if {format_expr(c.predicate)}"
    if c.element_predicates is not None:
        text += f"  lanes if ({', '.join(format_expr(p) for p in c.element_predicates)})"
    if c.fill is not None:
        text += f"  else {format_expr(c.fill)}"
    return text
