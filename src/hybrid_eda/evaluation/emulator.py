"""The variance emulator in the evaluation: a pluggable checkpoint loader and the conversion of its output.

    predictor = load_emulator_predictor("variance-emulator.ckpt")    # members [D, M, G, F] -> distribution
    prediction = emulator_prediction(predictor(members), variables)   # a Prediction [D, G, F] for the suite

The contract of a predictor (what the model package's loader returns):

* ``predictor(members)`` with ``members [date, M, grid, field]`` float32 in physical units, the fields in the
  order of ``predictor.variables`` when it has that attribute (a tuple of ``{param}_{level}`` names), in the order
  of the statistics' fields otherwise;
* it returns the predictive distribution of ``s_N`` as a :class:`~hybrid_eda.distributions.PredictiveDistribution`
  (``Gaussian`` or ``LogNormal``, parameters ``[date, (1,) grid, field]``), or its tensor form
  ``[date, (1,) 2, grid, field]`` (numpy or torch) together with ``predictor.family`` (``"normal"`` or
  ``"lognormal"``).

The loader itself lands with the model: :func:`load_emulator_predictor` uses the first of
:data:`LOADER_NAMES` that :mod:`hybrid_eda.models` provides and otherwise says that it is not there yet.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_eda.errors import UserInputError
from hybrid_eda.evaluation.baselines import Prediction
from hybrid_eda.evaluation.probabilistic import ParametricPrediction

__all__ = ["LOADER_NAMES", "EmulatorRun", "emulator_prediction", "load_emulator_predictor"]

LOGGER = logging.getLogger(__name__)

#: Functions of :mod:`hybrid_eda.models` that load a checkpoint into a predictor (module docstring), in order.
LOADER_NAMES = ("load_variance_predictor", "predictor_from_checkpoint", "load_predictor")

_FAMILIES = {"gaussian": "normal", "normal": "normal", "lognormal": "lognormal"}


def load_emulator_predictor(checkpoint: str | os.PathLike) -> Callable[[np.ndarray], Any]:
    """A predictor (module docstring) of the variance-emulator ``checkpoint``.

    Raises
    ------
    UserInputError
        If the checkpoint does not exist, or the model package provides no loader yet.
    """
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise UserInputError(f"checkpoint {path} does not exist; give a variance-emulator checkpoint file")
    try:
        models = importlib.import_module("hybrid_eda.models")
    except ImportError as err:  # pragma: no cover - torch/anemoi missing
        raise UserInputError(f"the variance emulator cannot be imported ({err}); install hybrid-eda[train]") from err
    for name in LOADER_NAMES:
        loader = getattr(models, name, None)
        if callable(loader):
            LOGGER.info("loading %s with hybrid_eda.models.%s", path, name)
            return loader(path)
    raise UserInputError(
        "the variance-emulator checkpoint loader lands with the model (hybrid_eda.models."
        f"{LOADER_NAMES[0]}); run without CHECKPOINT (or with --baselines-only) to evaluate the baselines"
    )


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def _family(output: Any, predictor: Any) -> str:
    name = getattr(predictor, "family", None)
    if name is None and not isinstance(output, np.ndarray) and not hasattr(output, "detach"):
        name = type(output).__name__
    family = _FAMILIES.get(str(name).lower()) if name is not None else None
    if family is None:
        raise UserInputError(
            f"cannot tell the emulator's distribution from {type(output).__name__} (family {name!r}); return a "
            "Gaussian/LogNormal or set predictor.family to 'normal' or 'lognormal'"
        )
    return family


def _parameters(output: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(first, second)`` parameters ``[D, G, F]`` of a distribution or its tensor form."""
    if hasattr(output, "parameters") and callable(output.parameters) and not hasattr(output, "detach"):
        first, second = (_numpy(p) for p in output.parameters())
        if first.ndim == 4:  # [D, 1, G, F]
            first, second = first[:, 0], second[:, 0]
        return first, second
    tensor = _numpy(output)
    if tensor.ndim == 5:  # [D, 1, 2, G, F]
        tensor = tensor[:, 0]
    if tensor.ndim != 4 or tensor.shape[1] != 2:
        raise UserInputError(
            f"the emulator returned shape {tensor.shape}; expected the tensor form [date, 2, grid, field] of its "
            "distribution"
        )
    return tensor[:, 0], tensor[:, 1]


