"""``models.checkpoints.load_inference_model``: the one loader of inference checkpoints and its refusals."""

from __future__ import annotations

import types

import pytest
import torch

from hybrid_eda.errors import UserInputError
from hybrid_eda.models.checkpoints import load_inference_model

HINT = "a toy run's checkpoint/<run-id>/inference-last.ckpt"


class Toy(torch.nn.Linear):
    """The model expected."""


class Other(torch.nn.Linear):
    """Another model."""


def _load(path):
    return load_inference_model(path, Toy, "toy model", HINT)


def test_the_model_of_an_interface_or_a_bare_model_is_returned_with_its_weights(tmp_path):
    toy = Toy(3, 2)
    torch.save(types.SimpleNamespace(model=toy), tmp_path / "inference-last.ckpt")  # what anemoi pickles
    torch.save(toy, tmp_path / "bare.ckpt")
    for name in ("inference-last.ckpt", "bare.ckpt"):
        loaded = _load(tmp_path / name)
        assert isinstance(loaded, Toy)
        torch.testing.assert_close(loaded.weight, toy.weight, rtol=0, atol=0)


def test_refusals_name_the_problem_and_the_fix(tmp_path):
    torch.save(types.SimpleNamespace(model=Other(1, 1)), tmp_path / "other.ckpt")
    torch.save({"state_dict": {}, "optimizer_states": []}, tmp_path / "last.ckpt")
    fix = rf": pass {HINT}$"
    with pytest.raises(UserInputError, match=rf"no checkpoint at .*missing\.ckpt{fix}"):
        _load(tmp_path / "missing.ckpt")
    with pytest.raises(UserInputError, match=rf"no checkpoint at .*{tmp_path.name}{fix}"):
        _load(tmp_path)  # a folder is not a checkpoint file
    message = rf"other\.ckpt holds a Other \({__name__}\), not a toy model \({__name__}\.Toy\){fix}"
    with pytest.raises(UserInputError, match=message):
        _load(tmp_path / "other.ckpt")
    training = r"last\.ckpt is a training checkpoint .*, not an inference one: pass the inference checkpoint of the"
    with pytest.raises(ValueError, match=training):  # UserInputError is a ValueError (callers that catch it)
        _load(tmp_path / "last.ckpt")
