"""The ``ensemble-statistics`` filter: N-member statistics streamed member by member (Welford)."""

from __future__ import annotations

import datetime as dt

import earthkit.data as ekd
import numpy as np
import pytest

from hybrid_eda.data.statistics import EnsembleStatistics, EnsembleStatisticsConfig, WelfordAccumulator

DATES = (dt.datetime(2023, 1, 1, 0), dt.datetime(2023, 1, 1, 6))
LAT = np.array([60.0, 20.0, -20.0, -60.0, 0.0])
LON = np.array([0.0, 90.0, 180.0, 270.0, 45.0])


def _members(n_members=5, params=("t", "q"), levels=(1, 2), seed=0, numbers=None):
    """In-memory ensemble fields and the reference array ``[date, param, level, member, grid]``."""
    rng = np.random.default_rng(seed)
    numbers = list(range(1, n_members + 1)) if numbers is None else numbers
    values = 250.0 + rng.standard_normal((len(DATES), len(params), len(levels), len(numbers), LAT.size))
    records = [
        dict(
            param=p,
            levtype="ml",
            levelist=lev,
            number=n,
            valid_datetime=d.isoformat(),
            values=values[i, j, k, m].copy(),
            latitudes=LAT,
            longitudes=LON,
        )
        for i, d in enumerate(DATES)
        for m, n in enumerate(numbers)  # member-major order, as in a MARS retrieval sorted by number
        for j, p in enumerate(params)
        for k, lev in enumerate(levels)
    ]
    return records, values


def _fieldlist(records):
    return ekd.from_source("list-of-dicts", records)


def _by_name(fields):
    return {(f.metadata("param"), f.metadata("levelist"), f.metadata("valid_datetime")): f for f in fields}


