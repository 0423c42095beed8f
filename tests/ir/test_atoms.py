"""Instruction atoms as data: each ``mma.sync`` atom's fragment layouts against the PTX ISA's
own description of which lane and register hold which element (written here from that
definition, not from the layouts), every atom's PTX accepted by ptxas (NVRTC, no GPU), and
which atoms the lowering is offered."""

from __future__ import annotations

import pytest
from tegula.ir.atoms import MMA_ATOMS, LdMatrixAtom, MmaAtom, StMatrixAtom, find_mma
from tegula.ir.dtypes import dtype, f32, i32, tf32
from tegula.runtime.nvrtc import compile_cuda


def _owner_a(atom: MmaAtom, lane: int, value: int) -> tuple[int, int]:
    """(row, col) of A's element ``value`` of ``lane`` (PTX ISA, "Matrix Fragments for
    mma.m16n8k*"): registers a0..a3 hold row g (a0, a2) or g + 8 (a1, a3) and the first
    or second half of k (a0, a1 / a2, a3); a register packs 32 / bits consecutive k."""
    g, t = lane // 4, lane % 4
    per_register = 1 if atom.a_dtype == tf32 else 32 // atom.a_dtype.bits
    if atom.k == 16:  # 16-bit: a0,a1 = (g, 2t..), a2,a3 = (g+8, ..), a4..a7 the upper k
        r, e = value // 2, value % 2
        return g + 8 * (r % 2), 2 * t + e + 8 * (r // 2)
    r, e = value // per_register, value % per_register
    return g + 8 * (r % 2), per_register * t + e + (atom.k // 2) * (r // 2)


def _owner_b(atom: MmaAtom, lane: int, value: int) -> tuple[int, int]:
    """(k, n) of B's element ``value`` of ``lane``: column n = g; register b0 holds the
    first half of k and b1 the second, 32 / bits consecutive k a register."""
    g, t = lane // 4, lane % 4
    per_register = 1 if atom.b_dtype == tf32 else 32 // atom.b_dtype.bits
    r, e = value // per_register, value % per_register
    return per_register * t + e + (atom.k // 2) * r, g


@pytest.mark.parametrize("atom", MMA_ATOMS, ids=lambda a: a.name)
def test_fragment_layouts_are_the_ptx_isas(atom: MmaAtom) -> None:
    a_values = atom.m * atom.k // 32
    b_values = atom.k * atom.n // 32
    assert atom.a_layout.size == 32 * a_values and atom.b_layout.size == 32 * b_values
    for lane in range(32):
        for v in range(a_values):
            row, col = _owner_a(atom, lane, v)
            assert atom.a_layout((lane, v)) == row * atom.k + col, (lane, v)
        for v in range(b_values):
            k, n = _owner_b(atom, lane, v)
            assert atom.b_layout((lane, v)) == k * atom.n + n, (lane, v)
    # Each element has one owner, and the registers hold exactly a lane's values.
    assert sorted(atom.a_layout.values().ravel()) == list(range(atom.m * atom.k))
    assert sorted(atom.b_layout.values().ravel()) == list(range(atom.k * atom.n))
    bits = 32 if atom.a_dtype == tf32 else atom.a_dtype.bits
    assert atom.a_regs * 32 == a_values * bits and atom.b_regs * 32 == b_values * bits


def _kernel_using(ptx: str, outputs: int, output_constraint: str, inputs: int) -> str:
    outs = ", ".join(f'"{output_constraint}"(d[{i}])' for i in range(outputs))
    ins = ", ".join(f'"r"(s[{i}])' for i in range(inputs))
    return (
        'extern "C" __global__ void k(unsigned* out) {\n'
        "    __shared__ unsigned s[64];\n"
        f"    {'float' if output_constraint == '+f' else 'unsigned'} d[{max(outputs, 1)}] = {{}};\n"
        f'    asm volatile("{ptx}" : {outs} : {ins} : "memory");\n'
        "    out[threadIdx.x] = (unsigned)d[0];\n"
        "}\n"
    )


@pytest.mark.parametrize("atom", MMA_ATOMS, ids=lambda a: a.name)
def test_every_mma_atom_is_an_instruction_ptxas_accepts(atom: MmaAtom) -> None:
    constraint = "+f" if atom.acc_dtype == f32 else "+r"
    source = _kernel_using(atom.ptx, atom.c_regs, constraint, atom.a_regs + atom.b_regs)
    assert compile_cuda(source, "k", "sm_80").cubin


@pytest.mark.parametrize("count", [1, 2, 4])
@pytest.mark.parametrize("trans", [False, True])
def test_stmatrix_is_the_inverse_of_ldmatrix_and_ptxas_accepts_it(count: int, trans: bool
                                                                   ) -> None:
    load, store = LdMatrixAtom(count, trans), StMatrixAtom(count, trans)
    assert load.ptx.replace("ldmatrix", "stmatrix").split()[0] == store.ptx.split()[0]
    ins = ", ".join(["\"r\"((unsigned)__cvta_generic_to_shared(&s[threadIdx.x % 8 * 8]))"]
                    + [f'"r"(v[{i}])' for i in range(count)])
    source = (
        'extern "C" __global__ void k(const unsigned* in) {\n'
        "    __shared__ unsigned short s[64 * 8];\n"
        f"    unsigned v[{count}];\n"
        f"    for (int i = 0; i < {count}; ++i) v[i] = in[threadIdx.x * {count} + i];\n"
        f'    asm volatile("{store.ptx}" :: {ins} : "memory");\n'
        "}\n"
    )
    assert compile_cuda(source, "k", "sm_90a").cubin


def test_the_lowering_is_offered_only_the_atoms_it_stages_operands_for() -> None:
    """tf32 and 4-bit atoms are described (layouts, PTX) but not offered: their B operand
    would need 32-bit elements n-major and k counted in packed bytes. 4-bit dots run on
    the 8-bit atoms after an exact widening."""
    assert find_mma(dtype("i8"), dtype("i8"), i32, 80) is not None
    assert find_mma(tf32, tf32, f32, 90) is None
    assert find_mma(dtype("i4"), dtype("i4"), i32, 90) is None
    assert {a.name for a in MMA_ATOMS if not a.lowered} == {
        "mma_m16n8k64_s4_s32", "mma_m16n8k64_u4_s32", "mma_m16n8k8_tf32_f32"}
