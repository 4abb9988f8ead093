"""The member generator in the Lorenz-96 hybrid cycle (``--emulator CHECKPOINT``): specs, errors, seeding, inputs.

The untrained :class:`~hybrid_eda.models.member_generator_core.MemberGeneratorCore` is the test double: its flow is
known (the background ensemble shifted by the guides' mean increment, anomalies rescaled by their spread ratio), and
with a non-zero diffusion bias it is a stochastic flow whose noise comes from the cycle's emulator stream.
"""

from __future__ import annotations

import copy
import inspect

import numpy as np
import pytest
import torch

from hybrid_eda.errors import UserInputError
from hybrid_eda.l96.config import ExperimentConfig
from hybrid_eda.l96.cycle import CycleSettings, HybridSetting, run_cycles
from hybrid_eda.l96.emulators import EMULATORS, MemberEmulator, get_emulator, get_member_source
from hybrid_eda.l96.experiment import run_experiment
from hybrid_eda.l96.filters import ETKF
from hybrid_eda.l96.learned_emulator import LearnedGenerator, _untrained_core, torch_generator
from hybrid_eda.l96.model import Lorenz96
from hybrid_eda.l96.observations import ObservationOperator
from hybrid_eda.l96.seeding import BatchGenerator
from hybrid_eda.models.member_generator_core import base_flow_solution
from member_generator_checkpoints import save_small_checkpoint

MODEL, OBS = Lorenz96(), ObservationOperator(n=40)
N, N_S, NX = 20, 10, 40
_ALLOWED = ["self", "backgrounds", "guide_analyses", "n_members", "rng", "guide_backgrounds", "observations"]


def _noisy_core(sigma: float = 0.2):
    """The untrained core with a constant diffusion ``sigma * sb``: a stochastic flow driven by the generator."""
    core = _untrained_core(NX, None)
    with torch.no_grad():
        core.output.bias[1] = sigma  # output (correction, sigma) per variable: bias[1] is sigma of variable 0
    return core


def _ensemble(seed: int = 0, batch: tuple[int, ...] = (2,)):
    rng = np.random.default_rng(seed)
    xb = 2.0 + 3.0 * rng.standard_normal((*batch, N, NX))  # [B, N, n]
    y = 2.0 + 3.0 * rng.standard_normal((*batch, 1, NX))  # [B, L, p]
    xa = ETKF(MODEL, OBS, inflation=1.04, rotate=False).analyse(xb, y, np.random.default_rng(seed))
    return xb, xa, y


class SpyRunner:
    """Records every input of ``generate`` and delegates to a core."""

    def __init__(self, core) -> None:
        self.core, self.calls = core, []

    def generate(self, backgrounds, guide_analyses, n_members, generator, *, guide_backgrounds=None, observations=None):
        self.calls.append(
            {
                "backgrounds": backgrounds.numpy()[..., 0].copy(),
                "guide_analyses": guide_analyses.numpy()[..., 0].copy(),
                "guide_backgrounds": guide_backgrounds.numpy()[..., 0].copy(),
                "observations": observations.numpy()[..., 0].copy(),
                "n_members": n_members,
            }
        )
        return self.core.generate(
            backgrounds, guide_analyses, n_members, generator, guide_backgrounds=guide_backgrounds
        )


# ---- specs and errors --------------------------------------------------------------------------------------------


def test_specs_select_the_generator_and_the_template_method_checks_it():
    emulator = get_emulator("generator:untrained=true,steps=4")
    assert isinstance(emulator, LearnedGenerator) and emulator.steps == 4 and emulator.label == "untrained generator"
    assert isinstance(get_member_source("generator:untrained=1"), LearnedGenerator)
    assert LearnedGenerator.generate is MemberEmulator.generate
    assert list(inspect.signature(LearnedGenerator._generate).parameters) == _ALLOWED  # no hidden analyses
    assert "generator" not in EMULATORS  # the table's default rows need no checkpoint


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("generator", "needs checkpoint=PATH"),
        ("generator:untrained=true,steps=x", "steps must be an integer"),
        ("generator:untrained=true,steps=0", "steps must be >= 1"),
        ("generator:untrained=maybe", "untrained must be true or false"),
        (
            "generator:untrained=true,window=1",
            "takes checkpoint=PATH, steps=S, untrained=true, noise=A and spread=A, got window",
        ),
        ("generator:untrained=true,noise=much", "noise must be a number, got 'much'"),
        ("generator:untrained=true,noise=-0.5", "noise .* must be a finite number >= 0, got -0.5"),
        ("generator:untrained=true,noise=nan", "noise .* must be a finite number >= 0, got nan"),
        ("generator:untrained=true,spread=0", "spread .* must be a finite number > 0, got 0.0"),
        ("generator:untrained=true,spread=inf", "spread .* must be a finite number > 0, got inf"),
        ("generator:untrained=true,checkpoint=a.ckpt", "either checkpoint=PATH or untrained=true"),
        ("runs/missing/inference-last.ckpt", "no checkpoint at .*missing/inference-last.ckpt"),
        ("generator:checkpoint=missing.ckpt", "no checkpoint at .*missing.ckpt"),
        ("magic", "or a member generator checkpoint"),
    ],
)
def test_spec_errors_name_the_fix(spec, message):
    with pytest.raises(ValueError, match=message):
        get_emulator(spec)


