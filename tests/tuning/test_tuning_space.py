from __future__ import annotations

import numpy as np
import pytest
from tegula.compiler.driver import lower_kernel
from tegula.compiler.frontend import build_tile_kernel
from tegula.compiler.parser import parse
from tegula.compiler.targets import resolve_target
from tegula.compiler.tuning.space import SearchSpace, config_key, legality
from tegula.ir.target import cuda_target
from tuning_kernels import PLANTED, ROWSUM


def _space(source: str, name: str, shapes: dict[str, int], target: str = "cpu"
           ) -> SearchSpace:
    return SearchSpace.from_kernel(parse(source).kernel(name), shapes, resolve_target(target))


def test_space_is_the_declared_candidates() -> None:
    space = _space(ROWSUM, "rowsum", {"M": 100, "N": 1000})
    assert space.params == (("BM", (1, 2, 4)), ("BN", (32, 64, 128, 256)))
    assert space.size == 12
    configs = list(space.configs())
    assert len({config_key(c) for c in configs}) == 12
    assert space.default() == {"BM": 1, "BN": 32}


def test_tiles_that_only_add_padding_are_pruned_before_building() -> None:
    # N = 100: BN = 128 covers the row already, so 256 is the same work with more masking.
    space = _space(ROWSUM, "rowsum", {"M": 100, "N": 100})
    assert dict(space.params)["BN"] == (32, 64, 128)
    assert any(p.startswith("BN=256") for p in space.pruned)


def test_too_many_warps_are_pruned_on_cuda() -> None:
    src = ROWSUM.replace("params BM in (1, 2, 4)", "params W in (4, 64), BM in (1, 2, 4)")
    src = src.replace("warps 4", "warps W")
    space = SearchSpace.from_kernel(parse(src).kernel("rowsum"), {"M": 8, "N": 1000},
                                    cuda_target("sm_90a"))
    assert dict(space.fixed)["W"] == 4
    assert any("64 warps" in p for p in space.pruned)


def test_config_key_is_canonical() -> None:
    assert config_key({"b": 2, "a": 1}) == config_key({"a": 1, "b": 2}) == '{"a":1,"b":2}'


def test_sampling_and_neighbors_stay_in_the_space() -> None:
    space = _space(ROWSUM, "rowsum", {"M": 100, "N": 1000})
    rng = np.random.default_rng(1)
    for _ in range(50):
        c = space.sample(rng)
        n = space.neighbor(c, rng)
        assert space.contains(c) and space.contains(n)
        assert sum(c[k] != n[k] for k in c) <= 1


def test_legality_checks_the_shared_memory_budget() -> None:
    program = parse(ROWSUM)
    target = cuda_target("sm_80")
    loop, _ = lower_kernel(build_tile_kernel(program, "rowsum", {"BM": 4, "BN": 256}), target)
    assert legality(loop, target) is None
    small = type(target)("cuda", "sm_80", max_smem_bytes=max(loop.smem_bytes - 1, 0))
    if loop.smem_bytes:
        assert "shared memory" in (legality(loop, small) or "")
    tiny = type(target)("cuda", "sm_80", max_block_threads=32)
    assert "threads per block" in (legality(loop, tiny) or "")


def test_a_param_with_no_legal_candidate_is_an_error() -> None:
    src = PLANTED.replace("warps 4", "warps W").replace(
        "params BLOCK", "params W in (64, 128), BLOCK")
    with pytest.raises(ValueError, match="no candidate of W"):
        SearchSpace.from_kernel(parse(src).kernel("planted"), {"N": 10}, cuda_target("sm_90"))
