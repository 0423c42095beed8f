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

from .dtypes import DType, bf16, dtype, f16, f32, i8, i32, i64, tf32, u8, u64
from .layout import Layout
from .loop import Asm, Binary, BinaryOp, Buffer, Cast, Const, Expr, Load


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
    # Whether the lowering stages operands for it (and ``find_mma`` offers it). The others
    # are described for layout reasoning and drawing: tf32 and 4-bit operands would need
    # B n-major for 32-bit elements, and k counted in packed bytes, which no lowering does.
    lowered: bool = True

    @staticmethod
    def _register_bits(dtype: DType) -> int:
        """How many bits an element takes in a fragment register (tf32 fills 32)."""
        return 32 if dtype == tf32 else dtype.bits

    @property
    def a_regs(self) -> int:
        """32-bit registers per thread holding A (values are packed two 16-bit per register)."""
        return self.m * self.k * self._register_bits(self.a_dtype) // 32 // 32

    @property
    def b_regs(self) -> int:
        return self.k * self.n * self._register_bits(self.b_dtype) // 32 // 32

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
# 4-bit operands (m16n8k64) pack eight: each register holds 8 consecutive k.
_A_16x64 = Layout(((4, 8), (8, 2, 2)), ((8, 64), (1, 512, 32)))
_B_64x8 = Layout(((4, 8), (8, 2)), ((64, 1), (8, 256)))
# tf32 (m16n8k8), one element a register: a0 = (g, t), a1 = (g+8, t), a2 = (g, t+4),
# a3 = (g+8, t+4); b0 = (k = t, n = g), b1 = (k = t+4, n = g).
_A_16x8 = Layout(((4, 8), (2, 2)), ((1, 8), (64, 4)))
_B_8x8 = Layout(((4, 8), (2,)), ((8, 1), (32,)))

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
    MmaAtom("mma_m16n8k64_s4_s32", 16, 8, 64, dtype("i4"), dtype("i4"), i32,
            "s32.s4.s4.s32", _A_16x64, _B_64x8, _C_16x8, lowered=False),
    MmaAtom("mma_m16n8k64_u4_s32", 16, 8, 64, dtype("u4"), dtype("u4"), i32,
            "s32.u4.u4.s32", _A_16x64, _B_64x8, _C_16x8, lowered=False),
    MmaAtom("mma_m16n8k8_tf32_f32", 16, 8, 8, tf32, tf32, f32, "f32.tf32.tf32.f32", _A_16x8,
            _B_8x8, _C_16x8, lowered=False),
)


def find_mma(a: DType, b: DType, acc: DType, arch: int) -> MmaAtom | None:
    """The tensor-core atom for these operand and accumulator types, if the target has one."""
    for atom in MMA_ATOMS:
        if (atom.a_dtype, atom.b_dtype, atom.acc_dtype) == (a, b, acc) and (
                arch >= atom.min_arch and atom.lowered):
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
class StMatrixAtom:
    """``stmatrix`` (sm_90): the inverse of :class:`LdMatrixAtom`. A warp stores ``count``
    8x8 matrices of 16-bit elements to shared memory; lanes ``8i .. 8i+7`` give the row
    addresses of matrix ``i``, and lane ``l`` supplies, per matrix, the register holding
    ``(l // 4, 2 (l % 4) .. +1)`` (with ``trans``, the transposed pair) - the ``mma`` C
    fragment's pairs once converted to 16 bits, so an epilogue can store them row-wise."""

    count: int
    trans: bool
    min_arch: int = 90

    def store(self, fragment: Buffer, first: int, address: Expr) -> Asm:
        """The instruction storing registers ``fragment[first : first + count]``; ``address``
        is this lane's row address (an ``Address`` in shared memory)."""
        values = tuple(Load(fragment, Const(first + q, i64)) for q in range(self.count))
        return Asm(self.ptx, (), (), (address, *values), ("r",) * (1 + self.count),
                   memory=True)

    @property
    def ptx(self) -> str:
        regs = ",".join(f"%{1 + i}" for i in range(self.count))
        t = ".trans" if self.trans else ""
        return f"stmatrix.sync.aligned.m8n8.x{self.count}{t}.shared.b16 [%0], {{{regs}}};"


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


# ----------------------------------------------------------------------------- TMA (sm_90)


