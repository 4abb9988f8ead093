"""The member generator through anemoi: the guide/target split never leaks, is reproducible and order-free, the
shipped configs train through ``anemoi-training train``, and the checkpoint loads as a physical-unit runner."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from isolated_run import run_logged
from member_generator_checkpoints import (
    N_GRID,
    N_MEMBERS,
    NAMES,
    SYNTHETIC_SPLITS,
    TINY_L96_DATES,
    TINY_L96_SPLITS,
    tiny_recipe_store,
    tiny_synthetic_store,
    train_shipped_config,
)
from member_generator_checkpoints import compose_config as _compose
from member_generator_checkpoints import member_generator_model as _model


def _batch(seed: int = 0, batch: int = 2) -> torch.Tensor:
    """``[batch, 1, 20, 40, 3]`` L96-like fields (obs, x_an, x_bg), physical units (the normaliser is none)."""
    g = torch.Generator().manual_seed(seed)
    truth = 2.3 + 3.6 * torch.randn(batch, 1, 1, N_GRID, generator=g)
    bg = truth + 0.8 * torch.randn(batch, 1, N_MEMBERS, N_GRID, generator=g)
    an = 0.5 * (bg + truth) + 0.2 * torch.randn(batch, 1, N_MEMBERS, N_GRID, generator=g)
    obs = (truth + torch.randn(batch, 1, 1, N_GRID, generator=g)).expand(-1, -1, N_MEMBERS, -1)
    return torch.stack([obs, an, bg], dim=-1)


def _loss(alpha: float = 0.95):
    from anemoi.training.losses.kcrps import CRPS

    from hybrid_eda.losses import GeneratedMemberScore

    return GeneratedMemberScore(CRPS(alpha=alpha), replicas=2)


def _score(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    pred = model({"eda": x})["eda"]
    return _loss()(pred, y[..., [NAMES["x_an"]]])


# ---------------------------------------------------------------------------------------------------- leaks
@pytest.mark.parametrize("training", [False, True])
def test_loss_ignores_the_targets_analyses_in_the_input_and_reads_them_in_the_target(training):
    model = _model().train(training)
    x = _batch()
    n_s = model.n_guides(x[:, 0][..., [NAMES["x_bg"]]])
    garbage = x.clone()
    garbage[:, :, n_s:, :, NAMES["x_an"]] = 1e6 * torch.randn_like(garbage[:, :, n_s:, :, NAMES["x_an"]])
    with torch.no_grad():
        reference = _score(model, x, x)
        assert torch.equal(_score(model, garbage, x), reference)  # the inputs' target analyses are never read
        moved = x.clone()
        moved[:, :, n_s:, :, NAMES["x_an"]] += 1.0  # the targets move: the score sees it
        assert not torch.isclose(_score(model, x, moved), reference)
        guides_moved = x.clone()
        guides_moved[:, :, :n_s, :, NAMES["x_an"]] += 1.0  # the guides' analyses are inputs, never scored
        assert torch.equal(_loss()(model({"eda": x})["eda"], guides_moved[..., [1]]), reference)
        assert not torch.equal(model({"eda": guides_moved})["eda"], model({"eda": x})["eda"])


def test_training_draws_the_number_of_guides_per_batch_from_the_backgrounds_only():
    model = _model().train()
    drawn = {model.n_guides(_batch(seed)[:, 0][..., [2]]) for seed in range(30)}
    assert drawn <= set(range(5, 16)) and len(drawn) > 5  # guides: [5, 15]
    x = _batch(3)
    bg = x[:, 0][..., [2]]
    assert model.n_guides(bg) == model.n_guides(bg.clone())  # a pure function of the batch
    assert model.eval().n_guides(bg) == 10  # validation_guides
    out = model({"eda": x})["eda"]
    assert out.shape == (2, 1, 2 * 10, N_GRID, 1)  # R = 2 replicas of each of the 10 targets


def test_too_many_guides_for_the_members_read_is_explained():
    model = _model(validation_guides=20)
    with pytest.raises(ValueError, match="leave no target"):
        model({"eda": _batch()})


# ---------------------------------------------------------------------------------------------------- order
def test_guides_in_any_order_give_the_same_members():
    model = _model()
    x = _batch(1)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(4))
    shuffled = x.clone()
    shuffled[:, :, :10] = x[:, :, perm]
    with torch.no_grad():
        torch.testing.assert_close(model({"eda": shuffled})["eda"], model({"eda": x})["eda"], atol=1e-5, rtol=1e-5)


def test_permuting_the_targets_permutes_their_members():
    model = _model(diffusion=False)  # deterministic flow: the noise (seeded by the batch) plays no part
    x = _batch(2)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(5))
    shuffled = x.clone()
    shuffled[:, :, 10:] = x[:, :, 10 + perm]
    with torch.no_grad():
        out = model({"eda": x})["eda"].reshape(2, 1, 10, 2, N_GRID, 1)
        out_shuffled = model({"eda": shuffled})["eda"].reshape(2, 1, 10, 2, N_GRID, 1)
    torch.testing.assert_close(out_shuffled, out[:, :, perm], atol=1e-5, rtol=1e-5)
    assert out.std() > 0 and not torch.allclose(out[:, :, 0], out[:, :, 1])


def test_scores_pair_each_targets_replicas_with_its_analysis():
    from hybrid_eda.losses.member_scores import pair_generated_with_targets

    b, n, k, r = 2, 6, 4, 3
    target = torch.arange(b * n, dtype=torch.float32).reshape(b, 1, n, 1, 1)
    pred = torch.zeros(b, 1, k * r, 1, 1)
    for i in range(b):
        for j in range(k):
            pred[i, 0, j * r : (j + 1) * r] = 100 * i + j
    grouped, truth = pair_generated_with_targets(pred, target, r)
    assert grouped.shape == (b * k, 1, r, 1, 1) and truth.shape == (b * k, 1, 1, 1, 1)
    for i in range(b):
        for j in range(k):
            assert bool((grouped[i * k + j] == 100 * i + j).all())
            assert truth[i * k + j].item() == target[i, 0, n - k + j].item()  # the last k members are the targets
    with pytest.raises(ValueError, match="replicas"):
        pair_generated_with_targets(pred, target, 5)


def test_generated_member_crps_is_the_mean_over_targets_of_anemois_crps():
    from anemoi.training.losses.kcrps import CRPS

    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 1, 3 * 4, 5, 1, generator=g), torch.randn(2, 1, 7, 5, 1, generator=g)
    crps = CRPS(alpha=1.0)
    loops = [
        crps(pred[i : i + 1, :, 4 * j : 4 * j + 4], target[i : i + 1, :, 4 + j : 5 + j])
        for i in range(2)
        for j in range(3)
    ]
    from hybrid_eda.losses import GeneratedMemberScore

    torch.testing.assert_close(GeneratedMemberScore(crps, replicas=4)(pred, target), torch.stack(loops).mean())
    assert (
        GeneratedMemberScore({"_target_": "anemoi.training.losses.kcrps.CRPS", "alpha": 1.0}, 4).name
        == "generated_crps1.00"
    )
    with pytest.raises(ValueError, match=">= 2"):
        GeneratedMemberScore(crps, replicas=1)


# ---------------------------------------------------------------------------------------------------- split
@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """A 40-date, 20-member L96 EDA store built with the shipped recipe's source (seed-testbed ETKF, ~10 s)."""
    workdir = tmp_path_factory.mktemp("member_generator")
    env = tiny_recipe_store(
        workdir, "l96-eda-pan2026.yaml", "l96-eda.zarr", cycles=140, spinup=100, dates=TINY_L96_DATES
    )
    return {"workdir": workdir, "env": env, "store": workdir / "l96-eda.zarr"}