def test_a_checkpoint_of_another_model_is_refused_with_the_spec(tmp_path):
    other = tmp_path / "variance.ckpt"
    torch.save(torch.nn.Linear(2, 2), other)
    with pytest.raises(UserInputError, match=r"--emulator .*variance.ckpt: .* holds a Linear .*not a member generator"):
        get_emulator(str(other))
    training = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}}, training)
    with pytest.raises(UserInputError, match="training checkpoint"):
        get_emulator(f"generator:checkpoint={training}")
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(UserInputError, match=r"notes.txt is not a torch checkpoint \(UnpicklingError"):
        get_emulator(str(text))  # an existing file is taken for a checkpoint


def test_a_generator_of_another_grid_is_refused_before_cycling():
    class Runner80:
        n_grid = 80

        def generate(self, *args, **kwargs):  # never reached
            raise AssertionError

    config = ExperimentConfig.from_preset("pan2026", cycles=5, spinup=1)
    reason = LearnedGenerator(Runner80(), source="ring80.ckpt").unsupported(config)
    assert reason is not None and "ring80.ckpt was trained on a grid of 80 points, the experiment has n=40" in reason
    assert LearnedGenerator(_untrained_core(NX, None)).unsupported(config) is None


def test_fewer_than_two_guides_is_an_error():
    xb, xa, _ = _ensemble()
    with pytest.raises(ValueError, match="at least 2 real members .* got N_s=1; use --n-real 2"):
        get_emulator("generator:untrained=true").generate(xb[:, 1:], xa[:, :1], N - 1, np.random.default_rng(0))
    config = ExperimentConfig.from_preset("pan2026", cycles=5, spinup=1, n_real=1, emulator="generator:untrained=true")
    with pytest.raises(ValueError, match="N_s=1"):
        run_experiment(config)


# ---- what it computes ----------------------------------------------------------------------------------------------


def test_untrained_generator_is_the_known_flow_on_the_ring():
    """Batched over experiments, with a var axis added: the core's own members, close to the exact flow."""
    xb, xa, y = _ensemble()
    emulator = LearnedGenerator(untrained=True, steps=32, source="untrained core")
    members = emulator.generate(
        xb[:, N_S:], xa[:, :N_S], N - N_S, np.random.default_rng(0), guide_backgrounds=xb[:, :N_S]
    )
    assert members.shape == (2, N - N_S, NX) and members.dtype == np.float64
    for b in range(2):
        exact = base_flow_solution(
            torch.as_tensor(xb[b, N_S:, :, None]),
            torch.as_tensor(xa[b, :N_S, :, None]),
            torch.as_tensor(xb[b, :N_S, :, None]),
        )[..., 0].numpy()
        np.testing.assert_allclose(members[b], exact, atol=2e-3)
        single = emulator.generate(
            xb[b, N_S:], xa[b, :N_S], N - N_S, np.random.default_rng(0), guide_backgrounds=xb[b, :N_S]
        )
        np.testing.assert_allclose(single, members[b], atol=1e-5)  # a batch is its experiments side by side


def test_the_torch_generator_follows_the_emulator_streams():
    def seeds(*values):
        return BatchGenerator([np.random.default_rng(v) for v in values])

    draw = [torch.randn(3, generator=torch_generator(seeds(1, 2))) for _ in range(2)]
    again = torch.randn(3, generator=torch_generator(seeds(1, 2)))
    other = torch.randn(3, generator=torch_generator(seeds(1, 3)))
    assert torch.equal(draw[0], again) and not torch.equal(draw[0], other)
    stream = seeds(1, 2)
    first, second = torch_generator(stream).initial_seed(), torch_generator(stream).initial_seed()
    assert first != second  # each call advances every experiment's stream
    assert torch_generator(np.random.default_rng(5)).initial_seed() == torch_generator(seeds(5)).initial_seed()


