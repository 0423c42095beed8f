"""Shared test configuration: GPU tests skip, with the reason, where no GPU is visible."""

from __future__ import annotations

import pytest


def _gpu_unavailable_reason() -> str | None:
    try:
        from tegula.runtime.cuda_launch import cuda_unavailable_reason
    except Exception as exc:  # pragma: no cover - import problems are reported, not hidden
        return f"the CUDA runtime module does not import: {exc}"
    return cuda_unavailable_reason()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = None
    checked = False
    for item in items:
        if "gpu" not in item.keywords:
            continue
        if not checked:
            reason, checked = _gpu_unavailable_reason(), True
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"needs a CUDA GPU: {reason}"))


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test session compiles into its own cache folder, never the user's."""
    monkeypatch.setenv("TEGULA_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "kernel-cache"))
