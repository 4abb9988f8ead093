"""The member generator's ``local_kalman`` start: the untrained flow equals the localised Kalman update of each
member, the guides' order does not matter, and missing inputs are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybrid_eda.errors import UserInputError
from hybrid_eda.layers.graphs import sphere_graph
from hybrid_eda.layers.local_kalman import EARTH_RADIUS_KM, desroziers_obs_std, localised_update, unit_vectors
from hybrid_eda.models.member_generator_core import MemberGeneratorCore, MemberGeneratorSettings

G, F, K, NS, STEPS = 40, 2, 5, 4, 2


def _case(seed: int = 0):
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, G)))
    lon = rng.uniform(0, 360, G)
    truth = rng.standard_normal((G, F))
    backgrounds = torch.tensor(truth + rng.standard_normal((K, G, F)), dtype=torch.float64)
    guide_bg = torch.tensor(truth + rng.standard_normal((NS, G, F)), dtype=torch.float64)
    guides = guide_bg + 0.5 * (torch.tensor(truth) - guide_bg) + 0.3 * torch.randn(NS, G, F, dtype=torch.float64)
    observations = torch.tensor(truth + 0.5 * rng.standard_normal((G, F)))
    observations[rng.random(G) < 0.5] = float("nan")  # profiles: the same points for both fields
    return lat, lon, backgrounds, guides, guide_bg, observations


def _core(lat, lon, **overrides) -> MemberGeneratorCore:
    settings = dict(local_kalman=True, rescale_anomalies=False, observation_features=True, steps=STEPS,
                    kalman_radius_km=3000.0, latent=8)  # fmt: skip
    settings.update(overrides)
    torch.manual_seed(0)
    positions = unit_vectors(torch.tensor(lat), torch.tensor(lon))
    core = MemberGeneratorCore(
        n_variables=F, graph=sphere_graph(lat, lon), settings=MemberGeneratorSettings(**settings), positions=positions
    )
    return core.double().eval()


def test_untrained_flow_is_the_kalman_update_of_each_member():
    lat, lon, backgrounds, guides, guide_bg, observations = _case()
    core = _core(lat, lon)
    n = 2 * K  # two replicas: every member has its own observation perturbation
    increments = torch.zeros(n, STEPS, G, F, dtype=torch.float64)
    with torch.no_grad():
        out = core.generate(backgrounds, guides, n, torch.Generator().manual_seed(7), guide_backgrounds=guide_bg,
                            observations=observations, increments=increments).members  # fmt: skip
    # the reference: the same normals in the same order (the k backgrounds, then the second replica's starts)
    generator = torch.Generator().manual_seed(7)
    noise = torch.stack([torch.empty(G, F, dtype=torch.float64).normal_(generator=generator) for _ in range(n)])
    starts = backgrounds[torch.arange(n) % K]
    ensemble = torch.cat([backgrounds, guide_bg])[None]
    obs_std = desroziers_obs_std(guides[None], guide_bg[None], observations[None], floor=1e-3)
    radius = 3000.0 / EARTH_RADIUS_KM
    updated = localised_update(starts[None], ensemble, observations[None], obs_std, core.positions.double(), radius,
                               noise[None])[0]  # fmt: skip
    guide_updated = localised_update(guide_bg[None], ensemble, observations[None], obs_std, core.positions.double(),
                                     radius)[0]  # fmt: skip
    torch.testing.assert_close(out, updated, rtol=1e-10, atol=1e-10)  # no shift by the guides' mean residual
    # ... which the guide features see: the guides' analyses against the deterministic update of their backgrounds
    context = core.condition(backgrounds[None], guides[None], guide_updated[None], observations[None])
    torch.testing.assert_close(context.delta[0, 0], guides.mean(0) - guide_updated.mean(0))
    # the update did something at the observed points: members moved towards the observations
    observed = torch.isfinite(observations)
    before = (starts - torch.nan_to_num(observations))[:, observed].pow(2).mean()
    after = (updated - torch.nan_to_num(observations))[:, observed].pow(2).mean()
    assert after < 0.8 * before


def test_guides_order_does_not_matter():
    lat, lon, backgrounds, guides, guide_bg, observations = _case(1)
    core = _core(lat, lon)
    order = torch.tensor([2, 0, 3, 1])

    def run(g, gb):
        with torch.no_grad():
            return core.generate(backgrounds, g, K, torch.Generator().manual_seed(3), guide_backgrounds=gb,
                                 observations=observations).members  # fmt: skip

    torch.testing.assert_close(run(guides, guide_bg), run(guides[order], guide_bg[order]), rtol=1e-9, atol=1e-9)


def test_missing_inputs_are_refused():
    lat, lon, backgrounds, guides, guide_bg, observations = _case(2)
    core = _core(lat, lon)
    with pytest.raises(UserInputError, match="needs the observations"):
        core.generate(backgrounds, guides, K, None, guide_backgrounds=guide_bg)
    with pytest.raises(UserInputError, match="needs the guide_backgrounds"):
        core.generate(backgrounds, guides, K, None, observations=observations)
    with pytest.raises(UserInputError, match="local_kalman needs the grid's positions"):
        MemberGeneratorCore(n_variables=F, graph=sphere_graph(lat, lon),
                            settings=MemberGeneratorSettings(local_kalman=True, observation_features=True))  # fmt: skip
    with pytest.raises(UserInputError, match="kalman_radius_km must be > 0"):
        MemberGeneratorSettings(local_kalman=True, kalman_radius_km=0.0)
