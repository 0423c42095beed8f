"""Loop IR kernels built by hand, for testing the code generators without the front end.

Each builder takes ``cpu``: the CPU target runs one thread per block, so the per-thread work
of a CUDA block becomes a loop there.
"""

from __future__ import annotations

from collections.abc import Callable

from tegula.ir.dtypes import DType, bf16, boolean, f16, f32, f64, i32, i64
from tegula.ir.loop import (
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
    Load,
    LoopKernel,
    LoopKind,
    LoopParam,
    Scope,
    Select,
    ShuffleXor,
    Stmt,
    Store,
    ThreadIdx,
    Unary,
    UnaryOp,
    Var,
    seq,
)

BLOCK = 256


# ----------------------------------------------------------------------------- tiny builders


def c(value: int | float | bool, dt: DType = i64) -> Const:
    return Const(value, dt)


def add(a: Expr, b: Expr) -> Binary:
    return Binary(BinaryOp.ADD, a, b)


def sub(a: Expr, b: Expr) -> Binary:
    return Binary(BinaryOp.SUB, a, b)


def mul(a: Expr, b: Expr) -> Binary:
    return Binary(BinaryOp.MUL, a, b)


def lt(a: Expr, b: Expr) -> Binary:
    return Binary(BinaryOp.LT, a, b)


def le(a: Expr, b: Expr) -> Binary:
    return Binary(BinaryOp.LE, a, b)


def gt(a: Expr, b: Expr) -> Binary:
    return Binary(BinaryOp.GT, a, b)


def cdiv(a: Expr, b: int) -> Binary:
    return Binary(BinaryOp.FLOORDIV, add(a, c(b - 1)), c(b))


def global_buffer(name: str, dt: DType, *, read_only: bool = False) -> Buffer:
    return Buffer(name, dt, Scope.GLOBAL, read_only=read_only)


def tensor(buf: Buffer) -> LoopParam:
    return LoopParam(buf.name, buffer=buf)


def scalar(var: Var) -> LoopParam:
    return LoopParam(var.name, var=var)


def block_index(axis: int = 0) -> Expr:
    return Cast(i64, BlockIdx(axis))


def per_thread(
    cpu: bool,
    name: str,
    extent: int,
    body_of_index: Callable[[Expr], Stmt],
    kind: LoopKind = LoopKind.VECTORIZE,
) -> Stmt:
    """``body_of_index(t)`` for this thread's ``t``: a loop over all ``t`` on the CPU."""
    if not cpu:
        return body_of_index(Cast(i64, ThreadIdx()))
    t = Var(name, i64)
    return For(t, c(0), c(extent), c(1), body_of_index(t), kind)


# ----------------------------------------------------------------------------- kernels


def vector_add(cpu: bool) -> LoopKernel:
    """``c = a + b`` over ``N`` elements, 256 per block, the ragged tail masked by ``i < N``."""
    a = global_buffer("a", f32, read_only=True)
    b = global_buffer("b", f32, read_only=True)
    out = global_buffer("c", f32)
    n = Var("N")

    def body(t: Expr) -> Stmt:
        i = Var("i")
        return seq(
            Let(i, add(mul(block_index(), c(BLOCK)), t)),
            If(lt(i, n), Store(out, i, add(Load(a, i), Load(b, i)))),
        )

    return LoopKernel(
        name="vector_add",
        params=(tensor(a), tensor(b), tensor(out)),
        symbols=(n,),
        grid=(cdiv(n, BLOCK), c(1), c(1)),
        block_threads=1 if cpu else BLOCK,
        buffers=(),
        smem_bytes=0,
        body=seq(Comment("c[i] = a[i] + b[i]  # vadd.tg:4"), per_thread(cpu, "t", BLOCK, body)),
        source_name="vadd",
    )


