"""Stratonovich SDE integrators for elementwise noise, ``dX = u(X, t) dt + s(X, t) o dW``.

``u`` and ``s`` come from one call of the user's *field* ``field(x, t) -> SDECoefficients(drift, diffusion)``
(the member generator's drift and diffusion are two heads of one network pass), each of the state's shape; the
noise is elementwise: ``dW`` has the state's shape.

Schemes (derivative-free, two field evaluations per step, ``h = t_{k+1} - t_k``, ``dW = W(t_{k+1}) - W(t_k)``):

* :class:`StochasticHeun` (trapezoidal predictor-corrector)::

      x~ = x + u(x, t) h + s(x, t) dW
      x' = x + (u(x, t) + u(x~, t + h)) h / 2 + (s(x, t) + s(x~, t + h)) dW / 2

* :class:`StochasticMidpoint`::

      x~ = x + u(x, t) h / 2 + s(x, t) dW / 2
      x' = x + u(x~, t + h / 2) h + s(x~, t + h / 2) dW

Both are consistent with the Stratonovich integral (``s(x + s dW / 2) dW = s dW + s s' dW^2 / 2 + ...`` holds
the Stratonovich correction that Euler-Maruyama lacks) and have strong order 1 when the noise is *commutative*:
additive noise, scalar noise, or diagonal noise whose ``s_i`` depends on ``x_i`` only (Kloeden & Platen 1992,
sec. 10.4; Rumelin 1982). When ``s_i`` depends on other components (as the generator's diffusion does, through
neighbours and pooled ensemble features) the iterated integrals ``int dW_i dW_j`` (Levy areas) are missing and
the strong order drops to 0.5; the weak order stays 1. ``tests/test_flows.py`` measures all three numbers.
Euler-Maruyama is not offered: for state-dependent noise it converges to the Ito solution, another SDE.

An optional *additive* increment ``a_k`` per step (noise that does not depend on the state, e.g. the member
generator's ensemble-space noise, :mod:`hybrid_eda.layers.ensemble_noise`) is added where the scheme adds its
``s dW``: for additive noise Stratonovich equals Ito, and for a coefficient constant over the step Heun's trapezoid
``(A(t) + A(t + h)) dW / 2`` is ``a_k = A dW`` itself (midpoint: half in the predictor, all in the corrector).
Without it (``additive=None``) the schemes are exactly the ones above.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

from hybrid_eda.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class SDECoefficients:
    """Drift ``u`` and diffusion ``s`` at one state and time, each of the state's shape."""

    drift: torch.Tensor
    diffusion: torch.Tensor


#: ``field(x, t) -> SDECoefficients``; ``t`` is a 0-d tensor of the state's dtype.
Field = Callable[[torch.Tensor, torch.Tensor], SDECoefficients]


@dataclasses.dataclass(frozen=True)
class FlowSolution:
    """Result of :func:`integrate`.

    Attributes
    ----------
    final : torch.Tensor
        State at the last time, the initial state's shape.
    times : torch.Tensor
        The grid ``[steps + 1]``.
    trajectory : torch.Tensor or None
        ``[steps + 1, *state]`` (``trajectory[0]`` is the initial state) if asked for, else None.
    """

    final: torch.Tensor
    times: torch.Tensor
    trajectory: torch.Tensor | None = None