# ---- calibration knobs: noise (the diffusion) and spread (the generated anomalies) --------------------------------


def _members(runner, seed: int = 5, **knobs) -> np.ndarray:
    """``[2, 10, 40]`` members of the 10 targets of :func:`_ensemble` from its 10 guides, seeded."""
    xb, xa, y = _ensemble()
    emulator = LearnedGenerator(runner, source="test double", **knobs)
    rng = np.random.default_rng(seed)
    return emulator.generate(xb[:, N_S:], xa[:, :N_S], N - N_S, rng, guide_backgrounds=xb[:, :N_S], observations=y)


def test_noise_scales_the_diffusion_along_the_same_brownian_path():
    """Constant diffusion ``sigma sb``: ``noise=A`` is the flow of diffusion ``A sigma`` driven by the same draws.

    The untrained core's drift is linear in the state, so with additive noise the members are affine in the
    Brownian increments (Heun's scheme too): ``noise=A`` moves them ``A`` times as far from the deterministic flow.
    """
    plain, doubled = _members(_noisy_core(0.2)), _members(_noisy_core(0.4))
    np.testing.assert_allclose(_members(_noisy_core(0.2), noise=2.0), doubled, atol=1e-6)  # A dW = the diffusion A s
    deterministic = _members(_noisy_core(0.0))
    np.testing.assert_allclose(_members(_noisy_core(0.2), noise=0.0), deterministic, atol=1e-6)
    half = _members(_noisy_core(0.2), noise=0.5)
    np.testing.assert_allclose(half - deterministic, 0.5 * (plain - deterministic), atol=1e-5)
    assert np.abs(plain - deterministic).max() > 0.1  # the noise is not negligible
    np.testing.assert_allclose(_members(_noisy_core(0.2), seed=6, noise=0.0), deterministic, atol=1e-6)  # no draws
    assert not np.allclose(_members(_noisy_core(0.2), seed=6, noise=0.5), half)  # a seeded path


def test_noise_reaches_the_core_of_a_checkpoint_runner():
    """The anemoi-checkpoint runner forwards the scaled increments to its core (noise=0 = no diffusion)."""
    from hybrid_eda.models.member_generator_runner import MemberGeneratorRunner
    from member_generator_checkpoints import member_generator_model

    model = member_generator_model(seed=0)
    quiet = copy.deepcopy(model)
    with torch.no_grad():  # the same network with its diffusion row (correction, sigma) zeroed
        quiet.core.output.weight[1:].zero_()
        quiet.core.output.bias[1:].zero_()
    noisy, drift_only = MemberGeneratorRunner(model), MemberGeneratorRunner(quiet)
    np.testing.assert_allclose(_members(noisy, noise=0.0), _members(drift_only), atol=1e-5)
    assert not np.allclose(_members(noisy, noise=0.5), _members(noisy), atol=1e-3)

    class Bare:  # a runner without increments=
        def generate(self, backgrounds, guide_analyses, n_members, generator, *, guide_backgrounds=None):
            raise AssertionError("never reached")

    with pytest.raises(UserInputError, match="noise=0.5 needs a runner whose generate\\(\\) takes increments="):
        _members(Bare(), noise=0.5)


def test_spread_rescales_the_generated_anomalies_about_their_own_mean():
    plain = _members(_noisy_core(0.2))
    for scale in (0.5, 1.7):
        scaled = _members(_noisy_core(0.2), spread=scale)
        np.testing.assert_allclose(scaled.mean(axis=1), plain.mean(axis=1), atol=1e-12)  # the hybrid mean stays
        np.testing.assert_allclose(scaled.std(axis=1), scale * plain.std(axis=1), rtol=1e-12)
    both = _members(_noisy_core(0.2), noise=2.0, spread=0.5)
    doubled = _members(_noisy_core(0.4))
    centre = doubled.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(both, centre + 0.5 * (doubled - centre), atol=1e-6)
    assert repr(LearnedGenerator(_noisy_core(), source="x", noise=0.5, spread=2)) == (
        "LearnedGenerator('x', noise=0.5, spread=2)"
    )


# ---- in the cycle ----------------------------------------------------------------------------------------------


