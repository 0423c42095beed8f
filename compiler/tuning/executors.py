"""Where builds run: a local process pool (``spawn``), or Ray tasks when Ray is installed.

Both are :class:`concurrent.futures.Executor`, so the measurer does not care which.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from collections.abc import Callable
from typing import Any


class RayExecutor(cf.Executor):
    """Each ``submit`` is one Ray task; results come back as ordinary futures."""

    def __init__(self) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(ignore_reinit_error=True, log_to_driver=False)
        self._ray = ray
        self._remote: dict[Callable[..., Any], Any] = {}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = self._ray.remote(fn)
        return remote.remote(*args, **kwargs).future()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._remote.clear()


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def make_executor(kind: str, workers: int) -> cf.Executor:
    """``process``: a pool of ``workers`` spawned processes; ``ray``: Ray tasks."""
    if kind == "process":
        return cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
    if kind == "ray":
        if not ray_available():
            raise RuntimeError("the ray executor needs Ray: pip install 'tegula[ray]'")
        return RayExecutor()
    raise ValueError(f"unknown executor {kind!r}; expected 'process' or 'ray'")
