"""Autotuning with a learned cost model (``docs/tuning.md``).

The knobs a kernel declares (``params BM in (...)``) span a :class:`SearchSpace`; candidates
are lowered to Loop IR and described by :func:`extract_features`; a ranking model
(:class:`GBDTRanker`) learned from measurements guides a simulated-annealing search; a
:class:`Measurer` builds candidates in a process pool and times them in an isolated worker
process per device, so a candidate that crashes or hangs costs one record; every
measurement is appended to a :class:`TuningDatabase`.
"""

from __future__ import annotations

from .database import TuningDatabase, TuningRecord, default_db_path
from .features import FEATURE_NAMES, extract_features
from .model import GBDTRanker, RidgeModel, make_model
from .space import SearchSpace, config_key
from .tuner import TuningResult, best_config, tune

__all__ = [
    "FEATURE_NAMES",
    "GBDTRanker",
    "RidgeModel",
    "SearchSpace",
    "TuningDatabase",
    "TuningRecord",
    "TuningResult",
    "best_config",
    "config_key",
    "default_db_path",
    "extract_features",
    "make_model",
    "tune",
]
