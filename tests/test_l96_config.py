"""One definition per setting: ExperimentConfig derives every default from the preset, and checks its input."""

from __future__ import annotations

from dataclasses import fields

import pytest

from hybrid_eda.l96.config import SETTING_FIELDS, ExperimentConfig
from hybrid_eda.l96.cycle import estimate_memory_bytes, memory_parts
from hybrid_eda.l96.methods import METHODS
from hybrid_eda.l96.presets import PRESETS, ExperimentSettings, Preset


def test_config_has_exactly_the_settings_of_a_preset():
    config_fields = {f.name for f in fields(ExperimentConfig)}
    assert set(SETTING_FIELDS) == {f.name for f in fields(ExperimentSettings)}
    assert config_fields - set(SETTING_FIELDS) == {"preset", "seed", "batch", "emulator"}
    assert all(f.default is None for f in fields(ExperimentConfig) if f.name in SETTING_FIELDS)
    assert issubclass(Preset, ExperimentSettings)


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_direct_construction_and_from_preset_agree(preset, method):
    direct = ExperimentConfig(preset=preset, method=method, cycles=100)
    assert direct == ExperimentConfig.from_preset(preset, method=method, cycles=100)
    assert all(getattr(direct, name) is not None for name in SETTING_FIELDS if name != "n_real")
    p = PRESETS[preset]
    spec = METHODS[method]
    assert direct.window == (p.window if spec.windowed else 1)  # 4D-Var: window 4 both ways
    assert direct.rotate == (p.rotate and spec.rotatable)
    assert (direct.members, direct.inflation) == ((p.members, p.inflation) if spec.ensemble else (1, 1.0))
    assert direct.spinup == min(p.spinup, 100 // 5)
    assert direct.n_real is None


def test_every_setting_left_out_is_the_preset_s():
    p = PRESETS["sakov2008"]
    config = ExperimentConfig(method="4dvar")
    for name in SETTING_FIELDS:
        if name not in ("method", "rotate", "n_real"):  # 4D-Var does not rotate
            assert getattr(config, name) == getattr(p, name), name
    hybrid = ExperimentConfig(preset="pan2026", emulator="gaussian")
    assert hybrid.n_real == PRESETS["pan2026"].n_real and hybrid.full().n_real is None


@pytest.mark.parametrize("name", ["inflation", "forcing", "dt", "obs_std", "hybrid_weight", "b_scale", "init_spread"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_float_settings_must_be_finite(name, value):
    with pytest.raises(ValueError, match=rf"--{name.replace('_', '-')} must be a finite number, got {value}"):
        ExperimentConfig.from_preset("sakov2008", **{name: value})


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"members": 2.5}, r"--members must be a whole number"),
        ({"seed": -3}, r"seed must be a non-negative integer"),
        ({"init_spread": 0.0}, r"init_spread must be positive"),
        ({"b_scale": -1.0}, r"b_scale must be positive"),
    ],
)
def test_other_bad_numbers(overrides, message):
    with pytest.raises(ValueError, match=message):
        ExperimentConfig.from_preset("sakov2008", **overrides)


def test_sizes_that_cannot_fit_are_refused_before_allocating():
    # 10^8 members: the ensemble alone is 10^8 x 40 x 8 B = 29.8 GiB, the ETKF's N x N transform far more.
    with pytest.raises(ValueError, match=r"needs about .* GiB of memory \(.*\) but only .* GiB is available; lower"):
        ExperimentConfig.from_preset("sakov2008", members=100_000_000)
    with pytest.raises(ValueError, match=r"series \[T, B\] = \[10000, 10000000\]"):
        ExperimentConfig.from_preset("sakov2008", batch=10_000_000)
    parts = memory_parts(batch=1, members=100_000_000, n=40, p=40, window=1, cycles=10)
    assert parts["ensembles [B, N, n] = [1, 100000000, 40]"] >= 8 * 100_000_000 * 40 * 8  # 8 copies of 29.8 GiB
    # The usual experiments are small: the 32-seed batch of the README well under 100 MiB, an archive a few.
    assert estimate_memory_bytes(32, 20, 40, 40, 1, 10_000) < 100 * 2**20
    assert ExperimentConfig.from_preset("sakov2008").memory_parts(archive=True)


def test_from_preset_rejects_unknown_settings():
    with pytest.raises(TypeError, match=r"unknown experiment settings \['membres'\]"):
        ExperimentConfig.from_preset("sakov2008", membres=20)
