"""Loop IR verifier: the checks both code generators rely on.

:func:`verify_loop_kernel` raises :class:`LoopIRError` at the first problem, with a message
that names the kernel, the offending node and, inside loops and branches, where it sits.

The rules, kept deliberately simple:

* **Types.** Every dtype a kernel computes on or stores has native arithmetic (sub-byte and
  8-bit float types must have been unpacked into wider words before Loop IR). The operands
  of a :class:`Binary` have *the same* dtype (shifts included: cast the amount first).
  Arithmetic (``+ - * / min max``) takes ints or floats; ``// %``, bitwise ops and shifts
  take ints (``& | ^`` also bools); ``pow`` takes floats; ``&& ||`` take bools; comparisons
  take any two equal types. :class:`Unary` math functions take floats; ``not`` a bool,
  ``bitnot`` an int, ``neg``/``abs`` an int or a float. A :class:`Select` has a bool
  condition and branches of one dtype. Indices and loop bounds are integers.
* **Scopes.** A :class:`Var` is defined by a scalar parameter, a symbol, an enclosing
  :class:`For`, or an earlier :class:`Let` of an enclosing statement list. A Let inside a
  loop body or a branch is visible only to the statements after it in that body. A Var is
  used with the dtype it was defined with. Grid expressions may use only symbols.
* **Memory.** Loads, stores, copies and atomics address a tensor parameter or a buffer listed
  in ``LoopKernel.buffers``, and never write a read-only one. Listed buffers are ``shared``
  or ``local`` with a positive size; shared ones fit in ``smem_bytes`` at an offset aligned
  to their element size. Stored values have the buffer's dtype. A :class:`Copy` moves 1, 2,
  4, 8 or 16 lanes between buffers of one dtype, with a bool predicate, a fill of that
  dtype, and one bool per lane when masked element by element.
"""

from __future__ import annotations

from .dtypes import DType
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
    TensorMap,
    ThreadIdx,
    Unary,
    UnaryOp,
    Var,
    walk_exprs,
)


class LoopIRError(ValueError):
    """A Loop IR kernel breaks a rule of :mod:`tegula.ir.verify_loop`."""


COPY_LANES = (1, 2, 4, 8, 16)

_ARITHMETIC = frozenset(
    {BinaryOp.ADD, BinaryOp.SUB, BinaryOp.MUL, BinaryOp.DIV, BinaryOp.MIN, BinaryOp.MAX}
)
_INTEGER_ONLY = frozenset({BinaryOp.FLOORDIV, BinaryOp.MOD, BinaryOp.SHL, BinaryOp.SHR})
_BITWISE = frozenset({BinaryOp.BITAND, BinaryOp.BITOR, BinaryOp.BITXOR})
_FLOAT_FUNCTIONS = frozenset(UnaryOp) - {UnaryOp.NEG, UnaryOp.NOT, UnaryOp.BITNOT, UnaryOp.ABS}


def verify_loop_kernel(kernel: LoopKernel) -> None:
    """Check ``kernel`` against the rules above; raise :class:`LoopIRError` if one fails."""
    _Verifier(kernel).run()


