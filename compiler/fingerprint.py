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
        root = Path(module.__file__).parent
        for path in sorted(root.rglob("*")):
            if path.suffix in (".py", ".lark") and "__pycache__" not in path.parts:
                st = path.stat()
                digest.update(f"{path.relative_to(root)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]
