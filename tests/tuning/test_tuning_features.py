from __future__ import annotations

import math

from tegula.compiler.driver import lower_kernel
from tegula.compiler.frontend import build_tile_kernel
from tegula.compiler.parser import parse
from tegula.compiler.tuning.features import FEATURE_NAMES, extract_features
from tegula.ir.target import cpu_target, cuda_target
from tuning_kernels import ROWSUM


def _features(constants: dict, shapes: dict, target=None) -> tuple[float, ...]:
    target = target or cuda_target("sm_90a")
    loop, _ = lower_kernel(build_tile_kernel(parse(ROWSUM), "rowsum", constants), target)
    return extract_features(loop, shapes, target)


def test_features_are_deterministic_and_complete() -> None:
    a = _features({"BM": 2, "BN": 64}, {"M": 100, "N": 1000})
    b = _features({"BM": 2, "BN": 64}, {"M": 100, "N": 1000})
    assert a == b
    assert len(a) == len(FEATURE_NAMES) == len(set(FEATURE_NAMES))
    assert all(math.isfinite(x) for x in a)


def test_features_follow_the_config_and_the_shapes() -> None:
    f = dict(zip(FEATURE_NAMES, _features({"BM": 1, "BN": 32}, {"M": 100, "N": 1000}),
                 strict=True))
    g = dict(zip(FEATURE_NAMES, _features({"BM": 4, "BN": 32}, {"M": 100, "N": 1000}),
                 strict=True))
    # Four rows per block: a quarter of the blocks (ceil(100 / 4) = 25 against 100).
    assert f["log_grid_blocks"] == math.log2(101)
    assert g["log_grid_blocks"] == math.log2(26)
    # The column loop runs cdiv(N, BN) times: more work per thread on a longer row.
    h = dict(zip(FEATURE_NAMES, _features({"BM": 1, "BN": 32}, {"M": 100, "N": 4000}),
                 strict=True))
    assert h["log_global_load_bytes"] > f["log_global_load_bytes"]
    assert h["log_flops"] > f["log_flops"]
    # Threads request at least the whole matrix (more where a small tile leaves threads
    # holding copies of the same elements).
    total = 2 ** f["log_kernel_global_bytes"] - 1
    assert total >= 100 * 1000 * 4


def test_features_on_the_cpu_target() -> None:
    f = dict(zip(FEATURE_NAMES, _features({"BM": 2, "BN": 64}, {"M": 10, "N": 100},
                                          cpu_target()), strict=True))
    assert f["log_block_threads"] == 1.0  # one thread per block on the CPU
    assert f["log_smem_bytes"] == 0.0


def test_scored_points_skip_the_verifier_and_built_points_do_not(monkeypatch) -> None:
    # Scoring a point needs only its features; the point that is built to be timed must
    # still pass the verifier after every pass. A verifier that always fails tells the two
    # apart (and the features of a scored point match those of a verified lowering).
    from tegula.compiler.tuning.build import BuildJob, build_candidate
    from tegula.passes import manager

    config, shapes = {"BM": 2, "BN": 64}, {"M": 100, "N": 1000}
    expected = _features(config, shapes)

    def refuse(ir) -> None:
        raise ValueError("planted verifier failure")

    monkeypatch.setattr(manager, "verify_ir", refuse)
    job = BuildJob(ROWSUM, "rowsum.tg", "rowsum", config, "cuda:sm_90a", shapes,
                   emit_binary=False)
    scored = build_candidate(job)
    assert scored.ok and scored.features == expected
    built = build_candidate(BuildJob(**{**job.__dict__, "emit_binary": True}))
    assert built.status == "compile_error" and "planted verifier failure" in built.message