def test_split_order_is_a_pure_function_of_seed_date_and_pass(tiny_store):
    from anemoi.datasets import open_dataset

    from hybrid_eda.data.member_split import ShuffledMemberSubset, member_split_installed
    from hybrid_eda.data.members import MemberSelection

    store = str(tiny_store["store"])
    full = open_dataset(store)
    with member_split_installed():
        first = open_dataset({"dataset": store, "number": {"random": 20, "seed": 1, "shuffle": True}})
        again = open_dataset({"dataset": store, "number": {"random": 20, "seed": 1, "shuffle": True}})
        other = open_dataset({"dataset": store, "number": {"random": 20, "seed": 2, "shuffle": True}})
        fixed = open_dataset(
            {"dataset": store, "number": {"random": 12, "seed": 1, "shuffle": True, "resample": False}}
        )
        sorted_ = open_dataset({"dataset": store, "number": {"random": 12, "seed": 1}})
        orders = [first.draw_members(5) for _ in range(3)]  # passes 0, 1, 2 of date 5
        assert [again.draw_members(5).tolist() for _ in range(3)] == [o.tolist() for o in orders]  # reproducible
        assert not np.array_equal(orders[0], orders[1])  # a new order each pass
        assert sorted(orders[0].tolist()) == list(range(20)) and orders[0].tolist() != list(range(20))
        assert not np.array_equal(other.draw_members(5), orders[0])
        assert np.array_equal(fixed.members_for(3), fixed.members_for(3)) and len(set(fixed.members_for(3))) == 12
        drawn = sorted_.draw_members(3)
        assert np.array_equal(drawn, np.sort(drawn))  # without shuffle: sorted, as hybrid_eda.data.members
        order = again.draw_members(7)  # the next read of date 7 uses this order
        again._reads[7] = 0
        np.testing.assert_array_equal(again[7], full[7][:, order])  # the data come in the drawn order
    with pytest.raises(ValueError, match="shuffle: true needs a random subset"):
        ShuffledMemberSubset(full, MemberSelection(members=(0, 1)), shuffle=True)