def emulator_prediction(output: Any, predictor: Any = None) -> Prediction:
    """A :class:`Prediction` (point = the predictive mean, the MSE-optimal point) of one predictor output."""
    family = _family(output, predictor)
    loc, scale = _parameters(output)
    distribution = ParametricPrediction(family, loc, np.maximum(scale, 1e-12))
    return Prediction(distribution.mean(), distribution)


class EmulatorRun:
    """Collects a predictor's output date by date while the test members stream past (``on_members``).

    Parameters
    ----------
    name : str
        ``"emulator"`` or ``"emulator_no_mp"``.
    predictor : callable
        See the module docstring.
    """

    def __init__(self, name: str, predictor: Callable[[np.ndarray], Any]) -> None:
        self.name, self.predictor = name, predictor
        self.wanted = getattr(predictor, "variables", None)
        self.variables: tuple[str, ...] | None = None
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []
        self.family: str | None = None

    def _order(self, variables: tuple[str, ...]) -> np.ndarray | None:
        if self.wanted is None:
            return None
        missing = [v for v in self.wanted if v not in variables]
        if missing or len(self.wanted) != len(variables):
            raise UserInputError(
                f"the {self.name} checkpoint predicts {len(self.wanted)} fields and the data has {len(variables)} "
                f"(missing {', '.join(missing[:5]) or 'none'}); evaluate it on data with its fields"
            )
        return np.array([variables.index(v) for v in self.wanted])

    def __call__(self, members: np.ndarray, variables: Sequence[str]) -> None:
        """``members [M, G, F]`` of one date, fields named ``variables``."""
        variables = tuple(variables)
        if self.variables is not None and variables != self.variables:
            raise UserInputError(f"the test data changed its fields between dates ({self.name})")
        self.variables = variables
        order = self._order(variables)
        batch = np.asarray(members, dtype=np.float32)[None]  # [1, M, G, F]
        if order is not None:
            batch = batch[..., order]
        try:
            output = self.predictor(batch)
        except AttributeError as err:  # a pickled model of other code: attributes its forward no longer has
            raise UserInputError(
                f"the {self.name} checkpoint does not run with this version of hybrid-eda ({err}); it was written by "
                "another version of the model code: evaluate it with that version or retrain"
            ) from err
        family = _family(output, self.predictor)
        loc, scale = _parameters(output)
        if order is not None:
            back = np.argsort(order)
            loc, scale = loc[..., back], scale[..., back]
        if loc.shape != (1, members.shape[1], len(variables)):
            raise UserInputError(
                f"the {self.name} returned parameters of shape {loc.shape} for one date; expected "
                f"(1, {members.shape[1]}, {len(variables)}) = [date, grid, field]"
            )
        if self.family is not None and family != self.family:
            raise UserInputError(f"the {self.name} changed its distribution from {self.family} to {family}")
        self.family = family
        self.parts.append((loc, scale))

    def prediction(self, variables: Sequence[str] | None = None) -> Prediction:
        """The predictions of every date seen as one :class:`Prediction` ``[D, G, F]``, fields in ``variables``
        order (default: the members' order)."""
        if not self.parts or self.variables is None:
            raise UserInputError(f"the {self.name} saw no test dates; check the test data")
        loc = np.concatenate([p[0] for p in self.parts])
        scale = np.concatenate([p[1] for p in self.parts])
        if variables is not None:
            index = [self.variables.index(v) for v in variables]
            loc, scale = loc[..., index], scale[..., index]
        distribution = ParametricPrediction(self.family or "lognormal", loc, np.maximum(scale, 1e-12))
        return Prediction(distribution.mean(), distribution)
