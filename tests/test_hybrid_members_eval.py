"""The global hybrid EDA evaluation: scores against float64 loop references, what a member source may see, the
two ends of the scale (a source that returns the hidden analyses is the full EDA; one that copies a real member
collapses the spread), and ``hybrid-eda evaluate members`` on a tiny synthetic EDA (O16 x 2 levels, 6 members)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from hybrid_eda.errors import UserInputError
from hybrid_eda.evaluation.hybrid_members import (
    EmulatorSource,
    HybridCase,
    MemberSource,
    MoreRealMembers,
    ensemble_scores,
    evaluate_hybrid,
    read_cases,
    targets,
)


def _case(seed=0, n=8, g=30, f=2, date=None):
    from datetime import datetime

    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(g, f)) * [1.0, 1e-3]
    backgrounds = truth + rng.normal(size=(n, g, f)) * [1.0, 1e-3]
    analyses = truth + 0.5 * (backgrounds - truth) + rng.normal(size=(n, g, f)) * [0.3, 3e-4]
    return HybridCase(date or datetime(2023, 1, 1), ("a_1", "b_1"), backgrounds, analyses, truth)


def test_scores_match_loop_references():
    case = _case()
    members, truth = case.analyses[:5], case.truth
    w = np.random.default_rng(1).uniform(0.5, 2.0, size=truth.shape[0])
    scores = ensemble_scores(members, truth, w)
    m = members.shape[0]
    for f in range(truth.shape[1]):
        fair, standard = 0.0, 0.0
        for k in range(truth.shape[0]):
            x, y = members[:, k, f], truth[k, f]
            mae = np.mean(np.abs(x - y))
            pairs = sum(abs(a - b) for a, b in itertools.product(x, x))
            fair += w[k] * (mae - pairs / (2 * m * (m - 1)))
            standard += w[k] * (mae - pairs / (2 * m * m))
        assert scores["crps"][f] == pytest.approx(fair / w.sum(), rel=1e-12)
        assert scores["crps_ens"][f] == pytest.approx(standard / w.sum(), rel=1e-12)
        variance = members[:, :, f].var(axis=0, ddof=1)
        assert scores["spread2"][f] == pytest.approx(np.sum(w * variance) / w.sum(), rel=1e-12)
        error = (members[:, :, f].mean(axis=0) - truth[:, f]) ** 2
        assert scores["mse"][f] == pytest.approx(np.sum(w * error) / w.sum(), rel=1e-12)


class _Recorder(MemberSource):
    """Checks it is handed the starts, the real analyses and their backgrounds, and returns the backgrounds."""

    name, label = "recorder", "recorder"

    def __init__(self, case, n_real):
        self.case, self.n_real, self.calls = case, n_real, 0

    def _generate(self, starts, guides, guide_backgrounds, seed):
        np.testing.assert_array_equal(starts, self.case.backgrounds[self.n_real :])
        np.testing.assert_array_equal(guides, self.case.analyses[: self.n_real])
        np.testing.assert_array_equal(guide_backgrounds, self.case.backgrounds[: self.n_real])
        self.calls += 1
        return starts.copy()


class _Hidden(MemberSource):
    """Not an emulator: returns the hidden analyses (the hybrid is then the full EDA)."""

    name, label = "hidden", "hidden analyses"

    def __init__(self, case):
        self.case = case

    def _generate(self, starts, guides, guide_backgrounds, seed):
        return self.case.analyses[guides.shape[0] :]


class _Copies(MemberSource):
    name, label = "copies", "copies of real member 1"

    def _generate(self, starts, guides, guide_backgrounds, seed):
        return np.repeat(guides[:1], starts.shape[0], axis=0)


def test_sources_see_only_backgrounds_and_real_analyses_and_the_two_ends():
    case = _case()
    recorder = _Recorder(case, 3)
    evaluation = evaluate_hybrid([case], [recorder, _Hidden(case), _Copies()], 3, np.ones(30))
    assert recorder.calls == 1
    summary = json.loads(json.dumps(evaluation.summary(), allow_nan=False))
    rows = summary["ensembles"]
    assert list(rows) == ["full", "real", "hybrid:recorder", "hybrid:hidden", "hybrid:copies"]
    hidden = rows["hybrid:hidden"]
    assert hidden["crps_ratio"] == pytest.approx(1.0) and hidden["std_nmse"] == pytest.approx(0.0, abs=1e-20)
    assert hidden["std_mse_reduction"] == pytest.approx(1.0) and all(summary["targets"]["hybrid:hidden"].values())
    copies = rows["hybrid:copies"]
    assert copies["std_mse_reduction"] < 0 and copies["spread_skill_ratio"] < 0.7
    assert not any(targets(copies).values())
    assert rows["real"]["members"] == 3 and rows["real"]["std_nmse"] > 0 and rows["full"]["std_nmse"] == 0
    assert rows["hybrid:recorder"]["label"] == "3 real + 5 recorder"


def test_gaussian_resampling_is_seeded_and_pointwise():
    case = _case(n=40)
    source = EmulatorSource("gaussian")
    a, b = source.members(case, 20, seed=3), source.members(case, 20, seed=3)
    np.testing.assert_array_equal(a, b)
    assert np.abs(source.members(case, 20, seed=4) - a).max() > 0
    real = case.analyses[:20]
    z = (a - real.mean(axis=0)) / real.std(axis=0, ddof=1)  # [20, G, F] standard normal draws
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1.0) < 0.1


def test_bad_sizes_are_explained():
    case = _case()
    with pytest.raises(UserInputError, match="need 2 <= N_s < N"):
        evaluate_hybrid([case], [], 1, np.ones(30))
    with pytest.raises(UserInputError, match="need 2 <= N_s < N"):
        evaluate_hybrid([case], [], 8, np.ones(30))
    with pytest.raises(UserInputError, match="share a name"):
        evaluate_hybrid([case], [_Copies(), _Copies()], 3, np.ones(30))


@pytest.fixture(scope="module")
def tiny_eda(tmp_path_factory):
    from hybrid_eda.synthetic import ObservationConfig, SyntheticEDAConfig, write_synthetic_eda

    root = tmp_path_factory.mktemp("hybrid_members") / "eda"
    config = SyntheticEDAConfig(grid="O16", levels=2, members=6, start="2023-01-01T00", end="2023-01-01T06", seed=5,
                                variables=("t", "q", "lnsp"), observations=ObservationConfig(count=200))  # fmt: skip
    write_synthetic_eda(config, root)
    return root


def test_cases_are_the_synthetic_eda(tiny_eda):
    from hybrid_eda.evaluation.data import config_from_manifest
    from hybrid_eda.synthetic import generate

    cases, info = read_cases(tiny_eda, dates=[1])
    (case,) = list(cases)
    sample = generate(config_from_manifest(json.loads((tiny_eda / "manifest.json").read_text())), 1)
    assert case.variables == sample.variables == ("t_1", "t_2", "q_1", "q_2", "lnsp_1")
    np.testing.assert_array_equal(case.analyses, sample.analyses)
    np.testing.assert_array_equal(case.truth, sample.truth)
    assert info["members"] == 6 and info["grid"].name == "O16"
    # the upper bound's members: the same EDA with 3 more members, whose first 6 are the folder's
    (more,) = list(read_cases(tiny_eda, dates=[1], extra_members=3)[0])
    assert more.extra_analyses.shape == (3, *case.analyses.shape[1:])
    np.testing.assert_array_equal(more.analyses, case.analyses)
    np.testing.assert_array_equal(more.backgrounds, case.backgrounds)
    assert MoreRealMembers().members(more, 4, seed=0).shape == (2, *case.analyses.shape[1:])
    with pytest.raises(UserInputError, match="needs 3 extra analyses per date, the cases hold 0"):
        MoreRealMembers().members(case, 3, seed=0)
    with pytest.raises(UserInputError, match="holds no manifest.json"):
        read_cases(tiny_eda / "grib")
    with pytest.raises(UserInputError, match=r"date indices \[5\] are not among the 2 dates"):
        read_cases(tiny_eda, dates=[5])


def test_evaluate_members_command(tiny_eda, tmp_path, capsys):
    from hybrid_eda.cli import main

    out = tmp_path / "eval"
    assert main(["evaluate", "members", "--test", str(tiny_eda), "--real", "3", "--steps", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "hybrid:untrained" in printed and "hybrid:gaussian" in printed and "crps_within_2pct" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["ensembles"]) == {"full", "real", "hybrid:untrained", "hybrid:gaussian", "hybrid:more-real"}
    assert summary["ensembles"]["hybrid:more-real"]["members"] == 6
    assert summary["ensembles"]["hybrid:untrained"]["label"] == "3 real + 3 from the untrained flow (shift + rescale)"
    assert summary["maps"]["field"] == "t_2" and (out / "maps.png").stat().st_size > 10_000
    assert len(summary["dates"]) == 2 and summary["n"] == 6
    # per variable, levels together: t = mean of t_1, t_2 ratios; the cut from the level-mean std nMSEs
    full, hybrid, real = (summary["ensembles"][k] for k in ("full", "hybrid:untrained", "real"))
    t = hybrid["by_variable"]["t"]
    assert list(hybrid["by_variable"]) == ["t", "q", "lnsp"] and t["fields"] == 2
    ratios = [hybrid["fields"][f]["crps"] / full["fields"][f]["crps"] for f in ("t_1", "t_2")]
    assert t["crps_ratio"] == pytest.approx(np.mean(ratios), rel=1e-12)
    nmse = [(hybrid["fields"][f]["std_nmse"], real["fields"][f]["std_nmse"]) for f in ("t_1", "t_2")]
    assert t["std_mse_reduction"] == pytest.approx(1 - sum(h for h, _ in nmse) / sum(r for _, r in nmse), rel=1e-12)
    lnsp = hybrid["by_variable"]["lnsp"]  # one level: its field's own ratio
    assert lnsp["spread_skill_ratio"] == pytest.approx(
        hybrid["fields"]["lnsp_1"]["spread_skill"] / full["fields"]["lnsp_1"]["spread_skill"], rel=1e-12
    )
    assert "variable" in printed and "lnsp       hybrid:untrained" in printed
    bad = main(["evaluate", "members", "--test", str(tiny_eda), "--real", "6", "--out", str(out)])
    assert bad == 2 and "need 2 <= N_s < N" in capsys.readouterr().err  # one line, exit 2


def test_model_source_passes_fields_in_the_models_order():
    """A checkpoint names its fields (store order, `b_an_1, a_an_1`); the case has `a_1, b_1`: fields are permuted in
    and back out (here the model doubles its first field, b)."""
    import torch

    from hybrid_eda.evaluation.hybrid_members import ModelSource

    class Doubler:
        variables = ["b_an_1", "a_an_1"]

        def generate(self, starts, guides, n, generator, *, guide_backgrounds):
            assert torch.equal(guides[..., 0], torch.from_numpy(case.analyses[:3, :, 1]).float())
            return starts * torch.tensor([2.0, 1.0])

    case = _case()
    out = ModelSource(Doubler(), "doubler", "doubles b").members(case, 3, seed=0)
    np.testing.assert_allclose(out[..., 0], case.backgrounds[3:, :, 0], rtol=1e-6)
    np.testing.assert_allclose(out[..., 1], 2 * case.backgrounds[3:, :, 1], rtol=1e-6)
    Doubler.variables = ["b_an_1", "c_an_1"]
    with pytest.raises(UserInputError, match="the model's fields .* are not the test EDA's"):
        ModelSource(Doubler(), "doubler", "doubles b").members(case, 3, seed=0)
