"""The on-disk kernel cache.

An entry is a folder named by its key, holding the entry's files (cubin, PTX, object code,
the kernel spec, generated source...) and ``manifest.json``, which lists the sha256 of every
file and the caller's metadata. A folder rather than one packed file, because the binaries
and sources then sit on disk as themselves, for tools such as ``cuobjdump`` and for
reading, and because renaming a folder is as atomic as renaming a file.

Concurrency: a writer builds the entry in a temporary folder beside it and renames it into
place; the rename either installs the whole entry or fails because another writer got
there first, in which case both wrote the same thing and the newcomer is dropped. Readers
therefore see a whole entry or none. An entry that is nevertheless damaged (bad JSON, a
missing file, a hash mismatch) is logged, removed and reported as a miss, so the caller
rebuilds it. That check is also why files are not fsync'd: an entry a crash left torn
fails its hashes and is rebuilt, and a cold compile does not wait on the disk (six syncs
took about 12 ms of a softmax compile on a local disk, more on network storage).

``$TEGULA_CACHE_DIR`` moves the cache; ``TEGULA_CACHE_DISABLE=1`` turns it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_KEY = re.compile(r"[0-9a-f]{16,128}\Z")
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\Z")


def _canonical(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cache key part of type {type(value).__name__} has no canonical form")


def cache_key(*parts: Any) -> str:
    """sha256 over a canonical JSON of ``parts`` (IR text, options, target, version...).

    Dicts are key-sorted, tuples and lists are the same, bytes count by their hash.
    """
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=_canonical)
    return hashlib.sha256(text.encode()).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_disabled() -> bool:
    return os.environ.get("TEGULA_CACHE_DISABLE", "").strip().lower() in ("1", "true", "yes")


def default_cache_dir() -> Path:
    """``$TEGULA_CACHE_DIR``, else the user's cache folder for tegula."""
    configured = os.environ.get("TEGULA_CACHE_DIR", "").strip()
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("tegula"))


@dataclass(frozen=True)
class CacheEntry:
    """One cache entry, read and verified."""

    key: str
    path: Path
    files: Mapping[str, bytes]
    meta: Mapping[str, Any]


class KernelCache:
    """A folder of verified cache entries. ``enabled=None`` follows ``TEGULA_CACHE_DISABLE``."""

    def __init__(self, root: str | Path | None = None, *, enabled: bool | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = (not cache_disabled()) if enabled is None else enabled

    def entry_path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"cache key {key!r} is not a hex digest (use cache_key())")
        return self.root / key[:2] / key

    def get(self, key: str) -> CacheEntry | None:
        """The entry for ``key``, or ``None`` on a miss (including a damaged entry)."""
        if not self.enabled:
            return None
        path = self.entry_path(key)
        if not path.is_dir():
            return None
        try:
            return self._read(key, path)
        except _Damaged as damage:
            logger.warning("tegula cache entry %s is damaged (%s); removing it", path, damage)
            self._remove(path)
            return None

    def put(self, key: str, files: Mapping[str, bytes], meta: Mapping[str, Any] | None = None
            ) -> CacheEntry | None:
        """Store an entry (``None`` when the cache is off). Safe against concurrent writers
        of the same key: exactly one complete entry ends up in place."""
        if not self.enabled:
            return None
        for name, data in files.items():
            if name == MANIFEST or not _FILE_NAME.match(name):
                raise ValueError(f"cache file name {name!r} is not a plain file name")
            if not isinstance(data, bytes | bytearray):
                raise TypeError(f"cache file {name!r} must be bytes, not {type(data).__name__}")
        meta = dict(meta or {})
        manifest = {
            "format": FORMAT_VERSION,
            "key": key,
            "files": {name: _sha256(bytes(data)) for name, data in files.items()},
            "meta": meta,
        }
        manifest_text = json.dumps(manifest, indent=1, sort_keys=True).encode()
        final = self.entry_path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            for name, data in files.items():
                (staging / name).write_bytes(bytes(data))
            (staging / MANIFEST).write_bytes(manifest_text)  # last: marks the entry whole
            try:
                os.rename(staging, final)
            except OSError:
                # Another writer installed the entry first (or a damaged one is there).
                if self.get(key) is None:  # damaged: removed by get(); take its place
                    with contextlib.suppress(OSError):  # unless a third writer won
                        os.rename(staging, final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return CacheEntry(key, final, {n: bytes(d) for n, d in files.items()}, meta)

    def clear(self) -> None:
        """Remove every entry."""
        if self.root.is_dir():
            shutil.rmtree(self.root, ignore_errors=True)

    # -- internals -------------------------------------------------------------------------

    def _read(self, key: str, path: Path) -> CacheEntry:
        try:
            manifest = json.loads((path / MANIFEST).read_bytes())
        except FileNotFoundError:
            raise _Damaged("no manifest") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _Damaged(f"manifest is not JSON: {exc}") from None
        if not (isinstance(manifest, dict) and isinstance(manifest.get("files"), dict)):
            raise _Damaged("manifest has no file list")
        if manifest.get("key") != key or manifest.get("format") != FORMAT_VERSION:
            raise _Damaged("manifest is for another key or format")
        files = {}
        for name, digest in manifest["files"].items():
            if not isinstance(name, str) or not _FILE_NAME.match(name):
                raise _Damaged(f"manifest names a bad file {name!r}")
            try:
                data = (path / name).read_bytes()
            except FileNotFoundError:
                raise _Damaged(f"file {name!r} is missing") from None
            if _sha256(data) != digest:
                raise _Damaged(f"file {name!r} does not match its sha256")
            files[name] = data
        return CacheEntry(key, path, files, manifest.get("meta") or {})

    def _remove(self, path: Path) -> None:
        # Rename first so no reader sees a half-deleted folder under the entry's name.
        trash = path.parent / f".trash-{path.name}-{uuid.uuid4().hex}"
        try:
            os.rename(path, trash)
        except OSError:
            return  # already gone (another process removed or replaced it)
        shutil.rmtree(trash, ignore_errors=True)


class _Damaged(Exception):
    """A cache entry failed verification."""


_default: KernelCache | None = None


def default_cache() -> KernelCache:
    """The process-wide cache at :func:`default_cache_dir` (made on first use)."""
    global _default
    if _default is None or _default.root != default_cache_dir():
        _default = KernelCache()
    return _default