class StratonovichScheme(ABC):
    """One step of a Stratonovich scheme; variants are chosen by ``_target_``.

    Attributes
    ----------
    strong_order : float
        Strong order for commutative noise (additive, scalar, or diagonal with ``s_i(x_i)``).
    general_strong_order : float
        Strong order for general (non-commutative) elementwise noise.
    evaluations : int
        Field evaluations per step.
    """

    strong_order: float = 1.0
    general_strong_order: float = 0.5
    evaluations: int = 2

    @abstractmethod
    def step(
        self,
        field: Field,
        x: torch.Tensor,
        t: torch.Tensor,
        h: torch.Tensor,
        dw: torch.Tensor,
        additive: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """State at ``t + h`` from ``x`` at ``t``, the Brownian increment ``dw`` and an optional additive increment
        ``additive`` (both the state's shape; see the module docstring)."""


class StochasticHeun(StratonovichScheme):
    """Stochastic Heun (trapezoidal predictor-corrector); see the module docstring."""

    def step(
        self,
        field: Field,
        x: torch.Tensor,
        t: torch.Tensor,
        h: torch.Tensor,
        dw: torch.Tensor,
        additive: torch.Tensor | None = None,
    ) -> torch.Tensor:
        first = field(x, t)
        guess = x + first.drift * h + first.diffusion * dw
        if additive is not None:
            guess = guess + additive
        second = field(guess, t + h)
        out = x + 0.5 * (first.drift + second.drift) * h + 0.5 * (first.diffusion + second.diffusion) * dw
        return out if additive is None else out + additive


class StochasticMidpoint(StratonovichScheme):
    """Stochastic midpoint rule; see the module docstring."""

    def step(
        self,
        field: Field,
        x: torch.Tensor,
        t: torch.Tensor,
        h: torch.Tensor,
        dw: torch.Tensor,
        additive: torch.Tensor | None = None,
    ) -> torch.Tensor:
        first = field(x, t)
        middle = x + 0.5 * (first.drift * h + first.diffusion * dw)
        if additive is not None:
            middle = middle + 0.5 * additive
        second = field(middle, t + 0.5 * h)
        out = x + second.drift * h + second.diffusion * dw
        return out if additive is None else out + additive


def _checked(field: Field) -> Field:
    """``field`` that checks its first output (shapes, dtype) and raises precise errors, as torchsde does."""
    checked = False

    def call(x: torch.Tensor, t: torch.Tensor) -> SDECoefficients:
        nonlocal checked
        out = field(x, t)
        if not checked:
            if not isinstance(out, SDECoefficients):
                msg = f"the field must return SDECoefficients(drift, diffusion), got {type(out).__name__}"
                raise TypeError(msg)
            for name in ("drift", "diffusion"):
                value = getattr(out, name)
                if value.shape != x.shape:
                    msg = (
                        f"the field's {name} has shape {tuple(value.shape)} but the state has shape {tuple(x.shape)}; "
                        "the noise is elementwise, so drift and diffusion must both have the state's shape"
                    )
                    raise ValueError(msg)
            checked = True
        return out

    return call


def integrate(
    field: Field,
    x0: torch.Tensor,
    times: torch.Tensor,
    increments: torch.Tensor,
    *,
    scheme: StratonovichScheme | None = None,
    return_trajectory: bool = False,
    additive: torch.Tensor | None = None,
) -> FlowSolution:
    """Integrate ``dX = u dt + s o dW`` from ``x0`` at ``times[0]`` to ``times[-1]`` (differentiable).

    Parameters
    ----------
    field : callable
        ``field(x, t) -> SDECoefficients`` with drift and diffusion of ``x``'s shape.
    x0 : torch.Tensor
        Initial state, any shape (batch and member axes included).
    times : torch.Tensor
        Increasing grid ``[steps + 1]`` (e.g. ``UniformSchedule().times(steps)``).
    increments : torch.Tensor
        Brownian increments ``[steps, *x0.shape]`` on that grid (:func:`~hybrid_eda.flows.brownian_increments`);
        passing them, not a generator, lets one path be integrated at several step sizes or permuted with the state.
    scheme : StratonovichScheme, optional
        Default :class:`StochasticHeun`.
    return_trajectory : bool
        Also return the state at every time.
    additive : torch.Tensor, optional
        State-independent increments ``[steps, *x0.shape]`` added once per step (see the module docstring); None:
        the plain schemes.

    Returns
    -------
    FlowSolution
    """
    scheme = scheme or StochasticHeun()
    steps = times.numel() - 1
    if times.ndim != 1 or steps < 1:
        msg = f"times must be a 1-D grid [steps + 1] with steps >= 1, got shape {tuple(times.shape)}"
        raise UserInputError(msg)
    if tuple(increments.shape) != (steps, *x0.shape):
        msg = (
            f"increments must be [steps={steps}, *state={tuple(x0.shape)}], got {tuple(increments.shape)}; draw them "
            "with brownian_increments(times, state.shape, generator)"
        )
        raise UserInputError(msg)
    times = times.to(dtype=x0.dtype, device=x0.device)
    increments = increments.to(dtype=x0.dtype, device=x0.device)
    if additive is not None:
        if tuple(additive.shape) != (steps, *x0.shape):
            msg = f"additive must be [steps={steps}, *state={tuple(x0.shape)}], got {tuple(additive.shape)}"
            raise UserInputError(msg)
        additive = additive.to(dtype=x0.dtype, device=x0.device)
    checked = _checked(field)
    x = x0
    path = [x0] if return_trajectory else None
    for k in range(steps):
        extra = None if additive is None else additive[k]
        x = scheme.step(checked, x, times[k], times[k + 1] - times[k], increments[k], extra)
        if path is not None:
            path.append(x)
    trajectory = torch.stack(path) if path is not None else None
    return FlowSolution(final=x, times=times, trajectory=trajectory)
