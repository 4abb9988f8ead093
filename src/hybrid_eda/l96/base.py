"""The contract every Lorenz-96 data-assimilation method fulfils, so the cycling harness can run any of them.

Glossary: ``n`` state size (40), ``N`` ensemble size, ``p`` observations per time, ``L`` observation times
per assimilation window (1 for filters), ``B`` optional leading batch of independent experiments.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from hybrid_eda.l96.model import Lorenz96
from hybrid_eda.l96.observations import ObservationOperator

__all__ = ["Assimilator", "FilterDivergenceError", "analyses_kept"]


class FilterDivergenceError(RuntimeError):
    """The model state blew up to non-finite values during cycling."""


class Assimilator(ABC):
    """An ensemble data-assimilation method: background ensemble + observations -> analysis ensemble.

    The analysis is valid at the **start** of the window (the cycle time). Observations in the window are
    at times ``t + l * steps_per_obs * dt`` for ``l = 0 .. window - 1``; a filter has ``window == 1``.

    Parameters
    ----------
    model : Lorenz96
        The forecast model (4D-Var uses it inside the window).
    obs : ObservationOperator
        Observation operator and error statistics.
    """

    #: Number of observation times assimilated per cycle.
    window: int = 1
    #: Model steps between two observation times inside a window.
    steps_per_obs: int = 1

    def __init__(self, model: Lorenz96, obs: ObservationOperator) -> None:
        self.model = model
        self.obs = obs

    @abstractmethod
    def analyse(
        self,
        background: np.ndarray,
        observations: np.ndarray,
        rng: np.random.Generator,
        *,
        n_analyses: int | None = None,
    ) -> np.ndarray:
        """Assimilate one window.

        Parameters
        ----------
        background : np.ndarray
            Background ensemble ``[..., N, n]`` at the cycle time.
        observations : np.ndarray
            Observations ``[..., L, p]`` at the window's observation times.
        rng : np.random.Generator
            Source of all randomness (perturbed observations, random rotations).
        n_analyses : int, optional
            Return the analyses of the first ``n_analyses`` members only (the N_s real members of a hybrid
            cycle); the method still uses all N backgrounds for its covariance, but the other analyses are
            never computed, so nothing downstream can read them. ``None``: all N.

        Returns
        -------
        np.ndarray
            Analysis ensemble ``[..., N, n]`` (``[..., n_analyses, n]``) at the cycle time.
        """


def analyses_kept(n_analyses: int | None, n_members: int) -> int:
    """How many analyses ``analyse(..., n_analyses=...)`` returns for ``n_members`` backgrounds (checked)."""
    if n_analyses is None:
        return n_members
    if int(n_analyses) != n_analyses or not 1 <= n_analyses <= n_members:
        raise ValueError(
            f"n_analyses must be an integer between 1 and the ensemble size N={n_members}, got {n_analyses!r}."
        )
    return int(n_analyses)