def vector_add4(cpu: bool) -> LoopKernel:
    """``c = a * alpha + b`` four elements at a time through registers, with vector copies.

    Full vectors take the aligned ``float4`` path; the last, ragged vector is copied lane by
    lane under element predicates (filled with 0 where out of bounds).
    """
    a = global_buffer("a", f32, read_only=True)
    b = global_buffer("b", f32, read_only=True)
    out = global_buffer("c", f32)
    alpha = Var("alpha", f32)
    n = Var("N")
    ra = Buffer("ra", f32, Scope.LOCAL, 4)
    rb = Buffer("rb", f32, Scope.LOCAL, 4)
    threads = 1 if cpu else 64
    per_block = 4 * 64

    def body(t: Expr) -> Stmt:
        i, lane = Var("i"), Var("lane")
        in_bounds = tuple(lt(add(i, c(k)), n) for k in range(4))
        compute = For(
            lane,
            c(0),
            c(4),
            c(1),
            Store(ra, lane, add(mul(Load(ra, lane), alpha), Load(rb, lane))),
            LoopKind.UNROLL,
        )
        full = seq(
            Copy(ra, c(0), a, i, lanes=4, aligned=True),
            Copy(rb, c(0), b, i, lanes=4, aligned=True),
            compute,
            Copy(out, i, ra, c(0), lanes=4, aligned=True),
        )
        ragged = seq(
            Copy(ra, c(0), a, i, lanes=4, element_predicates=in_bounds, fill=c(0.0, f32)),
            Copy(rb, c(0), b, i, lanes=4, element_predicates=in_bounds, fill=c(0.0, f32)),
            compute,
            Copy(out, i, ra, c(0), lanes=4, element_predicates=in_bounds),
        )
        return seq(
            Let(i, add(mul(block_index(), c(per_block)), mul(t, c(4)))),
            If(le(add(i, c(4)), n), full, If(lt(i, n), ragged)),
        )

    return LoopKernel(
        name="axpy4",
        params=(tensor(a), tensor(b), tensor(out), scalar(alpha)),
        symbols=(n,),
        grid=(cdiv(n, per_block), c(1), c(1)),
        block_threads=threads,
        buffers=(ra, rb),
        smem_bytes=0,
        body=per_thread(cpu, "t", 64, body, LoopKind.SERIAL),
    )


def row_sum(cpu: bool, unroll: int = 1) -> LoopKernel:
    """``out[r] = sum(x[r, :])``: one row per block, four partial sums in a local buffer;
    ``unroll`` is the column loop's unroll hint."""
    x = global_buffer("x", f32, read_only=True)
    out = global_buffer("out", f32)
    rows, cols = Var("R"), Var("C")
    acc = Buffer("acc", f32, Scope.LOCAL, 4)
    row, j, u, k = Var("row"), Var("j"), Var("u"), Var("k")
    col = add(j, u)
    accumulate = If(
        lt(col, cols),
        Store(acc, u, add(Load(acc, u), Load(x, add(mul(row, cols), col)))),
    )
    total = Var("total", f32)
    body = seq(
        Comment("acc = zeros(f32, [4])"),
        Let(row, block_index()),
        For(u, c(0), c(4), c(1), Store(acc, u, c(0.0, f32)), LoopKind.UNROLL),
        Comment("for j in range(0, C, 4): acc += x[row, j : +4]"),
        For(j, c(0), cols, c(4), For(u, c(0), c(4), c(1), accumulate, LoopKind.UNROLL),
            unroll=unroll),
        Let(total, c(0.0, f32)),
        For(k, c(3), c(0), c(-1), Store(acc, c(0), add(Load(acc, c(0)), Load(acc, k)))),
        Let(total, Load(acc, c(0))),
        Store(out, row, total),
    )
    return LoopKernel(
        name="row_sum",
        params=(tensor(x), tensor(out)),
        symbols=(rows, cols),
        grid=(rows, c(1), c(1)),
        block_threads=1,
        buffers=(acc,),
        smem_bytes=0,
        body=body,
    )


