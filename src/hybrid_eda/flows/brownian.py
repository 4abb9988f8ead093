"""Brownian increments on a time grid, seeded by a ``torch.Generator``.

``dW_k = W(t_{k+1}) - W(t_k) ~ N(0, (t_{k+1} - t_k) I)``, independent over steps and elements. Summing
``factor`` consecutive increments gives the increments of the *same* path on a grid ``factor`` times coarser
(:func:`coarsen_increments`): the strong order of a scheme is measured by integrating one path at several step
sizes against the exact solution on that path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hybrid_eda.errors import UserInputError


def brownian_increments(
    times: torch.Tensor, shape: Sequence[int], generator: torch.Generator | None, *, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Increments of a standard Brownian motion of shape ``shape`` on the grid ``times``.

    Parameters
    ----------
    times : torch.Tensor
        Increasing times ``[steps + 1]``.
    shape : sequence of int
        Shape of the noise at one time (the state's shape for elementwise noise).
    generator : torch.Generator or None
        Source of the normal draws (on the device the increments should live on); ``None`` uses torch's global
        generator (not reproducible: pass one).
    dtype : torch.dtype, optional
        Default: the dtype of ``times``.

    Returns
    -------
    torch.Tensor
        ``[steps, *shape]``, ``dW[k] ~ N(0, (t_{k+1} - t_k) I)``.
    """
    if times.ndim != 1 or times.numel() < 2:
        msg = f"times must be a 1-D grid [steps + 1] with at least 2 entries, got shape {tuple(times.shape)}"
        raise UserInputError(msg)
    dtype = dtype or times.dtype
    steps = times.numel() - 1
    device = generator.device if generator is not None else times.device
    h = torch.diff(times).to(dtype=dtype, device=device)  # [steps]
    if not bool((h > 0).all()):
        raise UserInputError("times must be strictly increasing")
    normal = torch.randn((steps, *shape), generator=generator, dtype=dtype, device=device)
    return normal * torch.sqrt(h).reshape(steps, *([1] * len(shape)))


def coarsen_increments(increments: torch.Tensor, factor: int) -> torch.Tensor:
    """The same Brownian path on a grid ``factor`` times coarser: sums of ``factor`` consecutive increments.

    ``increments[steps, ...] -> [steps // factor, ...]``; ``steps`` must be a multiple of ``factor``.
    """
    steps = increments.shape[0]
    if factor < 1 or steps % factor:
        msg = f"cannot coarsen {steps} increments by a factor {factor}: the factor must be >= 1 and divide the steps"
        raise UserInputError(msg)
    return increments.reshape(steps // factor, factor, *increments.shape[1:]).sum(dim=1)
