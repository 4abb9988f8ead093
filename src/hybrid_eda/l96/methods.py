"""The registry of Lorenz-96 DA methods: one :class:`MethodSpec` per command-line name, each with its factory.

    spec = method_spec("etkf")          # MethodSpec(name="etkf", ..., rotatable=True)
    method = spec.build(config)         # an Assimilator for an ExperimentConfig

Methods are built by the factories in :data:`METHODS` (never ``if name == ...`` chains); the flags of a spec
(``ensemble``, ``windowed``, ``rotatable``) are what :func:`hybrid_eda.l96.config.resolve_settings` reads to
fill in a method's defaults. OI, 3D-Var and a static-B 4D-Var share one climatology per model
(:func:`climatology`, cached).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hybrid_eda.l96.base import Assimilator
from hybrid_eda.l96.model import Lorenz96
from hybrid_eda.l96.observations import ObservationOperator

if TYPE_CHECKING:  # pragma: no cover
    from hybrid_eda.l96.config import ExperimentConfig

__all__ = ["METHODS", "MethodSpec", "climatology", "method_spec"]


@functools.lru_cache(maxsize=8)
def climatology(model: Lorenz96):  # noqa: ANN201 - returns filters.Climatology
    """Climatological mean and covariance of ``model`` from a fixed-seed free run (cached per model)."""
    from hybrid_eda.l96.filters import Climatology

    return Climatology.from_free_run(model, np.random.default_rng(20080101))


def _static_b(config: ExperimentConfig, model: Lorenz96) -> np.ndarray:
    return float(config.b_scale) * climatology(model).cov  # type: ignore[arg-type]


def _etkf(config: ExperimentConfig, model: Lorenz96, obs: ObservationOperator) -> Assimilator:
    from hybrid_eda.l96.filters import ETKF

    return ETKF(model, obs, inflation=config.inflation, rotate=bool(config.rotate))


def _enkf(config: ExperimentConfig, model: Lorenz96, obs: ObservationOperator) -> Assimilator:
    from hybrid_eda.l96.filters import EnKF

    return EnKF(model, obs, inflation=config.inflation)


def _oi(config: ExperimentConfig, model: Lorenz96, obs: ObservationOperator) -> Assimilator:
    from hybrid_eda.l96.filters import OptimalInterpolation

    return OptimalInterpolation(model, obs, climatology(model))


def _var3d(config: ExperimentConfig, model: Lorenz96, obs: ObservationOperator) -> Assimilator:
    from hybrid_eda.l96.filters import Var3D

    scale = float(config.b_scale)  # type: ignore[arg-type]
    return Var3D(model, obs, climatology(model), b_scale=scale)


def _var4d(config: ExperimentConfig, model: Lorenz96, obs: ObservationOperator) -> Assimilator:
    from hybrid_eda.l96.var4d import Var4DEDA

    return Var4DEDA(
        model,
        obs,
        window=config.window,
        steps_per_obs=config.steps_per_obs,
        inflation=config.inflation,
        b_mode=config.b_mode,
        static_b=None if config.b_mode == "ensemble" else _static_b(config, model),
        hybrid_weight=config.hybrid_weight,
    )


@dataclass(frozen=True)
class MethodSpec:
    """A DA method in the registry.

    Attributes
    ----------
    name : str
        Command-line name.
    description : str
        One line for help texts.
    factory : callable
        ``(config, model, obs) -> Assimilator``.
    ensemble : bool
        Whether the method uses an ensemble (members, inflation); ``False`` runs one deterministic state.
    windowed : bool
        Whether the method assimilates a window of several observation times (``--window``).
    rotatable : bool
        Whether the method takes random rotations of its square-root transform (``--rotate``).
    """

    name: str
    description: str
    factory: Callable[[ExperimentConfig, Lorenz96, ObservationOperator], Assimilator]
    ensemble: bool = True
    windowed: bool = False
    rotatable: bool = False

    def min_members(self, config: ExperimentConfig) -> int:
        """Smallest usable ensemble (a static-B 4D-Var runs with one member)."""
        if not self.ensemble:
            return 1
        return 1 if self.windowed and config.b_mode == "static" else 2

    def build(self, config: ExperimentConfig) -> Assimilator:
        method = self.factory(config, config.model(), config.observations())
        if not self.windowed:
            method.steps_per_obs = config.steps_per_obs
        return method


#: Registry of the DA methods, by command-line name.
METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            "etkf", "ETKF, symmetric square root, multiplicative inflation, no localisation", _etkf, rotatable=True
        ),
        MethodSpec("enkf", "stochastic EnKF with perturbed observations", _enkf),
        MethodSpec("4dvar", "4D-Var EDA: perturbed-observation 4D-Var per member", _var4d, windowed=True),
        MethodSpec("oi", "optimal interpolation (climatological prior, deterministic)", _oi, ensemble=False),
        MethodSpec("3dvar", "cycled 3D-Var, B = b_scale x climatological covariance", _var3d, ensemble=False),
    )
}


def method_spec(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available methods: {', '.join(METHODS)}.") from None
