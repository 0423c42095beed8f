"""KernelSpec: validation, JSON round trip, derived facts."""

import pytest
from tegula.runtime.errors import SpecError
from tegula.runtime.spec import KernelSpec, ParamSpec


def gemm_spec(**overrides: object) -> KernelSpec:
    fields: dict[str, object] = dict(
        name="gemm",
        params=(
            ParamSpec("a", "tensor", "f16", ("M", "K")),
            ParamSpec("b", "tensor", "f16", ("K", "N"), strides=("ldb", 1)),
            ParamSpec("c", "tensor", "f32", ("M", "N"), writes=True),
            ParamSpec("alpha", "scalar", "f32"),
        ),
        symbols=("M", "K", "N", "ldb"),
        grid=("cdiv(M, 128)", "cdiv(N, 64)", "1"),
        block_threads=128,
        smem_bytes=64 * 1024,
        target="cuda:sm_90a",
    )
    fields.update(overrides)
    return KernelSpec(**fields)  # type: ignore[arg-type]


def test_json_round_trip_is_equal() -> None:
    spec = gemm_spec()
    again = KernelSpec.from_json(spec.to_json())
    assert again == spec
    assert again.params[1].strides == ("ldb", 1)
    assert again.grid_function(1000, 64, 130, 130) == (8, 3, 1)


def test_derived_facts() -> None:
    spec = gemm_spec()
    assert spec.is_cuda and spec.arch == "sm_90a"
    assert spec.signature() == "gemm(a: f16[M, K], b: f16[K, N], c: f32[M, N], alpha: f32)"
    assert gemm_spec(target="cpu").arch is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"symbols": ("M", "K", "N")}, "missing from `symbols`"),
        ({"symbols": ("M", "K", "N", "ldb", "Z")}, "appear in no tensor"),
        ({"grid": ("cdiv(M, 128)", "N / 64", "1")}, "not allowed"),
        ({"grid": ("1", "1")}, "3 expressions"),
        ({"block_threads": 2048}, "block_threads"),
        ({"smem_bytes": -1}, "smem_bytes"),
        ({"target": "cuda:90"}, "target"),
        ({"index_bits": 16}, "index_bits"),
        ({"name": "not a name"}, "not an identifier"),
        ({"symbols": ("M", "K", "N", "ldb", "M")}, "duplicate symbols"),
    ],
)
def test_malformed_specs_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        gemm_spec(**overrides)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("x", "vector", "f32", ("N",)), "kind"),
        (("x", "tensor", "f33", ("N",)), "unknown dtype"),
        (("x", "tensor", "f32", ("N", 1.5)), "neither an int nor a symbol"),
        (("x", "tensor", "f32", ("N", -2)), "negative"),
        (("x", "tensor", "f32", ("N", "M"), ("s",)), "1 strides for a 2-d shape"),
        (("x", "scalar", "f32", ("N",)), "a scalar has no shape"),
        (("x", "scalar", "u4"), "storage-only"),
    ],
)
def test_malformed_params_are_refused(args: tuple, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        ParamSpec(*args)


def test_bad_json_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="not valid JSON"):
        KernelSpec.from_json("{")
    with pytest.raises(SpecError, match="malformed"):
        KernelSpec.from_json('{"name": "k"}')