# ---------------------------------------------------------------------------------------------------- runner
def test_runner_errors_name_the_problem(tmp_path):
    from hybrid_eda.errors import UserInputError
    from hybrid_eda.models import load_member_generator
    from hybrid_eda.models.member_generator_runner import MemberGeneratorRunner

    other = tmp_path / "other.ckpt"
    torch.save(types.SimpleNamespace(model=torch.nn.Linear(1, 1)), other)
    with pytest.raises(UserInputError, match="holds a Linear.*not a member generator"):
        load_member_generator(other)
    training = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}}, training)
    with pytest.raises(UserInputError, match="training checkpoint"):
        load_member_generator(training)
    with pytest.raises(UserInputError, match="no checkpoint"):
        load_member_generator(tmp_path / "missing.ckpt")

    runner = MemberGeneratorRunner(_model())
    g = torch.Generator().manual_seed(0)
    bg, an = (
        np.random.default_rng(0).normal(size=(2, 10, N_GRID, 1)),
        np.random.default_rng(1).normal(size=(2, 10, N_GRID, 1)),
    )
    assert runner.generate(bg, an, 10, g, guide_backgrounds=bg).shape == (2, 10, N_GRID, 1)
    with pytest.raises(UserInputError, match="N_s >= 2"):
        runner.generate(bg, an[:, :1], 10, g)
    with pytest.raises(UserInputError, match="same grid"):
        runner.generate(bg, an[:, :, :30], 10, g)
    with pytest.raises(UserInputError, match="grid=40"):
        runner.generate(bg[:, :, :30], an[:, :, :30], 10, g)
    with pytest.raises(UserInputError, match="trained on 1"):
        runner.generate(np.concatenate([bg, bg], -1), np.concatenate([an, an], -1), 10, g)
    with pytest.raises(UserInputError, match="do not match"):
        runner.generate(bg, an, 10, g, variables=["t_an_1"])
    with pytest.raises(UserInputError, match="observations must be"):
        runner.generate(bg, an, 10, g, observations=np.zeros((2, 30, 1)))


def test_shipped_model_config_parameter_count_is_the_stated_one():
    from hybrid_eda.resources import configs_dir

    assert _model().n_parameters == 18_242  # member_generator_l96 ships particle attention and the resolvent
    assert _model(ensemble_resolvent=False).n_parameters == 18_190
    assert _model(particle_attention=False, ensemble_resolvent=False).n_parameters == 15_974
    text = (configs_dir() / "model" / "member_generator.yaml").read_text()
    assert "15,974 for one field with observations" in text
    assert "18,190 with particle_attention; 18,242 with ensemble_resolvent too" in text


# ---------------------------------------------------------------------------------------------------- anemoi
@pytest.mark.slow
def test_l96_config_trains_and_its_checkpoint_generates_members(tiny_store):
    from anemoi.datasets import open_dataset

    from hybrid_eda.models import load_member_generator

    workdir, env = tiny_store["workdir"], tiny_store["env"]
    log, checkpoint = train_shipped_config(workdir, env, "member_generator_l96", TINY_L96_SPLITS)
    assert "member generator: 1 variables, 40 grid points, 200 edges" in log
    runner = load_member_generator(checkpoint)
    assert runner.variables == ["x_an"] and runner.background_variables == ["x_bg"] and runner.uses_observations
    data = open_dataset(str(tiny_store["store"]))
    v = data.variables
    fields = data[30]  # [variable, member, grid]
    bg, an = fields[v.index("x_bg")][..., None], fields[v.index("x_an")][..., None]  # [20, 40, 1]
    obs = fields[v.index("obs"), 0][..., None]
    members = runner.generate(
        bg[10:], an[:10], 10, torch.Generator().manual_seed(3), guide_backgrounds=bg[:10], observations=obs
    )
    assert members.shape == (10, N_GRID, 1) and members.dtype == bg.dtype and np.isfinite(members).all()
    again = runner.generate(
        bg[10:], an[:10], 10, torch.Generator().manual_seed(3), guide_backgrounds=bg[:10], observations=obs
    )
    np.testing.assert_array_equal(members, again)  # seeded
    direct = runner.core.generate(
        torch.as_tensor(bg[10:]),
        torch.as_tensor(an[:10]),
        10,
        torch.Generator().manual_seed(3),
        guide_backgrounds=torch.as_tensor(bg[:10]),
        observations=torch.as_tensor(obs),
    ).members
    np.testing.assert_allclose(members, direct.detach().numpy(), atol=1e-6)  # physical units in and out
    truth = fields[v.index("truth"), 0]
    rmse = np.sqrt(((members[..., 0] - truth) ** 2).mean())
    assert rmse < 2 * np.sqrt(((bg[10:, :, 0] - truth) ** 2).mean())  # 2 steps: still about the base flow


