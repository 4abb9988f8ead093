"""Load the model of an anemoi **inference** checkpoint (``inference-last.ckpt``), refusing anything else.

One loader for every model of the package (:func:`~hybrid_eda.models.load_member_generator`,
:func:`~hybrid_eda.models.load_variance_predictor`): the same three checks, the same error type
(:class:`~hybrid_eda.errors.UserInputError`, a ``ValueError``) and messages that say what to pass instead.

::

    model = load_inference_model(path, MemberGenerator, "member generator",
                                 "a member generator run's checkpoint/<run-id>/inference-last.ckpt")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import torch

from hybrid_eda.errors import UserInputError

__all__ = ["load_inference_model"]

ModelT = TypeVar("ModelT", bound=torch.nn.Module)


def load_inference_model(
    checkpoint: str | os.PathLike, expected: type[ModelT], what: str, hint: str, device: str = "cpu"
) -> ModelT:
    """The ``expected`` model pickled in the inference checkpoint ``checkpoint`` (mapped to ``device``).

    anemoi writes ``inference-*.ckpt`` as a pickled interface whose ``.model`` is the model (a model pickled on
    its own is taken as it is); the training checkpoint beside it (``last.ckpt``) is a dict.

    Parameters
    ----------
    checkpoint : path
        The inference checkpoint.
    expected : type
        The model class it must hold (e.g. :class:`~hybrid_eda.models.MemberGenerator`).
    what : str
        The model in words, for the messages (``"member generator"``).
    hint : str
        What to pass instead, for the messages (``"a member generator run's checkpoint/<run-id>/inference-last.ckpt"``).
    device : str
        ``map_location`` of :func:`torch.load`.

    Raises
    ------
    UserInputError
        No such file; a training checkpoint (a dict); a checkpoint of another model.
    """
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise UserInputError(f"no checkpoint at {path}: pass {hint}")
    loaded = torch.load(path, map_location=device, weights_only=False)
    if isinstance(loaded, dict):
        msg = (
            f"{path} is a training checkpoint (a dict of weights and optimiser state), not an inference one: pass "
            "the inference checkpoint of the same run, checkpoint/<run-id>/inference-last.ckpt"
        )
        raise UserInputError(msg)
    model = getattr(loaded, "model", loaded)
    if not isinstance(model, expected):
        msg = (
            f"{path} holds a {type(model).__name__} ({type(model).__module__}), not a {what} "
            f"({expected.__module__}.{expected.__qualname__}): pass {hint}"
        )
        raise UserInputError(msg)
    return model