class _Verifier:
    def __init__(self, kernel: LoopKernel) -> None:
        self.kernel = kernel
        self.buffers: dict[str, Buffer] = {}
        # One dict per open statement list; a Var is visible while its dict is on the stack.
        self.scopes: list[dict[str, Var]] = [{}]
        self.where: list[str] = []

    # ------------------------------------------------------------------ reporting

    def fail(self, message: str) -> LoopIRError:
        place = f" (in {' > '.join(self.where)})" if self.where else ""
        return LoopIRError(f"kernel {self.kernel.name!r}: {message}{place}")

    # ------------------------------------------------------------------ kernel header

    def run(self) -> None:
        k = self.kernel
        if k.block_threads < 1:
            raise self.fail(f"block_threads must be positive, got {k.block_threads}")
        if k.smem_bytes < 0:
            raise self.fail(f"smem_bytes must be non-negative, got {k.smem_bytes}")
        names: set[str] = set()

        def claim(name: str, what: str) -> None:
            if name in names:
                raise self.fail(f"{what} {name!r} reuses a name already taken in the header")
            names.add(name)

        for param in k.params:
            claim(param.name, "parameter")
            if (param.buffer is None) == (param.var is None):
                raise self.fail(f"parameter {param.name!r} needs exactly one of buffer or var")
            if param.buffer is not None:
                if param.buffer.scope is not Scope.GLOBAL:
                    raise self.fail(
                        f"tensor parameter {param.name!r} has scope "
                        f"{param.buffer.scope.value}, expected global"
                    )
                self.check_storable(param.buffer.dtype, f"tensor parameter {param.name!r}")
                self.buffers[param.buffer.name] = param.buffer
            else:
                assert param.var is not None
                self.check_storable(param.var.dtype, f"scalar parameter {param.name!r}")
                self.define(param.var)
        for symbol in k.symbols:
            claim(symbol.name, "symbol")
            if not symbol.dtype.is_int:
                raise self.fail(f"symbol {symbol.name!r} has dtype {symbol.dtype}, expected an int")
            self.define(symbol)
        for tensor_map in k.tensor_maps:
            claim(tensor_map.buffer.name, "tensor map")
            self.check_tensor_map(tensor_map)
            self.buffers[tensor_map.buffer.name] = tensor_map.buffer
        for buf in k.buffers:
            claim(buf.name, "buffer")
            self.check_buffer(buf)
            self.buffers[buf.name] = buf

        symbols = {s.name: s for s in k.symbols}
        for axis, extent in zip("xyz", k.grid, strict=True):
            self.where = [f"grid.{axis}"]
            for sub in walk_exprs(extent):
                if isinstance(sub, Var) and symbols.get(sub.name) != sub:
                    raise self.fail(f"grid uses {sub.name!r}, which is not a symbol")
                if isinstance(sub, Load | ThreadIdx | BlockIdx | ShuffleXor):
                    raise self.fail(f"grid uses {type(sub).__name__}; only symbols are allowed")
            self.expect_int(self.expr(extent), "grid extent")
        self.where = []
        self.stmt(k.body)

    def check_storable(self, dt: DType, what: str) -> None:
        if not dt.has_native_arithmetic:
            raise self.fail(
                f"{what} has dtype {dt}, which has no native arithmetic "
                "(unpack it into wider words before Loop IR)"
            )

    def check_tensor_map(self, tensor_map: TensorMap) -> None:
        what = f"tensor map {tensor_map.buffer.name!r}"
        if tensor_map.buffer.scope is not Scope.PARAM or tensor_map.buffer.size != 128:
            raise self.fail(f"{what} must be a 128-byte buffer of scope param")
        tensors = {p.buffer for p in self.kernel.params if p.buffer is not None}
        if tensor_map.tensor not in tensors:
            raise self.fail(f"{what} describes {tensor_map.tensor.name!r}, not a tensor parameter")
        box = tensor_map.box
        if not 1 <= len(box) <= 5 or any(not 1 <= b <= 256 for b in box):
            raise self.fail(f"{what}: box {box} needs 1 to 5 extents of 1 to 256")
        if box[0] * tensor_map.tensor.dtype.itemsize % 16:
            raise self.fail(f"{what}: a box's rows ({box[0]} elements) must be whole 16 bytes")
        if tensor_map.swizzle_bytes not in (0, 32, 64, 128):
            raise self.fail(f"{what}: swizzle {tensor_map.swizzle_bytes} is not 0, 32, 64 or 128")

    def check_buffer(self, buf: Buffer) -> None:
        what = f"buffer {buf.name!r}"
        self.check_storable(buf.dtype, what)
        if buf.scope is Scope.GLOBAL:
            raise self.fail(f"{what} is global; global buffers are tensor parameters")
        if buf.scope is Scope.PARAM:
            raise self.fail(f"{what} has scope param; only tensor maps do")
        if buf.size is None or buf.size <= 0:
            raise self.fail(f"{what} needs a positive size, got {buf.size}")
        if buf.scope is Scope.SHARED:
            end = buf.smem_offset + buf.size * buf.dtype.itemsize
            if buf.smem_offset < 0 or end > self.kernel.smem_bytes:
                raise self.fail(
                    f"shared {what} spans bytes [{buf.smem_offset}, {end}) "
                    f"outside smem_bytes={self.kernel.smem_bytes}"
                )
            if buf.smem_offset % buf.dtype.itemsize:
                raise self.fail(
                    f"shared {what} at offset {buf.smem_offset} is not aligned to its "
                    f"{buf.dtype.itemsize}-byte elements"
                )

    # ------------------------------------------------------------------ scopes

    def define(self, var: Var) -> None:
        self.scopes[-1][var.name] = var

    def lookup(self, var: Var) -> None:
        for scope in reversed(self.scopes):
            found = scope.get(var.name)
            if found is not None:
                if found.dtype != var.dtype:
                    raise self.fail(
                        f"variable {var.name!r} is used as {var.dtype} but defined as {found.dtype}"
                    )
                return
        raise self.fail(f"variable {var.name!r} is used but not defined in this scope")

    def nested(self, where: str, body: Stmt, defining: Var | None = None) -> None:
        self.where.append(where)
        self.scopes.append({})
        if defining is not None:
            self.define(defining)
        self.stmt(body)
        self.scopes.pop()
        self.where.pop()

    def buffer(self, buf: Buffer, use: str, *, writes: bool = False) -> None:
        known = self.buffers.get(buf.name)
        if known is None:
            raise self.fail(
                f"{use} buffer {buf.name!r}, which is neither a tensor parameter "
                "nor listed in the kernel's buffers"
            )
        if known != buf:
            raise self.fail(f"{use} buffer {buf!r}, which differs from its declaration {known!r}")
        if writes and buf.read_only:
            raise self.fail(f"{use} read-only buffer {buf.name!r}")
        if buf.scope is Scope.PARAM and use != "address of":
            raise self.fail(f"{use} tensor map {buf.name!r}; only its address may be taken")

    # ------------------------------------------------------------------ statements

    def stmt(self, s: Stmt) -> None:
        match s:
            case Seq(body=body):
                for child in body:
                    self.stmt(child)
            case Comment() | Return():
                pass
            case Barrier(threads=threads):
                if threads is not None and (threads <= 0 or threads % 32):
                    raise self.fail(f"a named barrier of {threads} threads (whole warps only)")
            case Let(var=var, value=value):
                self.expect(self.expr(value), var.dtype, f"value of let {var.name!r}")
                self.check_storable(var.dtype, f"let {var.name!r}")
                self.define(var)
            case Store(buffer=buf, index=index, value=value):
                self.buffer(buf, "store to", writes=True)
                self.expect_int(self.expr(index), f"index of store to {buf.name!r}")
                self.expect(self.expr(value), buf.dtype, f"value stored to {buf.name!r}")
            case AtomicAdd(buffer=buf, index=index, value=value):
                self.buffer(buf, "atomic add to", writes=True)
                if buf.dtype.is_bool:
                    raise self.fail(f"atomic add to bool buffer {buf.name!r}")
                self.expect_int(self.expr(index), f"index of atomic add to {buf.name!r}")
                self.expect(self.expr(value), buf.dtype, f"value added to {buf.name!r}")
            case Copy():
                self.copy(s)
            case Prefetch(buffer=buf, index=index):
                self.buffer(buf, "prefetch from")
                self.expect_int(self.expr(index), f"index of prefetch from {buf.name!r}")
            case Asm(template=template, outputs=outputs, inputs=inputs):
                if len(outputs) != len(s.output_constraints) or len(inputs) != len(
                    s.input_constraints
                ):
                    raise self.fail("inline PTX operands and constraints disagree in number")
                for buf, index in outputs:
                    self.buffer(buf, "inline PTX output to", writes=True)
                    self.expect_int(self.expr(index), f"index of PTX output {buf.name!r}")
                for e in inputs:
                    self.expr(e)
                if not template.strip():
                    raise self.fail("empty inline PTX")
            case For(var=var, start=start, stop=stop, step=step, body=body, kind=kind,
                     unroll=unroll):
                if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
                    raise self.fail(f"loop {var.name!r} has unroll factor {unroll!r}")
                if unroll > 1 and kind is not LoopKind.SERIAL:
                    raise self.fail(f"{kind.value} loop {var.name!r} has unroll factor {unroll}")
                if not var.dtype.is_int:
                    raise self.fail(f"loop variable {var.name!r} has dtype {var.dtype}")
                for name, bound in (("start", start), ("stop", stop), ("step", step)):
                    self.expect(self.expr(bound), var.dtype, f"{name} of loop {var.name!r}")
                if isinstance(step, Const) and step.value == 0:
                    raise self.fail(f"loop {var.name!r} has step 0")
                self.nested(f"{kind.value} loop {var.name!r}", body, defining=var)
            case If(cond=cond, then_body=then_body, else_body=else_body):
                self.expect_bool(self.expr(cond), "if condition")
                self.nested("then", then_body)
                if else_body is not None:
                    self.nested("else", else_body)
            case _:
                raise self.fail(f"unknown statement {type(s).__name__}")

    def copy(self, c: Copy) -> None:
        self.buffer(c.dst, "copy to", writes=True)
        self.buffer(c.src, "copy from")
        what = f"copy {c.src.name!r} -> {c.dst.name!r}"
        if c.lanes not in COPY_LANES:
            raise self.fail(f"{what} has {c.lanes} lanes, expected one of {COPY_LANES}")
        if c.dst.dtype != c.src.dtype:
            raise self.fail(f"{what} mixes dtypes {c.src.dtype} and {c.dst.dtype}")
        self.expect_int(self.expr(c.dst_index), f"destination index of {what}")
        self.expect_int(self.expr(c.src_index), f"source index of {what}")
        if c.predicate is not None:
            self.expect_bool(self.expr(c.predicate), f"predicate of {what}")
        if c.fill is not None:
            self.expect(self.expr(c.fill), c.dst.dtype, f"fill of {what}")
        if c.element_predicates is not None:
            if len(c.element_predicates) != c.lanes:
                raise self.fail(
                    f"{what} has {len(c.element_predicates)} element predicates for {c.lanes} lanes"
                )
            for p in c.element_predicates:
                self.expect_bool(self.expr(p), f"element predicate of {what}")

    # ------------------------------------------------------------------ expressions

    def expect(self, got: DType, want: DType, what: str) -> None:
        if got != want:
            raise self.fail(f"{what} has dtype {got}, expected {want}")

    def expect_int(self, got: DType, what: str) -> None:
        if not got.is_int:
            raise self.fail(f"{what} has dtype {got}, expected an integer")

    def expect_bool(self, got: DType, what: str) -> None:
        if not got.is_bool:
            raise self.fail(f"{what} has dtype {got}, expected bool")

    def expr(self, e: Expr) -> DType:
        """Check ``e`` and return its dtype."""
        match e:
            case Const(value=value, type=dt):
                self.const(value, dt)
            case Var():
                self.lookup(e)
            case ThreadIdx():
                pass
            case BlockIdx(axis=axis):
                if axis not in (0, 1, 2):
                    raise self.fail(f"BlockIdx axis {axis} is not 0, 1 or 2")
            case Binary(op=op, lhs=lhs, rhs=rhs):
                self.binary(op, self.expr(lhs), self.expr(rhs))
            case Unary(op=op, operand=operand):
                self.unary(op, self.expr(operand))
            case Select(cond=cond, if_true=a, if_false=b):
                self.expect_bool(self.expr(cond), "select condition")
                ta, tb = self.expr(a), self.expr(b)
                if ta != tb:
                    raise self.fail(f"select branches have dtypes {ta} and {tb}")
            case Cast(type=dt, operand=operand):
                self.check_storable(self.expr(operand), "cast operand")
                self.check_storable(dt, "cast")
            case Bitcast(type=dt, operand=operand):
                source = self.expr(operand)
                if source.is_bool or dt.is_bool or source.bits != dt.bits:
                    raise self.fail(f"bitcast from {source} to {dt}: needs two number types "
                                    "of the same width")
            case Load(buffer=buf, index=index):
                self.buffer(buf, "load from")
                self.expect_int(self.expr(index), f"index of load from {buf.name!r}")
            case Address(buffer=buf, index=index):
                self.buffer(buf, "address of")
                self.expect_int(self.expr(index), f"index of address in {buf.name!r}")
            case ShuffleXor(value=value, lane_mask=mask):
                self.check_storable(self.expr(value), "shuffled value")
                if not 0 <= mask < 32:
                    raise self.fail(f"shuffle lane mask {mask} is outside [0, 32)")
            case _:
                raise self.fail(f"unknown expression {type(e).__name__}")
        return e.dtype

    def const(self, value: object, dt: DType) -> None:
        self.check_storable(dt, f"constant {value!r}")
        if dt.is_bool:
            ok = isinstance(value, bool)
        elif dt.is_int:
            ok = isinstance(value, int) and not isinstance(value, bool)
            if ok:
                lo = -(1 << (dt.bits - 1)) if dt.is_signed else 0
                hi = (1 << (dt.bits - 1 if dt.is_signed else dt.bits)) - 1
                if not lo <= value <= hi:  # type: ignore[operator]
                    raise self.fail(f"constant {value} does not fit in {dt}")
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            raise self.fail(f"constant {value!r} is not a value of dtype {dt}")

    def binary(self, op: BinaryOp, lhs: DType, rhs: DType) -> None:
        if lhs != rhs:
            raise self.fail(f"operands of {op.value!r} have dtypes {lhs} and {rhs}")
        if op.is_logical and not lhs.is_bool:
            raise self.fail(f"operands of {op.value!r} have dtype {lhs}, expected bool")
        if op in _ARITHMETIC and lhs.is_bool:
            raise self.fail(f"arithmetic {op.value!r} on bool operands")
        if op in _INTEGER_ONLY and not lhs.is_int:
            raise self.fail(f"operands of {op.value!r} have dtype {lhs}, expected integers")
        if op in _BITWISE and lhs.is_float:
            raise self.fail(f"bitwise {op.value!r} on {lhs} operands")
        if op is BinaryOp.POW and not lhs.is_float:
            raise self.fail(f"pow on {lhs} operands, expected floats")

    def unary(self, op: UnaryOp, operand: DType) -> None:
        if op is UnaryOp.NOT and not operand.is_bool:
            raise self.fail(f"'not' of a {operand} operand, expected bool")
        if op is UnaryOp.BITNOT and not operand.is_int:
            raise self.fail(f"'bitnot' of a {operand} operand, expected an integer")
        if op in (UnaryOp.NEG, UnaryOp.ABS) and operand.is_bool:
            raise self.fail(f"{op.value!r} of a bool operand")
        if op in _FLOAT_FUNCTIONS and not operand.is_float:
            raise self.fail(f"{op.value!r} of a {operand} operand, expected a float")
