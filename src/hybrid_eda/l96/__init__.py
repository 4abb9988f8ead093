"""The Lorenz-96 EDA testbed: dynamics, observations, DA methods, cycling harness, hybrid EDA, archive.

    from hybrid_eda.l96 import ExperimentConfig, run_experiment
    result = run_experiment(ExperimentConfig.from_preset("sakov2008", members=20, inflation=1.02, seed=1))
    result.summary()["analysis_rmse"]   # about 0.18

Names are imported lazily on first access, so ``import hybrid_eda.l96.archive`` stays cheap and submodules
can import each other without cycles.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Lorenz96": "hybrid_eda.l96.model",
    "ObservationOperator": "hybrid_eda.l96.observations",
    "Assimilator": "hybrid_eda.l96.base",
    "FilterDivergenceError": "hybrid_eda.l96.base",
    "EDAArchive": "hybrid_eda.l96.archive",
    "ExperimentConfig": "hybrid_eda.l96.config",
    "METHODS": "hybrid_eda.l96.methods",
    "ExperimentResult": "hybrid_eda.l96.experiment",
    "run_experiment": "hybrid_eda.l96.experiment",
    "HybridResult": "hybrid_eda.l96.hybrid",
    "run_hybrid": "hybrid_eda.l96.hybrid",
    "run_table": "hybrid_eda.l96.hybrid",
    "PRESETS": "hybrid_eda.l96.presets",
    "Preset": "hybrid_eda.l96.presets",
    "get_preset": "hybrid_eda.l96.presets",
    "EMULATORS": "hybrid_eda.l96.emulators",
    "MemberEmulator": "hybrid_eda.l96.emulators",
    "get_emulator": "hybrid_eda.l96.emulators",
    "BOUNDS": "hybrid_eda.l96.emulators",
    "UpperBound": "hybrid_eda.l96.emulators",
    "get_member_source": "hybrid_eda.l96.emulators",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hybrid_eda.l96' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
