"""A fixed-length feature vector describing one lowered kernel at given shapes.

The model sees what the code does rather than the knob values, so that what it learns on
one kernel or shape carries over to others (AutoTVM's observation). Counts are per thread
of one block, each statement weighted by the trip counts of the loops around it (loop
bounds evaluated at the shapes; a bound that depends on a thread, block or loop index
counts as one trip), and a branch whose condition the shapes decide counts only the side
taken (half of each side otherwise). Every count enters as ``log2(1 + x)`` so that trees
split on ratios, not on magnitudes that differ from one shape to the next.

The order of :data:`FEATURE_NAMES` is part of the tuning database's format: append new
features at the end, never reorder.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from tegula.ir import loop as L
from tegula.ir.target import Target

from .space import local_words_per_thread

FEATURE_NAMES: tuple[str, ...] = (
    "log_grid_blocks",
    "log_block_threads",
    "log_total_threads",
    "log_smem_bytes",
    "log_local_words",
    "log_global_load_bytes",
    "log_global_store_bytes",
    "log_shared_load_bytes",
    "log_shared_store_bytes",
    "log_local_accesses",
    "log_global_accesses",
    "log_flops",
    "log_special_ops",
    "log_int_ops",
    "log_vector_copies",
    "mean_vector_lanes",
    "max_vector_lanes",
    "log_barriers",
    "log_shuffles",
    "log_loops",
    "max_loop_depth",
    "log_innermost_trips",
    "log_unrolled_loops",
    "log_vectorized_loops",
    "log_branches",
    "arithmetic_intensity",
    "log_kernel_global_bytes",
    "log_kernel_flops",
    "occupancy",
    "waves_fraction",
)

_FLOAT_ARITH = frozenset({
    L.BinaryOp.ADD, L.BinaryOp.SUB, L.BinaryOp.MUL, L.BinaryOp.DIV,
    L.BinaryOp.MIN, L.BinaryOp.MAX, L.BinaryOp.POW,
})
_SPECIAL = frozenset({
    L.UnaryOp.EXP, L.UnaryOp.EXP2, L.UnaryOp.LOG, L.UnaryOp.LOG2, L.UnaryOp.SQRT,
    L.UnaryOp.RSQRT, L.UnaryOp.TANH, L.UnaryOp.ERF, L.UnaryOp.SIN, L.UnaryOp.COS,
})
# Streaming multiprocessor limits used by the occupancy estimate (the same on every
# architecture tegula builds for, sm_70 to sm_120, within a factor that does not change
# the ranking): threads, resident blocks and 32-bit registers per SM.
_SM_THREADS = 2048
_SM_BLOCKS = 32
_SM_REGISTERS = 65536
_BASE_REGISTERS = 32  # addresses, indices and loop counters besides the tile values
_CPU_CORES_ASSUMED = 8  # blocks in flight on a CPU, for the wave estimate


@dataclass
class _Tally:
    """Trip-weighted counts for one thread, gathered by one walk of the body."""

    bytes: Counter[str] = field(default_factory=Counter)
    accesses: Counter[str] = field(default_factory=Counter)
    flops: float = 0.0
    special: float = 0.0
    int_ops: float = 0.0
    vector_copies: float = 0.0
    vector_lanes: float = 0.0
    max_lanes: int = 1
    barriers: float = 0.0
    shuffles: float = 0.0
    loops: int = 0
    max_depth: int = 0
    innermost_trips: float = 1.0
    unrolled: int = 0
    vectorized: int = 0
    branches: float = 0.0


def extract_features(
    kernel: L.LoopKernel, shapes: Mapping[str, int], target: Target
) -> tuple[float, ...]:
    """The features of ``kernel`` at ``shapes`` on ``target``, in :data:`FEATURE_NAMES` order.

    Pure and deterministic: the same kernel and shapes give the same vector."""
    env = {k: int(v) for k, v in shapes.items()}
    tally = _Tally()
    _walk(kernel.body, 1.0, 0, env, tally)
    grid = [_evaluate(g, env) for g in kernel.grid]
    blocks = math.prod(g if g is not None and g > 0 else 1 for g in grid)
    threads = kernel.block_threads
    words = local_words_per_thread(kernel)
    gbytes = tally.bytes["global_load"] + tally.bytes["global_store"]
    occupancy, waves = _occupancy(kernel, words, blocks, target)
    values = {
        "log_grid_blocks": _log(blocks),
        "log_block_threads": _log(threads),
        "log_total_threads": _log(blocks * threads),
        "log_smem_bytes": _log(kernel.smem_bytes),
        "log_local_words": _log(words),
        "log_global_load_bytes": _log(tally.bytes["global_load"]),
        "log_global_store_bytes": _log(tally.bytes["global_store"]),
        "log_shared_load_bytes": _log(tally.bytes["shared_load"]),
        "log_shared_store_bytes": _log(tally.bytes["shared_store"]),
        "log_local_accesses": _log(tally.accesses["local"]),
        "log_global_accesses": _log(tally.accesses["global"]),
        "log_flops": _log(tally.flops),
        "log_special_ops": _log(tally.special),
        "log_int_ops": _log(tally.int_ops),
        "log_vector_copies": _log(tally.vector_copies),
        "mean_vector_lanes": tally.vector_lanes / tally.vector_copies if tally.vector_copies
        else 1.0,
        "max_vector_lanes": float(tally.max_lanes),
        "log_barriers": _log(tally.barriers),
        "log_shuffles": _log(tally.shuffles),
        "log_loops": _log(tally.loops),
        "max_loop_depth": float(tally.max_depth),
        "log_innermost_trips": _log(tally.innermost_trips),
        "log_unrolled_loops": _log(tally.unrolled),
        "log_vectorized_loops": _log(tally.vectorized),
        "log_branches": _log(tally.branches),
        "arithmetic_intensity": tally.flops / gbytes if gbytes else 0.0,
        "log_kernel_global_bytes": _log(gbytes * threads * blocks),
        "log_kernel_flops": _log(tally.flops * threads * blocks),
        "occupancy": occupancy,
        "waves_fraction": waves,
    }
    return tuple(float(values[name]) for name in FEATURE_NAMES)


def _log(x: float) -> float:
    return math.log2(1.0 + max(0.0, float(x)))


def _occupancy(
    kernel: L.LoopKernel, words: int, blocks: int, target: Target
) -> tuple[float, float]:
    """(share of a core's thread slots in use, how full the last wave of blocks is)."""
    if not target.is_cuda:
        per_wave = _CPU_CORES_ASSUMED
        return 1.0, _last_wave_fill(blocks, per_wave)
    threads = max(1, kernel.block_threads)
    regs = (_BASE_REGISTERS + min(words, 255)) * threads
    fit = min(
        _SM_BLOCKS,
        _SM_THREADS // threads,
        _SM_REGISTERS // regs if regs else _SM_BLOCKS,
        target.max_smem_bytes // kernel.smem_bytes if kernel.smem_bytes else _SM_BLOCKS,
    )
    fit = max(fit, 0)
    return fit * threads / _SM_THREADS, _last_wave_fill(blocks, max(fit, 1))


def _last_wave_fill(blocks: int, per_wave: int) -> float:
    waves = math.ceil(blocks / per_wave)
    return blocks / (waves * per_wave) if waves else 0.0


# ----------------------------------------------------------------------------- the walk


def _walk(stmt: L.Stmt, weight: float, depth: int, env: dict[str, int], t: _Tally) -> None:
    match stmt:
        case L.Seq(body=body):
            for s in body:
                _walk(s, weight, depth, env, t)
        case L.For():
            trips = _trip_count(stmt, env)
            t.loops += 1
            t.max_depth = max(t.max_depth, depth + 1)
            t.unrolled += stmt.kind is L.LoopKind.UNROLL
            t.vectorized += stmt.kind is L.LoopKind.VECTORIZE
            for e in (stmt.start, stmt.stop, stmt.step):
                _count_expr(e, weight, t)
            if not any(isinstance(s, L.For) for s in L.walk_stmts(stmt.body)):
                t.innermost_trips = max(t.innermost_trips, weight * trips)
            _walk(stmt.body, weight * trips, depth + 1, env, t)
        case L.If(cond=cond, then_body=then, else_body=orelse):
            t.branches += weight
            _count_expr(cond, weight, t)
            taken = _evaluate(cond, env)
            if taken is None:
                _walk(then, weight * 0.5, depth, env, t)
                if orelse is not None:
                    _walk(orelse, weight * 0.5, depth, env, t)
            elif taken:
                _walk(then, weight, depth, env, t)
            elif orelse is not None:
                _walk(orelse, weight, depth, env, t)
        case L.Store(buffer=buf, index=index, value=value) | L.AtomicAdd(
            buffer=buf, index=index, value=value
        ):
            _count_access(buf, 1, "store", weight, t)
            _count_expr(index, weight, t)
            _count_expr(value, weight, t)
        case L.Copy():
            _count_access(stmt.src, stmt.lanes, "load", weight, t)
            _count_access(stmt.dst, stmt.lanes, "store", weight, t)
            if stmt.lanes > 1:
                t.vector_copies += weight
                t.vector_lanes += weight * stmt.lanes
                t.max_lanes = max(t.max_lanes, stmt.lanes)
            for e in L.stmt_exprs(stmt):
                _count_expr(e, weight, t)
        case L.Barrier():
            t.barriers += weight
        case L.Let(var=var, value=value):
            _count_expr(value, weight, t)
            known = _evaluate(value, env)  # e.g. a size symbol narrowed to 32 bits
            if known is not None:
                env[var.name] = known


def _count_access(buf: L.Buffer, lanes: int, kind: str, weight: float, t: _Tally) -> None:
    scope = buf.scope.value
    t.accesses[scope] += weight
    if buf.scope is not L.Scope.LOCAL:
        t.bytes[f"{scope}_{kind}"] += weight * lanes * max(1, buf.dtype.bits // 8)


def _count_expr(expr: L.Expr, weight: float, t: _Tally) -> None:
    for e in L.walk_exprs(expr):
        match e:
            case L.Load(buffer=buf):
                _count_access(buf, 1, "load", weight, t)
            case L.Binary(op=op) if e.dtype.is_float and op in _FLOAT_ARITH:
                t.flops += weight
            case L.Binary():
                t.int_ops += weight
            case L.Unary(op=op) if op in _SPECIAL:
                t.special += weight
            case L.ShuffleXor():
                t.shuffles += weight


def _trip_count(loop: L.For, env: dict[str, int]) -> int:
    start, stop, step = (_evaluate(e, env) for e in (loop.start, loop.stop, loop.step))
    if start is None or stop is None or not step:
        return 1
    return max(0, -(-(stop - start) // step)) if step > 0 else max(0, -(-(start - stop) // -step))


_INT_OPS = {
    L.BinaryOp.ADD: lambda a, b: a + b,
    L.BinaryOp.SUB: lambda a, b: a - b,
    L.BinaryOp.MUL: lambda a, b: a * b,
    L.BinaryOp.FLOORDIV: lambda a, b: a // b,
    L.BinaryOp.MOD: lambda a, b: a % b,
    L.BinaryOp.DIV: lambda a, b: int(a / b),
    L.BinaryOp.MIN: min,
    L.BinaryOp.MAX: max,
    L.BinaryOp.LT: lambda a, b: a < b,
    L.BinaryOp.LE: lambda a, b: a <= b,
    L.BinaryOp.GT: lambda a, b: a > b,
    L.BinaryOp.GE: lambda a, b: a >= b,
    L.BinaryOp.EQ: lambda a, b: a == b,
    L.BinaryOp.NE: lambda a, b: a != b,
    L.BinaryOp.AND: lambda a, b: a and b,
    L.BinaryOp.OR: lambda a, b: a or b,
}


def _evaluate(expr: L.Expr, env: Mapping[str, int]) -> int | None:
    """The integer (or bool) value of ``expr`` over the size symbols, None if it depends on
    anything else (thread, block or loop indices, loads)."""
    match expr:
        case L.Const(value=v) if not isinstance(v, float):
            return int(v)
        case L.Var(name=name):
            return env.get(name)
        case L.Cast(operand=operand) if not expr.dtype.is_float:
            return _evaluate(operand, env)
        case L.Unary(op=L.UnaryOp.NEG, operand=operand):
            v = _evaluate(operand, env)
            return None if v is None else -v
        case L.Unary(op=L.UnaryOp.NOT, operand=operand):
            v = _evaluate(operand, env)
            return None if v is None else int(not v)
        case L.Binary(op=op, lhs=lhs, rhs=rhs) if op in _INT_OPS and not lhs.dtype.is_float:
            a, b = _evaluate(lhs, env), _evaluate(rhs, env)
            if a is None or b is None:
                return None
            if b == 0 and op in (L.BinaryOp.FLOORDIV, L.BinaryOp.MOD, L.BinaryOp.DIV):
                return None
            return int(_INT_OPS[op](a, b))
        case L.Select(cond=c, if_true=a, if_false=b):
            cv = _evaluate(c, env)
            return None if cv is None else _evaluate(a if cv else b, env)
    return None
