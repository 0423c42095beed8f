"""Loop IR → LLVM IR for CPUs, built with llvmlite's IR builder.

The function follows the runtime ABI::

    void @<name>(ptr %argv, i64 %begin, i64 %end)

It runs the blocks whose linear index lies in ``[begin, end)`` (x fastest), so the runtime
can split a grid over cores. ``argv`` holds 64-bit slots: each parameter in order (pointers
as integers; integer scalars as ``i64``; float scalars as the bits of a C ``double``), then
each symbol, then the grid extents gx, gy, gz, which the runtime has already evaluated.

A CPU block is one thread: ``ThreadIdx`` is 0 and barriers vanish. Scalars are SSA values
named after their Vars, loops are phi-based with blocks named after the loop variable, and
local buffers are ``alloca``'d at entry so SROA turns fully unrolled register tiles back into
registers. ``UNROLL`` and ``VECTORIZE`` loops carry ``llvm.loop`` hints; the function
carries the host's ``target-cpu``/``target-features`` so the vectorizer uses its full width.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import llvmlite.binding as llvm_binding
from llvmlite import ir
from tegula.ir.dtypes import DType, f32, f64, i64
from tegula.ir.loop import (
    AtomicAdd,
    Barrier,
    Binary,
    BinaryOp,
    Buffer,
    Comment,
    Const,
    Copy,
    Expr,
    For,
    If,
    Let,
    LoopKernel,
    LoopKind,
    Prefetch,
    Return,
    Scope,
    Seq,
    Stmt,
    Store,
    Unary,
    UnaryOp,
    Var,
    stmt_exprs,
    walk_exprs,
    walk_stmts,
)
from tegula.ir.verify_loop import LoopIRError

from .llvm_expr import LlvmExprLowering
from .llvm_types import I8, I32, I64, PTR, convert, declare, memory_type, value_type
from .nonnegative import NonNegative, is_positive_constant


def generate_llvm(
    k: LoopKernel,
    *,
    triple: str | None = None,
    data_layout: str | None = None,
    cpu: str | None = None,
    features: str | None = None,
) -> str:
    """LLVM IR text of a module defining ``void @<k.name>(ptr, i64, i64)``.

    ``triple``/``data_layout`` default to this process's host; ``cpu``/``features`` (the
    ``target-cpu``/``target-features`` function attributes) default to the host's when
    ``triple`` is not given, and are left out otherwise.
    """
    if triple is None:
        host_triple, host_layout, host_cpu, host_features = _host()
        triple, data_layout = host_triple, data_layout or host_layout
        cpu, features = cpu or host_cpu, features if features is not None else host_features
    module = ir.Module(name=k.name)
    module.triple = triple
    if data_layout:
        module.data_layout = data_layout
    _KernelLowering(k, module, cpu, features).run()
    return str(module)


@cache
def _host() -> tuple[str, str, str, str]:
    llvm_binding.initialize_native_target()
    triple = llvm_binding.get_process_triple()
    target = llvm_binding.Target.from_triple(triple)
    machine = target.create_target_machine(cpu=llvm_binding.get_host_cpu_name())
    features = llvm_binding.get_host_cpu_features().flatten()
    return triple, str(machine.target_data), llvm_binding.get_host_cpu_name(), features


class _FunctionAttributes(ir.values.FunctionAttributes):
    """llvmlite's attribute set plus ``"key"="value"`` string attributes."""

    def __init__(self, strings: dict[str, str]) -> None:
        super().__init__(["nounwind"])
        self.strings = strings

    def _to_list(self, ret_type: ir.Type) -> list[str]:
        return [*super()._to_list(ret_type), *(f'"{k}"="{v}"' for k, v in self.strings.items())]


def _straight_line(body: Stmt) -> bool:
    """No branches and no library calls inside: no nested loop, no if, no predicated copy,
    no math function that becomes a scalar C library call."""
    for s in walk_stmts(body):
        if isinstance(s, For | If) or (isinstance(s, Copy) and s.predicate is not None):
            return False
        for root in stmt_exprs(s):
            for e in walk_exprs(root):
                if (
                    isinstance(e, Unary)
                    and e.op in _LIBRARY_CALLS
                    and not (e.op in (UnaryOp.EXP, UnaryOp.EXP2) and e.dtype is f32)
                ):
                    return False
                if isinstance(e, Binary) and e.op is BinaryOp.POW:
                    return False
    return True


