"""anemoi adapter of the variance emulator: ``model.model._target_: hybrid_eda.models.VarianceEmulator``.

Unpacks anemoi's run config once into plain tensors and a :class:`VarianceEmulatorSettings`, builds a
:class:`VarianceEmulatorCore` and translates between anemoi's tensors and the core's. Two datasets (see
``configs/variance_emulator_synthetic.yaml``)::

    x[input_dataset]    [batch, time=1, M, grid, var]  normalised members, every variable ``forcing``
    out[target_dataset] [batch, time=1, 2, grid, var]  distribution of s_N (tensor form, see
                                                        hybrid_eda.distributions), every variable ``diagnostic``

Each target variable is matched to the input variable of the same name without ``target_suffix``
(``t_std_137 -> t_137``). The members are brought back to physical units with the input normaliser and the
output is expressed in the target normaliser's units, which must be multiplicative (``none`` or ``std``: a
spread cannot have its mean subtracted). The model config block::

    model:
      model:
        _target_: hybrid_eda.models.VarianceEmulator
        input_dataset: members
        target_dataset: spread
        target_suffix: _std
        edge_attributes: [edge_length, edge_dirs]
        head: {_target_: hybrid_eda.layers.LogNormalHead}
        latent: 16
        rounds: 4
        heads: 4
        kernel_hidden: 16
        hidden_ratio: 1
        diffusion_steps: [4, 16, 48]
        front_features: True
        front_reference: t          # every channel also sees the front indicator of its level's temperature
        log_mean_feature: False     # log(mean / climatological mean) of the positive fields (q, o3)
        gradient_checkpointing: False
      emulator_no_mp: False          # True: the ablation without message passing
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from hybrid_eda.layers.blocks import GridGraph
from hybrid_eda.models.variance_core import VarianceEmulatorCore, VarianceEmulatorSettings

LOGGER = logging.getLogger(__name__)

_SETTINGS = tuple(field for field in VarianceEmulatorSettings.__dataclass_fields__ if field != "use_neighbours")


def _ordered_names(name_to_index: dict[str, int]) -> list[str]:
    return [name for name, _ in sorted(name_to_index.items(), key=lambda item: item[1])]


def split_channel_name(name: str) -> tuple[str, int]:
    """``"t_137" -> ("t", 137)``; a name without a numeric level suffix is level 0."""
    head, _, tail = name.rpartition("_")
    if head and tail.isdigit():
        return head, int(tail)
    return name, 0


def column_levels(variables: list[str], levels: list[int]) -> list[int]:
    """The level group of each channel: its level, except that a single-level variable (``lnsp_1``) among
    multi-level ones joins the lowest model level (the largest level number, ECMWF's model levels counting down
    from the top), whose errors it shares (surface pressure lives at the surface, not at model level 1)."""
    per_variable: dict[str, set[int]] = {}
    for variable, level in zip(variables, levels, strict=True):
        per_variable.setdefault(variable, set()).add(level)
    multi = [level for variable, level in zip(variables, levels, strict=True) if len(per_variable[variable]) > 1]
    if not multi:
        return list(levels)
    lowest = max(multi)
    return [lowest if len(per_variable[v]) == 1 else level for v, level in zip(variables, levels, strict=True)]


def _codes(values: list[Any]) -> torch.Tensor:
    table = {value: code for code, value in enumerate(dict.fromkeys(values))}
    return torch.tensor([table[value] for value in values], dtype=torch.long)


def normaliser_affine(processors: Any, data_indices: Any, statistics: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mul, add)`` over all of a dataset's variables such that ``normalised = physical * mul + add``.

    Built with the same processor configs and statistics anemoi's model interface uses; processors other than
    an ``InputNormalizer`` do not rescale and are ignored.
    """
    from anemoi.models.preprocessing.normalizer import InputNormalizer

    n_variables = len(data_indices.name_to_index)
    mul, add = torch.ones(n_variables), torch.zeros(n_variables)
    for processor in (processors or {}).values():
        built = instantiate(processor, data_indices=data_indices, statistics=statistics)
        if isinstance(built, InputNormalizer):
            mul, add = built._norm_mul.clone().float(), built._norm_add.clone().float()
    return mul, add


