"""The tree stays `ruff check` clean (the rules are in pyproject.toml), so lint failures fail
the test command rather than wait for someone to run the linter by hand."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _ruff() -> list[str]:
    try:
        import ruff  # noqa: F401  (the package ships the binary; `python -m ruff` runs it)
    except ImportError:
        if shutil.which("ruff") is None:
            pytest.skip("ruff is not installed; install tegula[test]")
        return ["ruff"]
    return [sys.executable, "-m", "ruff"]


def test_the_tree_is_ruff_clean() -> None:
    result = subprocess.run([*_ruff(), "check", "--no-cache", str(REPO_ROOT)],
                            capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
