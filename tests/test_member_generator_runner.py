"""``models.MemberGeneratorRunner``: physical-unit generation without autograd, equal to the core's own call."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hybrid_eda.layers.graphs import ring_graph
from hybrid_eda.models.member_generator_core import MemberGeneratorCore, MemberGeneratorSettings
from hybrid_eda.models.member_generator_runner import MemberGeneratorRunner

GRID = 12


class _Adapter(nn.Module):
    """What the runner reads of a :class:`~hybrid_eda.models.MemberGenerator`: its core and its variable names."""

    def __init__(self, core: MemberGeneratorCore) -> None:
        super().__init__()
        self.core = core
        self.analysis_names, self.background_names, self.observation_names = ["x_an"], ["x_bg"], ["obs"]
        self.has_observations = True


def _runner() -> MemberGeneratorRunner:
    torch.manual_seed(0)
    core = MemberGeneratorCore(n_variables=1, graph=ring_graph(GRID, 2), settings=MemberGeneratorSettings())
    nn.init.normal_(core.output.weight, std=0.3)  # not the untrained closed form: drift and noise act
    nn.init.normal_(core.output.bias, std=0.3)
    return MemberGeneratorRunner(_Adapter(core))


def test_generation_equals_the_core_under_no_grad_and_returns_ordinary_tensors():
    runner = _runner()
    g = torch.Generator().manual_seed(1)
    backgrounds = torch.randn(2, 4, GRID, 1, generator=g) + 2.0  # [b, k, grid, var]
    guides = torch.randn(2, 3, GRID, 1, generator=g) + 2.0  # [b, N_s, grid, var]
    guide_backgrounds = guides + 0.5 * torch.randn(guides.shape, generator=g)
    observations = torch.where(torch.rand(2, GRID, 1, generator=g) < 0.5, guides[:, 0], torch.nan)  # [b, grid, var]
    kwargs = {"guide_backgrounds": guide_backgrounds, "observations": observations}
    with torch.no_grad():
        reference = runner.core.generate(backgrounds, guides, 8, torch.Generator().manual_seed(5), **kwargs).members
    out = runner.generate(backgrounds.requires_grad_(), guides, 8, torch.Generator().manual_seed(5), **kwargs)
    assert out.shape == (2, 8, GRID, 1) and torch.isfinite(out).all()
    torch.testing.assert_close(out, reference, rtol=0, atol=0)
    assert out.grad_fn is None and not out.requires_grad and not out.is_inference()
    out += 1.0  # the caller owns an ordinary tensor: in-place updates work outside inference mode
    numpy_kwargs = {name: value.numpy() for name, value in kwargs.items()}
    numpy_out = runner.generate(backgrounds.detach().double().numpy(), guides.numpy(), 8,
                                torch.Generator().manual_seed(5), **numpy_kwargs)  # fmt: skip
    assert numpy_out.dtype == np.float64
    np.testing.assert_array_equal(numpy_out, reference.numpy().astype(np.float64))