def test_welford_matches_numpy_on_large_offsets():
    rng = np.random.default_rng(1)
    x = 1e6 + rng.standard_normal((50, 1000))  # [member, grid]: naive sum of squares would lose ~6 digits
    acc = WelfordAccumulator((1000,))
    for member in x:
        acc.add(member)
    assert acc.count == 50
    np.testing.assert_allclose(acc.mean, x.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(acc.variance(ddof=1), x.var(axis=0, ddof=1), rtol=1e-9)
    np.testing.assert_allclose(acc.variance(ddof=0), x.var(axis=0, ddof=0), rtol=1e-9)
    with pytest.raises(ValueError, match="expected an array of shape"):
        acc.add(np.zeros(3))


def test_std_mean_logstd_equal_numpy_and_fields_are_single_member():
    records, values = _members()
    out = EnsembleStatistics(statistics=["std", "mean", "logstd", "var"]).forward(_fieldlist(records))
    fields = _by_name(out)
    assert len(out) == len(DATES) * 2 * 2 * 4
    for i, d in enumerate(DATES):
        for j, p in enumerate(("t", "q")):
            for k, lev in enumerate((1, 2)):
                members = values[i, j, k]  # [member, grid]
                std = members.std(axis=0, ddof=1)
                key = d.isoformat()
                np.testing.assert_allclose(fields[(f"{p}_std", lev, key)].to_numpy(), std, rtol=2e-7)
                np.testing.assert_allclose(fields[(f"{p}_var", lev, key)].to_numpy(), std**2, rtol=2e-7)
                np.testing.assert_allclose(fields[(f"{p}_mean", lev, key)].to_numpy(), members.mean(0), rtol=1e-7)
                np.testing.assert_allclose(fields[(f"{p}_logstd", lev, key)].to_numpy(), np.log(std), atol=1e-6)
    std_field = fields[("t_std", 1, DATES[0].isoformat())]
    assert std_field.to_numpy().dtype == np.float32
    assert std_field.metadata("number") is None  # no member: the store gets an ensemble dimension of 1
    assert std_field.metadata("type") == "es"
    assert fields[("t_mean", 1, DATES[0].isoformat())].metadata("type") == "em"


def test_each_member_is_read_once_in_groups():
    """Streaming: every input field is read exactly once, group after group (bounded memory)."""
    records, _ = _members(n_members=4)
    source = _fieldlist(records)
    reads = []

    class Spy:
        def __init__(self, index, field):
            self.index, self.field = index, field

        def metadata(self, *args, **kwargs):
            return self.field.metadata(*args, **kwargs)

        def to_numpy(self, *args, **kwargs):
            reads.append(self.index)
            return self.field.to_numpy(*args, **kwargs)

    class Counting:
        def __init__(self, fields):
            self.fields = fields

        def __iter__(self):
            return iter(self.fields)

        def __getitem__(self, i):
            return Spy(i, self.fields[i])

    EnsembleStatistics().forward(Counting(source))
    assert sorted(reads) == list(range(len(records)))
    # Reads come one group (date, param, level) at a time, members in order: 4 consecutive reads per group.
    groups = [tuple(sorted(reads[i : i + 4])) for i in range(0, len(reads), 4)]
    keys = [{(records[r]["valid_datetime"], records[r]["param"], records[r]["levelist"]) for r in g} for g in groups]
    assert all(len(k) == 1 for k in keys)


def test_param_format_and_expected_member_count():
    records, _ = _members(n_members=3)
    out = EnsembleStatistics(param_format="{param}_{statistic}3", members=3).forward(_fieldlist(records))
    assert {f.metadata("param") for f in out} == {"t_std3", "q_std3"}
    with pytest.raises(ValueError, match=r"'t level 1' \(ml\) at 2023-01-01T00:00:00 has 3 members .* but 5 were"):
        EnsembleStatistics(members=5).forward(_fieldlist(records))


def test_nan_member_is_reported_with_field_date_and_member():
    records, _ = _members()
    bad = next(r for r in records if r["param"] == "q" and r["levelist"] == 2 and r["number"] == 4)
    bad["values"][2] = np.nan
    date = bad["valid_datetime"]
    with pytest.raises(ValueError, match=rf"member 4 of field 'q level 2' \(ml\) at {date} has 1 NaN"):
        EnsembleStatistics().forward(_fieldlist(records))
    out = EnsembleStatistics(nan_policy="propagate").forward(_fieldlist(records))
    std = _by_name(out)[("q_std", 2, date)].to_numpy()
    assert np.isnan(std[2]) and np.isfinite(np.delete(std, 2)).all()


def test_zero_spread_is_an_error_unless_floored():
    records, _ = _members(n_members=3)
    for r in records:
        if r["param"] == "t" and r["levelist"] == 1:
            r["values"][1] = 280.0  # all members agree at grid point 1
    with pytest.raises(ValueError, match=r"field 't level 1' \(ml\) at .* identical at 1 of 5 grid points"):
        EnsembleStatistics().forward(_fieldlist(records))
    out = EnsembleStatistics(zero_spread="floor", std_floor={"t": 0.01, "q": 1e-6}, statistics=["logstd"]).forward(
        _fieldlist(records)
    )
    logstd = _by_name(out)[("t_logstd", 1, DATES[0].isoformat())].to_numpy()
    assert logstd[1] == pytest.approx(np.log(0.01), rel=1e-6)


def test_identical_members_everywhere_are_named():
    records, _ = _members(n_members=3)
    for r in records:
        r["values"] = np.full(LAT.size, 1.0)
    with pytest.raises(ValueError, match="identical everywhere"):
        EnsembleStatistics().forward(_fieldlist(records))


@pytest.mark.parametrize(
    ("numbers", "message"),
    [
        ([1], r"has 1 member\(s\); a spread needs at least 2"),
        ([1, 2, 2], r"member\(s\) \[2\] more than once"),
    ],
)
def test_too_few_or_duplicated_members(numbers, message):
    records, _ = _members(numbers=numbers)
    with pytest.raises(ValueError, match=message):
        EnsembleStatistics().forward(_fieldlist(records))


def test_a_missing_member_in_one_field_is_reported():
    records, _ = _members(n_members=4)
    records = [r for r in records if not (r["param"] == "q" and r["levelist"] == 1 and r["number"] == 3)]
    with pytest.raises(ValueError, match=r"'q level 1' \(ml\) at .* has 3 members \(numbers \[1, 2, 4\]\) but 4"):
        EnsembleStatistics().forward(_fieldlist(records))


def test_fields_without_ensemble_dimension_are_rejected():
    records, _ = _members(n_members=2)
    for r in records:
        del r["number"]
    with pytest.raises(ValueError, match="has no member number, so the input has no ensemble dimension"):
        EnsembleStatistics().forward(_fieldlist(records))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (dict(statistics=["stdev"]), "unknown statistics"),
        (dict(statistics=["std", "mean"], param_format="{param}_x"), "would get the same name"),
        (dict(zero_spread="floor"), "needs a positive std_floor"),
        (dict(std_floor=0.1), "only used with zero_spread: floor"),
        (dict(members=1), r"members must be an integer >= 2"),
        (dict(nan_policy="ignore"), "nan_policy must be one of"),
    ],
)
def test_bad_configuration_is_explained(config, message):
    with pytest.raises(ValueError, match=message):
        EnsembleStatisticsConfig(**config)


def test_unknown_recipe_option_is_rejected():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['ddf'\]"):
        EnsembleStatistics(ddf=1)