#: What the operational config needs to run on the tiny CPU store (its own settings otherwise).
N128_ON_THE_TINY_STORE = [
    "system.hardware.accelerator=cpu",
    "system.hardware.num_gpus_per_node=1",
    "data.frequency=6h",
    "dataloader.stores.eda=${hydra:runtime.cwd}/eda-generator.zarr",
    "dataloader.num_workers.training=1",
    "dataloader.num_workers.validation=1",
    "dataloader.num_workers.test=1",
    "dataloader.pin_memory=False",
    "dataloader.persistent_workers=False",
]


@pytest.fixture(scope="module")
def tiny_global_store(tmp_path_factory):
    """O32 x 2 levels x 6 variables, 10 members, 6 dates of the synthetic EDA and its generator store (~25 s; 10:
    member_generator_synthetic reads 10 members per sample)."""
    workdir = tmp_path_factory.mktemp("member_generator_global")
    env = tiny_synthetic_store(workdir, "synthetic-eda-generator.yaml", "eda-generator.zarr", members=10)
    return {"workdir": workdir, "env": env}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "extra", "guides"),
    [
        ("member_generator_synthetic", [], "guides (6, 8) (validation 7)"),
        ("member_generator_n128", N128_ON_THE_TINY_STORE, "guides (2, 2) (validation 2)"),
    ],
)
def test_global_configs_train_two_steps(tiny_global_store, config, extra, guides):
    bin_dir = Path(sys.executable).parent
    command = [str(bin_dir / "anemoi-training"), "train", f"--config-name={config}", *SYNTHETIC_SPLITS, *extra]
    log = run_logged(command, tiny_global_store["workdir"], tiny_global_store["env"])
    assert "`Trainer.fit` stopped: `max_steps=2` reached" in log
    assert f"member generator: 11 variables, 5248 grid points, 47232 edges, {guides}, 2 replicas" in log


def test_global_config_parameter_counts_are_the_stated_ones():
    from hybrid_eda.models.member_generator import parameter_count_for
    from hybrid_eda.models.member_generator_core import MemberGeneratorSettings
    from hybrid_eda.resources import configs_dir

    for name, fields, stated in (("member_generator_synthetic", 26, 27_256), ("member_generator_n128", 686, 324_256)):
        model = _compose(name).model.model
        settings = MemberGeneratorSettings(
            latent=model.latent,
            rounds=model.rounds,
            heads=model.heads,
            kernel_hidden=model.kernel_hidden,
            steps=model.steps,
        )
        assert parameter_count_for(fields, settings, edge_dim=3, node_dim=3 if model.node_features else 0) == stated
    assert "324,256 at latent 32" in (configs_dir() / "member_generator_n128.yaml").read_text()


def test_core_reads_observations_only_where_observed():
    from hybrid_eda.layers.graphs import ring_graph
    from hybrid_eda.models.member_generator_core import MemberGeneratorCore, MemberGeneratorSettings

    core = MemberGeneratorCore(
        n_variables=1, graph=ring_graph(N_GRID), settings=MemberGeneratorSettings(observation_features=True, steps=2)
    )
    torch.manual_seed(0)
    with torch.no_grad():
        core.embedding.weight.normal_(0.0, 0.3)
        core.output.weight.normal_(0.0, 0.3)
    x = _batch(4, batch=1)[0, 0]  # [20, 40, 3]
    bg, an, obs = x[10:, :, [2]], x[:10, :, [1]], x[0, :, [0]]

    def run(observations):
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            return core.generate(bg, an, 10, g, guide_backgrounds=x[:10, :, [2]], observations=observations).members

    unobserved = run(torch.full_like(obs, float("nan")))
    torch.testing.assert_close(unobserved, run(None))  # NaN everywhere: as if no observations were given
    assert not torch.allclose(run(obs), unobserved)  # observed: they change the members
    half = obs.clone()
    half[::2] = float("nan")
    assert torch.isfinite(run(half)).all()
    plain = MemberGeneratorCore(n_variables=1, graph=ring_graph(N_GRID), settings=MemberGeneratorSettings(steps=2))
    assert plain.embedding.in_features == 12 and core.embedding.in_features == 14
