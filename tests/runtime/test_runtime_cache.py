"""The on-disk cache: round trip, damage detected and dropped, concurrent writers."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from pathlib import Path

import pytest
from tegula.runtime.cache import MANIFEST, KernelCache, cache_key

FILES = {"kernel.cubin": os.urandom(4096), "kernel.ptx": b".version 9.0\n", "spec.json": b"{}"}


@pytest.fixture
def cache(tmp_path: Path) -> KernelCache:
    return KernelCache(tmp_path / "cache", enabled=True)


def test_key_is_canonical() -> None:
    a = cache_key("ir text", {"opt": 3, "arch": "sm_90a"}, ("cuda", 13), b"\x00\x01")
    b = cache_key("ir text", {"arch": "sm_90a", "opt": 3}, ["cuda", 13], b"\x00\x01")
    assert a == b and len(a) == 64
    assert cache_key("ir text", {"opt": 2}) != cache_key("ir text", {"opt": 3})
    with pytest.raises(TypeError, match="object"):
        cache_key(object())


def test_round_trip(cache: KernelCache) -> None:
    key = cache_key("round trip")
    assert cache.get(key) is None
    cache.put(key, FILES, {"arch": "sm_90a", "nvrtc": [13, 0]})
    entry = cache.get(key)
    assert entry is not None
    assert dict(entry.files) == FILES
    assert entry.meta == {"arch": "sm_90a", "nvrtc": [13, 0]}
    assert not [p for p in entry.path.parent.iterdir() if p.name.startswith(".tmp")]


def test_environment_controls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEGULA_CACHE_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("TEGULA_CACHE_DISABLE", raising=False)
    cache = KernelCache()
    assert cache.root == tmp_path / "elsewhere" and cache.enabled
    monkeypatch.setenv("TEGULA_CACHE_DISABLE", "1")
    off = KernelCache()
    key = cache_key("off")
    assert off.put(key, FILES) is None and off.get(key) is None
    assert not (tmp_path / "elsewhere").exists()


def _damage_manifest_json(path: Path) -> None:
    (path / MANIFEST).write_bytes(b'{"files": ')


def _damage_truncate_file(path: Path) -> None:
    data = (path / "kernel.cubin").read_bytes()
    (path / "kernel.cubin").write_bytes(data[: len(data) // 2])


def _damage_flip_byte(path: Path) -> None:
    data = bytearray((path / "kernel.cubin").read_bytes())
    data[100] ^= 0xFF
    (path / "kernel.cubin").write_bytes(bytes(data))


def _damage_missing_file(path: Path) -> None:
    (path / "kernel.ptx").unlink()


def _damage_missing_manifest(path: Path) -> None:
    (path / MANIFEST).unlink()


def _damage_foreign_manifest(path: Path) -> None:
    manifest = json.loads((path / MANIFEST).read_bytes())
    manifest["key"] = "0" * 64
    (path / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "damage",
    [_damage_manifest_json, _damage_truncate_file, _damage_flip_byte, _damage_missing_file,
     _damage_missing_manifest, _damage_foreign_manifest],
)
def test_damage_is_detected_logged_and_removed(
    cache: KernelCache, damage: object, caplog: pytest.LogCaptureFixture
) -> None:
    key = cache_key("damaged", damage.__name__)  # type: ignore[attr-defined]
    entry = cache.put(key, FILES)
    assert entry is not None
    damage(entry.path)  # type: ignore[operator]
    with caplog.at_level(logging.WARNING, logger="tegula.runtime.cache"):
        assert cache.get(key) is None
    assert "damaged" in caplog.text and str(entry.path) in caplog.text
    assert not entry.path.exists()
    cache.put(key, FILES)  # the caller rebuilds
    rebuilt = cache.get(key)
    assert rebuilt is not None and dict(rebuilt.files) == FILES


def test_bad_names_are_refused(cache: KernelCache) -> None:
    with pytest.raises(ValueError, match="not a hex digest"):
        cache.get("../etc")
    with pytest.raises(ValueError, match="plain file name"):
        cache.put(cache_key("x"), {"../up": b""})
    with pytest.raises(ValueError, match="plain file name"):
        cache.put(cache_key("x"), {MANIFEST: b""})


def _writer(root: str, key: str, seed: int) -> None:
    cache = KernelCache(root, enabled=True)
    for _ in range(5):
        cache.put(key, FILES, {"writer": seed})


def test_concurrent_writers_leave_one_valid_entry(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    key = cache_key("contended")
    context = multiprocessing.get_context("spawn" if os.name == "nt" else "fork")
    workers = [context.Process(target=_writer, args=(str(root), key, i)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    entry = KernelCache(root, enabled=True).get(key)
    assert entry is not None and dict(entry.files) == FILES
    assert entry.meta["writer"] in range(4)
    leftovers = [p.name for p in entry.path.parent.iterdir() if p.name != key]
    assert leftovers == []
