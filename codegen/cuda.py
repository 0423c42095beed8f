"""Loop IR → CUDA C++: one readable ``extern "C"`` kernel per :class:`LoopKernel`.

The kernel follows the runtime ABI: its parameters are the kernel's ``params`` in order
(tensors as ``T* __restrict__``, ``const`` when read-only; scalars by value) and then its
``symbols`` as ``long long``; it is launched with ``block_threads`` threads and
``smem_bytes`` of dynamic shared memory, which shared buffers address at their offsets.

The generated file is meant to be read: Loop IR names become C names, DSL source lines
arrive as ``//`` comments, unrolled loops carry ``#pragma unroll``, and only the headers
and helpers the kernel uses are included.
"""

from __future__ import annotations

from tegula.ir.dtypes import f32, f64
from tegula.ir.loop import (
    Asm,
    AtomicAdd,
    Barrier,
    Binary,
    BinaryOp,
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
    LoopKernel,
    LoopKind,
    Return,
    Scope,
    Seq,
    Stmt,
    Store,
    ThreadIdx,
    Var,
    stmt_exprs,
    walk_exprs,
    walk_stmts,
)
from tegula.ir.printer_loop import format_expr
from tegula.ir.verify_loop import LoopIRError
from tegula.passes.simplify import simplify_expr

from .cuda_expr import ATOM, CONDITIONAL, UNARY, CudaExprPrinter, ctype
from .cuda_names import CNames
from .cuda_pairs import PAIR_FROM_BITS, PAIR_HELPER, PAIR_TYPE, paired_loop
from .nonnegative import NonNegative, is_positive_constant

INDENT = "    "
MAX_LINE = 100
_VECTOR_BYTES = 16  # the widest single access

_FLOOR_HELPERS = {
    "floordiv": """\
__device__ __forceinline__ {T} floordiv({T} a, {T} b) {{
    const {T} q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}}""",
    "floormod": """\
__device__ __forceinline__ {T} floormod({T} a, {T} b) {{
    const {T} r = a % b;
    return (r != 0 && (r < 0) != (b < 0)) ? r + b : r;
}}""",
}


TENSOR_MAP_TYPE = "tensor_map_t"


def generate_cuda(k: LoopKernel) -> str:
    """CUDA C++ source defining ``extern "C" __global__ void <k.name>(...)``."""
    return _CudaKernelWriter(k).write()


def vector_type(buf: Buffer, lanes: int) -> str:
    """The type one aligned access of ``lanes`` elements of ``buf`` goes through."""
    nbytes = lanes * buf.dtype.itemsize
    if buf.dtype is f32 and lanes in (2, 4):
        return f"float{lanes}"
    if buf.dtype is f64 and lanes == 2:
        return "double2"
    by_size = {16: "uint4", 8: "uint2", 4: "unsigned int", 2: "unsigned short"}
    if nbytes not in by_size:
        raise LoopIRError(f"no vector type for {lanes} x {buf.dtype} ({nbytes} bytes)")
    return by_size[nbytes]


