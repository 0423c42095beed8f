"""Compile-time params that depend on size symbols: call-time specialization, the module
index that lets a warm ``tg.compile`` skip parsing, and per-phase compile times."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from tegula.compiler import cli, driver, parser
from tegula.compiler.api import compile as compile_module
from tegula.compiler.constexpr import pow2ceil, pow2floor
from tegula.compiler.diagnostics import DSLError
from tegula.compiler.frontend import build_tile_kernel, specialization_symbols
from tegula.compiler.headers import ModuleIndex
from tegula.compiler.parser import parse
from tegula.compiler.specialize import SpecializedKernel
from tegula.runtime.cache import KernelCache, cache_key
from tegula.runtime.errors import ArgumentError
from tegula.runtime.kernel import Kernel

import tegula as tg
from tegula import __version__

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SOFTMAX = EXAMPLES / "softmax.tg"

HEADER = """\
kernel k(x: f32[M, N], y: f32[M, N])
    params BN = min(pow2ceil(N), 4096), WARPS = max(4, min(16, BN // 256)), T = 2,
           BK = BN // T
    grid (M) warps WARPS
{
    store(y[bid.x, 0 : +BN], load(x[bid.x, 0 : +BN]) * pow2floor(5))
}
"""


def softmax_reference(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def rows(rng: np.random.Generator, m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = (rng.standard_normal((m, n)) * 4).astype(np.float32)
    return x, np.full((m, n), np.nan, dtype=np.float32)


# ----------------------------------------------------------------------------- front end


@pytest.mark.parametrize(
    ("n", "up", "down"), [(0, 1, 1), (1, 1, 1), (2, 2, 2), (3, 4, 2), (1000, 1024, 512)]
)
def test_pow2(n: int, up: int, down: int) -> None:
    assert (pow2ceil(n), pow2floor(n)) == (up, down)


def test_defaults_follow_symbols_directly_and_transitively() -> None:
    program = parse(HEADER, "k.tg")
    kdef = program.kernels[0]
    assert specialization_symbols(kdef) == ("N",)
    assert specialization_symbols(kdef, pinned={"BN"}) == ()
    assert specialization_symbols(kdef, pinned={"WARPS"}) == ("N",)  # BK still needs BN
    small = dict(build_tile_kernel(program, "k", {}, {"N": 300}).constants)
    assert small == {"BN": 512, "WARPS": 4, "T": 2, "BK": 256}
    big = build_tile_kernel(program, "k", {}, {"N": 1_000_000})
    assert dict(big.constants) == {"BN": 4096, "WARPS": 16, "T": 2, "BK": 2048}
    assert big.num_warps == 16
    # Only constants are chosen: N stays a run-time symbol of the Tile IR.
    assert [s.name for s in big.symbols] == ["M", "N"]


def test_explicit_constants_override_symbol_defaults() -> None:
    program = parse(HEADER, "k.tg")
    kernel = build_tile_kernel(program, "k", {"BN": 64})
    assert dict(kernel.constants) == {"BN": 64, "WARPS": 4, "T": 2, "BK": 32}
    with pytest.raises(DSLError, match=r"compile-time parameter BN is an int; got 1\.5"):
        build_tile_kernel(program, "k", {"BN": 1.5})


def test_a_missing_symbol_is_named() -> None:
    program = parse(HEADER, "k.tg")
    with pytest.raises(DSLError) as info:
        build_tile_kernel(program, "k", {})
    assert "the default of BN depends on the size symbol 'N'" in str(info.value)
    assert "k.tg:2:" in str(info.value)
    with pytest.raises(DSLError, match="kernel k has no size symbol 'K'"):
        build_tile_kernel(program, "k", {}, {"K": 3})


def test_pow2_in_a_body_needs_a_constant() -> None:
    src = HEADER.replace("pow2floor(5)", "pow2floor(N)")
    with pytest.raises(DSLError, match="the argument of pow2floor must be a compile-time"):
        build_tile_kernel(parse(src, "k.tg"), "k", {}, {"N": 8})


def test_module_index_round_trips_through_json() -> None:
    index = ModuleIndex.from_program(parse(SOFTMAX.read_text(), "softmax.tg"))
    again = ModuleIndex.from_json(index.to_json())
    assert again == index
    header = again.kernel("softmax")
    assert header is not None and header.specialization_symbols() == ("N",)
    assert header.constants_for({"N": 1000}, {}) == {"BN": 1024, "WARPS": 4}
    assert header.constants_for({"N": 50_000}, {}) == {"BN": 8192, "WARPS": 16}


# ----------------------------------------------------------------------------- call time


def test_specialized_softmax_runs_and_shares_variants() -> None:
    rng = np.random.default_rng()
    module = tg.compile(SOFTMAX, target="cpu")
    kernel = module["softmax"]
    assert isinstance(kernel, SpecializedKernel) and kernel is module.softmax
    assert kernel.symbols == ("N",)
    assert "softmax(x, y)" in repr(kernel) and "0 variants" in repr(kernel)
    with pytest.raises(AttributeError, match="no spec until a first call"):
        _ = kernel.spec
    for m, n in [(5, 1000), (3, 1024), (2, 1)]:  # one row in one tile
        x, y = rows(rng, m, n)
        kernel(x, y)
        np.testing.assert_allclose(y, softmax_reference(x), rtol=1e-5, atol=1e-7)
    assert set(kernel.variants) == {(("BN", 1024), ("WARPS", 4)), (("BN", 1), ("WARPS", 4))}
    x, y = rows(rng, 2, 20_000)  # past the largest tile: streamed
    kernel(x=x, y=y)
    np.testing.assert_allclose(y, softmax_reference(x), rtol=1e-5, atol=1e-7)
    assert (("BN", 8192), ("WARPS", 16)) in kernel.variants
    assert kernel.results[(("BN", 8192), ("WARPS", 16))].tile_ir.num_warps == 16
    assert kernel.spec.name == "softmax"
    assert kernel.compile_for(N=700) is kernel.variants[(("BN", 1024), ("WARPS", 4))]
    assert "3 variants" in repr(kernel)


def test_pinned_constants_compile_up_front() -> None:
    rng = np.random.default_rng()
    module = tg.compile(SOFTMAX, target="cpu", BN=256)  # WARPS follows BN, not N
    kernel = module["softmax"]
    assert isinstance(kernel, Kernel) and not module.specialized
    assert dict(module.results["softmax"].tile_ir.constants) == {"BN": 256, "WARPS": 4}
    for n in (1000, 200):  # streamed, and one tile
        x, y = rows(rng, 4, n)
        kernel(x, y)
        np.testing.assert_allclose(y, softmax_reference(x), rtol=1e-5, atol=1e-7)


def test_wrong_arguments_name_the_parameter() -> None:
    kernel = tg.compile(SOFTMAX, target="cpu")["softmax"]
    y = np.empty((2, 8), np.float32)
    with pytest.raises(ArgumentError, match=r"parameter 'x' expects a tensor f32\[M, N\]"):
        kernel([[1.0]], y)
    with pytest.raises(ArgumentError, match=r"parameter 'x' expects a tensor"):
        kernel(np.zeros(3, np.float32), y)
    with pytest.raises(ArgumentError, match="missing argument 'y'"):
        kernel(y)
    with pytest.raises(ArgumentError, match="has no parameter 'z'"):
        kernel(y, z=y)
    with pytest.raises(ArgumentError, match="parameter 'y'"):  # the runtime's own check
        kernel(np.ones((2, 8), np.float32), np.ones((2, 8), np.float64))
    with pytest.raises(TypeError, match="missing N"):
        kernel.compile_for(M=3)


def test_specialized_kernels_build_for_cuda_with_rows_in_registers() -> None:
    """The one-tile path keeps a row in registers: local arrays of at most 32 floats, and
    no spills (CUDA C built to a cubin with NVRTC; no GPU needed)."""
    module = compile_module(EXAMPLES / "rmsnorm.tg", target="cuda:sm_90a", cache=False)
    softmax = compile_module(SOFTMAX, target="cuda:sm_90a", cache=False)["softmax"]
    for kernel in (softmax, module["rmsnorm"], module["layernorm"]):
        assert isinstance(kernel, SpecializedKernel)
        kernel.compile_for(N=8192)
        result = next(iter(kernel.results.values()))
        arrays = [int(n) for n in re.findall(r"^\s+float \w+\[(\d+)\];", result.source, re.M)]
        assert arrays and max(arrays) <= 32
        assert "spill" not in result.backend_log or " 0 bytes spill stores" in result.backend_log
        assert result.spec.block_threads == 32 * 16


# ----------------------------------------------------------------------------- the CLI


def test_dump_takes_sizes_and_names_a_missing_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["dump", str(SOFTMAX), "--target", "cpu", "--out", str(tmp_path)]
    assert cli.main(args) == 2
    message = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "depend on size symbol N; give --size N=..." in message
    assert cli.main([*args, "--size", "N=5000"]) == 0
    code = (tmp_path / "softmax" / "cpu").glob("*-codegen.ll")
    assert next(code).read_text()


# ----------------------------------------------------------------------------- the index


def _index_key(path: Path) -> str:
    return cache_key("module-index", __version__, path.read_text())


def test_a_warm_compile_does_not_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng()
    x, y = rows(rng, 3, 300)
    tg.compile(SOFTMAX, target="cpu")["softmax"](x, y)  # warms the cache
    vector_add = EXAMPLES / "vector_add.tg"
    tg.compile(vector_add, target="cpu")

    def no_parse(*_: object) -> None:
        raise AssertionError("parsed on a warm cache")

    monkeypatch.setattr(parser, "parse", no_parse)
    monkeypatch.setattr(parser, "_lark", no_parse)
    module = tg.compile(SOFTMAX, target="cpu")
    x, y = rows(rng, 3, 300)
    module["softmax"](x, y)
    np.testing.assert_allclose(y, softmax_reference(x), rtol=1e-5, atol=1e-7)
    assert module.timings("softmax").keys() == {"cache"}
    add = tg.compile(vector_add, target="cpu")
    a, b = rng.standard_normal((2, 1001), dtype=np.float32)
    out = np.full(1001, np.nan, np.float32)
    add.vector_add(a, b, out)
    np.testing.assert_allclose(out, a + b, rtol=1e-6)


@pytest.mark.parametrize(
    "corrupt",
    [
        b"{not json",
        b'{"format": 1, "kernels": [{"name": 3}]}',
        b'{"format": 1, "kernels": [{"name": "softmax", "params": ["x"], "const_params": [],'
        b' "size_symbols": [], "sources": [["N", "y", 5, 1, 1, "f32[M, N]"]]}]}',
    ],
)
def test_a_corrupted_module_index_is_rebuilt(
    corrupt: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    tg.compile(SOFTMAX, target="cpu")
    cache = KernelCache()
    key = _index_key(SOFTMAX)
    driver._discard(cache, key)
    cache.put(key, {"index.json": corrupt})  # intact files, unusable content
    with caplog.at_level("WARNING", logger="tegula.compile"):
        module = tg.compile(SOFTMAX, target="cpu")
    assert "module index" in caplog.text and "rebuilding" in caplog.text
    rng = np.random.default_rng()
    x, y = rows(rng, 2, 77)
    module.softmax(x, y)
    np.testing.assert_allclose(y, softmax_reference(x), rtol=1e-5, atol=1e-7)
    entry = cache.get(key)
    assert entry is not None
    assert ModuleIndex.from_json(entry.files["index.json"]).kernel("softmax") is not None


def test_a_tampered_module_index_file_is_rebuilt() -> None:
    tg.compile(SOFTMAX, target="cpu")
    cache = KernelCache()
    key = _index_key(SOFTMAX)
    (cache.entry_path(key) / "index.json").write_bytes(b"[]")  # no longer matches its hash
    module = tg.compile(SOFTMAX, target="cpu")
    assert isinstance(module["softmax"], SpecializedKernel)
    entry = cache.get(key)
    assert entry is not None and entry.files["index.json"] != b"[]"


# ----------------------------------------------------------------------------- timings


def test_phase_timings() -> None:
    source = (EXAMPLES / "vector_add.tg").read_text() + "\n# a fresh cache key\n"
    module = tg.compile(source, target="cpu", cache=False)
    timings = module.timings("vector_add")
    assert {"parse", "frontend", "codegen", "llvm"} <= timings.keys()
    assert all(t >= 0 for t in timings.values())
    assert module["vector_add"].timings == timings
    with pytest.raises(KeyError, match="no kernel 'nope'"):
        module.timings("nope")
    specialized = tg.compile(SOFTMAX, target="cpu", cache=False)
    assert specialized.timings("softmax") == {}
    specialized.softmax.compile_for(N=10)
    assert "frontend" in specialized.timings("softmax")


def test_dump_takes_constants_and_refuses_a_bad_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gemm = SOFTMAX.with_name("quant_gemm.tg")
    args = ["dump", str(gemm), "--kernel", "quant_gemm_w", "--target", "cpu", "--stage",
            "infer-layouts", "--size", "M=8", "--out", str(tmp_path)]
    assert cli.main([*args, "--const", "WT=i3", "--const", "AT=bf16"]) == 0
    (dump,) = (tmp_path / "quant_gemm_w" / "cpu").glob("*infer-layouts*")
    text = dump.read_text()
    assert "i3[K, N]" in text and "bf16[M, K]" in text
    assert cli.main([*args, "--const", "WT"]) == 2
    assert "--const expects NAME=VALUE, got 'WT'" in capsys.readouterr().err


def test_const_takes_the_dsl_booleans(tmp_path: Path) -> None:
    """``--const WS=false`` sets a bool param (gemm_f16 without its producer warpgroup: a
    block of four warps fewer), and ``true`` leaves it as it was on sm_90a."""
    gemm = SOFTMAX.with_name("gemm.tg")
    assert cli.const_assignments(["WS=true", "WS2=false", "BM=64"]) == {
        "WS": True, "WS2": False, "BM": 64}
    threads = {}
    for value in ("true", "false"):
        out = tmp_path / value
        args = ["dump", str(gemm), "--kernel", "gemm_f16", "--target", "cuda:sm_90a",
                "--stage", "codegen", "--const", f"WS={value}", "--out", str(out)]
        assert cli.main(args) == 0
        (code,) = (out / "gemm_f16" / "cuda").glob("*codegen*")
        threads[value] = re.search(r"(\d+) threads,", code.read_text()).group(1)
    assert threads == {"true": "384", "false": "256"}
