"""A trained member generator as a function of physical fields: ``load_member_generator(checkpoint).generate(...)``.

::

    runner = load_member_generator("output/member_generator_l96/checkpoint/<run>/inference-last.ckpt")
    members = runner.generate(backgrounds, guide_analyses, n_members, torch.Generator().manual_seed(1),
                              guide_backgrounds=guide_bgs, observations=obs)

``backgrounds [(b,) k, grid, var]``, ``guide_analyses`` and ``guide_backgrounds [(b,) N_s, grid, var]``,
``observations [(b,) grid, var]`` (NaN where unobserved), numpy or torch, **physical units** (the core normalises
internally by the background spread and the training statistics kept in the checkpoint); ``var`` is
:attr:`MemberGeneratorRunner.variables` (the analysis variables, e.g. ``["x_an"]`` on Lorenz-96: one field of 40
points). Member ``j`` starts from background ``j mod k`` (``n = k`` is one member per background). Numpy in, numpy
out (float64 if the backgrounds were); torch in, torch out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybrid_eda.errors import UserInputError
from hybrid_eda.models.checkpoints import load_inference_model
from hybrid_eda.models.member_generator import MemberGenerator, check_variables

__all__ = ["MemberGeneratorRunner", "load_member_generator"]


class MemberGeneratorRunner:
    """Physical-unit generation with a trained :class:`~hybrid_eda.models.MemberGenerator` (inference only).

    Attributes
    ----------
    model : MemberGenerator
        The anemoi adapter (``.core`` is the :class:`~hybrid_eda.models.member_generator_core.MemberGeneratorCore`).
    variables, background_variables, observation_variables : list of str
        Names of the ``var`` axis in the store it was trained on (analyses, their backgrounds, observations).
    n_grid : int
        Grid points.
    steps : int
        Integration steps of the flow (the training ones).
    """

    def __init__(self, model: MemberGenerator, source: str = "") -> None:
        self.model = model.eval()
        self.core = model.core
        self.source = source
        self.variables = list(model.analysis_names)
        self.background_variables = list(model.background_names)
        self.observation_variables = list(model.observation_names)
        self.uses_observations = bool(model.has_observations)
        self.n_grid = int(self.core.n_grid)
        self.steps = int(self.core.settings.steps)

    def generate(
        self,
        backgrounds: np.ndarray | torch.Tensor,
        guide_analyses: np.ndarray | torch.Tensor,
        n_members: int,
        generator: torch.Generator | None,
        *,
        guide_backgrounds: np.ndarray | torch.Tensor | None = None,
        observations: np.ndarray | torch.Tensor | None = None,
        variables: list[str] | None = None,
        steps: int | None = None,
        increments: torch.Tensor | None = None,
    ) -> np.ndarray | torch.Tensor:
        """``n_members`` analysis members ``[(b,) n, grid, var]`` in physical units (see the module docstring).

        Parameters
        ----------
        backgrounds : array
            ``[(b,) k, grid, var]``: the backgrounds of the members to generate.
        guide_analyses : array
            ``[(b,) N_s, grid, var]``, N_s >= 2: the real analyses of the cycle.
        n_members : int
            Members to generate (member ``j`` from background ``j mod k``).
        generator : torch.Generator or None
            Seeds the noise (``None``: torch's global generator, not reproducible).
        guide_backgrounds : array, optional
            ``[(b,) N_s, grid, var]``: the guides' own backgrounds (the model was trained with them: pass them).
        observations : array, optional
            ``[(b,) grid, var]`` on the grid, NaN where unobserved (used if the model was trained with them).
        variables : list of str, optional
            Names of the ``var`` axis, checked against :attr:`variables`.
        steps : int, optional
            Integration steps (default: the training ones).
        increments : torch.Tensor, optional
            Brownian increments ``[(b,) n, steps, grid, var]`` to use instead of drawing them (e.g. scaled ones:
            the L96 cycle's ``noise=A``); ``generator`` is then not used.

        Raises
        ------
        UserInputError
            N_s < 2, backgrounds and guides on different grids, another grid or number of variables than the
            model's, variables named differently.
        """
        check_variables(self.variables, variables, "the given")
        as_numpy = not isinstance(backgrounds, torch.Tensor)
        dtype = np.asarray(backgrounds).dtype if as_numpy else None
        tensors = [_as_tensor(a) for a in (backgrounds, guide_analyses, guide_backgrounds, observations)]
        bg, an, gb, obs = tensors
        for name, array in (("backgrounds", bg), ("guide_analyses", an)):
            if array.shape[-1] != len(self.variables):
                msg = (
                    f"{name} have {array.shape[-1]} variables on the last axis but the generator was trained on "
                    f"{len(self.variables)}: {self.variables} ([(b,) members, grid, var])"
                )
                raise UserInputError(msg)
        with torch.inference_mode():  # no autograd graph nor version counters (training never calls the runner)
            out = self.core.generate(
                bg, an, n_members, generator, guide_backgrounds=gb, observations=obs, steps=steps, increments=increments
            ).members
        if as_numpy:
            return (
                out.cpu().numpy().astype(dtype if np.issubdtype(dtype, np.floating) else np.float32)
            )  # [(b,) n, grid, var]
        return out.clone()  # an ordinary tensor (an inference tensor refuses in-place updates outside inference mode)

    def __repr__(self) -> str:
        return (
            f"MemberGeneratorRunner({self.source!r}, variables={self.variables}, grid={self.n_grid}, "
            f"steps={self.steps}, observations={self.uses_observations})"
        )


def _as_tensor(array: Any) -> torch.Tensor | None:
    if array is None:
        return None
    if isinstance(array, torch.Tensor):
        return array.float()
    return torch.as_tensor(np.asarray(array, dtype=np.float32))


def load_member_generator(checkpoint: str | Path, device: str = "cpu") -> MemberGeneratorRunner:
    """The member generator of an anemoi **inference** checkpoint (``inference-last.ckpt``) as a runner.

    Raises
    ------
    UserInputError
        No such file; a training checkpoint (a dict; use the ``inference-*.ckpt`` of the same run); a checkpoint
        of another model (e.g. the variance emulator). See :func:`~hybrid_eda.models.checkpoints.load_inference_model`.
    """
    hint = (
        "a member generator run's checkpoint/<run-id>/inference-last.ckpt (anemoi-training train "
        "--config-name=member_generator_l96)"
    )
    model = load_inference_model(checkpoint, MemberGenerator, "member generator", hint, device=device)
    return MemberGeneratorRunner(model.to(device), source=str(Path(checkpoint).expanduser()))
