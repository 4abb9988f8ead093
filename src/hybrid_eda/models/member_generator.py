"""anemoi adapter of the member generator: ``model.model._target_: hybrid_eda.models.MemberGenerator``.

One dataset (``model.model.dataset``, e.g. ``eda``) holds, for each of the N EDA members on the ensemble axis, its
background (``x_bg``; ``t_1`` ...), its analysis (``x_an``; ``t_an_1`` ...) and optionally the observations on the
grid (``obs``, the same for every member, NaN where unobserved)::

    x[dataset]    [batch, time=1, M, grid, var_in]     backgrounds and observations: forcing; analyses: prognostic
    out[dataset]  [batch, time=1, k R, grid, var_out]  R generated members per target, target-major, var_out = the
                                                       analyses (model.output order)

**The split.** The loader reads the M members of a sample in a seeded random order (``number: {random: M, seed: s,
shuffle: true}``, :mod:`hybrid_eda.data.member_split`: a pure function of seed, date and epoch). The first N_s are
the guides: their analyses and backgrounds are the conditioning. The other ``k = M - N_s`` are the targets: only
their backgrounds are read; their analyses, which anemoi also puts in ``x`` (a prognostic variable is an input),
are never read by :meth:`forward` (``tests/test_member_generator_training.py`` replaces them with garbage and checks
the loss does not change). N_s is ``guides`` (an int) or drawn per batch from ``guides: [lo, hi]``, from a hash of
the batch's backgrounds and ``split_seed`` (so also a pure function of seed, date and epoch); in evaluation mode it
is ``validation_guides``. The Brownian noise is seeded the same way. :class:`hybrid_eda.losses.GeneratedMemberScore`
scores each target's R replicas against its analysis with anemoi's CRPS or energy score.

**Units.** The adapter undoes the dataset's normaliser (any affine one; ``none`` is simplest) and hands the core
physical fields; the core divides by the background spread and standardises the state with the store statistics
of the backgrounds (``variable_mean``, ``variable_scale``) itself, and returns physical members, which are
normalised with the output normaliser. The model config block::

    model:
      model:
        _target_: hybrid_eda.models.MemberGenerator
        dataset: eda
        analysis_tag: _an          # analysis x_an <-> background x_bg; t_an_1 <-> t_1 with background_tag ""
        background_tag: _bg
        observations: {x_an: obs}  # analysis variable -> its observation variable (optional)
        observation_fill: -9999.0  # the value an anemoi ConstantImputer, after the normaliser, gives their NaNs
        guides: [5, 15]            # N_s per training batch (int or [lo, hi]); validation_guides: 10
        validation_guides: 10
        replicas: 2                # R generated members per target
        split_seed: 1
        node_features: False       # sin lat, cos lat cos lon, cos lat sin lon per point (the globe)
        edge_attributes: [edge_length, edge_dirs]
        latent: 32                 # ... the fields of MemberGeneratorSettings
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig
from torch import nn

from hybrid_eda.errors import UserInputError
from hybrid_eda.layers.blocks import GridGraph
from hybrid_eda.models.member_generator_core import MemberGeneratorCore, MemberGeneratorSettings
from hybrid_eda.models.variance_emulator import normaliser_affine

LOGGER = logging.getLogger(__name__)

_SETTINGS = tuple(MemberGeneratorSettings.__dataclass_fields__)


def _ordered_names(name_to_index: dict[str, int]) -> list[str]:
    return [name for name, _ in sorted(name_to_index.items(), key=lambda item: item[1])]


def guide_range(guides: Any) -> tuple[int, int]:
    """``10 -> (10, 10)``, ``[5, 15] -> (5, 15)``; at least 2 guides."""
    if isinstance(guides, (list, tuple, ListConfig)):
        if len(guides) != 2:
            raise UserInputError(f"guides must be an int N_s or a range [lo, hi], got {list(guides)}")
        lo, hi = int(guides[0]), int(guides[1])
    else:
        lo = hi = int(guides)
    if lo < 2 or hi < lo:
        msg = f"guides must satisfy 2 <= lo <= hi (N_s >= 2 real analyses condition the generator), got {lo}..{hi}"
        raise UserInputError(msg)
    return lo, hi


def sample_key(backgrounds: torch.Tensor, seed: int, points: int = 64) -> int:
    """A 63-bit integer from ``seed`` and the values of a few points of ``backgrounds[b, M, grid, var]``.

    The batch's backgrounds are a pure function of the dates and of the members the loader drew (in their order),
    so the key is a pure function of (seed, dates, epoch); it never depends on an analysis.
    """
    sample = backgrounds[..., :points, :].detach().to("cpu", torch.float64).contiguous()
    digest = hashlib.sha256(int(seed).to_bytes(8, "little", signed=True) + sample.numpy().tobytes()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def node_position_features(coordinates: torch.Tensor) -> torch.Tensor:
    """``[grid, 2]`` (lat, lon in radians) -> ``[grid, 3]``: sin lat, cos lat cos lon, cos lat sin lon."""
    lat, lon = coordinates[:, 0].float(), coordinates[:, 1].float()
    return torch.stack([torch.sin(lat), torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon)], dim=-1)


class MemberGenerator(nn.Module):
    """The member generator with anemoi's model constructor contract (see the module docstring)."""

    def __init__(
        self,
        *,
        model_config: DictConfig,
        data_indices: dict,
        statistics: dict,
        graph_data: Any,
        n_step_input: int,
        n_step_output: int,
    ) -> None:
        super().__init__()
        cfg = model_config.model.model
        if n_step_input != 1 or n_step_output != 1:
            msg = (
                f"the member generator maps the backgrounds and guides of one date to analyses of the same date "
                f"(task: autoencoder); got {n_step_input} input and {n_step_output} output steps"
            )
            raise ValueError(msg)
        self.dataset = str(cfg.dataset)
        if self.dataset not in data_indices:
            msg = (
                f"dataset '{self.dataset}' named in model.model.dataset is not among the datasets {list(data_indices)}"
            )
            raise ValueError(msg)
        indices = data_indices[self.dataset]
        input_names = _ordered_names(indices.model.input.name_to_index)  # x[..., var]
        output_names = _ordered_names(indices.model.output.name_to_index)  # out[..., var]
        analysis_tag, background_tag = str(cfg.get("analysis_tag", "_an")), str(cfg.get("background_tag", ""))
        if not analysis_tag:
            raise ValueError("model.model.analysis_tag must name the analysis variables' tag (e.g. _an)")
        self.analysis_names = [name for name in output_names if analysis_tag in name]
        others = [name for name in output_names if analysis_tag not in name]
        if others or not self.analysis_names:
            msg = (
                f"the model outputs {output_names} must all be analyses (names with '{analysis_tag}'): declare the "
                f"backgrounds and observations `forcing` in data.datasets.{self.dataset} and select away what the "
                "model may not see (e.g. truth)"
            )
            raise ValueError(msg)
        self.background_names = [name.replace(analysis_tag, background_tag, 1) for name in self.analysis_names]
        obs_map = dict(cfg.get("observations") or {})
        unknown = sorted(set(obs_map) - set(self.analysis_names))
        if unknown:
            raise ValueError(f"model.model.observations names {unknown}, which are not analysis variables")
        self.observation_names = [obs_map.get(name) for name in self.analysis_names]
        wanted = self.analysis_names + self.background_names + [n for n in self.observation_names if n]
        missing = [name for name in wanted if name not in input_names]
        if missing:
            msg = (
                f"variables {missing} are not inputs of dataset '{self.dataset}' (inputs: {input_names}); check "
                "model.model.analysis_tag/background_tag/observations and the dataset's select"
            )
            raise ValueError(msg)
        self.register_buffer("analysis_in", torch.tensor([input_names.index(n) for n in self.analysis_names]))
        self.register_buffer("background_in", torch.tensor([input_names.index(n) for n in self.background_names]))
        self.has_observations = any(self.observation_names)
        # anemoi refuses NaNs after the processors: an imputer after the normaliser fills the unobserved points with
        # observation_fill (normalised units, exact), which split() turns back into NaN.
        fill = cfg.get("observation_fill")
        self.observation_fill = None if fill is None else float(fill)
        obs_in = [input_names.index(n) if n else 0 for n in self.observation_names]
        self.register_buffer("observation_in", torch.tensor(obs_in))
        self.register_buffer("observed_variable", torch.tensor([n is not None for n in self.observation_names]))
        self.register_buffer("analysis_out", torch.tensor([output_names.index(n) for n in self.analysis_names]))
        self.n_outputs = len(output_names)

        # Normalisers (data-index space) -> input and output positions.
        data_cfg = model_config.data.datasets[self.dataset]
        mul, add = normaliser_affine(data_cfg.get("processors"), indices, statistics[self.dataset])
        data_in = [indices.name_to_index[n] for n in input_names]
        data_out = [indices.name_to_index[n] for n in output_names]
        self.register_buffer("input_mul", mul[data_in])
        self.register_buffer("input_add", add[data_in])
        self.register_buffer("output_mul", mul[data_out][self.analysis_out])
        self.register_buffer("output_add", add[data_out][self.analysis_out])

        # Graph of the data grid.
        if self.dataset not in graph_data.node_types:
            raise ValueError(f"graph has no nodes '{self.dataset}': name the graph's data nodes like the dataset")
        edges_key = (self.dataset, "to", self.dataset)
        if edges_key not in graph_data.edge_types:
            msg = f"graph has no edges {edges_key}: add a KNN graph of the data grid to the graph config"
            raise ValueError(msg)
        edges = graph_data[edges_key]
        coordinates = graph_data[self.dataset].x
        attributes = list(cfg.get("edge_attributes", ["edge_length", "edge_dirs"]))
        edge_attr = torch.cat([edges[name].reshape(edges.edge_index.shape[1], -1).float() for name in attributes], -1)
        graph = GridGraph(edges.edge_index[0], edges.edge_index[1], edge_attr, coordinates.shape[0])
        node_features = node_position_features(coordinates) if bool(cfg.get("node_features", False)) else None

        stats = statistics[self.dataset]
        background_data = [indices.name_to_index[n] for n in self.background_names]
        settings = MemberGeneratorSettings(
            **{name: cfg[name] for name in _SETTINGS if name in cfg and name != "observation_features"},
            observation_features=self.has_observations,
        )
        self.core = MemberGeneratorCore(
            n_variables=len(self.analysis_names),
            graph=graph,
            variable_mean=torch.as_tensor(stats["mean"][background_data]).float(),
            variable_scale=torch.as_tensor(stats["stdev"][background_data]).float().clamp_min(1e-12),
            node_features=node_features,
            settings=settings,
            positions=node_position_features(coordinates) if settings.local_kalman else None,
        )
        self.guides = guide_range(cfg.get("guides", 2))
        self.validation_guides = guide_range(cfg.get("validation_guides", self.guides[1]))[0]
        self.replicas = int(cfg.get("replicas", 2))
        if self.replicas < 1:
            raise ValueError(f"model.model.replicas must be >= 1, got {self.replicas}")
        self.split_seed = int(cfg.get("split_seed", 0))
        self.n_step_input = n_step_input
        LOGGER.info(
            "member generator: %d variables, %d grid points, %d edges, guides %s (validation %d), %d replicas, "
            "%d parameters",
            len(self.analysis_names),
            graph.n_nodes,
            graph.src.numel(),
            self.guides,
            self.validation_guides,
            self.replicas,
            self.n_parameters,
        )

    # ------------------------------------------------------------------------------------------------ split
    def n_guides(self, backgrounds: torch.Tensor) -> int:
        """N_s for a batch of ``backgrounds[b, M, grid, var]`` (training: drawn in ``guides``; else fixed)."""
        lo, hi = self.guides if self.training else (self.validation_guides, self.validation_guides)
        n_s = lo if lo == hi else lo + sample_key(backgrounds, self.split_seed + 1) % (hi - lo + 1)
        members = backgrounds.shape[1]
        if n_s > members - 1:
            msg = (
                f"N_s = {n_s} guides leave no target among the {members} members of a sample; read more members "
                "(dataloader number: {random: M}) or lower model.model.guides / validation_guides"
            )
            raise ValueError(msg)
        return n_s

    def split(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Physical guide and target tensors of ``x[b, 1, M, grid, var_in]`` (normalised anemoi input).

        Returns ``backgrounds [b, k, grid, var]`` (the targets'), ``guide_analyses``, ``guide_backgrounds``
        ``[b, N_s, grid, var]`` and ``observations [b, grid, var]`` (or None). The targets' analyses are not read.
        """
        if x.ndim != 5 or x.shape[1] != 1:
            msg = f"expected [batch, time=1, members, grid, var] for dataset '{self.dataset}', got {tuple(x.shape)}"
            raise ValueError(msg)
        fields = x[:, 0]  # [b, M, grid, var_in]
        backgrounds = (fields[..., self.background_in] - self.input_add[self.background_in]) / self.input_mul[
            self.background_in
        ]
        n_s = self.n_guides(backgrounds)
        guides = fields[:, :n_s][..., self.analysis_in]  # the guides' analyses only
        guides = (guides - self.input_add[self.analysis_in]) / self.input_mul[self.analysis_in]
        observations = None
        if self.has_observations:
            raw = fields[:, 0][..., self.observation_in]  # [b, grid, var]: the same for every member
            fill = getattr(self, "observation_fill", None)  # None in checkpoints saved before the setting
            if fill is not None:  # the imputer's value at the unobserved points
                raw = torch.where(raw == fill, torch.full_like(raw, float("nan")), raw)
            raw = (raw - self.input_add[self.observation_in]) / self.input_mul[self.observation_in]
            observations = torch.where(self.observed_variable, raw, torch.full_like(raw, float("nan")))
        return {
            "backgrounds": backgrounds[:, n_s:],
            "guide_analyses": guides,
            "guide_backgrounds": backgrounds[:, :n_s],
            "observations": observations,
        }

    def forward(
        self,
        x: dict[str, torch.Tensor],
        *,
        model_comm_group: Any = None,
        grid_shard_sizes: dict | None = None,
        **_kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """``{dataset: [b, 1, k R, grid, var_out]}``: R members per target, target-major (normalised)."""
        if grid_shard_sizes and any(sizes is not None for sizes in grid_shard_sizes.values()):
            msg = "the member generator does not shard the grid yet; use num_gpus_per_model: 1 (data parallel)"
            raise NotImplementedError(msg)
        parts = self.split(x[self.dataset])
        backgrounds = parts["backgrounds"]
        k = backgrounds.shape[1]
        generator = torch.Generator(device=backgrounds.device)
        generator.manual_seed(sample_key(backgrounds, self.split_seed))
        generated = self.core.generate(
            backgrounds,
            parts["guide_analyses"],
            self.replicas * k,
            generator,
            guide_backgrounds=parts["guide_backgrounds"],
            observations=parts["observations"],
        )
        members = generated.grouped_by_start().flatten(1, 2)  # [b, k R, grid, var]
        normalised = members * self.output_mul + self.output_add
        out = normalised.new_zeros((*normalised.shape[:-1], self.n_outputs))
        out[..., self.analysis_out] = normalised
        return {self.dataset: out[:, None]}

    def predict_step(
        self,
        batch: dict[str, torch.Tensor],
        pre_processors: nn.ModuleDict,
        post_processors: nn.ModuleDict,
        n_step_input: int,
        model_comm_group: Any = None,
        gather_out: bool = True,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """Inference on ``batch[dataset] = [b, time, M, grid, var_in]`` (physical, guides first), physical out."""
        with torch.no_grad():
            fields = batch[self.dataset][:, :n_step_input]
            x = {self.dataset: pre_processors[self.dataset](fields, in_place=False)}
            y = self.forward(x, model_comm_group=model_comm_group, **kwargs)
            return {name: post_processors[name](value, in_place=False) for name, value in y.items()}

    def fill_metadata(self, md_dict: dict) -> None:
        md_dict["metadata_inference"][self.dataset]["shapes"] = {
            "variables": int(self.analysis_in.numel()),
            "input_timesteps": self.n_step_input,
            "ensemble": None,  # N_s guides and any number of targets
            "grid": None,
        }

    @property
    def variables(self) -> list[str]:
        """The analysis variables the core generates (its ``var`` axis), e.g. ``["x_an"]``."""
        return list(self.analysis_names)

    @property
    def n_parameters(self) -> int:
        """Learnable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def parameter_count_for(
    n_variables: int, settings: MemberGeneratorSettings | None = None, *, edge_dim: int = 3, node_dim: int = 0
) -> int:
    """Learnable parameters of the core for ``n_variables`` fields (independent of the grid and of N)."""
    n = 4
    graph = GridGraph(torch.zeros(n, dtype=torch.long), torch.arange(n), torch.zeros(n, edge_dim), n)
    core = MemberGeneratorCore(
        n_variables=n_variables,
        graph=graph,
        node_features=torch.zeros(n, node_dim) if node_dim else None,
        settings=settings,
    )
    return sum(p.numel() for p in core.parameters())


def check_variables(expected: Sequence[str], given: Sequence[str] | None, what: str) -> None:
    """Raise a :class:`UserInputError` when ``given`` variable names differ from the model's ``expected`` ones."""
    if given is not None and list(given) != list(expected):
        msg = f"{what} variables {list(given)} do not match the generator's {list(expected)} (same names, same order)"
        raise UserInputError(msg)
