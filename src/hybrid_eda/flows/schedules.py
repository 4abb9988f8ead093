"""Time grids of a flow on ``[0, 1]``: ``0 = t_0 < t_1 < ... < t_K = 1`` for ``K`` steps.

A schedule is chosen by ``_target_`` like every variant in the package; it only places the steps; the SDE and the
scheme are unchanged. ``PowerSchedule`` (``t_k = (k / K)^p``) refines the start of the flow for ``p > 1``, where the
members are still close to their backgrounds and the drift changes fastest if the model learned a sharp transient.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from hybrid_eda.errors import UserInputError


def _check_steps(steps: int) -> int:
    if int(steps) != steps or steps < 1:
        msg = f"a flow needs at least 1 integration step, got steps={steps!r}; pass an integer >= 1 (e.g. 8)"
        raise UserInputError(msg)
    return int(steps)


class TimeSchedule(ABC):
    """Places ``steps`` integration steps on ``[0, 1]``."""

    @abstractmethod
    def fractions(self, u: torch.Tensor) -> torch.Tensor:
        """Increasing map of ``[0, 1]`` onto itself, ``t = f(u)`` with ``f(0) = 0``, ``f(1) = 1``."""

    def times(
        self, steps: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """The ``steps + 1`` times ``[t_0 = 0, ..., t_K = 1]`` (1-D tensor)."""
        steps = _check_steps(steps)
        u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
        t = self.fractions(u)
        t[0], t[-1] = 0.0, 1.0  # exact ends whatever the map's rounding
        return t.to(dtype=dtype, device=device)


class UniformSchedule(TimeSchedule):
    """``t_k = k / K``."""

    def fractions(self, u: torch.Tensor) -> torch.Tensor:
        return u


class PowerSchedule(TimeSchedule):
    """``t_k = (k / K)^power``: ``power > 1`` refines the start, ``power < 1`` the end.

    Raises
    ------
    UserInputError
        If ``power <= 0`` (the map would not be increasing).
    """

    def __init__(self, power: float = 2.0) -> None:
        if not power > 0:
            msg = f"PowerSchedule needs power > 0 (1 is uniform, 2 refines the start), got {power}"
            raise UserInputError(msg)
        self.power = float(power)

    def fractions(self, u: torch.Tensor) -> torch.Tensor:
        return u**self.power