def _cycle(runner, seed: int, cycles: int = 30, batch: int = 2):
    method = ETKF(MODEL, OBS, inflation=1.1, rotate=False)
    settings = CycleSettings(cycles=cycles, spinup=5, members=N, batch=batch, seed=seed)
    emulator = LearnedGenerator(runner, source="test double")
    return run_cycles(MODEL, OBS, method, settings, HybridSetting(n_real=N_S, emulator=emulator), mask_diverged=True)


def test_seeded_hybrid_cycle_is_reproducible_and_changes_with_the_seed():
    """30 cycles, B = 2, a stochastic flow: bit for bit with the same seed, another run with another."""
    runs = [_cycle(_noisy_core(), seed) for seed in (100, 100, 101)]  # ~1 s each
    a, b, c = ([e["analysis_rmse"] for e in run.experiments] for run in runs)
    assert a == b and np.array_equal(runs[0].series["analysis_rmse"], runs[1].series["analysis_rmse"])
    assert a != c
    assert all(np.isfinite(a)) and max(a) < 1.5  # it tracks the truth over the short run
    assert runs[0].emulation_seconds > 0 and runs[0].analyses_per_cycle == N_S
    # the noise matters: the deterministic untrained flow gives other members on the same truths
    deterministic = [e["analysis_rmse"] for e in _cycle(_untrained_core(NX, None), 100).experiments]
    assert deterministic != a


def test_generator_sees_backgrounds_guides_and_observations_never_the_hidden_analyses():
    """A spy runner records its inputs; the full ETKF of the same backgrounds gives the hidden analyses to compare."""
    spy = SpyRunner(_noisy_core())
    _cycle(spy, seed=7, cycles=12)
    assert len(spy.calls) == 12  # once per cycle (the warm-up analysis emulates nothing)
    etkf = ETKF(MODEL, OBS, inflation=1.1, rotate=False)
    for call in spy.calls:
        assert call["backgrounds"].shape == (2, N - N_S, NX) and call["n_members"] == N - N_S
        assert call["guide_analyses"].shape == call["guide_backgrounds"].shape == (2, N_S, NX)
        assert call["observations"].shape == (2, NX)
        everything = np.concatenate([call["guide_backgrounds"], call["backgrounds"]], axis=1)  # all N backgrounds
        y = call["observations"][:, None, :].astype(np.float64)
        full = etkf.analyse(everything.astype(np.float64), y, np.random.default_rng(0))  # [B, N, n]
        np.testing.assert_allclose(call["guide_analyses"], full[:, :N_S], atol=1e-4)  # the real ones, float32
        hidden = full[:, N_S:]
        for name in ("backgrounds", "guide_analyses", "guide_backgrounds"):
            assert not np.allclose(call[name], hidden, atol=1e-2), f"{name} looks like the hidden analyses"


# ---- a member generator checkpoint through --emulator PATH ---------------------------------------------------------


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """A MemberGenerator of the shipped L96 config (trained with observations), small random output layer, saved."""
    return save_small_checkpoint(tmp_path_factory.mktemp("generator") / "inference-last.ckpt")


def test_a_checkpoint_runs_the_seeded_hybrid_cycle(small_checkpoint):
    """``--emulator PATH``: 30 cycles, B = 2, bit for bit with the same seed, another run with another seed or steps."""

    def scores(spec: str, seed: int) -> list[float]:
        config = ExperimentConfig.from_preset(
            "pan2026", cycles=30, spinup=5, batch=2, seed=seed, emulator=spec, n_real=N_S, inflation=1.1
        )
        return [e["analysis_rmse"] for e in run_experiment(config, mask_diverged=True).output.experiments]

    emulator = get_emulator(str(small_checkpoint))
    assert isinstance(emulator, LearnedGenerator) and emulator.runner.uses_observations
    assert "observations" in emulator._accepted(emulator.runner)  # so the cycle passes y on the ring
    first = scores(str(small_checkpoint), 100)
    assert first == scores(str(small_checkpoint), 100) and all(np.isfinite(first)) and max(first) < 1.0
    assert first != scores(str(small_checkpoint), 101)
    assert first != scores(f"generator:checkpoint={small_checkpoint},steps=2", 100)
    calibrated = f"generator:checkpoint={small_checkpoint},noise=0.5,spread=0.9"
    quieter = scores(calibrated, 100)
    assert quieter == scores(calibrated, 100) and quieter != first and all(np.isfinite(quieter))
