"""The variance emulator's core: M members of an EDA in, a distribution of the N-member std ``s_N`` out.

Glossary: N members in the full EDA, M fed to the emulator; a *channel* is one variable at one level; tokens
``h[grid, batch, channel, latent]``.

    members[b, M, grid, channel]   (physical units)
      -> pooled over members (order-free, any M >= 2): debiased log s_M, ensemble mean      (layers.set_pooling)
      -> token features: log s_M minus a reference log-spread per channel (unit-free), standardised ensemble
         mean, the log-spread noise of M members, the log-spread diffused over the grid at a few scales (up to
         ~2,000 km) minus the point's own, and the front indicator of the ensemble mean (its gradient magnitude
         relative to the grid's rms); + channel embedding + point embedding (lat/lon)  (layers.grid_features)
      -> R x [message passing on the data grid (learned smoothing kernels), column mixing]   (layers.blocks)
      -> per token: c = log s_M + delta (log s_N estimate), r (raw width)
      -> head: distribution tensor [b, 2, grid, channel] in the target's units                (layers.heads)

Why this shape: s_N is s_M plus sampling noise of relative size ~1/sqrt(2(M-1)) that is independent from point
to point while sigma_b is spatially coherent, so the gain comes from pooling the noisy log s_M over neighbours
(message passing), over the levels and variables of a column (column mixing) and from flow features (fronts:
gradients of the ensemble mean, seen through the neighbours). Working in log space with a residual on log s_M
makes the model unit-free (spreads of q and vo differ by 10 orders of magnitude) and the output positive; the
last layer starts at zero, so an untrained model predicts the debiased s_M.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from hybrid_eda.layers.blocks import ColumnMixing, GridGraph, GridMessagePassing, TokenMLP
from hybrid_eda.layers.grid_features import GridGradient, LatitudeRings, diffuse
from hybrid_eda.layers.heads import DistributionHead, LogNormalHead
from hybrid_eda.layers.set_pooling import member_spread

#: Pointwise features per token: centred log-spread, standardised mean, log-spread noise.
N_POINT_FEATURES = 3
#: Front features per token: the front indicator F of the ensemble mean and log(F + FRONT_OFFSET).
N_FRONT_FEATURES = 2
FRONT_OFFSET = 0.1
#: Largest front indicator passed on (a few grid points have F ~ 10 where the rms gradient is tiny).
FRONT_CAP = 10.0
#: Width the untrained head predicts (relative spread of s_N given s_M, about that of M = 5 members).
INITIAL_WIDTH = 0.3


@dataclasses.dataclass(frozen=True)
class VarianceEmulatorSettings:
    """Architecture of the emulator (one object, read by the core; the adapter fills it from the run config).

    Attributes
    ----------
    latent : int
        Latent size of a token.
    rounds : int
        Message-passing rounds (each followed by column mixing).
    heads : int
        Smoothing kernels per round (``latent`` is split among them).
    kernel_hidden : int
        Hidden size of the MLP from edge attributes to kernel logits.
    hidden_ratio : int
        Hidden width of the token updates, in units of ``latent`` (compute grows with it; 1 on CPUs).
    diffusion_steps : tuple of int
        Steps of the fixed grid diffusion whose results (of the log-spread) are token features; the radius grows
        like ``sqrt(steps)`` grid lengths (O32: 4, 16, 48 steps ~ 600, 1,200, 2,000 km). Empty: none.
    front_features : bool
        Pass the ensemble mean's front indicator (gradient magnitude over its grid rms) as token features.
    log_mean_feature : bool
        Pass ``log(ensemble mean / its climatological mean)`` of the positive channels (``positive``; q, o3:
        their errors scale with the field) as a token feature (0 for the others).
    front_zonal_anomaly : bool
        Take the front indicator of the mean's zonal anomaly (minus its latitude-ring mean; the climatological
        meridional gradient removed) rather than of the mean itself.
    use_neighbours : bool
        False: the no-message-passing ablation (same parameters, each point sees only itself: no learned
        messages, the diffused-minus-own and front features zero).
    gradient_checkpointing : bool
        Recompute each round in the backward pass (memory for time; for N80 x 137 levels on GPUs).
    """

    latent: int = 32
    rounds: int = 4
    heads: int = 4
    kernel_hidden: int = 16
    hidden_ratio: int = 1
    diffusion_steps: tuple[int, ...] = (4, 16, 48)
    front_features: bool = True
    front_zonal_anomaly: bool = True
    log_mean_feature: bool = False
    use_neighbours: bool = True
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        for name in ("latent", "rounds", "heads", "kernel_hidden", "hidden_ratio"):
            if int(getattr(self, name)) < 1:
                msg = f"emulator setting {name} must be >= 1, got {getattr(self, name)}"
                raise ValueError(msg)
        object.__setattr__(self, "diffusion_steps", tuple(int(n) for n in self.diffusion_steps))
        if list(self.diffusion_steps) != sorted(set(self.diffusion_steps)) or any(n < 1 for n in self.diffusion_steps):
            msg = f"diffusion_steps must be increasing positive integers, got {self.diffusion_steps}"
            raise ValueError(msg)

    def __setstate__(self, state: dict) -> None:
        """Settings pickled before the grid features existed (in a checkpoint) mean a model without them."""
        state = {"diffusion_steps": (), "front_features": False, "front_zonal_anomaly": False, **state}
        object.__setattr__(self, "__dict__", state)

    @property
    def n_token_features(self) -> int:
        """Features per token before the embedding."""
        n_front = N_FRONT_FEATURES if self.front_features else 0
        return N_POINT_FEATURES + int(self.log_mean_feature) + len(self.diffusion_steps) + n_front


class VarianceEmulatorCore(nn.Module):
    """Framework-free variance emulator on one grid (plain tensors; see the module docstring).

    Parameters
    ----------
    channel_level, channel_variable : torch.Tensor
        Level group and variable group of each channel, long ``[channel]`` (0-based codes).
    input_mean, input_std : torch.Tensor
        Physical mean and std of each channel's field ``[channel]``, to standardise the ensemble mean.
    positive : torch.Tensor, optional
        Whether each channel's field is positive everywhere ``[channel]`` (bool; for ``log_mean_feature``).
    front_reference : torch.Tensor, optional
        For each channel, the channel whose front indicator it also sees ``[channel]`` (long; e.g. the
        temperature of its level, whose gradient marks fronts for every variable), -1 for none; default none.
    spread_reference : torch.Tensor, optional
        A typical spread of each channel ``[channel]`` (physical units; e.g. the target store's mean of s_N), to
        make the log-spread feature unit-free; default 1.
    node_coordinates : torch.Tensor
        Latitude and longitude of the grid points in radians ``[grid, 2]``.
    graph : GridGraph
        Edges between the grid points and their attributes (``[edges, edge_dim]``).
    settings : VarianceEmulatorSettings
        Architecture.
    head : DistributionHead, optional
        Output distribution (default log-normal).
    """

    def __init__(
        self,
        *,
        channel_level: torch.Tensor,
        channel_variable: torch.Tensor,
        input_mean: torch.Tensor,
        input_std: torch.Tensor,
        node_coordinates: torch.Tensor,
        graph: GridGraph,
        spread_reference: torch.Tensor | None = None,
        front_reference: torch.Tensor | None = None,
        positive: torch.Tensor | None = None,
        settings: VarianceEmulatorSettings | None = None,
        head: DistributionHead | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings = settings or VarianceEmulatorSettings()
        self.head = head or LogNormalHead()
        n_channels = len(channel_level)
        if not (len(channel_variable) == len(input_mean) == len(input_std) == n_channels):
            msg = "channel_level, channel_variable, input_mean and input_std must all have one entry per channel"
            raise ValueError(msg)
        self.n_channels = n_channels
        self.n_grid = graph.n_nodes
        if node_coordinates.shape != (self.n_grid, 2):
            shape = tuple(node_coordinates.shape)
            msg = f"node_coordinates must be [grid={self.n_grid}, 2] (lat, lon radians), got {shape}"
            raise ValueError(msg)

        self.register_buffer("input_mean", torch.as_tensor(input_mean, dtype=torch.float32))
        self.register_buffer("input_std", torch.as_tensor(input_std, dtype=torch.float32).clamp_min(1e-30))
        reference = torch.ones(n_channels) if spread_reference is None else torch.as_tensor(spread_reference)
        self.register_buffer("log_spread_reference", torch.log(reference.float().clamp_min(1e-30)))
        lat, lon = node_coordinates[:, 0].float(), node_coordinates[:, 1].float()
        point_features = torch.stack(
            [torch.sin(lat), torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon)], -1
        )
        self.register_buffer("point_features", point_features)  # [grid, 3]
        self.register_buffer("edge_src", graph.src.long())
        self.register_buffer("edge_dst", graph.dst.long())
        self.register_buffer("edge_attr", graph.edge_attr.float())  # [edges, edge_dim]

        if positive is None:
            positive = torch.zeros(n_channels, dtype=torch.bool)
        self.register_buffer("positive", torch.as_tensor(positive, dtype=torch.bool), persistent=False)
        self.gradient = self.rings = None
        if settings.front_features:
            self.gradient = GridGradient(node_coordinates.float(), graph.src, graph.dst)
            if settings.front_zonal_anomaly:
                self.rings = LatitudeRings(node_coordinates[:, 0])

        latent = settings.latent
        n_features = settings.n_token_features
        if front_reference is not None and settings.front_features:
            front_reference = torch.as_tensor(front_reference, dtype=torch.long)
            if front_reference.shape != (n_channels,) or bool((front_reference >= n_channels).any()):
                msg = f"front_reference must give one channel index (or -1) per channel, got {front_reference}"
                raise ValueError(msg)
            own = torch.arange(n_channels)
            self.register_buffer("front_reference", torch.where(front_reference < 0, own, front_reference))
            n_features += N_FRONT_FEATURES
        else:
            self.front_reference = None
        self.token_embedding = nn.Linear(n_features, latent)
        self.channel_embedding = nn.Parameter(torch.randn(n_channels, latent) * 0.1)
        self.point_embedding = nn.Linear(point_features.shape[-1], latent, bias=False)
        self.message_passing = nn.ModuleList(
            GridMessagePassing(
                latent,
                graph.edge_attr.shape[-1],
                heads=settings.heads,
                hidden=settings.kernel_hidden,
                hidden_ratio=settings.hidden_ratio,
                use_neighbours=settings.use_neighbours,
            )
            for _ in range(settings.rounds)
        )
        self.column_mixing = nn.ModuleList(
            ColumnMixing(latent, channel_level, channel_variable, hidden_ratio=settings.hidden_ratio)
            for _ in range(settings.rounds)
        )
        self.output = TokenMLP(latent, latent, 2, layer_norm=False)
        last = self.output.mlp[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor([0.0, self.head.raw_width(INITIAL_WIDTH)]))

    def __setstate__(self, state: dict) -> None:
        """Models pickled (in a checkpoint) before the grid features existed have none."""
        super().__setstate__(state)
        self._modules.setdefault("gradient", None)
        self._modules.setdefault("rings", None)
        if "front_reference" not in self._buffers:
            self.__dict__.setdefault("front_reference", None)

    @property
    def graph(self) -> GridGraph:
        return GridGraph(self.edge_src, self.edge_dst, self.edge_attr, self.n_grid)

    def _round(self, h: torch.Tensor, index: int) -> torch.Tensor:
        h = self.message_passing[index](h, self.graph)
        return self.column_mixing[index](h)

    def _grid_features(self, centred: torch.Tensor, mean: torch.Tensor) -> list[torch.Tensor]:
        """Diffused-minus-own log-spreads and front features, ``[b, grid, channel]`` each, of ``centred, mean``."""
        steps, features = self.settings.diffusion_steps, []
        reference = self.front_reference
        if not self.settings.use_neighbours:
            features += [torch.zeros_like(centred)] * len(steps)
            if self.settings.front_features:
                n_front = N_FRONT_FEATURES * (1 if reference is None else 2)
                features += [torch.zeros_like(centred)] * n_front
            return features

        def grid_major(x: torch.Tensor) -> torch.Tensor:
            return x.transpose(0, 1).reshape(self.n_grid, -1)  # [grid, b * channel]

        def back(x: torch.Tensor) -> torch.Tensor:
            return x.view(self.n_grid, centred.shape[0], -1).transpose(0, 1)

        if steps:
            diffused = diffuse(grid_major(centred), self.edge_src, self.edge_dst, self.n_grid, steps)
            features += [back(x) - centred for x in diffused]  # anomalies: O(noise), whatever the field
        if self.gradient is not None:
            flow = grid_major(mean) if self.rings is None else self.rings.anomaly(grid_major(mean))
            front = back(self.gradient.front_indicator(flow)).clamp_max(FRONT_CAP)
            features += [front, torch.log(front + FRONT_OFFSET)]
            if reference is not None:
                front = front.index_select(-1, reference)
                features += [front, torch.log(front + FRONT_OFFSET)]
        return features

    def token_features(self, members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Debiased log-spread ``[b, grid, channel]`` and token features ``[grid, b, channel, features]`` of
        ``members [b, M, grid, channel]`` (physical units): the model up to the embedding."""
        stats = member_spread(members.float(), dim=1)
        log_spread = stats.log_spread  # [b, grid, channel]
        centred = log_spread - self.log_spread_reference  # unit-free, pointwise
        mean = (stats.mean - self.input_mean) / self.input_std
        noise = torch.full_like(centred, stats.noise)
        point = [centred, mean, noise]
        if self.settings.log_mean_feature:
            ratio = stats.mean.clamp_min(1e-30) / self.input_mean.clamp_min(1e-30)
            point.append(torch.where(self.positive, torch.log(ratio), torch.zeros_like(ratio)))
        features = torch.stack([*point, *self._grid_features(centred, mean)], dim=-1)
        return log_spread, features.transpose(0, 1)

    def forward(self, members: torch.Tensor, log_target_mul: torch.Tensor | None = None) -> torch.Tensor:
        """Distribution of ``s_N`` per point and channel.

        Parameters
        ----------
        members : torch.Tensor
            ``[batch, M, grid, channel]`` in physical units, M >= 2 (any M; the members' order does not matter).
        log_target_mul : torch.Tensor, optional
            ``log`` of the target normaliser's factor per channel ``[channel]`` (default 0: physical units).

        Returns
        -------
        torch.Tensor
            Tensor form ``[batch, 2, grid, channel]`` of the head's distribution (parameters on axis 1).
        """
        if members.ndim != 4 or members.shape[-2:] != (self.n_grid, self.n_channels):
            msg = (
                f"members must be [batch, M, grid={self.n_grid}, channel={self.n_channels}], got "
                f"{tuple(members.shape)} (another grid or another variable list than the model was built for?)"
            )
            raise ValueError(msg)
        log_spread, features = self.token_features(members)
        h = (
            self.token_embedding(features)
            + self.channel_embedding
            + self.point_embedding(self.point_features)[:, None, None, :]
        )  # [grid, b, channel, latent]
        for index in range(self.settings.rounds):
            if self.settings.gradient_checkpointing and torch.is_grad_enabled():
                h = checkpoint(self._round, h, index, use_reentrant=False)
            else:
                h = self._round(h, index)
        delta, raw = self.output(h).transpose(0, 1).unbind(dim=-1)  # [b, grid, channel] each
        if log_target_mul is None:
            log_target_mul = torch.zeros(self.n_channels, dtype=delta.dtype, device=delta.device)
        return self.head((log_spread + delta)[:, None], raw[:, None], log_target_mul)