class _CudaKernelWriter:
    def __init__(self, k: LoopKernel) -> None:
        self.k = k
        self.names = CNames()
        self.nonneg_vars: list[dict[Var, bool]] = [{}]
        self.buffer_names: dict[Buffer, str] = {}
        self.lines: list[str] = []
        self.depth = 1
        self.specials: dict[Expr, str] = {}
        self.pair_helpers: set[str] = set()  # half types whose bits-to-pair helper is called
        self.expr = CudaExprPrinter(
            self.names.lookup, self.buffer_name, NonNegative(self.is_nonnegative), self.specials
        )

    # ------------------------------------------------------------------ scopes and names

    def buffer_name(self, buf: Buffer) -> str:
        try:
            return self.buffer_names[buf]
        except KeyError:
            raise LoopIRError(
                f"kernel {self.k.name!r}: buffer {buf.name!r} is not declared"
            ) from None

    def narrowed_size(self, value: Expr) -> bool:
        """Whether ``value`` is a size symbol narrowed to 32 bits: nonnegative, since the
        launcher of a 32-bit kernel passes no size above ``2^31 - 1``."""
        return (
            self.k.index_bits == 32
            and isinstance(value, Cast)
            and isinstance(value.operand, Var)
            and value.operand in self.k.symbols
        )

    def is_nonnegative(self, var: Var) -> bool:
        return any(scope.get(var, False) for scope in self.nonneg_vars)

    def bind(self, var: Var, nonnegative: bool) -> str:
        self.nonneg_vars[-1][var] = nonnegative
        return self.names.bind(var)

    def open_block(self) -> None:
        self.depth += 1
        self.names.push()
        self.nonneg_vars.append({})

    def close_block(self) -> None:
        self.depth -= 1
        self.names.pop()
        self.nonneg_vars.pop()

    def emit(self, line: str) -> None:
        self.lines.append(INDENT * self.depth + line if line else "")

    # ------------------------------------------------------------------ the file

    def write(self) -> str:
        k = self.k
        params = self.declare_params()
        prologue = self.prologue()
        self.stmt(k.body)
        body = prologue + self.lines

        out = [f"// {k.name}" + (f": from {k.source_name}" if k.source_name else "")]
        grid = ", ".join(format_expr(g) for g in k.grid)
        out.append(
            f"// grid ({grid}), {k.block_threads} threads, {k.smem_bytes} bytes of shared memory"
        )
        out.extend(f"// {note}" for note in k.notes)
        dtypes = {e.dtype.name for e in self.all_exprs()} | {
            b.dtype.name for b in self.buffer_names
        }
        if "f16" in dtypes:
            out.append("#include <cuda_fp16.h>")
        if "bf16" in dtypes:
            out.append("#include <cuda_bf16.h>")
        out.append("")
        if self.expr.helpers_used:
            out.append("// Floor division and modulo (Python's) for signed integers.")
            for helper in sorted(self.expr.helpers_used):
                out.extend(_FLOOR_HELPERS[helper].format(T=t) for t in ("int", "long long"))
            out.append("")
        if self.k.tensor_maps:
            out.append("// A TMA tensor map (CUtensorMap): 128 opaque bytes the launcher encodes.")
            out.append(
                f"struct __align__(64) {TENSOR_MAP_TYPE} {{ unsigned long long bits[16]; }};"
            )
            out.append("")
        if self.pair_helpers:
            out.append("// A 32-bit word's bits as a pair of half-precision lanes.")
            for half in sorted(self.pair_helpers):
                out.append(PAIR_HELPER.format(P=PAIR_TYPE[half], name=PAIR_FROM_BITS[half]))
            out.append("")
        head = f'extern "C" __global__ void __launch_bounds__({k.block_threads}) {k.name}('
        one_line = head + ", ".join(params) + ")"
        if len(one_line) <= MAX_LINE:
            out.append(one_line)
        else:
            out.append(head)
            out.extend(f"{INDENT}{p}," for p in params[:-1])
            out.append(f"{INDENT}{params[-1]})" if params else ")")
        out.append("{")
        out.extend(body)
        out.append("}")
        return "\n".join(out) + "\n"

    def all_exprs(self) -> list[Expr]:
        found: list[Expr] = []
        for s in walk_stmts(self.k.body):
            for e in stmt_exprs(s):
                found.extend(walk_exprs(e))
        return found

    def declare_params(self) -> list[str]:
        params: list[str] = []
        for p in self.k.params:
            name = self.names.fresh(p.name)
            if p.buffer is not None:
                const = "const " if p.buffer.read_only else ""
                params.append(f"{const}{ctype(p.buffer.dtype)}* __restrict__ {name}")
                self.buffer_names[p.buffer] = name
            else:
                assert p.var is not None
                params.append(f"{ctype(p.var.dtype)} {name}")
                self.names.assign(p.var, name)
        for symbol in self.k.symbols:
            self.nonneg_vars[-1][symbol] = True  # sizes and strides are never negative
            params.append(f"long long {self.names.bind(symbol)}")
        for tensor_map in self.k.tensor_maps:
            name = self.names.fresh(tensor_map.buffer.name)
            params.append(f"const __grid_constant__ {TENSOR_MAP_TYPE} {name}")
            self.buffer_names[tensor_map.buffer] = name
        return params

    def prologue(self) -> list[str]:
        """Buffers, then signed copies of the thread and block indices the body reads."""
        lines: list[str] = []
        shared = [b for b in self.k.buffers if b.scope is Scope.SHARED]
        if shared:
            align = self.k.smem_align
            lines.append(f"{INDENT}extern __shared__ __align__({align}) unsigned char smem[];")
        for buf in self.k.buffers:
            name = self.names.fresh(buf.name)
            self.buffer_names[buf] = name
            t = ctype(buf.dtype)
            if buf.scope is Scope.SHARED:
                lines.append(
                    f"{INDENT}{t}* {name} = reinterpret_cast<{t}*>(smem + {buf.smem_offset});"
                )
            else:
                lines.append(f"{INDENT}{_aligned(buf)}{t} {name}[{buf.size}];")
        used = {e for e in self.all_exprs() if isinstance(e, ThreadIdx | BlockIdx)}
        used.update(e for g in self.k.grid for e in walk_exprs(g) if isinstance(e, BlockIdx))
        if ThreadIdx() in used:
            self.specials[ThreadIdx()] = name = self.names.fresh("thread_idx")
            lines.append(f"{INDENT}const int {name} = threadIdx.x;")
        for axis in range(3):
            if BlockIdx(axis) in used:
                self.specials[BlockIdx(axis)] = name = self.names.fresh(f"block_idx_{'xyz'[axis]}")
                lines.append(f"{INDENT}const int {name} = blockIdx.{'xyz'[axis]};")
        if lines:
            lines.append("")
        return lines

    # ------------------------------------------------------------------ statements

    def block(self, body: Stmt) -> None:
        self.open_block()
        self.stmt(body)
        self.close_block()

    def stmt(self, s: Stmt) -> None:
        match s:
            case Seq(body=body):
                for child in body:
                    self.stmt(child)
            case Comment(text=text):
                for line in text.splitlines() or [""]:
                    self.emit(f"// {line}".rstrip())
            case Let(var=var, value=value):
                text = self.expr(value)
                name = self.bind(var, self.expr.nonnegative(value) or self.narrowed_size(value))
                self.emit(f"{ctype(var.dtype)} {name} = {text};")
            case Store(buffer=buf, index=index, value=value):
                self.emit(f"{self.element(buf, index)} = {self.expr(value)};")
            case AtomicAdd(buffer=buf, index=index, value=value):
                self.atomic_add(buf, index, value)
            case Barrier(threads=None):
                self.emit("__syncthreads();")
            case Barrier(threads=threads):
                # Barrier 0 is __syncthreads()'s; 1 is the one the remaining warps share.
                self.emit(f'asm volatile("bar.sync 1, {threads};" ::: "memory");')
            case Return():
                self.emit("return;")
            case Copy():
                self.copy(s)
            case Asm():
                self.asm(s)
            case For():
                self.loop(s)
            case If(cond=cond, then_body=then_body, else_body=else_body):
                self.emit(f"if ({self.expr(cond)}) {{")
                self.block(then_body)
                while isinstance(else_body, If):
                    self.emit(f"}} else if ({self.expr(else_body.cond)}) {{")
                    self.block(else_body.then_body)
                    else_body = else_body.else_body
                if else_body is not None:
                    self.emit("} else {")
                    self.block(else_body)
                self.emit("}")
            case _:
                raise LoopIRError(f"cannot generate CUDA for statement {type(s).__name__}")

    def asm(self, a: Asm) -> None:
        outs = [f'"{c}"({self.element(b, i)})' for (b, i), c in
                zip(a.outputs, a.output_constraints, strict=True)]
        ins = [f'"{c}"({self.expr(e)})' for e, c in zip(a.inputs, a.input_constraints, strict=True)]
        clobber = ' : "memory"' if a.memory else ""
        operands = f" : {', '.join(outs)} : {', '.join(ins)}{clobber}"
        if not outs and not ins and not a.memory:
            operands = ""
        self.emit(f'asm volatile("{a.template}"{operands});')

    def element(self, buf: Buffer, index: Expr) -> str:
        return f"{self.buffer_name(buf)}[{self.expr(index)}]"

    def atomic_add(self, buf: Buffer, index: Expr, value: Expr) -> None:
        dt = buf.dtype
        if dt.is_int and dt.is_signed and dt.bits == 64:
            # No signed 64-bit atomicAdd; two's-complement addition is the same bits.
            ull = "unsigned long long"
            self.emit(
                f"atomicAdd(reinterpret_cast<{ull}*>(&{self.element(buf, index)}), "
                f"({ull}){self.expr.operand(value, UNARY)});"
            )
        elif dt.is_int and dt.bits < 32:
            raise LoopIRError(f"atomic add to {buf.name!r}: CUDA has none for {dt}")
        else:
            self.emit(f"atomicAdd(&{self.element(buf, index)}, {self.expr(value)});")

    def loop(self, s: For) -> None:
        paired = paired_loop(s, self.expr, self.buffer_name, self.names.fresh, simplify_expr)
        if paired is not None:
            lines, helpers = paired
            self.pair_helpers |= helpers
            self.emit(f"// elements {format_expr(s.var)} = 2t, 2t + 1 in two-lane instructions")
            for line in lines:
                self.emit(line)
            return
        var, start, stop, step = s.var, s.start, s.stop, s.step
        start_text = self.expr(start)
        descending = isinstance(step, Const) and step.value < 0  # type: ignore[operator]
        stop_text = self.expr.operand(stop, 11)
        step_text = self.expr(step) if not descending else self.expr.operand(_negate(step), ATOM)
        self.open_block()
        nonneg = self.expr.nonnegative(start) and is_positive_constant(step)
        name = self.bind(var, nonneg)
        if isinstance(step, Const) and abs(step.value) == 1:  # type: ignore[arg-type]
            advance = f"--{name}" if descending else f"++{name}"
        else:
            advance = f"{name} -= {step_text}" if descending else f"{name} += {step_text}"
        compare = ">" if descending else "<"
        self.depth -= 1
        if s.kind is LoopKind.UNROLL:
            self.emit("#pragma unroll")
        elif s.unroll > 1:
            self.emit(f"#pragma unroll {s.unroll}")
        self.emit(
            f"for ({ctype(var.dtype)} {name} = {start_text}; {name} {compare} {stop_text}; "
            f"{advance}) {{"
        )
        self.depth += 1
        self.stmt(s.body)
        self.close_block()
        self.emit("}")

    # ------------------------------------------------------------------ copies

    def copy(self, c: Copy) -> None:
        if c.element_predicates is not None:
            for lane, pred in enumerate(c.element_predicates):
                self.guarded_element_copy(c, lane, pred)
            return
        if c.predicate is None:
            self.unguarded_copy(c)
            return
        if c.lanes == 1 and c.fill is not None:
            value = (
                f"{self.expr.operand(c.predicate, CONDITIONAL + 1)} ? "
                f"{self.element(c.src, c.src_index)} : {self.expr.operand(c.fill, CONDITIONAL + 1)}"
            )
            self.emit(f"{self.element(c.dst, c.dst_index)} = {value};")
            return
        self.emit(f"if ({self.expr(c.predicate)}) {{")
        self.open_block()
        self.unguarded_copy(c)
        self.close_block()
        if c.fill is not None:
            self.emit("} else {")
            self.open_block()
            fill = self.expr(c.fill)
            for lane in range(c.lanes):
                self.emit(f"{self.lane(c.dst, c.dst_index, lane)} = {fill};")
            self.close_block()
        self.emit("}")

    def unguarded_copy(self, c: Copy) -> None:
        if c.lanes == 1 or not c.aligned:
            for lane in range(c.lanes):
                dst, src = self.lane(c.dst, c.dst_index, lane), self.lane(c.src, c.src_index, lane)
                self.emit(f"{dst} = {src};")
            return
        per_access = min(c.lanes, max(1, _VECTOR_BYTES // c.dst.dtype.itemsize))
        vec = vector_type(c.dst, per_access)
        for first in range(0, c.lanes, per_access):
            dst = self.lane(c.dst, c.dst_index, first)
            src = self.lane(c.src, c.src_index, first)
            self.emit(
                f"*reinterpret_cast<{vec}*>(&{dst}) = *reinterpret_cast<const {vec}*>(&{src});"
            )

    def guarded_element_copy(self, c: Copy, lane: int, pred: Expr) -> None:
        dst, src = self.lane(c.dst, c.dst_index, lane), self.lane(c.src, c.src_index, lane)
        cond = self.expr(pred)
        if c.fill is None:
            self.emit(f"if ({cond}) {dst} = {src};")
        else:
            guard = self.expr.operand(pred, CONDITIONAL + 1)
            self.emit(f"{dst} = {guard} ? {src} : {self.expr.operand(c.fill, CONDITIONAL + 1)};")

    def lane(self, buf: Buffer, index: Expr, lane: int) -> str:
        if lane == 0:
            return self.element(buf, index)
        if isinstance(index, Const):
            return self.element(buf, Const(index.value + lane, index.type))  # type: ignore[operator]
        return self.element(buf, Binary(BinaryOp.ADD, index, Const(lane, index.dtype)))


def _aligned(buf: Buffer) -> str:
    """The alignment a local array's whole-register accesses need: its vector copies and
    two-lane reads reinterpret it as words of up to 16 bytes."""
    nbytes = (buf.size or 0) * buf.dtype.itemsize
    align = min(_VECTOR_BYTES, nbytes & -nbytes)
    return f"__align__({align}) " if align >= 4 and (buf.size or 0) > 1 else ""


def _negate(step: Expr) -> Expr:
    assert isinstance(step, Const)
    return Const(-step.value, step.type)  # type: ignore[operator]


__all__ = ["generate_cuda", "vector_type"]
