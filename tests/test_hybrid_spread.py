"""Spread-calibrated hybrid rows: the factors rescale the generated anomalies about their own mean, field by field
(the mean and the other variables untouched), reuse the base row's draws, and bad specs are explained."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from hybrid_eda.errors import UserInputError
from hybrid_eda.evaluation.hybrid_members import HybridCase, MemberSource, evaluate_hybrid
from hybrid_eda.evaluation.hybrid_spread import RescaledSpread, field_factors, parse_spread

FIELDS = ("t_1", "t_2", "q_1", "lnsp_1")


def _case(n=10, g=40, date=datetime(2023, 1, 1)):
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(g, len(FIELDS)))
    backgrounds = truth + rng.normal(size=(n, g, len(FIELDS)))
    analyses = truth + 0.5 * (backgrounds - truth)
    return HybridCase(date, FIELDS, backgrounds, analyses, truth)


class _Noisy(MemberSource):
    """Backgrounds plus seeded noise; counts its calls."""

    name, label = "noisy", "noisy backgrounds"
    calls = 0

    def _generate(self, starts, guides, guide_backgrounds, seed):
        self.calls += 1
        return starts + np.random.default_rng(seed).normal(size=starts.shape)


def test_specs_parse_into_variable_factors():
    assert parse_spread("0.9") == {"*": 0.9}
    assert parse_spread("t=0.9, q=0.85") == {"t": 0.9, "q": 0.85}
    assert parse_spread("0.95,t=0.9") == {"*": 0.95, "t": 0.9}
    np.testing.assert_array_equal(field_factors({"*": 0.95, "t": 0.9}, FIELDS), [0.9, 0.9, 0.95, 0.95])
    np.testing.assert_array_equal(field_factors({"lnsp": 0.5}, FIELDS), [1.0, 1.0, 1.0, 0.5])
    for bad, match in (("0", "not a factor > 0"), ("t=x", "not a factor > 0"), ("t=0.9,t=1", "gives t twice"),
                       (",", "holds no factor")):  # fmt: skip
        with pytest.raises(UserInputError, match=match):
            parse_spread(bad)
    with pytest.raises(UserInputError, match="names z, not a variable of the EDA; its variables: t, q, lnsp"):
        field_factors({"z": 0.9}, FIELDS)


def test_rescaled_members_keep_their_mean_and_scale_only_the_named_variables():
    case, base = _case(), _Noisy()
    original = base.members(case, 4, seed=1)
    rescaled = RescaledSpread(base, "t=0.5,lnsp=2").members(case, 4, seed=99)  # reuses base's draws (seed unused)
    assert base.calls == 1
    np.testing.assert_allclose(rescaled.mean(axis=0), original.mean(axis=0), atol=1e-12)
    ratio = rescaled.std(axis=0) / original.std(axis=0)  # [G, F]
    np.testing.assert_allclose(ratio, np.broadcast_to([0.5, 0.5, 1.0, 2.0], ratio.shape), rtol=1e-12)
    np.testing.assert_array_equal(rescaled[..., 2], original[..., 2])


def test_rescaled_rows_score_the_same_draws_and_factor_one_is_the_base_row():
    base = _Noisy()
    cases = [_case(), _case(date=datetime(2023, 1, 1, 6))]
    sources = [base, RescaledSpread(base, "1"), RescaledSpread(base, "0.5")]
    rows = evaluate_hybrid(cases, sources, 4, np.ones(40)).summary()["ensembles"]
    assert base.calls == 2 and list(rows)[2:] == ["hybrid:noisy", "hybrid:noisy*1", "hybrid:noisy*0.5"]
    assert rows["hybrid:noisy*1"]["fields"] == rows["hybrid:noisy"]["fields"]
    assert rows["hybrid:noisy*0.5"]["spread_skill_ratio"] < rows["hybrid:noisy"]["spread_skill_ratio"]
    assert rows["hybrid:noisy*0.5"]["label"] == "4 real + 6 noisy backgrounds, spread x 0.5"


def test_the_command_refuses_spread_without_a_checkpoint_and_bad_specs(tmp_path, capsys):
    from hybrid_eda.cli import main

    assert main(["evaluate", "members", "--test", str(tmp_path), "--spread", "0.9"]) == 2
    assert "--spread rescales the members of CHECKPOINT; give a checkpoint" in capsys.readouterr().err
    assert main(["evaluate", "members", str(tmp_path / "c.ckpt"), "--test", str(tmp_path), "--spread", "t=-1"]) == 2
    assert "'t=-1' is not a factor > 0" in capsys.readouterr().err
