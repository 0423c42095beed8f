"""Runtime branches inside loops: an ``if`` that updates tiles and a scalar carried by the
loop (a partial sum flushed once per group, scaled by the group's scale, then reset), checked
against NumPy on the CPU, built with NVRTC for CUDA, and run on a GPU under ``-m gpu``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tegula.compiler.driver import lower_kernel
from tegula.compiler.frontend import build_tile_kernel
from tegula.compiler.parser import parse
from tegula.compiler.targets import resolve_target

import tegula as tg

SOURCE = """\
kernel grouped_sum(x: f32[M, K], s: f32[M, KG], y: f32[M], groups: i32[NB])
    params G = 16, BK = 4, BR = 8
    grid (cdiv(M, BR))
{
    r = bid.x * BR
    acc = zeros(f32, [BR, BK])
    part = zeros(f32, [BR, BK])
    flushes = 0
    for k in range(0, K, BK) {
        part = part + load(x[r : +BR, k : +BK])
        if (k + BK) % G == 0 or k + BK >= K {
            g = load(s[r : +BR, k // G])
            acc = acc + part * g[:, None]
            part = zeros(f32, [BR, BK])
            flushes = flushes + 1
        }
    }
    store(y[r : +BR], sum(acc, axis=1))
    store(groups[bid.x], flushes)
}
"""
G, BR = 16, 8


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "grouped_sum.tg"
    path.write_text(SOURCE)
    return path


def _check(module: tg.Module, m: int, k: int, xp=np) -> None:
    rng = np.random.default_rng()
    kg, nb = -(-k // G), -(-m // BR)
    x = rng.standard_normal((m, k)).astype(np.float32)
    s = rng.standard_normal((m, kg)).astype(np.float32)
    y = np.full(m, np.nan, np.float32)
    groups = np.full(nb, -1, np.int32)
    args = [xp.asarray(a) for a in (x, s, y, groups)]
    module.grouped_sum(*args)
    y, groups = (np.asarray(a.get() if hasattr(a, "get") else a) for a in args[2:])
    padded = np.zeros((m, kg * G))
    padded[:, :k] = x
    expected = (padded.reshape(m, kg, G).sum(axis=2) * s).sum(axis=1)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5 * np.abs(x).sum(axis=1).max())
    assert (groups == kg).all()


@pytest.mark.parametrize(("m", "k"), [(32, 64), (19, 52), (3, 4)])
def test_a_branch_flushes_and_resets_carried_tiles_on_the_cpu(source: Path, m: int,
                                                                k: int) -> None:
    _check(tg.compile(source, target="cpu", cache=False), m, k)


def _loop_buffers(text: str, name: str, target: str) -> list[str]:
    tgt = resolve_target(target)
    tile = build_tile_kernel(parse(text, "<string>"), name, {}, {}, tgt.constants())
    loop, _ = lower_kernel(tile, tgt)
    return [b.name for b in loop.buffers]


def test_a_carried_tile_is_updated_where_it_is_on_the_cpu() -> None:
    # `part = part + load(...)` writes the carried registers in place (no staging copy and
    # copy back), and the branch that leaves it alone copies nothing either.
    names = _loop_buffers(SOURCE, "grouped_sum", "cpu")
    assert [n for n in names if n.startswith("part")] == ["part_1_carry"], names


def test_a_carried_value_nothing_reads_is_dropped() -> None:
    # A compile-time branch leaves `part` as it came: it is carried for nothing, so it goes.
    text = SOURCE.replace("if (k + BK) % G == 0 or k + BK >= K {", "if BK == 0 {")
    text = text.replace("part = part + load(x[r : +BR, k : +BK])",
                        "acc = acc + load(x[r : +BR, k : +BK])")
    for target in ("cpu", "cuda:sm_90a"):
        names = _loop_buffers(text, "grouped_sum", target)
        assert not [n for n in names if n.startswith("part")], names


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_a_branch_in_a_loop_builds_with_nvrtc(source: Path, arch: str) -> None:
    module = tg.compile(source, target=f"cuda:{arch}", cache=False)
    assert "if (" in module.results["grouped_sum"].source


@pytest.mark.gpu
def test_a_branch_flushes_and_resets_carried_tiles_on_the_gpu(source: Path) -> None:
    cp = pytest.importorskip("cupy")
    _check(tg.compile(source, target="cuda", cache=False), 19, 52, xp=cp)


READER = """\
kernel reader(x: f32[M, K], y: f32[M])
    params BK = 4, BR = 8
    grid (cdiv(M, BR))
{{
    r = bid.x * BR
    acc = zeros(f32, [BR, BK])
    part = zeros(f32, [BR, BK])
    for k in range(0, K, BK) {{
{body}
    }}
    store(y[r : +BR], sum(acc, axis=1))
}}
"""
Step = Callable[[np.ndarray, np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def _check_reader(tmp_path: Path, body: str, step: Step) -> None:
    """Run ``READER`` with ``body`` as its loop body on the CPU against NumPy, where
    ``step(part, acc, slab, k)`` is one iteration of the same loop."""
    path = tmp_path / "reader.tg"
    path.write_text(READER.format(body=body))
    kernel = tg.compile(path, target="cpu", cache=False).reader
    rng = np.random.default_rng()
    m, k = 16, 24
    x = rng.standard_normal((m, k)).astype(np.float32)
    y = np.full(m, np.nan, np.float32)
    kernel(x, y)
    part, acc = np.zeros((m, 4)), np.zeros((m, 4))
    for j in range(0, k, 4):
        part, acc = step(part, acc, x[:, j:j + 4], j)
    np.testing.assert_allclose(y, acc.sum(axis=1), rtol=1e-5, atol=1e-4)


def test_an_update_in_place_leaves_earlier_readers_their_values(tmp_path: Path) -> None:
    # `before` reads the old `part` where it is used, after `part` has its new value: the
    # update must not overwrite what `before` still reads.
    body = """\
        before = part * 2.0
        part = part + load(x[r : +BR, k : +BK])
        acc = acc + before + part"""

    def step(part, acc, slab, k):  # type: ignore[no-untyped-def]
        before = part * 2.0
        part = part + slab
        return part, acc + before + part

    _check_reader(tmp_path, body, step)


def test_a_branch_leaves_earlier_readers_of_a_kept_value_their_values(tmp_path: Path) -> None:
    # `mid` reads `part` from before the branch where it is used, after the branch: the
    # branch result shares `part`'s registers only if nothing still reads them afterwards.
    body = """\
        before = part * 2.0
        part = part + load(x[r : +BR, k : +BK])
        mid = part * 3.0
        if k % 8 == 0 {
            part = part * 0.5
        }
        acc = acc + before + mid + part"""

    def step(part, acc, slab, k):  # type: ignore[no-untyped-def]
        before = part * 2.0
        part = part + slab
        mid = part * 3.0
        if k % 8 == 0:
            part = part * 0.5
        return part, acc + before + mid + part

    _check_reader(tmp_path, body, step)