@dataclass(frozen=True)
class TmaLoadAtom:
    """``cp.async.bulk.tensor``: the tensor-memory accelerator copies one box of a tensor
    (described by a tensor map: shape, strides, box, swizzle) from global to shared memory
    and counts its bytes on an ``mbarrier``. Coordinates are signed element indices,
    innermost first; the parts of the box outside the tensor are zero-filled (and still
    counted), so ragged edges need no masks.

    Operands: ``%0`` the shared destination, ``%1`` the tensor map's generic address, then
    the ``rank`` coordinates, then the barrier's shared address.
    """

    rank: int

    def __post_init__(self) -> None:
        if not 1 <= self.rank <= 5:
            raise ValueError(f"TMA boxes have 1 to 5 dimensions, not {self.rank}")

    @property
    def ptx(self) -> str:
        coords = ", ".join(f"%{2 + d}" for d in range(self.rank))
        return (
            f"cp.async.bulk.tensor.{self.rank}d.shared::cluster.global.tile"
            f".mbarrier::complete_tx::bytes [%0], [%1, {{{coords}}}], [%{2 + self.rank}];"
        )


# Fetches a tensor map (by its generic address) into the TMA unit's cache ahead of first use.
TENSOR_MAP_PREFETCH = "prefetch.tensormap [%0];"

# An mbarrier (a 64-bit shared word) counts arrivals and transaction bytes per phase. One
# per ring slot: initialised for a single arrival, the issuing thread's, which also says
# how many bytes the slot's copies bring; the phase completes when they have all landed.
MBARRIER_INIT = "mbarrier.init.shared::cta.b64 [%0], %1;"
# Makes the initialised barriers visible to the async proxy (the copies that complete on them).
MBARRIER_INIT_FENCE = "fence.mbarrier_init.release.cluster;"
# Before a barrier's bytes are used for anything else.
MBARRIER_INVALIDATE = "mbarrier.inval.shared::cta.b64 [%0];"
MBARRIER_ARRIVE_EXPECT_TX = "mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;"
# One arrival (a consumer's: it no longer reads the slot).
MBARRIER_ARRIVE = "mbarrier.arrive.shared::cta.b64 _, [%0];"
# Spin until the phase of parity %1 has completed (labels are local to the braces).
MBARRIER_WAIT_PARITY = (
    "{ .reg .pred ready; waiting: mbarrier.try_wait.parity.shared::cta.b64 ready, [%0], %1; "
    "@!ready bra waiting; }"
)


# ----------------------------------------------------------------------------- register split

# A warp-specialized block moves registers between its warpgroups (sm_90a): the producer,
# which only issues copies, gives most of its registers back to the block's pool and the
# consumers, which hold the accumulators, take them. Every warp of a warpgroup executes the
# same instruction; counts are multiples of 8 in [24, 256]. ptxas builds such a kernel with
# its launch bound's full register count, which is what the pool starts from.
SETMAXNREG_DEC = "setmaxnreg.dec.sync.aligned.u32 {count};"
SETMAXNREG_INC = "setmaxnreg.inc.sync.aligned.u32 {count};"
WARPGROUP_THREADS = 128
PRODUCER_REGISTERS = 40  # enough for a loop of TMA issues (CUTLASS keeps the same)
_REGISTERS_PER_SCHEDULER = 16384  # an SM's 64K registers, a quarter per warp scheduler
_SCHEDULERS = 4
_MAX_THREAD_REGISTERS = 255


