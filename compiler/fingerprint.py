"""A fingerprint of the compiler's own code, part of every kernel-cache key.

A cached binary is only as good as the compiler that made it: when tegula's passes or code
generators change (an upgrade, or an editable install being worked on), kernels built by the
old code must not be loaded. An installed release is identified by its version; a source
checkout installed in editable mode (where the code changes under the same version) is
identified by its files' names, sizes and modification times — one ``stat`` per file, so a
cache hit stays cheap either way.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import tegula

# The folders whose code decides what a kernel compiles to.
_PARTS = ("compiler", "ir", "passes", "codegen")


@functools.cache
def compiler_fingerprint() -> str:
    digest = hashlib.sha256(tegula.__version__.encode())
    if "site-packages" in Path(tegula.__file__).parts:
        return digest.hexdigest()[:16]  # a release: its version says it all
    for part in _PARTS:
        module = __import__(f"tegula.{part}", fromlist=["__file__"])
        root = os.path.dirname(module.__file__)
        for path, size, mtime in sorted(_source_files(root)):
            digest.update(f"{os.path.relpath(path, root)}:{size}:{mtime};".encode())
    return digest.hexdigest()[:16]


@functools.cache
def compiler_source_digest() -> str:
    """A digest of the compiler's code by content (not by modification times): the same on
    every machine that has the same code. Tuning records carry it, so measurements made by
    one compiler are not taken for another's (read once per process)."""
    digest = hashlib.sha256(tegula.__version__.encode())
    for part in _PARTS:
        module = __import__(f"tegula.{part}", fromlist=["__file__"])
        root = os.path.dirname(module.__file__)
        for path, _size, _mtime in sorted(_source_files(root)):
            relative = os.path.relpath(path, root)
            if relative.startswith(f"tuning{os.sep}"):
                continue  # the tuner does not decide what a config compiles to
            digest.update(relative.encode())
            digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def _source_files(folder: str) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of the code files below ``folder`` (os.scandir: one stat each)."""
    found: list[tuple[str, int, int]] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name != "__pycache__":
                    found.extend(_source_files(entry.path))
            elif entry.name.endswith((".py", ".lark")):
                st = entry.stat()
                found.append((entry.path, st.st_size, st.st_mtime_ns))
    return found