# Math that LLVM turns into calls (f32 exp/exp2 are emitted inline, see llvm_math.py).
_LIBRARY_CALLS = frozenset(
    {
        UnaryOp.EXP,
        UnaryOp.EXP2,
        UnaryOp.LOG,
        UnaryOp.LOG2,
        UnaryOp.TANH,
        UnaryOp.ERF,
        UnaryOp.SIN,
        UnaryOp.COS,
    }
)


class _LoopID(ir.values.MDValue):
    """A distinct, self-referential ``llvm.loop`` node: ``distinct !{self, hints...}``."""

    def __init__(self, module: ir.Module, hints: list[ir.values.MDValue]) -> None:
        super().__init__(module, [], name=str(len(module.metadata)))
        self.operands = (self, *hints)

    def descr(self, buf: list[str]) -> None:
        buf.append("distinct ")
        super().descr(buf)

    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other


class _KernelLowering:
    def __init__(self, k: LoopKernel, module: ir.Module, cpu: str | None, features: str | None):
        self.k = k
        self.module = module
        fnty = ir.FunctionType(ir.VoidType(), [PTR, I64, I64])
        self.func = ir.Function(module, fnty, k.name)
        strings = {}
        if cpu:
            strings["target-cpu"] = cpu
        if features:
            strings["target-features"] = features
        self.func.attributes = _FunctionAttributes(strings)
        self.argv, self.begin, self.end = self.func.args
        self.argv.name, self.begin.name, self.end.name = "argv", "begin", "end"
        self.b = ir.IRBuilder(self.func.append_basic_block("entry"))
        self.scopes: list[dict[Var, ir.Value]] = [{}]
        self.nonneg_scopes: list[dict[Var, bool]] = [{}]
        self.pointers: dict[Buffer, ir.Value] = {}
        self.block_idx: list[ir.Value] = []
        self.bound_values: set[int] = set()
        self.expr = LlvmExprLowering(
            self.b,
            self.value_of,
            self.pointer_of,
            lambda axis: self.block_idx[axis],
            NonNegative(self.is_nonnegative),
        )

    # ------------------------------------------------------------------ scopes

    def value_of(self, var: Var) -> ir.Value:
        for scope in reversed(self.scopes):
            if var in scope:
                return scope[var]
        raise LoopIRError(f"kernel {self.k.name!r}: variable {var.name!r} is not defined")

    def pointer_of(self, buf: Buffer) -> ir.Value:
        try:
            return self.pointers[buf]
        except KeyError:
            raise LoopIRError(
                f"kernel {self.k.name!r}: buffer {buf.name!r} is not declared"
            ) from None

    def is_nonnegative(self, var: Var) -> bool:
        return any(scope.get(var, False) for scope in self.nonneg_scopes)

    def bind(self, var: Var, value: ir.Value, nonnegative: bool) -> None:
        self.scopes[-1][var] = value
        self.nonneg_scopes[-1][var] = nonnegative
        self.bound_values.add(id(value))

    def nested(
        self,
        body: Stmt,
        var: Var | None = None,
        value: ir.Value | None = None,
        nonneg: bool = False,
    ) -> None:
        self.scopes.append({})
        self.nonneg_scopes.append({})
        if var is not None and value is not None:
            self.bind(var, value, nonneg)
        self.stmt(body)
        self.scopes.pop()
        self.nonneg_scopes.pop()

    # ------------------------------------------------------------------ the function

    def run(self) -> None:
        b, k = self.b, self.k
        if k.source_name:
            b.comment(f"{k.name}: from {k.source_name}")
        slot = 0

        def next_slot(name: str) -> ir.Value:
            nonlocal slot
            address = b.gep(
                self.argv,
                [ir.Constant(I64, slot)],
                name=f"{name.split('.')[0]}.slot",
                source_etype=I64,
            )
            slot += 1
            return b.load(address, typ=I64, name=name)

        for p in k.params:
            bits = next_slot(f"{p.name}.bits")
            if p.buffer is not None:
                self.pointers[p.buffer] = b.inttoptr(bits, PTR, name=p.name)
            else:
                assert p.var is not None
                self.bind(p.var, self.scalar_argument(bits, p.var.dtype, p.name), False)
        for symbol in k.symbols:
            value = next_slot(symbol.name)
            if value_type(symbol.dtype) != I64:
                value = convert(b, value, i64, symbol.dtype)
            self.bind(symbol, value, True)  # extents and strides are never negative
        gx, gy, _ = (next_slot(axis) for axis in ("gx", "gy", "gz"))
        for buf in k.buffers:
            if buf.scope is Scope.LOCAL:
                array = ir.ArrayType(memory_type(buf.dtype), buf.size)
                slot = b.alloca(array, name=buf.name)
                # Whole cache lines: a vector stored to a buffer and loaded back (a staged
                # tile) is forwarded from the store only if neither access splits a line.
                slot.align = _LOCAL_ALIGN
                self.pointers[buf] = _opaque(slot)
        shared = [buf for buf in k.buffers if buf.scope is Scope.SHARED]
        if shared:
            smem = _opaque(b.alloca(ir.ArrayType(I8, k.smem_bytes), name="smem"))
            smem.align = 16
            for buf in shared:
                self.pointers[buf] = b.gep(
                    smem, [ir.Constant(I64, buf.smem_offset)], name=buf.name, source_etype=I8
                )
        self.block_loop(gx, gy)

    def scalar_argument(self, bits: ir.Value, dt: DType, name: str) -> ir.Value:
        b = self.b
        if dt.is_float:
            as_double = b.bitcast(bits, value_type(f64), name=f"{name}.f64")
            value = convert(b, as_double, f64, dt)
        else:
            value = convert(b, bits, i64, dt)
        if value is not bits and value is not None and isinstance(value, ir.Instruction):
            value.name = name
        return value

    def block_loop(self, gx: ir.Value, gy: ir.Value) -> None:
        """``for b in [begin, end)``: split ``b`` into block indices and run the body."""
        b = self.b
        preheader = b.block
        header = self.new_block("blocks.header")
        body = self.new_block("blocks.body")
        exit_ = self.new_block("blocks.exit")
        b.branch(header)
        self.start(header)
        linear = b.phi(I64, name="block")
        linear.add_incoming(self.begin, preheader)
        b.cbranch(b.icmp_signed("<", linear, self.end, name="more_blocks"), body, exit_)
        self.start(body)
        x = b.urem(linear, gx, name="bid.x.wide")
        rest = b.udiv(linear, gx, name="bid.yz")
        y = b.urem(rest, gy, name="bid.y.wide")
        z = b.udiv(rest, gy, name="bid.z.wide")
        self.block_idx = [
            b.trunc(v, I32, name=f"bid.{axis}") for v, axis in zip((x, y, z), "xyz", strict=True)
        ]
        self.nested(self.k.body)
        following = b.add(linear, ir.Constant(I64, 1), name="next_block")
        linear.add_incoming(following, b.block)
        b.branch(header)
        self.start(exit_)
        b.ret_void()

    # ------------------------------------------------------------------ blocks

    def new_block(self, name: str) -> ir.Block:
        """A block that joins the function when :meth:`start` reaches it (source order)."""
        return ir.Block(parent=self.func, name=name)

    def start(self, block: ir.Block) -> None:
        self.func.blocks.append(block)
        self.b.position_at_end(block)

    # ------------------------------------------------------------------ statements

    def stmt(self, s: Stmt) -> None:
        b = self.b
        match s:
            case Seq(body=body):
                for child in body:
                    self.stmt(child)
            case Comment(text=text):
                for line in text.splitlines():
                    b.comment(line)
            case Let(var=var, value=value):
                result = self.expr(value, name=var.name)
                fresh = isinstance(result, ir.Instruction) and id(result) not in self.bound_values
                # (llvmlite names unnamed values ".N")
                if fresh and not isinstance(value, Var) and result.name != var.name:
                    result.name = var.name
                self.bind(var, result, self.expr.nonnegative(value))
            case Store(buffer=buf, index=index, value=value):
                self.expr.store(buf, self.expr(index), self.expr(value))
            case AtomicAdd(buffer=buf, index=index, value=value):
                self.atomic_add(buf, index, value)
            case Prefetch(buffer=buf, index=index):
                self.prefetch(buf, index)
            case Barrier():
                pass  # one thread per block
            case Return():
                raise LoopIRError("a CPU kernel has one thread per block and no producer warp")
            case Copy():
                self.copy(s)
            case For():
                self.loop(s)
            case If(cond=cond, then_body=then_body, else_body=else_body):
                self.branch(self.expr(cond), then_body, else_body)
            case _:
                raise LoopIRError(f"cannot lower statement {type(s).__name__} to LLVM")

    def branch(self, cond: ir.Value, then_body: Stmt, else_body: Stmt | None) -> None:
        b = self.b
        then_block = self.new_block("if.then")
        else_block = self.new_block("if.else") if else_body is not None else None
        end_block = self.new_block("if.end")
        b.cbranch(cond, then_block, else_block or end_block)
        self.start(then_block)
        self.nested(then_body)
        b.branch(end_block)
        if else_block is not None:
            assert else_body is not None
            self.start(else_block)
            self.nested(else_body)
            b.branch(end_block)
        self.start(end_block)

    def loop(self, s: For) -> None:
        b, var = self.b, s.var
        start, stop, step = self.expr(s.start), self.expr(s.stop), self.expr(s.step)
        descending = isinstance(s.step, Const) and s.step.value < 0  # type: ignore[operator]
        preheader = b.block
        tag = var.name
        header = self.new_block(f"for.{tag}.header")
        body = self.new_block(f"for.{tag}.body")
        exit_ = self.new_block(f"for.{tag}.exit")
        b.branch(header)
        self.start(header)
        induction = b.phi(value_type(var.dtype), name=var.name)
        induction.add_incoming(start, preheader)
        compare = b.icmp_signed if var.dtype.is_signed else b.icmp_unsigned
        more = compare(">" if descending else "<", induction, stop, name=f"{tag}.more")
        b.cbranch(more, body, exit_)
        self.start(body)
        nonneg = self.expr.nonnegative(s.start) and is_positive_constant(s.step)
        self.nested(s.body, var, induction, nonneg)
        following = b.add(induction, step, name=f"{tag}.next")
        induction.add_incoming(following, b.block)
        backedge = b.branch(header)
        hints = self.loop_hints(s.kind, s.body, s.unroll)
        if hints:
            backedge.set_metadata("llvm.loop", _LoopID(self.module, hints))
        self.start(exit_)

    def loop_hints(self, kind: LoopKind, body: Stmt, unroll: int) -> list[ir.values.MDValue]:
        m = self.module
        if kind is LoopKind.UNROLL:
            return [m.add_metadata([ir.MetaDataString(m, "llvm.loop.unroll.full")])]
        if unroll > 1:
            count = ir.Constant(ir.IntType(32), unroll)
            return [m.add_metadata([ir.MetaDataString(m, "llvm.loop.unroll.count"), count])]
        if kind is LoopKind.VECTORIZE and _straight_line(body):
            # Forcing also lets LLVM reassociate float reductions. A body with branches is
            # left to the vectorizer's own judgement: forcing it there only earns a warning.
            enable = ir.Constant(ir.IntType(1), 1)
            return [m.add_metadata([ir.MetaDataString(m, "llvm.loop.vectorize.enable"), enable])]
        return []

    def prefetch(self, buf: Buffer, index: Expr) -> None:
        """``llvm.prefetch``: a read, kept in every cache level (locality 3), of data."""
        fn = declare(self.module, "llvm.prefetch.p0", ir.VoidType(), [PTR, I32, I32, I32])
        address = self.expr.address(buf, self.expr(index), name=f"{buf.name}.ahead")
        flags = [ir.Constant(I32, v) for v in (0, 3, 1)]
        self.b.call(fn, [address, *flags])

    def atomic_add(self, buf: Buffer, index: Expr, value: Expr) -> None:
        dt = buf.dtype
        if dt.name == "bf16":
            raise LoopIRError(f"atomic add to {buf.name!r}: no bf16 atomics on the CPU target")
        address = self.expr.address(buf, self.expr(index))
        op = "fadd" if dt.is_float else "add"
        self.b.atomic_rmw(op, address, self.expr(value), "monotonic")

    # ------------------------------------------------------------------ copies

    def copy(self, c: Copy) -> None:
        dst_index, src_index = self.expr(c.dst_index), self.expr(c.src_index)
        if c.element_predicates is not None:
            for lane, pred in enumerate(c.element_predicates):
                self.guarded(
                    self.expr(pred),
                    lambda lane=lane: self.copy_lane(c, dst_index, src_index, lane),
                    None
                    if c.fill is None
                    else lambda lane=lane: self.fill_lane(c, dst_index, lane),
                )
            return
        if c.predicate is None:
            self.copy_all(c, dst_index, src_index)
            return
        fill = None if c.fill is None else lambda: self.fill_all(c, dst_index)
        self.guarded(self.expr(c.predicate), lambda: self.copy_all(c, dst_index, src_index), fill)

    def guarded(
        self, cond: ir.Value, then: Callable[[], None], otherwise: Callable[[], None] | None
    ) -> None:
        b = self.b
        then_block = self.new_block("copy.then")
        else_block = self.new_block("copy.else") if otherwise else None
        end_block = self.new_block("copy.end")
        b.cbranch(cond, then_block, else_block or end_block)
        self.start(then_block)
        then()
        b.branch(end_block)
        if else_block is not None and otherwise is not None:
            self.start(else_block)
            otherwise()
            b.branch(end_block)
        self.start(end_block)

    def lane_index(self, index: ir.Value, lane: int) -> ir.Value:
        return index if lane == 0 else self.b.add(index, ir.Constant(index.type, lane))

    def copy_lane(self, c: Copy, dst_index: ir.Value, src_index: ir.Value, lane: int) -> None:
        raw = self.b.load(
            self.expr.address(c.src, self.lane_index(src_index, lane)),
            typ=memory_type(c.src.dtype),
            name=c.src.name,
        )
        self.b.store(raw, self.expr.address(c.dst, self.lane_index(dst_index, lane)))

    def fill_lane(self, c: Copy, dst_index: ir.Value, lane: int) -> None:
        assert c.fill is not None
        self.expr.store(c.dst, self.lane_index(dst_index, lane), self.expr(c.fill))

    def copy_all(self, c: Copy, dst_index: ir.Value, src_index: ir.Value) -> None:
        b = self.b
        if c.lanes == 1:
            self.copy_lane(c, dst_index, src_index, 0)
            return
        vector = ir.VectorType(memory_type(c.src.dtype), c.lanes)
        loaded = b.load(self.expr.address(c.src, src_index), typ=vector,
                        align=self.copy_alignment(c, c.src), name=f"{c.src.name}.vec")
        b.store(loaded, self.expr.address(c.dst, dst_index), align=self.copy_alignment(c, c.dst))

    @staticmethod
    def copy_alignment(c: Copy, buf: Buffer) -> int:
        """What a vector access of ``buf`` may assume: the whole vector where ``aligned``
        says so and the buffer is the kernel's own; an argument's elements only (a NumPy
        view may start anywhere, and unaligned vector loads cost nothing extra on CPUs)."""
        if not c.aligned:
            return 1
        if buf.scope is Scope.GLOBAL:
            return buf.dtype.itemsize
        return c.lanes * buf.dtype.itemsize

    def fill_all(self, c: Copy, dst_index: ir.Value) -> None:
        for lane in range(c.lanes):
            self.fill_lane(c, dst_index, lane)


_LOCAL_ALIGN = 64  # bytes: a cache line, and the widest vector (AVX-512)


def _opaque(alloca: ir.AllocaInstr) -> ir.AllocaInstr:
    """An ``alloca`` typed as an opaque ``ptr``, like every other pointer in the module.

    llvmlite types allocas as typed pointers, whose element type then clashes with the
    vector and scalar accesses made through them; the printed IR is the same.
    """
    alloca.type = PTR
    return alloca