def launch_registers(threads: int, warp_size: int = 32) -> int:
    """The most registers a thread of a ``threads``-thread block may have (one block an SM):
    each warp scheduler holds a quarter of the register file and a quarter of the warps,
    and registers are given out eight per thread at a time."""
    warps = -(-threads // warp_size)
    per_scheduler = -(-warps // _SCHEDULERS)
    fit = _REGISTERS_PER_SCHEDULER // (warp_size * per_scheduler)
    return min(fit, _MAX_THREAD_REGISTERS) // 8 * 8


def register_split(consumer_threads: int) -> tuple[int, int] | None:
    """``(producer, consumer)`` registers a thread for ``consumer_threads`` (whole
    warpgroups) beside one producer warpgroup, or None where the consumers would gain
    nothing over the launch count (a small block already gets every register it may use).
    What the producer frees is shared out evenly: 128 x (launch - 40) registers."""
    if consumer_threads % WARPGROUP_THREADS:
        return None
    launch = launch_registers(consumer_threads + WARPGROUP_THREADS)
    gained = (launch - PRODUCER_REGISTERS) * WARPGROUP_THREADS // consumer_threads // 8 * 8
    consumer = min(launch + gained, 256)
    if consumer < launch + 16 or launch <= PRODUCER_REGISTERS:
        return None
    return PRODUCER_REGISTERS, consumer


# ----------------------------------------------------------------------------- wgmma (sm_90a)


@dataclass(frozen=True)
class WgmmaSmemLayout:
    """A tile in shared memory in one of the layouts ``wgmma`` reads through a descriptor.

    The tile has ``rows`` x ``cols`` elements with ``cols`` the contiguous dimension (K for a
    K-major operand, M or N for an MN-major one). The contiguous dimension is cut into
    blocks of ``swizzle_bytes`` (32, 64 or 128 bytes; as much of it as fits); each block
    holds every row, ``swizzle_bytes`` per row, and the 16-byte chunks of a row are XORed
    with the row's index within its group of eight — CuTe's ``Swizzle<3,4,3>`` (128 B),
    ``<2,4,3>`` (64 B) or ``<1,4,3>`` (32 B) on byte offsets. That is the hardware's own
    swizzle, applied to addresses, so a block must start 1024-byte aligned
    (:data:`WGMMA_SMEM_ALIGN`) and a descriptor may point anywhere inside a swizzle row.
    """

    rows: int
    cols: int
    itemsize: int

    def __post_init__(self) -> None:
        if self.swizzle_bytes not in (32, 64, 128) or self.cols % self.block:
            raise ValueError(f"{self}: rows of {self.cols * self.itemsize} bytes do not fit")

    @property
    def swizzle_bytes(self) -> int:
        return min(128, self.cols * self.itemsize)

    @property
    def block(self) -> int:
        """Elements of one swizzle row."""
        return self.swizzle_bytes // self.itemsize

    @property
    def swizzle(self) -> tuple[int, int, int]:
        """``(bits, base, shift)`` of the swizzle on element offsets."""
        bits = (self.swizzle_bytes // 16).bit_length() - 1
        return bits, 4 - (self.itemsize.bit_length() - 1), 3

    def unswizzled(self, row: int, col: int) -> int:
        """The element offset of ``(row, col)`` before the swizzle (a descriptor's start)."""
        return (col // self.block) * self.rows * self.block + row * self.block + col % self.block

    @property
    def layout_type(self) -> int:
        """The descriptor's swizzle mode field."""
        return {128: 1, 64: 2, 32: 3}[self.swizzle_bytes]

    def descriptor_bits(self, mn_major: bool) -> int:
        """Every descriptor field but the start address: the stride between 8-row groups
        (SBO) and, for an MN-major operand, between swizzle blocks along MN (LBO; a K-major
        operand's rows hold one instruction's whole K, so its LBO is unused)."""
        sbo = 8 * self.swizzle_bytes
        lbo = self.rows * self.swizzle_bytes if mn_major else 16
        return ((lbo >> 4) << 16) | ((sbo >> 4) << 32) | (self.layout_type << 62)


WGMMA_SMEM_ALIGN = 1024


def wgmma_descriptor(bits: int, address: Expr) -> Expr:
    """The 64-bit shared-memory matrix descriptor: ``bits`` (from
    :meth:`WgmmaSmemLayout.descriptor_bits`) with the start address ``address`` (a 32-bit
    shared-window address; bits 4..17 go in the low field)."""
    start = Binary(
        BinaryOp.BITAND,
        Binary(BinaryOp.SHR, Cast(u64, address), Const(4, u64)),
        Const(0x3FFF, u64),
    )
    return Binary(BinaryOp.BITOR, start, Const(bits, u64))


@dataclass(frozen=True)
class WgmmaAtom:
    """One warpgroup-wide ``wgmma.mma_async``: ``D[64, n] += A[64, k] @ B[k, n]`` with A and
    B in shared memory (descriptors) and D in the registers of the warpgroup's 128 threads.

    Warp ``w`` of the warpgroup holds rows ``16 w .. 16 w + 15`` of D in the ``mma.sync``
    m16n8 C fragment, repeated over ``n / 8`` column groups: register ``4 j + 2 h + s`` of
    lane ``l`` is ``D[16 w + 8 h + l // 4, 8 j + 2 (l % 4) + s]``. ``n`` is any multiple of 8
    up to 256, chosen per instruction.
    """

    name: str
    k: int
    a_dtype: DType
    b_dtype: DType
    acc_dtype: DType
    ptx_types: str  # the ``.dtype.atype.btype`` part of the instruction
    m: int = 64
    max_n: int = 256
    arch: str = "sm_90a"  # the one architecture with wgmma (``Target.has_wgmma``)

    @property
    def integer(self) -> bool:
        """An 8-bit integer atom (``s32`` accumulators): both operands K-major, no negation
        or transpose immediates, and ``n`` a multiple of 16 past 24."""
        return self.acc_dtype == i32

    def takes_n(self, n: int) -> bool:
        """Whether one instruction can be ``n`` columns wide."""
        step = 16 if self.integer and n > 24 else 8
        return 0 < n <= self.max_n and n % step == 0

    def ptx(self, n: int, trans_b: bool) -> str:
        if not self.takes_n(n):
            raise ValueError(f"{self.name} has no {n}-column form")
        if trans_b and self.integer:
            raise ValueError(f"{self.name} reads B K-major only")
        regs = n // 2
        d = ",".join(f"%{i}" for i in range(regs))
        immediates = "" if self.integer else f", 1, 1, 0, {int(trans_b)}"
        return (
            "{ .reg .pred accumulate; "
            f"setp.ne.b32 accumulate, %{regs + 2}, 0; "
            f"wgmma.mma_async.sync.aligned.m{self.m}n{n}k{self.k}.{self.ptx_types} "
            f"{{{d}}}, %{regs}, %{regs + 1}, accumulate{immediates}; }}"
        )

    def multiply(
        self, acc: Buffer, acc_index: list[Expr], desc_a: Expr, desc_b: Expr, trans_b: bool
    ) -> Asm:
        """``acc[acc_index] += A @ B`` (``acc_index`` in the fragment's register order; its
        length fixes ``n``), B transposed (MN-major) when ``trans_b``."""
        n = 2 * len(acc_index)
        return Asm(
            self.ptx(n, trans_b),
            tuple((acc, i) for i in acc_index),
            ("+r" if self.integer else "+f",) * len(acc_index),
            (desc_a, desc_b, Const(1, i32)),
            ("l", "l", "r"),
            memory=True,
        )


WGMMA_ATOMS: tuple[WgmmaAtom, ...] = (
    WgmmaAtom("wgmma_m64k16_f16_f32", 16, f16, f16, f32, "f32.f16.f16"),
    WgmmaAtom("wgmma_m64k16_bf16_f32", 16, bf16, bf16, f32, "f32.bf16.bf16"),
    # 8-bit integers (W8A8, and W4A4 widened to i8): 32 deep, exact s32 sums.
    WgmmaAtom("wgmma_m64k32_s8_s32", 32, i8, i8, i32, "s32.s8.s8"),
    WgmmaAtom("wgmma_m64k32_u8_s32", 32, u8, u8, i32, "s32.u8.u8"),
)

# wgmma's ordering: registers the accumulator shares with other instructions are fenced
# before the first wgmma; a batch is committed as a group and waited for.
WGMMA_FENCE = "wgmma.fence.sync.aligned;"
WGMMA_COMMIT = "wgmma.commit_group.sync.aligned;"
# wgmma reads shared memory through the async proxy: what threads stored there (st.shared,
# cp.async) becomes visible to it after this fence, then a barrier.
PROXY_FENCE_ASYNC_SHARED = "fence.proxy.async.shared::cta;"


def wgmma_wait(pending: int) -> str:
    return f"wgmma.wait_group.sync.aligned {pending};"


def find_wgmma(a: DType, b: DType, acc: DType, arch: str) -> WgmmaAtom | None:
    """The warpgroup atom for these types, on the one architecture that has it."""
    for atom in WGMMA_ATOMS:
        if (atom.a_dtype, atom.b_dtype, atom.acc_dtype) == (a, b, acc) and arch == atom.arch:
            return atom
    return None


def wgmma_tile_fits(atom: WgmmaAtom, m: int, n: int, k: int, num_warps: int) -> bool:
    """Whether a ``dot`` of an ``m x k`` by ``k x n`` tile runs on ``atom`` with
    ``num_warps`` warps: whole warpgroups stacked along M, 64 rows per instruction, ``k`` in
    whole instructions, both operands' rows whole swizzle rows (either may be K- or
    MN-major), and at most 128 accumulator values a thread (more spills)."""
    itemsize = atom.a_dtype.itemsize
    if num_warps % 4 or m % (16 * num_warps) or n % 8 or k % atom.k:
        return False
    if m * n // (32 * num_warps) > 128:
        return False

    def whole_rows(elements: int) -> bool:
        nbytes = elements * itemsize
        return nbytes in (32, 64) or nbytes % 128 == 0

    return whole_rows(k) and whole_rows(n)
