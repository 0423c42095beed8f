"""Compile-time params whose values are dtypes (``params WT = i4 in (i2, i3, i4, i8)``):
constant folding, the front end's checks, the header's symbol sources, call-time
specialization on a packed tensor typed by one, the tuning space, and numerics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tegula.compiler import constexpr as cx
from tegula.compiler.checking import check_kernel, entry_kernel, load_companion
from tegula.compiler.constexpr import ConstEvalError
from tegula.compiler.diagnostics import DSLError
from tegula.compiler.frontend import build_tile_kernel, dtype_params, param_space
from tegula.compiler.headers import KernelHeader, ModuleIndex, SymbolSource, kernel_header
from tegula.compiler.parser import parse
from tegula.compiler.targets import resolve_target
from tegula.compiler.tuning.space import SearchSpace
from tegula.ir import dtypes
from tegula.ir.packing import pack
from tegula.ir.target import cpu_target

import tegula as tg

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# N is read from the packed last dim of `w`, whose element width is WT's.
ROWSUM = """\
kernel rowsum(w: WT[K, N], y: f32[K])
    params WT = i4 in (i2, i3, i4, i8), BN = pow2ceil(N)
    grid (K)
{
    i = bid.x
    store(y[i : +1], sum(cast(load(w[i : +1, 0 : +BN]), f32), axis=1))
}
"""

SCALE = """\
kernel scale(x: AT[N], s: f32, y: AT[N])
    params AT = f16 in (f16, bf16, f32), BN = select(AT == f32, 64, 128) in (64, 128, 256)
    grid (cdiv(N, BN))
{
    i = bid.x * BN
    v = cast(load(x[i : +BN]), f32) * s + cast(full(AT, [BN], 0.5), f32)
    store(y[i : +BN], cast(v, AT) + zeros(AT, [BN]))
}
"""


# ----------------------------------------------------------------------------- constexpr


def test_dtypes_fold_only_through_comparisons_and_select() -> None:
    assert cx.fold_binary("==", "i4", "i4") is True
    assert cx.fold_binary("!=", "i4", "i2") is True
    assert cx.fold_call("select", (False, "i4", "bf16")) == "bf16"
    with pytest.raises(ConstEvalError, match="'\\+' does not take a dtype"):
        cx.fold_binary("+", "i4", 1)
    with pytest.raises(ConstEvalError, match="compares a dtype with a number"):
        cx.fold_binary("==", "i4", 4)
    with pytest.raises(ConstEvalError, match="max does not take a dtype"):
        cx.fold_call("max", ("i4", 2))
    with pytest.raises(ConstEvalError, match="does not take a dtype"):
        cx.fold_unary("-", "f16")


def test_a_dtype_has_a_json_form_by_its_canonical_name() -> None:
    decl = parse(SCALE).kernels[0].const_params[0]
    assert cx.to_json(decl.default) == ["dtype", "f16"]
    assert cx.evaluate_json(["dtype", "bf16"], {}) == "bf16"
    with pytest.raises(ConstEvalError, match="malformed dtype"):
        cx.evaluate_json(["dtype", "half"], {})  # an alias is not what the index holds
    assert cx.dtype_constant("half") == "f16" and cx.dtype_constant("BN") is None


# ----------------------------------------------------------------------------- front end


def test_a_dtype_param_types_tensors_and_dtype_arguments() -> None:
    program = parse(SCALE)
    kernel = build_tile_kernel(program, "scale", {"AT": "bf16"})
    assert [p.value.type.dtype.name for p in kernel.params] == ["bf16", "f32", "bf16"]
    assert dict(kernel.constants) == {"AT": "bf16", "BN": 128}
    # `select(AT == f32, ...)` sees the param's value; a tegula DType and an alias are taken.
    assert dict(build_tile_kernel(program, "scale", {"AT": dtypes.f32}).constants)["BN"] == 64
    assert dict(build_tile_kernel(program, "scale", {"AT": "half"}).constants)["AT"] == "f16"


def test_a_type_outside_the_candidates_is_refused_with_the_allowed_ones() -> None:
    with pytest.raises(DSLError) as info:
        build_tile_kernel(parse(ROWSUM, "rowsum.tg"), "rowsum", {"WT": "u1"})
    assert str(info.value) == (
        "error: WT = u1 is not one of its types; it may be i2, i3, i4 or i8\n"
        " --> rowsum.tg:2:12\n"
        "  |\n"
        "2 |     params WT = i4 in (i2, i3, i4, i8), BN = pow2ceil(N)\n"
        "  |            " + "^" * len("WT = i4 in (i2, i3, i4, i8)")
    )


def test_a_number_for_a_dtype_param_is_refused() -> None:
    with pytest.raises(DSLError, match=r"WT is a dtype \(a name such as i4, or a tegula DType\); "
                                       r"got 3 \(int\)"):
        build_tile_kernel(parse(ROWSUM), "rowsum", {"WT": 3}, {"N": 8})
    with pytest.raises(DSLError, match=r"compile-time parameter BN is an int; got 'f16'"):
        build_tile_kernel(parse(SCALE), "scale", {"BN": "f16"})


def test_a_param_may_not_be_named_like_a_dtype() -> None:
    with pytest.raises(DSLError, match="'f16' is a dtype; name the parameter otherwise"):
        build_tile_kernel(parse(SCALE.replace("AT", "f16")), "scale")


def test_dtype_params_are_never_tunable() -> None:
    kernel = parse(SCALE).kernels[0]
    assert param_space(kernel) == {"BN": (64, 128, 256)}
    assert dtype_params(kernel) == {"AT": "f16"}
    assert dtype_params(kernel, {"AT": "bf16", "BN": 64}) == {"AT": "bf16"}


# ----------------------------------------------------------------------------- the header


def _source_of(symbol: str, header: KernelHeader) -> SymbolSource:
    return next(s for s in header.sources if s.symbol == symbol)


def test_a_packed_dim_typed_by_a_param_resolves_its_bits_from_the_value() -> None:
    header = kernel_header(parse(ROWSUM).kernels[0])
    source = _source_of("N", header)
    assert (source.symbol, source.param, source.dim) == ("N", "w", 1)
    assert source.bits == 0 and source.dtype_param == "WT" and source.may_pack
    assert [p.is_dtype for p in header.const_params] == [True, False]
    assert header.dtype_values({}) == {"WT": "i4"}
    assert header.dtype_values({"WT": "i3"}) == {"WT": "i3"}
    assert source.resolved({"WT": "i2"}).bits == 2
    assert source.resolved({"WT": "i3"}).bits == 3
    assert source.resolved({"WT": "i8"}).bits == 0  # a byte type is not packed
    # The index keeps the param, so a warm compile resolves the same way.
    again = ModuleIndex.from_json(ModuleIndex((header,)).to_json()).kernels[0]
    assert again == header and isinstance(again, KernelHeader)


def test_an_exact_dim_is_preferred_to_one_typed_by_a_param() -> None:
    text = ROWSUM.replace("y: f32[K]", "y: f32[K], z: i4[K, N], t: f32[N]")
    source = _source_of("N", kernel_header(parse(text).kernels[0]))
    assert source.param == "t" and not source.may_pack
    # Between a dim sure to be packed and one that may be, the latter.
    text = ROWSUM.replace("w: WT[K, N], y: f32[K]", "z: i4[K, N], w: WT[K, N], y: f32[K]")
    source = _source_of("N", kernel_header(parse(text).kernels[0]))
    assert source.param == "w"


@pytest.mark.parametrize("wt", ["i2", "i3", "i4", "i8", None])
def test_a_specialized_kernel_reads_the_symbol_from_the_packed_dim(wt: str | None) -> None:
    module = tg.compile(ROWSUM, target="cpu", cache=False, **({"WT": wt} if wt else {}))
    kernel = module.rowsum
    dt = dtypes.dtype(wt or "i4")
    rng = np.random.default_rng(0)
    K, N = 3, 100
    half = 1 << (dt.bits - 1)
    values = rng.integers(-half, half, size=(K, N))
    if dt.is_subbyte:
        w = pack((values & ((1 << dt.bits) - 1)).astype(np.uint8), dt.bits)
    else:
        w = values.astype(np.int8)
    y = np.full(K, np.nan, np.float32)
    kernel(w, y)
    # N = 100 gives BN = 128, whatever the width the bytes pack (25 bytes at i2 would give
    # 32 if they were read as elements).
    assert list(kernel.variants) == [(("WT", dt.name), ("BN", 128))]
    np.testing.assert_array_equal(y, values.sum(axis=1))


# ----------------------------------------------------------------------------- tuning


def test_the_tuning_space_keeps_dtype_params_fixed_at_the_compiles_value() -> None:
    kernel = parse(SCALE).kernels[0]
    target = resolve_target("cpu")
    space = SearchSpace.from_kernel(kernel, {"N": 4096}, target)
    assert space.names == ("BN",)
    assert dict(space.fixed) == {"AT": "f16"}
    space = SearchSpace.from_kernel(kernel, {"N": 4096}, target, {"AT": "bf16"})
    assert space.complete({"BN": 64}) == {"AT": "bf16", "BN": 64}


# ----------------------------------------------------------------------------- numerics


def test_the_generic_kernel_scales_at_every_type() -> None:
    rng = np.random.default_rng(1)
    for at in ("f16", "bf16", "f32"):
        module = tg.compile(SCALE, target=cpu_target(), cache=False, AT=at)
        np_type = dtypes.dtype(at).to_numpy()
        x = rng.standard_normal(300).astype(np_type)
        y = np.full(300, np.nan, np_type)
        module.scale(x, 2.0, y)
        expected = (x.astype(np.float64) * 2.0 + 0.5).astype(np_type)
        np.testing.assert_array_equal(y.astype(np.float64), expected.astype(np.float64))


def _generic_gemm_entries() -> dict[str, dict]:
    companion = load_companion(EXAMPLES / "quant_gemm.tg")
    assert companion is not None
    entries = {n: e for n, e in companion.KERNELS.items()
               if entry_kernel(n, e) == "quant_gemm_w"}
    # i4 with f16 activations too: quant_gemm_i4 has its own entry, the generic kernel not.
    entries["quant_gemm_w[i4]"] = companion._generic_entry("i4", "f16")
    return entries


GEMM_ENTRIES = _generic_gemm_entries()


@pytest.mark.parametrize("entry", sorted(GEMM_ENTRIES))
def test_the_generic_weight_only_gemm_matches_float64_numpy(entry: str) -> None:
    sizes = {"M": 20, "N": 72, "K": 260}  # past one group, ragged against the tiles
    result = check_kernel(EXAMPLES / "quant_gemm.tg", entry, GEMM_ENTRIES[entry],
                          cpu_target(), sizes, repeats=1, seed=0)
    assert result.passed, f"{entry}: max abs error {result.max_abs_error}"
    assert result.kernel == entry


def test_a_kernel_specialized_on_shapes_refuses_a_type_outside_its_candidates_up_front() -> None:
    with pytest.raises(DSLError, match="WT = u4 is not one of its types; it may be i2, i3, i4 or "
                                       "i8") as info:
        tg.compile(ROWSUM, target="cpu", cache=False, WT="u4")
    assert "<string>:2:12" in str(info.value)