def mixed_math(cpu: bool) -> LoopKernel:
    """Select, casts, float math, half precision and floor division of negative numbers.

    Inputs ``x: f32[N]`` (values of both signs), ``q: i32[N]`` and ``w: i64[N]`` (both signs),
    scalars ``d: i32`` and ``scale: f32``; outputs listed in :data:`MIXED_MATH_OUTPUTS`.
    """
    x = global_buffer("x", f32, read_only=True)
    q = global_buffer("q", i32, read_only=True)
    w = global_buffer("w", i64, read_only=True)
    outs = {name: global_buffer(name, dt) for name, dt in MIXED_MATH_OUTPUTS.items()}
    d = Var("d", i32)
    scale = Var("scale", f32)
    n = Var("N")

    def f(op: UnaryOp, e: Expr) -> Unary:
        return Unary(op, e)

    def body(t: Expr) -> Stmt:
        i = Var("i")
        xv, qv, wv = Var("xv", f32), Var("qv", i32), Var("wv", i64)
        h, bh = Var("h", f16), Var("bh", bf16)
        big = Var("big", f64)
        pos = Var("pos", boolean)
        ax = f(UnaryOp.ABS, xv)
        smooth = add(
            mul(f(UnaryOp.EXP, mul(xv, c(-0.5, f32))), f(UnaryOp.TANH, xv)),
            add(f(UnaryOp.ERF, xv), f(UnaryOp.RSQRT, add(c(1.0, f32), mul(xv, xv)))),
        )
        rough = add(
            add(f(UnaryOp.SQRT, ax), f(UnaryOp.LOG, add(ax, c(1.0, f32)))),
            add(f(UnaryOp.FLOOR, mul(xv, scale)), f(UnaryOp.CEIL, xv)),
        )
        trig = add(
            mul(f(UnaryOp.SIN, xv), f(UnaryOp.COS, xv)),
            add(
                f(UnaryOp.EXP2, Binary(BinaryOp.MIN, xv, c(3.0, f32))),
                f(UnaryOp.LOG2, add(ax, c(2.0, f32))),
            ),
        )
        power = Binary(BinaryOp.POW, add(ax, c(0.5, f32)), c(1.5, f32))
        fl = Binary(BinaryOp.FLOORDIV, qv, d)
        md = Binary(BinaryOp.MOD, qv, d)
        fl3 = Binary(BinaryOp.FLOORDIV, qv, c(-3, i32))
        md7 = Binary(BinaryOp.MOD, wv, c(7))
        trunc = Cast(i32, mul(xv, c(10.0, f32)))
        half_math = Binary(
            BinaryOp.MUL, add(h, c(1.0, f16)), Unary(UnaryOp.EXP, Unary(UnaryOp.NEG, h))
        )
        bf_math = Binary(BinaryOp.MAX, bh, Binary(BinaryOp.SUB, c(0.25, bf16), bh))
        double_math = add(mul(big, big), f(UnaryOp.SQRT, add(f(UnaryOp.ABS, big), c(1.0, f64))))
        return seq(
            Let(i, add(mul(block_index(), c(BLOCK)), t)),
            If(
                lt(i, n),
                seq(
                    Let(xv, Load(x, i)),
                    Let(qv, Load(q, i)),
                    Let(wv, Load(w, i)),
                    Let(pos, gt(xv, c(0.0, f32))),
                    Store(outs["sel"], i, Select(pos, smooth, rough)),
                    Store(outs["trig"], i, add(trig, power)),
                    Store(outs["fdiv"], i, fl),
                    Store(outs["fmod"], i, md),
                    Store(outs["fdiv3"], i, fl3),
                    Store(outs["fmod7"], i, md7),
                    Store(outs["trunc"], i, add(trunc, Cast(i32, pos))),
                    Store(outs["tofloat"], i, Cast(f32, add(wv, Cast(i64, qv)))),
                    Let(h, Cast(f16, xv)),
                    Store(outs["half"], i, half_math),
                    Let(bh, Cast(bf16, xv)),
                    Store(outs["bf"], i, Cast(f32, bf_math)),
                    Let(big, Cast(f64, xv)),
                    Store(outs["dbl"], i, double_math),
                    Store(outs["flag"], i, Binary(BinaryOp.AND, pos, lt(qv, c(0, i32)))),
                ),
            ),
        )

    params = (tensor(x), tensor(q), tensor(w), *(tensor(b) for b in outs.values()))
    return LoopKernel(
        name="mixed_math",
        params=(*params, scalar(d), scalar(scale)),
        symbols=(n,),
        grid=(cdiv(n, BLOCK), c(1), c(1)),
        block_threads=1 if cpu else BLOCK,
        buffers=(),
        smem_bytes=0,
        body=per_thread(cpu, "t", BLOCK, body, LoopKind.SERIAL),
    )