class VarianceEmulator(nn.Module):
    """The variance emulator with anemoi's model constructor contract (see the module docstring)."""

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
                f"the variance emulator maps the members of one date to the spread of the same date (task: "
                f"autoencoder); got {n_step_input} input and {n_step_output} output steps"
            )
            raise ValueError(msg)
        self.input_dataset = str(cfg.input_dataset)
        self.target_dataset = str(cfg.target_dataset)
        for name in (self.input_dataset, self.target_dataset):
            if name not in data_indices:
                msg = f"dataset '{name}' named in model.model is not among the training datasets {list(data_indices)}"
                raise ValueError(msg)
        inputs, targets = data_indices[self.input_dataset], data_indices[self.target_dataset]
        if len(targets.data.input.full) > 0:
            msg = (
                f"the target dataset '{self.target_dataset}' has input variables "
                f"{_ordered_names(targets.data.input.name_to_index)}: the model would see its target; declare "
                f"them all `diagnostic` in data.datasets.{self.target_dataset}"
            )
            raise ValueError(msg)

        # Channels: the target variables, each matched to an input variable.
        input_names = _ordered_names(inputs.data.input.name_to_index)  # order of x[..., var]
        self.target_names = _ordered_names(targets.model.output.name_to_index)  # order of out[..., var]
        suffix = str(cfg.get("target_suffix", "_std"))
        matched = [name.replace(suffix, "", 1) for name in self.target_names]
        missing = [t for t, name in zip(self.target_names, matched, strict=True) if name not in input_names]
        if missing:
            msg = (
                f"target variables {missing} have no input variable of the same name without '{suffix}' in "
                f"dataset '{self.input_dataset}' (inputs: {input_names}); set model.model.target_suffix"
            )
            raise ValueError(msg)
        self.input_names = matched  # the member fields the core reads, in channel order
        self.register_buffer("input_channels", torch.tensor([input_names.index(n) for n in matched]), persistent=True)

        data_config = model_config.data.datasets
        mul_in, add_in = normaliser_affine(
            data_config[self.input_dataset].get("processors"), inputs, statistics[self.input_dataset]
        )
        mul_out, add_out = normaliser_affine(
            data_config[self.target_dataset].get("processors"), targets, statistics[self.target_dataset]
        )
        data_in = [inputs.name_to_index[n] for n in matched]
        data_out = [targets.name_to_index[n] for n in self.target_names]
        if bool((add_out[data_out] != 0).any()) or bool((mul_out[data_out] <= 0).any()):
            msg = (
                f"the target normaliser of '{self.target_dataset}' must be multiplicative (`std` or `none`): a "
                "spread is positive and its distribution is scaled, not shifted"
            )
            raise ValueError(msg)
        self.register_buffer("input_mul", mul_in[data_in])
        self.register_buffer("input_add", add_in[data_in])
        self.register_buffer("log_target_mul", torch.log(mul_out[data_out]))

        # Grid, graph.
        node_coordinates = graph_data[self.input_dataset].x
        target_coordinates = graph_data[self.target_dataset].x
        if target_coordinates.shape != node_coordinates.shape or not torch.allclose(
            target_coordinates, node_coordinates, atol=1e-6
        ):
            msg = (
                f"the target dataset '{self.target_dataset}' is on another grid ({target_coordinates.shape[0]} "
                f"points) than the members '{self.input_dataset}' ({node_coordinates.shape[0]} points); build both "
                "stores from the same GRIB grid"
            )
            raise ValueError(msg)
        edges_key = (self.input_dataset, "to", self.input_dataset)
        if edges_key not in graph_data.edge_types:
            msg = f"graph has no edges {edges_key}: add a KNN graph of the data grid to the graph config"
            raise ValueError(msg)
        edges = graph_data[edges_key]
        attributes = list(cfg.get("edge_attributes", ["edge_length", "edge_dirs"]))
        edge_attr = torch.cat([edges[name].reshape(edges.edge_index.shape[1], -1).float() for name in attributes], -1)
        graph = GridGraph(edges.edge_index[0], edges.edge_index[1], edge_attr, node_coordinates.shape[0])

        variables, levels = zip(*(split_channel_name(name) for name in matched), strict=True)
        groups = column_levels(list(variables), list(levels))
        front_reference = None
        reference = cfg.get("front_reference")
        if reference:
            where = {(v, g): c for c, (v, g) in enumerate(zip(variables, groups, strict=True))}
            front_reference = torch.tensor([where.get((str(reference), g), -1) for g in groups])
            if bool((front_reference < 0).all()):
                msg = (
                    f"model.model.front_reference {reference!r} is not among the variables "
                    f"{sorted(set(variables))}; name one of them (e.g. t) or set it to null"
                )
                raise ValueError(msg)
        stats_in = statistics[self.input_dataset]
        settings = VarianceEmulatorSettings(
            **{name: cfg[name] for name in _SETTINGS if name in cfg},
            use_neighbours=not bool(model_config.model.get("emulator_no_mp", False)),
        )
        head_cfg = cfg.get("head") or {"_target_": "hybrid_eda.layers.LogNormalHead"}
        self.core = VarianceEmulatorCore(
            channel_level=_codes(groups),
            channel_variable=_codes(list(variables)),
            input_mean=torch.as_tensor(stats_in["mean"][data_in]),
            input_std=torch.as_tensor(stats_in["stdev"][data_in]),
            node_coordinates=node_coordinates,
            graph=graph,
            spread_reference=torch.as_tensor(statistics[self.target_dataset]["mean"][data_out]),
            front_reference=front_reference,
            positive=torch.as_tensor(stats_in["minimum"][data_in]) > 0,
            settings=settings,
            head=instantiate(head_cfg),
        )
        self.n_step_input = n_step_input
        LOGGER.info(
            "variance emulator: %d channels, %d grid points, %d edges, %d parameters",
            len(matched),
            graph.n_nodes,
            graph.src.numel(),
            sum(p.numel() for p in self.parameters() if p.requires_grad),
        )

    def forward(
        self,
        x: dict[str, torch.Tensor],
        *,
        model_comm_group: Any = None,
        grid_shard_sizes: dict | None = None,
        **_kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """``{target: [batch, 1, 2, grid, var]}`` from ``x[input] = [batch, 1, M, grid, var_in]`` (normalised)."""
        if grid_shard_sizes and any(sizes is not None for sizes in grid_shard_sizes.values()):
            msg = "the variance emulator does not shard the grid yet; use num_gpus_per_model: 1 (data parallel)"
            raise NotImplementedError(msg)
        members = x[self.input_dataset]
        if members.ndim != 5 or members.shape[1] != 1:
            msg = f"expected the members as [batch, time=1, M, grid, var], got {tuple(members.shape)}"
            raise ValueError(msg)
        members = members[:, 0][..., self.input_channels]  # [b, M, grid, channel]
        physical = (members - self.input_add) / self.input_mul
        out = self.core(physical, self.log_target_mul)  # [b, 2, grid, channel]
        return {self.target_dataset: out[:, None]}

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
        """Inference: ``batch[input] = [batch, time, M, grid, var]`` (physical), post-processed distribution out."""
        with torch.no_grad():
            members = batch[self.input_dataset]
            if members.ndim == 4:  # anemoi's runners pass [batch, time, grid, var]: no members
                members = members[:, :, None]
            x = {self.input_dataset: pre_processors[self.input_dataset](members[:, :n_step_input], in_place=False)}
            y = self.forward(x, model_comm_group=model_comm_group, **kwargs)
            return {name: post_processors[name](value, in_place=False) for name, value in y.items()}

    def fill_metadata(self, md_dict: dict) -> None:
        for dataset, n_variables in ((self.input_dataset, len(self.input_channels)), (self.target_dataset, 0)):
            md_dict["metadata_inference"][dataset]["shapes"] = {
                "variables": n_variables,
                "input_timesteps": self.n_step_input,
                "ensemble": None,  # M members in, any M >= 2
                "grid": None,
            }

    @property
    def n_parameters(self) -> int:
        """Learnable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def parameter_count_for(n_channels: int, settings: VarianceEmulatorSettings | None = None, edge_dim: int = 3) -> int:
    """Learnable parameters of the core for ``n_channels`` channels (independent of the grid and M)."""
    settings = settings or VarianceEmulatorSettings()
    n = 4
    graph = GridGraph(torch.zeros(n, dtype=torch.long), torch.arange(n), torch.zeros(n, edge_dim), n)
    core = VarianceEmulatorCore(
        channel_level=torch.zeros(n_channels, dtype=torch.long),
        channel_variable=torch.arange(n_channels),
        input_mean=torch.zeros(n_channels),
        input_std=torch.ones(n_channels),
        node_coordinates=torch.zeros(n, 2),
        graph=graph,
        settings=settings,
    )
    return sum(p.numel() for p in core.parameters())
