"""Instruction atoms: tensor-core and data-movement instructions described once, as data.

Each atom says what one instruction computes or moves, which operand types it takes, its
PTX text, and — for the matrix instructions — which thread holds which element of each
operand fragment, as a thread-value layout of the layout algebra (``docs/layouts.md``).
Layout inference reads the accumulator layout from here; the lowering reads the fragment
shapes and the PTX; ``tegula layout`` can draw any of the fragment layouts.

Fragment layouts map ``(thread, value)`` to the row-major index of the element in the
atom's tile (``M x K`` for A, ``K x N`` for B, ``M x N`` for C), like every register layout in
tegula. They are the ones the PTX ISA documents for ``mma.sync.aligned.m16n8k*``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .dtypes import DType, bf16, f16, f32, i8, i32, i64, u8
from .layout import Layout
from .loop import Asm, Buffer, Const, Expr, Load


@dataclass(frozen=True)
class MmaAtom:
    """One warp-wide ``mma.sync`` instruction: ``D[m, n] = A[m, k] @ B[k, n] + C[m, n]``."""

    name: str
    m: int
    n: int
    k: int
    a_dtype: DType
    b_dtype: DType
    acc_dtype: DType
    ptx_types: str  # the ``.dtype.atype.btype.ctype`` part of the instruction
    a_layout: Layout  # (thread, value) -> row-major index in the m x k tile
    b_layout: Layout  # (thread, value) -> row-major index in the k x n tile
    c_layout: Layout  # (thread, value) -> row-major index in the m x n tile
    min_arch: int = 80

    @property
    def a_regs(self) -> int:
        """32-bit registers per thread holding A (values are packed two 16-bit per register)."""
        return self.m * self.k * self.a_dtype.bits // 32 // 32

    @property
    def b_regs(self) -> int:
        return self.k * self.n * self.b_dtype.bits // 32 // 32

    @property
    def c_regs(self) -> int:
        return self.m * self.n // 32

    def multiply(
        self, acc: Buffer, acc_index: list[Expr], a: Buffer, a_first: int, b: Buffer, b_first: int
    ) -> Asm:
        """``acc[acc_index] += A @ B`` with the fragments at ``a[a_first:]``, ``b[b_first:]``
        (``acc_index`` lists the accumulator registers in the atom's C fragment order)."""
        inputs = tuple(Load(a, Const(a_first + q, i64)) for q in range(self.a_regs)) + tuple(
            Load(b, Const(b_first + q, i64)) for q in range(self.b_regs)
        )
        return Asm(
            self.ptx,
            tuple((acc, i) for i in acc_index),
            ("+f" if self.acc_dtype.is_float else "+r",) * len(acc_index),
            inputs,
            ("r",) * len(inputs),
        )

    @cached_property
    def ptx(self) -> str:
        """The instruction with operands numbered D (= C), A, B, C, as ``Asm`` wants."""
        d = ",".join(f"%{i}" for i in range(self.c_regs))
        a = ",".join(f"%{self.c_regs + i}" for i in range(self.a_regs))
        b = ",".join(f"%{self.c_regs + self.a_regs + i}" for i in range(self.b_regs))
        return (
            f"mma.sync.aligned.m{self.m}n{self.n}k{self.k}.row.col.{self.ptx_types} "
            f"{{{d}}}, {{{a}}}, {{{b}}}, {{{d}}};"
        )


# The m16n8 fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16"): lane l is in group
# g = l // 4 with thread-in-group t = l % 4.
#   A (16 x 16, 16-bit): a0,a1 = (g, 2t..2t+1), a2,a3 = (g+8, 2t..), a4,a5 = (g, 2t+8..),
#                        a6,a7 = (g+8, 2t+8..)
#   B (16 x 8):          b0,b1 = (k = 2t..2t+1, n = g), b2,b3 = (k = 2t+8.., n = g)
#   C (16 x 8, f32):     c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..)
_A_16x16 = Layout(((4, 8), (2, 2, 2)), ((2, 16), (1, 128, 8)))
_B_16x8 = Layout(((4, 8), (2, 2)), ((16, 1), (8, 64)))
_C_16x8 = Layout(((4, 8), (2, 2)), ((2, 8), (1, 64)))
# 8-bit operands pack four per register: k doubles, each register holds 4 consecutive k.
_A_16x32 = Layout(((4, 8), (4, 2, 2)), ((4, 32), (1, 256, 16)))
_B_32x8 = Layout(((4, 8), (4, 2)), ((32, 1), (8, 128)))

MMA_ATOMS: tuple[MmaAtom, ...] = (
    MmaAtom(
        "mma_m16n8k16_f16_f32",
        16,
        8,
        16,
        f16,
        f16,
        f32,
        "f32.f16.f16.f32",
        _A_16x16,
        _B_16x8,
        _C_16x8,
    ),
    MmaAtom(
        "mma_m16n8k16_bf16_f32",
        16,
        8,
        16,
        bf16,
        bf16,
        f32,
        "f32.bf16.bf16.f32",
        _A_16x16,
        _B_16x8,
        _C_16x8,
    ),
    MmaAtom(
        "mma_m16n8k32_s8_s32", 16, 8, 32, i8, i8, i32, "s32.s8.s8.s32", _A_16x32, _B_32x8, _C_16x8
    ),
    MmaAtom(
        "mma_m16n8k32_u8_s32", 16, 8, 32, u8, u8, i32, "s32.u8.u8.s32", _A_16x32, _B_32x8, _C_16x8
    ),
)


def find_mma(a: DType, b: DType, acc: DType, arch: int) -> MmaAtom | None:
    """The tensor-core atom for these operand and accumulator types, if the target has one."""
    for atom in MMA_ATOMS:
        if (atom.a_dtype, atom.b_dtype, atom.acc_dtype) == (a, b, acc) and arch >= atom.min_arch:
            return atom
    return None


@dataclass(frozen=True)
class LdMatrixAtom:
    """``ldmatrix``: a warp loads ``count`` 8x8 matrices of 16-bit elements from shared memory.

    Lanes ``8i .. 8i+7`` give the addresses of the eight 16-byte rows of matrix ``i``; lane
    ``l`` receives, per matrix, the two elements ``(l // 4, 2 (l % 4) .. +1)`` packed in one
    register — or, with ``trans``, ``(2 (l % 4) .. +1, l // 4)``, the transposed pair.
    """

    count: int
    trans: bool

    def load(self, fragment: Buffer, first: int, address: Expr) -> Asm:
        """The instruction writing registers ``fragment[first : first + count]``; ``address``
        is this lane's row address (an ``Address`` in shared memory)."""
        outputs = tuple((fragment, Const(first + q, i64)) for q in range(self.count))
        return Asm(self.ptx, outputs, ("=r",) * self.count, (address,), ("r",))

    @property
    def ptx(self) -> str:
        regs = ",".join(f"%{i}" for i in range(self.count))
        t = ".trans" if self.trans else ""
        return (
            f"ldmatrix.sync.aligned.m8n8.x{self.count}{t}.shared.b16 {{{regs}}}, [%{self.count}];"
        )


@dataclass(frozen=True)
class CpAsyncAtom:
    """``cp.async``: copy ``nbytes`` (4, 8 or 16) from global to shared memory without passing
    through registers; ``src_bytes`` < ``nbytes`` zero-fills the rest (ragged edges)."""

    nbytes: int

    @property
    def ptx(self) -> str:
        cache = "cg" if self.nbytes == 16 else "ca"
        return f"cp.async.{cache}.shared.global [%0], [%1], {self.nbytes}, %2;"


CP_ASYNC_COMMIT = "cp.async.commit_group;"


def cp_async_wait(pending: int) -> str:
    """Wait until at most ``pending`` committed groups are still in flight."""
    return f"cp.async.wait_group {pending};"