MIXED_MATH_OUTPUTS: dict[str, DType] = {
    "sel": f32,
    "trig": f32,
    "fdiv": i32,
    "fmod": i32,
    "fdiv3": i32,
    "fmod7": i64,
    "trunc": i32,
    "tofloat": f32,
    "half": f16,
    "bf": f32,
    "dbl": f64,
    "flag": boolean,
}


def block_sum_cuda() -> LoopKernel:
    """Sum of ``x`` with one atomic add per block: warp shuffles, shared memory and barriers."""
    x = global_buffer("x", f32, read_only=True)
    out = global_buffer("out", f32)
    n = Var("N")
    threads, warps = 128, 4
    partial = Buffer("partial", f32, Scope.SHARED, warps, smem_offset=0)
    tid = Var("tid", i32)
    lane, warp = Var("lane", i32), Var("warp", i32)
    i = Var("i")
    v = [Var(f"v{k}", f32) for k in range(6)]

    def warp_reduce(first: Var) -> list[Stmt]:
        stmts: list[Stmt] = []
        cur = first
        for step, mask in enumerate((16, 8, 4, 2, 1)):
            nxt = Var(f"{first.name}_{step}", f32)
            stmts.append(Let(nxt, add(cur, ShuffleXor(cur, mask))))
            cur = nxt
        stmts.append(Let(Var(f"{first.name}_sum", f32), cur))
        return stmts

    first_sum = Var("v0_sum", f32)
    second_sum = Var("w0_sum", f32)
    w0 = Var("w0", f32)
    body = seq(
        Comment("one element per thread, then a tree of shuffles"),
        Let(tid, ThreadIdx()),
        Let(lane, Binary(BinaryOp.BITAND, tid, c(31, i32))),
        Let(warp, Binary(BinaryOp.SHR, tid, c(5, i32))),
        Let(i, add(mul(block_index(), c(threads)), Cast(i64, tid))),
        Let(v[0], Select(lt(i, n), Load(x, Binary(BinaryOp.MIN, i, sub(n, c(1)))), c(0.0, f32))),
        *warp_reduce(v[0]),
        If(Binary(BinaryOp.EQ, lane, c(0, i32)), Store(partial, Cast(i64, warp), first_sum)),
        Barrier(),
        If(
            Binary(BinaryOp.EQ, warp, c(0, i32)),
            seq(
                Let(
                    w0,
                    Select(
                        lt(lane, c(warps, i32)),
                        Load(partial, Cast(i64, lane)),
                        c(float("-0.0"), f32),
                    ),
                ),
                *warp_reduce(w0),
                If(Binary(BinaryOp.EQ, lane, c(0, i32)), AtomicAdd(out, c(0), second_sum)),
            ),
        ),
    )
    return LoopKernel(
        name="block_sum",
        params=(tensor(x), tensor(out)),
        symbols=(n,),
        grid=(cdiv(n, threads), c(1), c(1)),
        block_threads=threads,
        buffers=(partial,),
        smem_bytes=warps * 4,
        body=body,
    )


def all_kernels(cpu: bool) -> list[LoopKernel]:
    kernels = [vector_add(cpu), vector_add4(cpu), row_sum(cpu), mixed_math(cpu)]
    return kernels if cpu else [*kernels, block_sum_cuda()]
