"""The localised EnKF baseline of the global hybrid: ``localised_update`` against a dense numpy stochastic EnKF
(Gaspari-Cohn from its closed form on arccos distances), the Gaspari-Cohn function's values, continuity and positive
definiteness, Desroziers' estimate of a known R, :class:`LocalEnKFSource` (never reads the hidden analyses, seeded,
the dense reference with all backgrounds as the covariance ensemble) and ``evaluate members --local-enkf``."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pytest
import torch

from hybrid_eda.errors import UserInputError
from hybrid_eda.evaluation.hybrid_members import HybridCase, evaluate_hybrid
from hybrid_eda.evaluation.local_enkf import LocalEnKFSource, parse_radii
from hybrid_eda.layers.local_kalman import (
    EARTH_RADIUS_KM,
    desroziers_obs_std,
    gaspari_cohn,
    localised_update,
    unit_vectors,
)

G, F = 30, 4


def _sphere(rng, g):
    """``g`` random points, uniform on the sphere: latitudes, longitudes (degrees)."""
    return np.degrees(np.arcsin(rng.uniform(-1, 1, g))), rng.uniform(0, 360, g)


def _gc_reference(r):
    """Gaspari and Cohn (1999) eq. 4.10, term by term."""
    r = np.abs(r)
    out = np.zeros_like(r)
    a = r <= 1
    out[a] = -(r[a] ** 5) / 4 + r[a] ** 4 / 2 + 5 * r[a] ** 3 / 8 - 5 * r[a] ** 2 / 3 + 1
    b = (r > 1) & (r < 2)
    rb = r[b]
    out[b] = rb**5 / 12 - rb**4 / 2 + 5 * rb**3 / 8 + 5 * rb**2 / 3 - 5 * rb + 4 - 2 / (3 * rb)
    return out


def _angles_reference(lat, lon):
    """Great-circle angles ``[G, G]`` from the spherical law of cosines."""
    phi, lam = np.radians(lat), np.radians(lon)
    cos = np.sin(phi)[:, None] * np.sin(phi)[None] + np.cos(phi)[:, None] * np.cos(phi)[None] * np.cos(
        lam[:, None] - lam[None]
    )
    return np.arccos(np.clip(cos, -1.0, 1.0))


def _enkf_reference(members, ensemble, observations, obs_std, angles, radius, perturbations):
    """Dense textbook stochastic EnKF, field by field: ``[k, G, F]`` from ``members [k, G, F]``, ``ensemble
    [N, G, F]``, ``observations [G, F]`` (NaN unobserved), ``obs_std [F]``, ``perturbations [k, G, F]`` or None."""
    rho = _gc_reference(angles / radius)  # [G, G]
    out = members.copy()
    for f in range(members.shape[-1]):
        observed = np.flatnonzero(np.isfinite(observations[:, f]))
        if observed.size == 0:
            continue
        x = ensemble[..., f] - ensemble[..., f].mean(axis=0)  # [N, G]
        p = rho * (x.T @ x) / (ensemble.shape[0] - 1)  # [G, G]
        h = np.eye(members.shape[1])[observed]  # [p, G]
        gain = p @ h.T @ np.linalg.inv(h @ p @ h.T + obs_std[f] ** 2 * np.eye(observed.size))  # [G, p]
        for j in range(members.shape[0]):
            y = observations[observed, f]
            if perturbations is not None:
                y = y + obs_std[f] * perturbations[j, observed, f]
            out[j, :, f] = members[j, :, f] + gain @ (y - h @ members[j, :, f])
    return out


def _observations(rng, truth, pattern):
    """``[G, F]`` noisy truth, NaN unobserved: ``full`` everywhere, ``partial`` a mix (two fields on the same
    points, one on its own points, one unobserved)."""
    obs = truth + 0.5 * rng.standard_normal(truth.shape)
    if pattern == "partial":
        shared = rng.random(truth.shape[0]) < 0.5
        obs[shared, :2] = np.nan
        obs[rng.random(truth.shape[0]) < 0.3, 2] = np.nan
        obs[:, 3] = np.nan
    return obs


@pytest.mark.parametrize("radius", [10.0, 0.6])  # 10 rad: every pair within r < 1; 0.6 rad: all three GC pieces
@pytest.mark.parametrize("pattern", ["full", "partial"])
@pytest.mark.parametrize("perturbed", [False, True])
def test_localised_update_is_the_dense_stochastic_enkf(radius, pattern, perturbed):
    rng = np.random.default_rng(3)
    lat, lon = _sphere(rng, G)
    angles = _angles_reference(lat, lon)
    if radius == 0.6:
        r = angles / radius
        assert (r < 1).any() and ((r > 1) & (r < 2)).any() and (r >= 2).any()
    b, k, n = 2, 3, 9
    truth = rng.standard_normal((b, G, F))
    members = truth[:, None] + rng.standard_normal((b, k, G, F))
    ensemble = truth[:, None] + rng.standard_normal((b, n, G, F))
    observations = np.stack([_observations(rng, truth[i], pattern) for i in range(b)])
    obs_std = rng.uniform(0.3, 1.0, (b, F))
    perturbations = rng.standard_normal((b, k, G, F)) if perturbed else None
    out = localised_update(
        torch.tensor(members), torch.tensor(ensemble), torch.tensor(observations), torch.tensor(obs_std),
        unit_vectors(torch.tensor(lat), torch.tensor(lon)), radius,
        None if perturbations is None else torch.tensor(perturbations),
    ).numpy()  # fmt: skip
    for i in range(b):
        expected = _enkf_reference(members[i], ensemble[i], observations[i], obs_std[i], angles, radius,
                                   None if perturbations is None else perturbations[i])  # fmt: skip
        np.testing.assert_allclose(out[i], expected, rtol=1e-9, atol=1e-11)
    if pattern == "partial":  # the unobserved field is left as it was
        np.testing.assert_array_equal(out[..., 3], members[..., 3])


def test_gaspari_cohn_values_continuity_support_and_positive_definiteness():
    r = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 10.0], dtype=torch.float64)
    np.testing.assert_allclose(gaspari_cohn(r).numpy(), _gc_reference(r.numpy()), rtol=1e-13, atol=1e-15)
    assert gaspari_cohn(torch.tensor(0.0, dtype=torch.float64)) == 1.0
    assert float(gaspari_cohn(torch.tensor(1.0, dtype=torch.float64))) == pytest.approx(5.0 / 24.0, rel=1e-13)
    for knot in (1.0, 2.0):  # continuous, with a continuous first derivative, at both knots
        eps = 1e-7
        x = torch.tensor([knot - 2 * eps, knot - eps, knot + eps, knot + 2 * eps], dtype=torch.float64)
        v = gaspari_cohn(x).numpy()
        assert abs(v[1] - v[2]) < 1e-6
        assert (v[1] - v[0]) / eps == pytest.approx((v[3] - v[2]) / eps, abs=1e-5)
    assert float(gaspari_cohn(torch.tensor(2.0, dtype=torch.float64))) == pytest.approx(0.0, abs=1e-13)
    assert (gaspari_cohn(torch.linspace(2.0, 7.0, 50, dtype=torch.float64)) == 0).all()
    assert (gaspari_cohn(torch.linspace(0.0, 2.0, 201, dtype=torch.float64)[:-1]) > 0).all()
    # positive definite on the sphere (great-circle distances), half-widths from 500 km to a quarter of the globe
    rng = np.random.default_rng(0)
    lat, lon = _sphere(rng, 300)
    angles = torch.tensor(_angles_reference(lat, lon))
    for radius in (500.0 / EARTH_RADIUS_KM, 0.3, 0.8):
        correlation = gaspari_cohn(angles / radius)
        assert torch.linalg.eigvalsh(correlation).min() > -1e-10


def test_desroziers_recovers_the_observation_error_std():
    """Scalar linear-Gaussian analyses at 4000 points per field (exact gain, perturbed observations, uneven
    background errors): ``sqrt(mean (y - x_a)(y - x_b))`` is the observation-error std, here 0.4 and 2.0."""
    rng = np.random.default_rng(1)
    b, n_s, g = 2, 8, 4000
    sigma_o = np.array([0.4, 2.0])  # [F]
    sigma_b = rng.uniform(0.5, 3.0, (g, 2))  # [G, F]
    truth = rng.standard_normal((b, g, 2))
    observations = truth + sigma_o * rng.standard_normal((b, g, 2))
    backgrounds = truth[:, None] + sigma_b * rng.standard_normal((b, n_s, g, 2))
    gain = sigma_b**2 / (sigma_b**2 + sigma_o**2)  # [G, F]
    perturbed = observations[:, None] + sigma_o * rng.standard_normal((b, n_s, g, 2))
    analyses = backgrounds + gain * (perturbed - backgrounds)
    observations[:, rng.random(g) < 0.3] = np.nan  # unobserved points do not count
    estimate = desroziers_obs_std(torch.tensor(analyses), torch.tensor(backgrounds), torch.tensor(observations))
    assert estimate.shape == (b, 2)
    np.testing.assert_allclose(estimate.numpy(), np.broadcast_to(sigma_o, (b, 2)), rtol=0.04)


# --------------------------------------------------------------------------------------------------- the source
def _case(seed=0, n=8, date=datetime(2023, 1, 1)):
    """A tiny linear-Gaussian EDA date on ``G`` random points; observations of fields 0-2 (field 3 unobserved)."""
    rng = np.random.default_rng(seed)
    lat, lon = _sphere(np.random.default_rng(99), G)
    truth = rng.standard_normal((G, F))
    backgrounds = truth + rng.standard_normal((n, G, F))
    observations = _observations(rng, truth, "partial")
    analyses = backgrounds + 0.5 * (np.nan_to_num(observations, nan=0.0) - backgrounds)
    case = HybridCase(date, ("a_1", "a_2", "b_1", "c_1"), backgrounds, analyses, truth, observations=observations)
    return case, lat, lon


def test_the_source_is_the_dense_enkf_of_all_backgrounds_and_never_reads_hidden_analyses():
    case, lat, lon = _case()
    n_real, seed, radius_km = 3, 11, 3000.0
    hidden = case.analyses.copy()
    hidden[n_real:] = np.nan  # a source that read them would return NaN (MemberSource refuses non-finite members)
    case = HybridCase(case.date, case.variables, case.backgrounds, hidden, case.truth, observations=case.observations)
    source = LocalEnKFSource(lat, lon, radius_km)
    out = source.members(case, n_real, seed)
    assert out.shape == (case.backgrounds.shape[0] - n_real, G, F) and np.isfinite(out).all()
    assert source.name == "local-enkf-3000km" and "knows the form of the analysis" in source.label
    # the reference: Desroziers from the N_s real pairs, all N backgrounds as the ensemble, the seed's normals
    y, xa, xb = case.observations, case.analyses[:n_real], case.backgrounds[:n_real]
    observed = np.isfinite(y)
    obs_std = np.sqrt(np.nansum((y - xa) * (y - xb), axis=(0, 1)) / np.maximum(observed.sum(axis=0), 1) / n_real)
    np.testing.assert_allclose(source.last_obs_std, obs_std, rtol=1e-12)
    starts = case.backgrounds[n_real:]
    normals = torch.randn((1, *starts.shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    expected = _enkf_reference(starts, case.backgrounds, y, obs_std, _angles_reference(lat, lon),
                               radius_km / EARTH_RADIUS_KM, normals[0].numpy())  # fmt: skip
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-11)
    np.testing.assert_array_equal(out[..., 3], starts[..., 3])  # unobserved field: the backgrounds
    # seeded: the same seed the same members, another seed others
    np.testing.assert_array_equal(source.members(case, n_real, seed), out)
    assert not np.allclose(source.members(case, n_real, seed + 1), out)


def test_the_source_refuses_a_case_without_observations_or_on_another_grid():
    case, lat, lon = _case()
    bare = HybridCase(case.date, case.variables, case.backgrounds, case.analyses, case.truth)
    with pytest.raises(UserInputError, match=r"has none; read the cases with read_cases\(\.\.\., observations=True\)"):
        LocalEnKFSource(lat, lon, 1500.0).members(bare, 3, 0)
    with pytest.raises(UserInputError, match="the case has 30 grid points, the source's grid 29"):
        LocalEnKFSource(lat[1:], lon[1:], 1500.0).members(case, 3, 0)
    with pytest.raises(UserInputError, match="half-width must be > 0 km"):
        LocalEnKFSource(lat, lon, 0.0)


def test_evaluate_hybrid_scores_one_row_per_half_width():
    cases = [_case(0)[0], _case(1, date=datetime(2023, 1, 1, 6))[0]]
    _, lat, lon = _case()
    sources = [LocalEnKFSource(lat, lon, km) for km in (1000.0, 2500.0)]
    summary = evaluate_hybrid(cases, sources, 3, np.ones(G)).summary()
    assert list(summary["ensembles"]) == ["full", "real", "hybrid:local-enkf-1000km", "hybrid:local-enkf-2500km"]
    assert summary["ensembles"]["hybrid:local-enkf-1000km"]["label"].startswith("3 real + 5 from a localised EnKF")
    assert set(summary["timings_s"]) == {"hybrid:local-enkf-1000km", "hybrid:local-enkf-2500km"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [("0", "'0' is not a localisation half-width > 0 in km"), ("-5", "'-5' is not"), ("abc", "'abc' is not"),
     ("1000,nan", "'nan' is not"), (",", "holds no half-width"), ("1000,1e3", "gives 1000 km twice")],
)  # fmt: skip
def test_parse_radii_refuses_bad_half_widths(spec, message):
    with pytest.raises(UserInputError, match=message):
        parse_radii(spec)


def test_parse_radii():
    assert parse_radii("1000, 1500km,2000") == [1000.0, 1500.0, 2000.0]


# --------------------------------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def tiny_eda(tmp_path_factory):
    from hybrid_eda.synthetic import ObservationConfig, SyntheticEDAConfig, write_synthetic_eda

    root = tmp_path_factory.mktemp("local_enkf") / "eda"
    config = SyntheticEDAConfig(grid="O16", levels=1, members=6, start="2023-01-01T00", end="2023-01-01T06", seed=5,
                                variables=("t", "lnsp"), observations=ObservationConfig(count=150))  # fmt: skip
    write_synthetic_eda(config, root)
    return root


def test_the_command_adds_one_row_per_half_width(tiny_eda, tmp_path, capsys):
    from hybrid_eda.cli import main

    out = tmp_path / "eval"
    command = ["evaluate", "members", "--test", str(tiny_eda), "--real", "3", "--baselines", "--local-enkf",
               "1000,3000", "--out", str(out)]  # fmt: skip
    assert main(command) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    rows = ["hybrid:local-enkf-1000km", "hybrid:local-enkf-3000km"]
    assert list(summary["ensembles"]) == ["full", "real", *rows]
    assert summary["source"]["observations"] is True and summary["source"]["local_enkf_km"] == [1000.0, 3000.0]
    assert summary["maps"]["ensembles"] == ["real", rows[0], "full"]  # the first half-width only
    for row in rows:
        assert f"{row} " in printed and f"t          {row} " in printed and f"{row}: crps_within_2pct" in printed
        assert np.isfinite(summary["ensembles"][row]["std_mse_reduction"])


def test_the_command_refuses_bad_half_widths_and_a_folder_without_observations(tiny_eda, tmp_path, capsys):
    from hybrid_eda.cli import main

    for spec in ("0", "-1500", "wide"):
        assert main(["evaluate", "members", "--test", str(tiny_eda), "--local-enkf", spec]) == 2
        assert "is not a localisation half-width > 0 in km" in capsys.readouterr().err
    bare = tmp_path / "bare"  # the same EDA (regenerated from its manifest) without truth/obs_*.npz
    bare.mkdir()
    (bare / "manifest.json").write_text((tiny_eda / "manifest.json").read_text())
    assert main(["evaluate", "members", "--test", str(bare), "--real", "3", "--baselines", "--local-enkf", "1500",
                 "--out", str(tmp_path / "e")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "--local-enkf updates the backgrounds with each date's observations" in err
    assert "has no observation file" in err and "(2 of 2 dates)" in err
