"""Every bundled example, end to end: compiled, run on fresh random inputs, checked against
NumPy (CPU in CI; the GPU under ``-m gpu``), and its CUDA C built to cubins with NVRTC."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tegula.compiler.checking import check_file, entry_kernel, example_files, load_companion

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = example_files(EXAMPLES)


def test_examples_exist() -> None:
    names = {p.stem for p in FILES}
    assert {"vector_add", "softmax", "rmsnorm", "transpose", "reduce", "matmul"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_example_on_cpu(path: Path) -> None:
    results = check_file(path, "cpu", repeats=1)
    assert results
    for r in results:
        assert r.passed, f"{r.kernel}: max abs error {r.max_abs_error}, rel {r.max_rel_error}"


def _odd_sizes(path: Path) -> list[dict[str, int]]:
    """Shapes that are not multiples of any tile, and tiny ones."""
    companion = load_companion(path)
    assert companion is not None
    variants = []
    for cfg in companion.KERNELS.values():
        base = dict(cfg.get("sizes", {}))
        variants.append({k: max(1, v // 3 + 1) for k, v in base.items()})
        variants.append(dict.fromkeys(base, 1))
    return variants


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_example_ragged_shapes_on_cpu(path: Path) -> None:
    for sizes in _odd_sizes(path):
        for r in check_file(path, "cpu", sizes, repeats=1):
            assert r.passed, f"{r.kernel} at {sizes}: max abs error {r.max_abs_error}"


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_example_cuda_builds_with_nvrtc(path: Path, arch: str) -> None:
    """The generated CUDA C of every companion entry (a kernel at the entry's constants and
    sizes) compiles to a cubin without spilling (no GPU needed)."""
    from tegula.compiler.specialize import SpecializedKernel

    import tegula as tg

    companion = load_companion(path)
    assert companion is not None
    for entry, cfg in companion.KERNELS.items():
        name = entry_kernel(entry, cfg)
        module = tg.compile(path, target=f"cuda:{arch}", cache=False, kernels=[name],
                            **cfg.get("constants", {}))
        kernel = module[name]
        if isinstance(kernel, SpecializedKernel):  # built for the companion's sizes
            sizes = cfg["sizes"]
            result = kernel.result_for(**{s: sizes[s] for s in kernel.symbols})
        else:
            result = module.results[name]
        assert result.source.count("__global__") == 1
        assert re.search(rf"__global__ void .*\b{name}\(", result.source)
        log = result.backend_log
        assert "spill" not in log or " 0 bytes spill stores" in log, f"{entry}: {log}"


def test_every_kernel_of_an_example_has_an_entry() -> None:
    from tegula.compiler.parser import parse

    for path in FILES:
        companion = load_companion(path)
        assert companion is not None
        checked = {entry_kernel(e, cfg) for e, cfg in companion.KERNELS.items()}
        assert checked == {k.name for k in parse(path.read_text()).kernels}, path.name


def test_the_generic_weight_only_gemm_is_checked_at_every_weight_type() -> None:
    from tegula.compiler.parser import parse

    path = EXAMPLES / "quant_gemm.tg"
    companion = load_companion(path)
    assert companion is not None
    types = {
        (cfg["constants"]["WT"], cfg["constants"].get("AT", "f16"))
        for e, cfg in companion.KERNELS.items()
        if entry_kernel(e, cfg) == "quant_gemm_w"
    }
    decl = next(c for c in parse(path.read_text()).kernel("quant_gemm_w").const_params
                if c.name == "WT")
    # i4 with f16 activations is quant_gemm_i4's (its own tiles); every other width here.
    assert {w for w, _ in types} | {"i4"} == {c.id for c in decl.candidates}
    assert ("i4", "bf16") in types


@pytest.mark.gpu
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_example_on_gpu(path: Path) -> None:
    results = check_file(path, "cuda", repeats=1)
    for r in results:
        assert r.passed, f"{r.kernel}: max abs error {r.max_abs_error}, rel {r.max_rel_error}"
    for sizes in _odd_sizes(path):
        for r in check_file(path, "cuda", sizes, repeats=1):
            assert r.passed, f"{r.kernel} at {sizes}: max abs error {r.max_abs_error}"


def test_a_file_without_companion_runs_on_random_inputs(tmp_path: Path) -> None:
    source = tmp_path / "saxpy.tg"
    source.write_text(
        "kernel saxpy(x: f32[N], y: f32[N], out: f32[N], a: f32)\n"
        "    grid (cdiv(N, 256))\n"
        "{\n"
        "    i = bid.x * 256\n"
        "    store(out[i : +256], load(x[i : +256]) * a + load(y[i : +256]))\n"
        "}\n"
    )
    (result,) = check_file(source, "cpu", {"N": 1000}, repeats=1)
    assert result.passed is None and result.sizes == {"N": 1000}
    with pytest.raises(ValueError, match="--size N="):
        check_file(source, "cpu", {}, repeats=1)
