"""The abstract predictive distribution: two parameters per grid point and variable, stacked on one axis.

Shapes: a distribution's parameters are tensors that broadcast against each other and against the values it
scores, typically ``[batch, time, 1, grid, var]`` (anemoi's ``TensorDim`` order, the ensemble axis of size 1).
Its tensor form stacks the parameters on ``PARAMETER_AXIS`` (-3, anemoi's ensemble axis):
``[..., 2, grid, var]``.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from typing import ClassVar, Self

import torch

PARAMETER_AXIS = -3
"""Axis of the tensor form that holds the parameters: anemoi's ensemble axis in ``[b, t, ens, grid, var]``."""

INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
SQRT_HALF = math.sqrt(0.5)


def softplus_floor(raw: torch.Tensor, floor: float) -> torch.Tensor:
    """Positive, stable map of an unconstrained network output: ``softplus(raw) + floor``.

    Why softplus and not ``exp``: softplus is linear for large ``raw`` (no overflow, no exploding gradient early in
    training) and equal to ``exp(raw)`` for very negative ``raw``, so tiny scales stay reachable with
    ``d log(scale) / d raw = sigmoid(raw) / softplus(raw) -> 1``. Why the floor: in float32 softplus underflows to
    0 below ``raw ~ -104``; the floor keeps ``log(scale)`` and ``1 / scale`` finite there.
    """
    if floor <= 0.0:
        msg = f"the floor of a positive parameter must be > 0, got {floor}; use e.g. 1e-12"
        raise ValueError(msg)
    return torch.nn.functional.softplus(raw) + floor


def split_parameters(tensor: torch.Tensor, n_parameters: int, names: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    """Split ``tensor[..., n_parameters, grid, var]`` into ``n_parameters`` tensors ``[..., 1, grid, var]``."""
    if tensor.ndim < 3 or tensor.shape[PARAMETER_AXIS] != n_parameters:
        msg = (
            f"expected the parameters ({', '.join(names)}) stacked on axis {PARAMETER_AXIS} (anemoi's ensemble "
            f"axis) of a tensor [..., {n_parameters}, grid, var], got shape {tuple(tensor.shape)}; the model must "
            f"return its {n_parameters} distribution parameters on that axis, e.g. with "
            "`Distribution.from_raw(raw).to_tensor()`"
        )
        raise ValueError(msg)
    return tuple(torch.split(tensor, 1, dim=PARAMETER_AXIS))


@dataclasses.dataclass(frozen=True, eq=False)
class PredictiveDistribution(ABC):
    """A parametric predictive distribution, elementwise over broadcastable parameter tensors.

    Subclasses are frozen dataclasses whose fields are the parameter tensors, in tensor-form order. The
    constructor trusts its inputs (no device sync in the training step); :meth:`from_raw` builds valid parameters
    from unconstrained network outputs and :meth:`from_tensor` with ``validate=True`` checks loaded ones.
    """

    n_parameters: ClassVar[int] = 2

    # -- construction -------------------------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def from_raw(cls, raw: torch.Tensor) -> Self:
        """Distribution from unconstrained network outputs ``raw[..., 2, grid, var]``, valid by construction."""

    @classmethod
    def parameter_names(cls) -> tuple[str, ...]:
        """Names of the parameters, in tensor-form order."""
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def from_tensor(cls, tensor: torch.Tensor, *, validate: bool = False) -> Self:
        """Distribution from its tensor form ``[..., 2, grid, var]``; parameters come out ``[..., 1, grid, var]``.

        ``validate=True`` checks that the parameters are finite and in range (one device sync; for evaluation,
        not for the training step).
        """
        dist = cls(*split_parameters(tensor, cls.n_parameters, cls.parameter_names()))
        if validate:
            dist.validate()
        return dist

    def to_tensor(self) -> torch.Tensor:
        """Tensor form: the parameters broadcast to one shape and stacked on ``PARAMETER_AXIS``."""
        params = torch.broadcast_tensors(*self.parameters())
        return torch.cat(params, dim=PARAMETER_AXIS)

    def parameters(self) -> tuple[torch.Tensor, ...]:
        """The parameter tensors, in tensor-form order."""
        return tuple(getattr(self, name) for name in self.parameter_names())

    def validate(self) -> None:
        """Raise ``ValueError`` if a parameter is not finite or the positive one is not > 0."""
        for name, value in zip(self.parameter_names(), self.parameters(), strict=True):
            if not bool(torch.isfinite(value).all()):
                msg = f"{type(self).__name__}.{name} has non-finite values; the model output is broken (NaN/inf)"
                raise ValueError(msg)
        name, value = self.parameter_names()[-1], self.parameters()[-1]
        if not bool((value > 0).all()):
            msg = (
                f"{type(self).__name__}.{name} must be > 0, min is {float(value.min()):.3g}; build the parameters "
                f"with {type(self).__name__}.from_raw, which keeps them positive by construction"
            )
            raise ValueError(msg)

    # -- summaries ----------------------------------------------------------------------------------------

    @abstractmethod
    def mean(self) -> torch.Tensor:
        """Expectation ``E[X]``."""

    @abstractmethod
    def variance(self) -> torch.Tensor:
        """Variance ``Var[X]``."""

    @abstractmethod
    def quantile(self, q: float | torch.Tensor) -> torch.Tensor:
        """Inverse CDF at probability ``q`` in (0, 1); a tensor ``q`` broadcasts against the parameters."""

    @abstractmethod
    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        """Cumulative distribution function ``F(x) = P(X <= x)``."""

    def pit(self, x: torch.Tensor) -> torch.Tensor:
        """Probability integral transform ``F(x)`` of observed values: uniform on (0, 1) if calibrated."""
        return self.cdf(x)

    # -- scores -------------------------------------------------------------------------------------------

    @abstractmethod
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log density ``log p(x)``; its negative is the NLL (the log score, strictly proper)."""

    @abstractmethod
    def crps(self, x: torch.Tensor) -> torch.Tensor:
        """Closed-form CRPS ``int (F(z) - 1{z >= x})^2 dz = E|X - x| - E|X - X'| / 2`` (lower is better)."""

    @abstractmethod
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` independent draws, stacked on a new leading axis: ``[n, *broadcast parameter shape]``."""

    # -- helpers ------------------------------------------------------------------------------------------

    def _shape(self) -> torch.Size:
        return torch.broadcast_shapes(*(p.shape for p in self.parameters()))

    def _standard_normal_quantile(self, q: float | torch.Tensor) -> torch.Tensor:
        reference = self.parameters()[0]
        if not isinstance(q, torch.Tensor):
            if not 0.0 < q < 1.0:
                msg = f"a quantile level must lie in (0, 1), got {q}"
                raise ValueError(msg)
            q = torch.tensor(q, dtype=reference.dtype, device=reference.device)
        return torch.special.ndtri(q.to(reference.dtype))

    def _standard_normal_draws(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        reference = self.parameters()[0]
        shape = (n, *self._shape())
        return torch.randn(shape, dtype=reference.dtype, device=reference.device, generator=generator)
