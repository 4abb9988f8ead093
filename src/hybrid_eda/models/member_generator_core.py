"""The member generator's core: backgrounds and N_s guide analyses in, analysis members out, by a stochastic flow.

Glossary: k backgrounds to start from, N_s guides (real analyses, optionally with their own backgrounds), n members
to generate; ``[grid, var]`` fields in physical units. Each member ``phi`` follows, for ``t`` in ``[0, 1]``,

    d phi = u(phi, P_t, t | G) dt + s(phi, P_t, t | G) o dW,        phi(0) = its background,

(Stratonovich, elementwise noise; :mod:`hybrid_eda.flows`) where ``P_t`` is the particle ensemble the member
belongs to and ``G`` the guides. With ``xb, sb`` the mean and spread of all backgrounds (starts and guide
backgrounds), ``delta`` the guides' mean increment and ``c(t) = xb + t delta`` the moving centre,

    u = delta + rho (phi - c(t)) + sb * du_theta,        s = sb * sigma_theta,

``rho = log(s_a / s_gb)`` per point, the guide analyses' over the guide backgrounds' spread (``s_a / sb`` without
guide backgrounds; clamped; 0 if ``rescale_anomalies`` is off), and
``du_theta, sigma_theta`` two heads of one graph network. Its inputs at each point, all unit-free (divided by
``sb``) and pooled so that the members' and the guides' order does not matter:

    member       (phi - c(t)) / sb, its background's anomaly (b_i - xb) / sb
    particles    mean and log RMS of (phi_j - c(t)) / sb over the member's particle ensemble      (at time t)
    guides       delta / sb, log(s_a / sb), log(s_gb / sb), regression slope of the guides' analysis on
                 background anomalies, (mean of guide backgrounds - xb) / sb, a flag for guide backgrounds given
    state        (xb - variable_mean) / variable_scale, log(sb / variable_scale)
    observations (y - xb) / sb and an observed flag (1 observed, 0 not or NaN), with
                 ``observation_features`` on: the observations ``y[b, grid, var]`` on the grid (the L96 store's
                 ``obs``); without them the flag is 0 everywhere
      -> per point: Linear over [variables x features] (+ node features, + time embedding)
      -> R x [message passing on the grid graph (layers.blocks), member mixing within the ensemble]
      -> Linear to (du_theta, sigma_theta) per variable, initialised at zero
      (+ with ``particle_attention``: du_theta += an ensemble-space term, a learned linear combination of the
      other particles' anomalies and of the guides' analysis and background anomalies with weights from
      grid-pooled query-key products of the tokens, :mod:`hybrid_eda.layers.particle_attention`; its mixing
      weights start at zero; with ``ensemble_resolvent``: du_theta += learned sums of resolvents
      ``(I + P_t)^-1`` of the Gram matrix of all backgrounds, particles and guides, applied to the anomalies, and a
      mean increment in their span from the innovation, :mod:`hybrid_eda.layers.ensemble_resolvent`; also zero at
      initialisation).
    With ``ensemble_noise``, each step also adds an additive noise ``a_i``, the member's own Brownian increment
    projected into the span of all background anomalies through learned resolvents of their Gram matrix over the
    observed points (:mod:`hybrid_eda.layers.ensemble_noise`): the stochastic EnKF's ``K e_j``, which the elementwise
    diffusion cannot produce. Its scales start small but positive, so it is *not* part of the untrained closed form
    below (off, nothing changes).

Untrained model (zero last layer): a deterministic flow whose exact solution is
``phi(1) = xb + delta + exp(rho) (b_i - xb)``: the background ensemble shifted by the guides' mean increment and
its anomalies rescaled by the guides' spread ratio (``exp(rho) = 1`` with ``rescale_anomalies=False``: each
background shifted by the increment); the Heun scheme integrates the linear part to second order per step.

The diffusion depends on the state (through the neighbours and the pooled particles), so the noise is not
commutative and the stochastic Heun scheme's strong order here is 0.5, not 1 (both regimes measured in
``tests/test_flows.py``); a trained flow is a discretisation at its training ``steps``, and changing ``steps`` at
inference changes the members at that order.

Members and starts: member ``j`` starts from background ``j mod k`` and belongs to replica ``j // k``; the particle
ensemble of a member is its replica (at most k members, one per background; the last replica may be partial). So
``n = k`` gives one member per background, the usual call, and ``n = R k`` gives R independent generated ensembles
of the same backgrounds, each with the statistics of the ``n = k`` call: what training needs to score the spread
of the members of one background (:meth:`GeneratedMembers.grouped_by_start`).
"""

from __future__ import annotations

import dataclasses

import torch
from anemoi.models.layers.diffusion import SinusoidalEmbeddings
from torch import nn

from hybrid_eda.errors import UserInputError
from hybrid_eda.flows import (
    SDECoefficients,
    StochasticHeun,
    StratonovichScheme,
    TimeSchedule,
    UniformSchedule,
    brownian_increments,
    integrate,
)
from hybrid_eda.layers.blocks import GridGraph, GridMessagePassing
from hybrid_eda.layers.ensemble_noise import EnsembleNoise
from hybrid_eda.layers.ensemble_resolvent import EnsembleResolvent, ResolventSet, replica_masks
from hybrid_eda.layers.member_mixing import MemberMixing, group_mean
from hybrid_eda.layers.particle_attention import GuideSet, ParticleAttention, guide_values
from hybrid_eda.models import member_generator_field
from hybrid_eda.models.member_generator_field import PreparedField, from_channels_first, to_channels_first

#: Input features per variable: member (2), particles (2), guides (6), state (2).
N_FEATURES = 12
#: Extra features per variable with ``observation_features``: innovation (y - xb) / sb and an observed flag.
N_OBSERVATION_FEATURES = 2
#: Smallest mean square kept before a log (unit-free).
_TINY = 1e-12


@dataclasses.dataclass(frozen=True)
class MemberGeneratorSettings:
    """Architecture and flow of the generator (one object; an anemoi adapter fills it from the run config).

    Attributes
    ----------
    latent : int
        Latent size of a point's token.
    rounds : int
        Rounds of message passing, each followed by member mixing.
    heads, kernel_hidden, hidden_ratio : int
        Of :class:`~hybrid_eda.layers.blocks.GridMessagePassing`.
    time_features : int
        Sinusoidal features of ``t`` (even), angular frequencies ``2, 4, ..., 2^(time_features / 2)``.
    steps : int
        Default number of integration steps.
    rescale_anomalies : bool
        Include ``rho (phi - c(t))`` in the drift (the guides' spread ratio); off: the base flow is a pure shift.
    max_log_rescale : float
        ``|rho|`` is clamped to this (noisy spread ratios of few guides).
    spread_floor : float
        Floor of the background spread, relative to ``variable_scale`` (a point where all backgrounds agree).
    observation_features : bool
        Feed the observations (innovation and observed flag per point and variable) to the network.
    particle_attention : bool
        Add the ensemble-space attention term to the drift correction
        (:class:`~hybrid_eda.layers.particle_attention.ParticleAttention`); off in checkpoints made before it.
    attention_heads, attention_key_size : int
        Its heads and query/key size per head.
    ensemble_resolvent : bool
        Add the ensemble-space resolvent term to the drift correction: learned sums of resolvents of the Gram
        matrix of all backgrounds (particles and guides) applied to the anomalies, plus a mean increment in their
        span from the innovation (:class:`~hybrid_eda.layers.ensemble_resolvent.EnsembleResolvent`); off in
        checkpoints made before it.
    resolvent_terms : int
        Its number of resolvents (also the ensemble noise's).
    ensemble_noise : bool
        Add the ensemble-space additive noise to each flow step
        (:class:`~hybrid_eda.layers.ensemble_noise.EnsembleNoise`); off in checkpoints made before it.
    ensemble_noise_init : float
        Its initial scale per term and variable (climatological units; 0 adds nothing but does not train).
    ensemble_noise_centred : bool
        Centre it over each replica's members, as the EnKF centres its observation perturbations (False in the
        settings of checkpoints made before the setting; the model group turns it on).
    ensemble_noise_training_only : bool
        Add it only while the module is in training mode: the generator learns the spread with it, and generates
        (evaluation mode: validation, the runner, the Lorenz-96 cycle) without it. On the stochastic EnKF this made
        the generated members the deterministic part of the EnKF's update (see the README's EnKF rows).
    local_kalman : bool
        Start the flow from a localised perturbed-observation Kalman update of each member
        (:mod:`hybrid_eda.layers.local_kalman`): the covariance of all backgrounds (starts and guide backgrounds)
        with Gaspari-Cohn localisation, the observations, and their error std estimated from the guides' own
        (background, analysis) pairs; the guide backgrounds get its deterministic part, so the guide features
        measure what the guides' analyses add to it. The base flow does not shift by the guides' mean residual
        ``delta`` (it stays a feature): that residual is mostly the mean of the guides' own perturbations ``K e_i``,
        and as a common shift of every generated member it made the hybrid's mean worse (synthetic EDA, 14 + 36:
        spread/skill 0.94 against 0.98 without it). Needs observations, guide backgrounds and the grid's
        ``positions``; no parameters.
    kalman_radius_km : float
        Its Gaspari-Cohn half-width (the covariance is zero beyond twice it).
    """

    latent: int = 32
    rounds: int = 2
    heads: int = 2
    kernel_hidden: int = 16
    hidden_ratio: int = 1
    time_features: int = 8
    steps: int = 8
    rescale_anomalies: bool = True
    max_log_rescale: float = 2.0
    spread_floor: float = 1e-3
    observation_features: bool = False
    particle_attention: bool = False
    attention_heads: int = 2
    attention_key_size: int = 8
    ensemble_resolvent: bool = False
    resolvent_terms: int = 4
    ensemble_noise: bool = False
    ensemble_noise_init: float = 0.02
    ensemble_noise_centred: bool = False
    ensemble_noise_training_only: bool = False
    local_kalman: bool = False
    kalman_radius_km: float = 1500.0

    @property
    def n_features(self) -> int:
        """Input features per variable of the network."""
        return N_FEATURES + (N_OBSERVATION_FEATURES if self.observation_features else 0)

    def __post_init__(self) -> None:
        names = ("latent", "rounds", "heads", "kernel_hidden", "hidden_ratio", "time_features", "steps")
        for name in (*names, "attention_heads", "attention_key_size", "resolvent_terms"):
            if int(getattr(self, name)) < 1:
                raise UserInputError(f"generator setting {name} must be >= 1, got {getattr(self, name)}")
        if self.time_features % 2:
            raise UserInputError(f"time_features must be even (sine and cosine pairs), got {self.time_features}")
        if not float(self.kalman_radius_km) > 0:
            msg = f"kalman_radius_km must be > 0 (a localisation half-width), got {self.kalman_radius_km}"
            raise UserInputError(msg)


@dataclasses.dataclass(frozen=True)
class GuideContext:
    """What the flow keeps of the backgrounds and guides, per case ``[b, 1, grid, var]`` (member axis of size 1).

    Attributes
    ----------
    centre, spread : torch.Tensor
        Mean ``xb`` and floored spread ``sb`` of all backgrounds.
    delta : torch.Tensor
        The guides' mean increment.
    rate : torch.Tensor
        ``rho`` (zeros if anomalies are not rescaled).
    guide_features : torch.Tensor
        ``[b, 1, grid, var, 6]`` guide and ``[b, 1, grid, var, 2]`` state features, concatenated: ``[..., 8]``
        (``[..., 10]`` with the two observation features).
    """

    centre: torch.Tensor
    spread: torch.Tensor
    delta: torch.Tensor
    rate: torch.Tensor
    guide_features: torch.Tensor


@dataclasses.dataclass(frozen=True)
class GeneratedMembers:
    """Output of :meth:`MemberGeneratorCore.generate` (the leading ``b`` only if the inputs had one).

    Attributes
    ----------
    members : torch.Tensor
        ``[(b,) n, grid, var]`` analysis members, physical units.
    start_index : torch.Tensor
        ``[n]`` long: the background each member started from (``j mod k``).
    replica : torch.Tensor
        ``[n]`` long: the particle ensemble each member belongs to (``j // k``).
    times : torch.Tensor
        The flow's time grid ``[steps + 1]``.
    trajectory : torch.Tensor or None
        ``[(b,) steps + 1, n, grid, var]`` if asked for (``trajectory[..., 0, :, :, :]`` are the starts).
    """

    members: torch.Tensor
    start_index: torch.Tensor
    replica: torch.Tensor
    times: torch.Tensor
    trajectory: torch.Tensor | None = None

    def grouped_by_start(self) -> torch.Tensor:
        """``[(b,) k, R, grid, var]``: the R members generated from each of the k backgrounds (needs ``n = R k``).

        The ensemble axis ``R`` of background ``i`` is a sample of its analysis given the guides, e.g. to score
        with anemoi's CRPS or energy score against that background's real analysis.
        """
        k = int(self.start_index.max()) + 1
        n = self.start_index.numel()
        if n % k:
            raise UserInputError(f"{n} members are not a whole number of replicas of {k} backgrounds")
        shape = (*self.members.shape[:-3], n // k, k, *self.members.shape[-2:])
        return self.members.reshape(shape).transpose(-4, -3)


def member_increments(
    times: torch.Tensor, n_members: int, shape: tuple[int, ...], generator: torch.Generator | None
) -> torch.Tensor:
    """``[n, steps, *shape]``: the members' Brownian increments on ``times``, drawn member by member.

    The same numbers as stacking :func:`~hybrid_eda.flows.brownian_increments` ``(times, shape, generator)`` for
    each member in turn (each member's normals fill its own contiguous block, as a fresh tensor would), without
    repeating its per-call checks and scaling ``n`` times.
    """
    if n_members == 1:
        return brownian_increments(times, shape, generator)[None]
    steps = times.numel() - 1
    device = generator.device if generator is not None else times.device
    h = torch.diff(times).to(device=device)
    if times.ndim != 1 or steps < 1 or not bool((h > 0).all()):
        return torch.stack([brownian_increments(times, shape, generator) for _ in range(n_members)])  # its errors
    noise = torch.empty((n_members, steps, *shape), dtype=times.dtype, device=device)
    for member in noise:
        member.normal_(generator=generator)
    return noise.mul_(torch.sqrt(h).reshape(1, steps, *([1] * len(shape))))


def _var(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sample variance over ``dim`` (kept), two-pass: torch's CPU ``var`` over a middle axis of these small
    ensembles takes ~0.5 ms per call at 64 x 20 x 40 (Welford), 10-15x the mean-and-sum it equals to rounding."""
    centred = x - x.mean(dim=dim, keepdim=True)
    return centred.square().sum(dim=dim, keepdim=True) / (x.shape[dim] - 1)


def _std(x: torch.Tensor, dim: int) -> torch.Tensor:
    return _var(x, dim).sqrt()


def pool_guides(
    backgrounds: torch.Tensor,
    guides: torch.Tensor,
    guide_backgrounds: torch.Tensor | None = None,
    *,
    settings: MemberGeneratorSettings,
    variable_mean: torch.Tensor,
    variable_scale: torch.Tensor,
    observations: torch.Tensor | None = None,
) -> GuideContext:
    """Pool the starts ``backgrounds[b, k, grid, var]``, ``guides[b, N_s, grid, var]`` (and their backgrounds).

    Every statistic is a symmetric function of the backgrounds and of the (analysis, background) pairs of the
    guides, so the result does not depend on their order. ``observations[b, grid, var]`` (NaN where unobserved)
    are used only with ``settings.observation_features``.
    """
    everything = backgrounds if guide_backgrounds is None else torch.cat([backgrounds, guide_backgrounds], dim=1)
    centre = everything.mean(dim=1, keepdim=True)  # [b, 1, grid, var]
    floor = settings.spread_floor * variable_scale
    spread = torch.sqrt(_var(everything, 1) + floor**2)
    guide_mean, guide_spread = guides.mean(dim=1, keepdim=True), _std(guides, 1)
    zeros = torch.zeros_like(centre)
    if guide_backgrounds is None:
        delta = guide_mean - centre
        reference_spread = spread
        slope, gb_spread, gb_offset, flag = zeros, zeros, zeros, zeros
    else:
        gb_mean = guide_backgrounds.mean(dim=1, keepdim=True)
        delta = guide_mean - gb_mean
        gb_var = _var(guide_backgrounds, 1) + floor**2
        covariance = ((guides - guide_mean) * (guide_backgrounds - gb_mean)).sum(dim=1, keepdim=True)
        slope = (covariance / ((guides.shape[1] - 1) * gb_var)).clamp(-3.0, 3.0)
        reference_spread = torch.sqrt(gb_var)
        gb_spread = torch.log(reference_spread / spread)
        gb_offset = (gb_mean - centre) / spread
        flag = torch.ones_like(centre)
    log_ratio = torch.log(torch.sqrt(guide_spread**2 + floor**2) / reference_spread)
    rate = log_ratio.clamp(-settings.max_log_rescale, settings.max_log_rescale)
    if not settings.rescale_anomalies:
        rate = zeros
    state = [(centre - variable_mean) / variable_scale, torch.log(spread / variable_scale)]
    features = [delta / spread, torch.log(torch.sqrt(guide_spread**2 + floor**2) / spread)]
    features += [gb_spread, slope, gb_offset, flag]
    features += state
    if settings.observation_features:
        if observations is None:
            innovation, observed = zeros, zeros
        else:
            y = observations.unsqueeze(1)  # [b, 1, grid, var]
            observed = torch.isfinite(y).to(centre.dtype)
            innovation = torch.where(observed > 0, (torch.nan_to_num(y) - centre) / spread, zeros)
        features += [innovation, observed]
    return GuideContext(centre, spread, delta, rate, torch.stack(features, dim=-1))


class MemberGeneratorCore(nn.Module):
    """Framework-free member generator on one grid graph (see the module docstring).

    Parameters
    ----------
    n_variables : int
        Variables (channels) per grid point, ``var``.
    graph : GridGraph
        Edges of the grid (:func:`~hybrid_eda.layers.graphs.ring_graph`, :func:`~hybrid_eda.layers.graphs.sphere_graph`
        or an anemoi graph's data-to-data edges).
    variable_mean, variable_scale : torch.Tensor, optional
        Climatological mean and std of each variable ``[var]`` (physical units; default 0 and 1), for the state
        features and the spread floor.
    node_features : torch.Tensor, optional
        Fixed per-point features ``[grid, f]`` (e.g. sin lat, cos lat cos lon, cos lat sin lon); none on a
        homogeneous grid such as the Lorenz-96 ring.
    settings : MemberGeneratorSettings, optional
    positions : torch.Tensor, optional
        ``[grid, 3]`` unit vectors of the grid points (any fixed order of the axes), for ``local_kalman``.
    """

    def __init__(
        self,
        *,
        n_variables: int,
        graph: GridGraph,
        variable_mean: torch.Tensor | None = None,
        variable_scale: torch.Tensor | None = None,
        node_features: torch.Tensor | None = None,
        settings: MemberGeneratorSettings | None = None,
        positions: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings = settings or MemberGeneratorSettings()
        self.n_variables = int(n_variables)
        self.n_grid = int(graph.n_nodes)
        mean = torch.zeros(n_variables) if variable_mean is None else torch.as_tensor(variable_mean).float()
        scale = torch.ones(n_variables) if variable_scale is None else torch.as_tensor(variable_scale).float()
        if mean.shape != (n_variables,) or scale.shape != (n_variables,) or not bool((scale > 0).all()):
            msg = f"variable_mean and variable_scale must be [var={n_variables}] with scale > 0"
            raise UserInputError(msg)
        self.register_buffer("variable_mean", mean)
        self.register_buffer("variable_scale", scale)
        self.register_buffer("edge_src", graph.src.long())
        self.register_buffer("edge_dst", graph.dst.long())
        self.register_buffer("edge_attr", graph.edge_attr.float())
        latent = settings.latent
        if settings.local_kalman:
            if positions is None or tuple(positions.shape) != (self.n_grid, 3):
                shape = None if positions is None else list(positions.shape)
                msg = f"local_kalman needs the grid's positions as [grid={self.n_grid}, 3] unit vectors, got {shape}"
                raise UserInputError(msg)
            self.register_buffer("positions", torch.as_tensor(positions).float())
        if node_features is not None:
            node_features = torch.as_tensor(node_features).float()
            if node_features.ndim != 2 or node_features.shape[0] != self.n_grid:
                msg = f"node_features must be [grid={self.n_grid}, f], got {tuple(node_features.shape)}"
                raise UserInputError(msg)
            self.register_buffer("node_features", node_features)
            self.node_embedding = nn.Linear(node_features.shape[1], latent, bias=False)
        else:
            self.node_features = None
            self.node_embedding = None
        half = settings.time_features // 2
        self.time_features = SinusoidalEmbeddings(num_channels=settings.time_features, max_period=2**half)
        self.time_scale = float(2**half)  # angles 2^half t, ..., 2 t
        self.time_embedding = nn.Linear(settings.time_features + 1, latent)
        self.embedding = nn.Linear(settings.n_features * n_variables, latent)
        self.message_passing = nn.ModuleList(
            GridMessagePassing(
                latent,
                graph.edge_attr.shape[-1],
                heads=settings.heads,
                hidden=settings.kernel_hidden,
                hidden_ratio=settings.hidden_ratio,
            )
            for _ in range(settings.rounds)
        )
        self.member_mixing = nn.ModuleList(
            MemberMixing(latent, hidden_ratio=settings.hidden_ratio) for _ in range(settings.rounds)
        )
        self.output = nn.Linear(latent, 2 * n_variables)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)
        if settings.particle_attention:  # built last: the other layers' initial weights do not change
            self.particle_attention = ParticleAttention(
                latent, n_variables, heads=settings.attention_heads, key_size=settings.attention_key_size
            )
        if settings.ensemble_resolvent:  # after the attention: its initial weights do not change either
            self.ensemble_resolvent = EnsembleResolvent(n_variables, terms=settings.resolvent_terms)
        if settings.ensemble_noise:  # draws no random numbers: the other layers' initial weights do not change
            self.ensemble_noise = EnsembleNoise(
                n_variables,
                terms=settings.resolvent_terms,
                init=settings.ensemble_noise_init,
                centred=settings.ensemble_noise_centred,
            )

    @property
    def graph(self) -> GridGraph:
        return GridGraph(self.edge_src, self.edge_dst, self.edge_attr, self.n_grid)

    # ----------------------------------------------------------------------------------------------- inputs
    def _check_inputs(
        self,
        backgrounds: torch.Tensor,
        guides: torch.Tensor,
        guide_backgrounds: torch.Tensor | None,
        observations: torch.Tensor | None = None,
    ) -> bool:
        """Validate shapes; return whether the inputs carry a leading batch axis."""
        if backgrounds.ndim not in (3, 4):
            msg = f"backgrounds must be [k, grid, var] or [batch, k, grid, var], got {tuple(backgrounds.shape)}"
            raise UserInputError(msg)
        batched = backgrounds.ndim == 4
        expected_ndim = backgrounds.ndim
        field = tuple(backgrounds.shape[-2:])
        if field != (self.n_grid, self.n_variables):
            msg = (
                f"backgrounds are [.., grid={field[0]}, var={field[1]}] but the generator was built for grid="
                f"{self.n_grid}, var={self.n_variables} (another grid or variable list?)"
            )
            raise UserInputError(msg)
        if guides.ndim != expected_ndim or tuple(guides.shape[-2:]) != field:
            msg = (
                f"guide_analyses {tuple(guides.shape)} and backgrounds {tuple(backgrounds.shape)} must be on the same "
                "grid with the same variables ([..., N_s, grid, var] and [..., k, grid, var])"
            )
            raise UserInputError(msg)
        if batched and guides.shape[0] != backgrounds.shape[0]:
            msg = f"guide_analyses have batch {guides.shape[0]} but backgrounds have batch {backgrounds.shape[0]}"
            raise UserInputError(msg)
        n_guides = guides.shape[-3]
        if n_guides < 2:
            msg = (
                f"the generator needs at least 2 guide analyses (N_s >= 2: their spread and mean increment are its "
                f"conditioning), got N_s = {n_guides}; pass more real analyses"
            )
            raise UserInputError(msg)
        if guide_backgrounds is not None and guide_backgrounds.shape != guides.shape:
            msg = (
                f"guide_backgrounds {tuple(guide_backgrounds.shape)} must match guide_analyses {tuple(guides.shape)}: "
                "one background per guide analysis, same grid and variables"
            )
            raise UserInputError(msg)
        if guide_backgrounds is None and backgrounds.shape[-3] < 2:
            msg = "with a single background and no guide_backgrounds there is no background spread; pass both"
            raise UserInputError(msg)
        if observations is not None:
            expected = (*backgrounds.shape[:-3], *field)
            if tuple(observations.shape) != expected:
                msg = (
                    f"observations must be [(batch,) grid, var] = {list(expected)} on the backgrounds' grid (NaN where "
                    f"unobserved), got {list(observations.shape)}"
                )
                raise UserInputError(msg)
        return batched

    def condition(
        self,
        backgrounds: torch.Tensor,
        guides: torch.Tensor,
        guide_backgrounds: torch.Tensor | None = None,
        observations: torch.Tensor | None = None,
    ) -> GuideContext:
        """Pool the backgrounds and guides ``[b, ., grid, var]`` into a :class:`GuideContext` (order-free)."""
        return pool_guides(
            backgrounds,
            guides,
            guide_backgrounds,
            settings=self.settings,
            variable_mean=self.variable_mean,
            variable_scale=self.variable_scale,
            observations=observations,
        )

    # ----------------------------------------------------------------------------------------------- field
    def coefficients(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: GuideContext,
        start_anomaly: torch.Tensor,
        replica: torch.Tensor,
        n_replicas: int,
        guide_set: GuideSet | None = None,
        resolvent: tuple[ResolventSet, torch.Tensor] | None = None,
    ) -> SDECoefficients:
        """Drift and diffusion of the particles ``x[b, n, grid, var]`` at time ``t`` (0-d).

        ``start_anomaly[b, n, grid, var]`` is each member's ``(b_i - xb) / sb``; ``replica[n]`` its ensemble;
        ``guide_set`` the guides for the particle attention (:meth:`guide_set`; used only with that setting on);
        ``resolvent`` the prepared resolvents and guide values ``[b, N_s, grid, var, 2]`` (:meth:`resolvent_set`).
        """
        b, n = x.shape[:2]
        centre = context.centre + t * context.delta
        z = (x - centre) / context.spread  # [b, n, grid, var]
        particle_mean = group_mean(z, replica, n_replicas, dim=1)
        particle_rms = 0.5 * torch.log(group_mean(z * z, replica, n_replicas, dim=1) + _TINY)
        member = torch.stack([z, start_anomaly, particle_mean, particle_rms], dim=-1)  # [b, n, grid, var, 4]
        pooled = context.guide_features.expand(b, n, *context.guide_features.shape[2:])
        features = torch.cat([member, pooled], dim=-1).flatten(-2)  # [b, n, grid, var * N_FEATURES]
        h = self.embedding(features)  # [b, n, grid, latent]
        angle = (t * self.time_scale).reshape(1)
        h = h + self.time_embedding(torch.cat([self.time_features(angle), t.reshape(1)]))
        if self.node_embedding is not None:
            h = h + self.node_embedding(self.node_features)
        h = h.flatten(0, 1).transpose(0, 1).unsqueeze(2)  # [grid, b * n, 1, latent]
        group = (torch.arange(b, device=x.device)[:, None] * n_replicas + replica[None, :]).reshape(-1)
        for mp, mixing in zip(self.message_passing, self.member_mixing, strict=True):
            h = mixing(mp(h, self.graph), group, b * n_replicas)
        out = self.output(h.squeeze(2)).transpose(0, 1).reshape(b, n, self.n_grid, 2, self.n_variables)
        correction, sigma = out.unbind(dim=-2)  # [b, n, grid, var] each
        if self.settings.particle_attention or resolvent is not None:
            values = torch.stack([z, start_anomaly], dim=-1)  # [b, n, grid, var, 2]: both terms' particle values
        if self.settings.particle_attention:
            tokens = h.squeeze(2).transpose(0, 1).reshape(b, n, self.n_grid, -1)  # [b, n, grid, latent]
            correction = correction + self.particle_attention(tokens, values, replica, n_replicas, guide_set)
        if resolvent is not None:
            prepared, guide_vals = resolvent
            correction = correction + self.ensemble_resolvent(values, guide_vals, prepared, n)
        drift = context.delta + context.rate * (x - centre) + context.spread * correction
        return SDECoefficients(drift=drift, diffusion=context.spread * sigma)

    def guide_set(self, values: torch.Tensor | None) -> GuideSet | None:
        """The guide values ``[b, N_s, grid, var, 2]`` (:func:`guide_values`) encoded for the particle attention;
        None when off."""
        if not self.settings.particle_attention:
            return None
        return self.particle_attention.encode_guides(values)

    def resolvent_set(
        self,
        starts: torch.Tensor,
        guides: torch.Tensor,
        guide_backgrounds: torch.Tensor | None,
        observations: torch.Tensor | None,
        context: GuideContext,
        n_members: int,
        values: torch.Tensor | None,
    ) -> tuple[ResolventSet, torch.Tensor] | None:
        """Prepared resolvents of ``starts[b, k, grid, var]`` and the guides (with their backgrounds and the
        observations ``[b, grid, var]``, NaN unobserved), with the guide values ``[b, N_s, grid, var, 2]``
        (:func:`guide_values`); None when ``ensemble_resolvent`` is off."""
        if not self.settings.ensemble_resolvent:
            return None
        scale = self.variable_scale
        particle, guide = self._anomaly_features(starts, guides, guide_backgrounds, context)
        centre = context.centre.squeeze(1)  # [b, grid, var]
        if observations is None:
            innovation = torch.zeros_like(centre)
        else:
            observed = torch.isfinite(observations)
            innovation = torch.where(observed, (torch.nan_to_num(observations) - centre) / scale, 0.0)
        rhs = torch.stack([innovation, context.delta.squeeze(1) / scale], dim=1)  # [b, 2, grid, var]
        masks = replica_masks(starts.shape[1], n_members, dtype=starts.dtype, device=starts.device)
        prepared = self.ensemble_resolvent.prepare(particle, guide, rhs, masks)
        return prepared, values

    def _anomaly_features(
        self, starts: torch.Tensor, guides: torch.Tensor, guide_backgrounds: torch.Tensor | None, context: GuideContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``F_j``: the starts' and the guides' background anomalies in climatological units (zeros for guides
        without backgrounds), ``[b, k, grid, var]`` and ``[b, N_s, grid, var]``."""
        particle = (starts - context.centre) / self.variable_scale
        if guide_backgrounds is None:
            return particle, torch.zeros_like(guides)
        return particle, (guide_backgrounds - context.centre) / self.variable_scale

    def noise_increments(
        self,
        increments: torch.Tensor,
        starts: torch.Tensor,
        guides: torch.Tensor,
        guide_backgrounds: torch.Tensor | None,
        observations: torch.Tensor | None,
        context: GuideContext,
        replica: torch.Tensor,
    ) -> torch.Tensor | None:
        """The ensemble-space noise ``[steps, b, n, grid, var]`` (physical units) from the members' Brownian
        ``increments[steps, b, n, grid, var]`` (:mod:`hybrid_eda.layers.ensemble_noise`); None when off (or, with
        ``ensemble_noise_training_only``, in evaluation mode)."""
        if not self.settings.ensemble_noise or (self.settings.ensemble_noise_training_only and not self.training):
            return None
        particle, guide = self._anomaly_features(starts, guides, guide_backgrounds, context)
        observed = None if observations is None else torch.isfinite(observations).to(particle.dtype)
        masks = replica_masks(starts.shape[1], replica.numel(), dtype=starts.dtype, device=starts.device)
        prepared = self.ensemble_noise.prepare(particle, guide, observed, masks)
        return self.ensemble_noise(increments, prepared, replica, int(replica.max()) + 1) * self.variable_scale

    def kalman_starts(
        self,
        x0: torch.Tensor,
        starts: torch.Tensor,
        guides: torch.Tensor,
        guide_backgrounds: torch.Tensor | None,
        observations: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``local_kalman``: the members' starts ``x0[b, n, grid, var]``, the backgrounds ``starts[b, k, ...]`` (the
        first replica's updated starts) and the guide backgrounds ``[b, N_s, ...]`` after the localised Kalman
        update (:func:`~hybrid_eda.layers.local_kalman.localised_update`): each member with its own observation
        perturbation (drawn after the Brownian increments, member by member), the guide backgrounds without one (the
        update's deterministic part, so the guides' order does not matter)."""
        from hybrid_eda.layers.local_kalman import guided_update

        if observations is None or guide_backgrounds is None:
            missing = "observations" if observations is None else "guide_backgrounds"
            raise UserInputError(
                f"this generator starts from a localised Kalman update (local_kalman) and needs the {missing} of "
                "the cycle: pass observations [(b,) grid, var] (NaN unobserved) and the guides' own backgrounds"
            )
        n, k = x0.shape[1], starts.shape[1]
        floor = float(self.settings.spread_floor) * float(self.variable_scale.min())
        # the k backgrounds (replica 0: member j < k starts from background j), the other replicas' starts, the guides
        members = torch.cat([starts, x0[:, k:], guide_backgrounds], dim=1)
        noise = torch.zeros_like(members)  # the guides' rows stay zero: their update is deterministic (order-free)
        for j in range(max(n, k)):
            noise[:, j].normal_(generator=generator)
        with torch.no_grad():  # no parameters: only the data flow through it
            updated, _ = guided_update(members, starts, guides, guide_backgrounds, observations, self.positions,
                                       self.settings.kalman_radius_km, noise, floor)  # fmt: skip
        starts_a = updated[:, :k]
        x0 = torch.cat([starts_a, updated[:, k : max(n, k)]], dim=1)[:, :n]
        return x0, starts_a, updated[:, max(n, k) :]

    # ----------------------------------------------------------------------------------------------- generate
    def generate(
        self,
        backgrounds: torch.Tensor,
        guide_analyses: torch.Tensor,
        n_members: int,
        generator: torch.Generator | None,
        *,
        guide_backgrounds: torch.Tensor | None = None,
        observations: torch.Tensor | None = None,
        steps: int | None = None,
        schedule: TimeSchedule | None = None,
        scheme: StratonovichScheme | None = None,
        increments: torch.Tensor | None = None,
        return_trajectory: bool = False,
    ) -> GeneratedMembers:
        """Generate ``n_members`` analysis members from ``backgrounds`` guided by ``guide_analyses`` (differentiable).

        Without autograd (the runner, the Lorenz-96 cycle, validation) and for whole replicas on a small grid, the
        flow is integrated channels first with what does not change over its steps prepared once
        (:class:`~hybrid_eda.models.member_generator_field.PreparedField`): the same members to float32 rounding,
        2-3 times faster on the Lorenz-96 ring.

        Parameters
        ----------
        backgrounds : torch.Tensor
            ``[k, grid, var]`` or ``[b, k, grid, var]`` (physical units): the members' starts, ``k >= 1``.
        guide_analyses : torch.Tensor
            ``[N_s, grid, var]`` or ``[b, N_s, grid, var]``, ``N_s >= 2``: real analyses of the same cycle.
        n_members : int
            Members to generate, any ``n >= 1``: member ``j`` starts from background ``j mod k`` and belongs to
            particle ensemble ``j // k`` (see the module docstring).
        generator : torch.Generator or None
            Source of the Brownian increments (drawn member by member, so member ``j``'s noise does not depend on
            ``n``); not
            used when ``increments`` are given. ``None``: torch's global generator (not reproducible).
        guide_backgrounds : torch.Tensor, optional
            The guides' own backgrounds, ``guide_analyses``' shape: then the increment is the guides' mean
            analysis minus their mean background and the guides' regression slope is a feature.
        observations : torch.Tensor, optional
            ``[(b,) grid, var]`` the cycle's observations on the grid, NaN where unobserved (physical units); read
            only with ``settings.observation_features`` (ignored otherwise).
        steps : int, optional
            Integration steps (default ``settings.steps``).
        schedule, scheme : optional
            Time grid (default uniform) and Stratonovich scheme (default stochastic Heun).
        increments : torch.Tensor, optional
            Brownian increments ``[(b,) n, steps, grid, var]`` to use instead of drawing them.
        return_trajectory : bool
            Also return the members at every time.

        Returns
        -------
        GeneratedMembers

        Raises
        ------
        UserInputError
            ``N_s < 2``; backgrounds, guides or guide backgrounds on another grid, with other variables or another
            batch; ``n_members < 1``; increments of the wrong shape.
        """
        batched = self._check_inputs(backgrounds, guide_analyses, guide_backgrounds, observations)
        if int(n_members) != n_members or n_members < 1:
            raise UserInputError(f"n_members must be an integer >= 1, got {n_members!r}")
        n_members = int(n_members)
        dtype = self.embedding.weight.dtype
        device = self.embedding.weight.device

        def as_batch(x: torch.Tensor | None) -> torch.Tensor | None:
            if x is None:
                return None
            x = x.to(dtype=dtype, device=device)
            return x if batched else x.unsqueeze(0)

        starts, guides, guide_bg = as_batch(backgrounds), as_batch(guide_analyses), as_batch(guide_backgrounds)
        obs = as_batch(observations) if self.settings.observation_features else None
        b, k = starts.shape[:2]
        steps = self.settings.steps if steps is None else steps
        times = (schedule or UniformSchedule()).times(steps, dtype=dtype, device=device)
        member = torch.arange(n_members, device=device)
        start_index, replica = member % k, torch.div(member, k, rounding_mode="floor")
        n_replicas = int(replica.max()) + 1
        field_shape = (self.n_grid, self.n_variables)
        if increments is None:
            # drawn member by member ([n][steps, b, grid, var]), so member j's path is the same whatever n is
            # and replica 0 of an n = R k call is the n = k call
            noise = member_increments(times, n_members, (b, *field_shape), generator)  # [n, steps, b, grid, var]
            increments = noise.to(device).permute(2, 0, 1, 3, 4)
        else:
            expected = (*((b,) if batched else ()), n_members, int(steps), *field_shape)
            if tuple(increments.shape) != expected:
                msg = f"increments must be {list(expected)} ([(b,) n, steps, grid, var]), got {list(increments.shape)}"
                raise UserInputError(msg)
            increments = increments.to(dtype=dtype, device=device)
            increments = increments if batched else increments.unsqueeze(0)
        x0 = starts.index_select(1, start_index)  # [b, n, grid, var]
        if self.settings.local_kalman:
            x0, starts, guide_bg = self.kalman_starts(x0, starts, guides, guide_bg, obs, generator)
        context = self.condition(starts, guides, guide_bg, obs)
        if self.settings.local_kalman:  # the guides' mean residual stays a feature, not a shift (see the setting)
            context = dataclasses.replace(context, delta=torch.zeros_like(context.delta))
        start_anomaly = (x0 - context.centre) / context.spread
        guide_vals = None  # the guides' [b, N_s, grid, var, 2], once for both ensemble-space terms
        if self.settings.particle_attention or self.settings.ensemble_resolvent:
            guide_vals = guide_values(guides, guide_bg, context.centre, context.spread)
        guide_set = self.guide_set(guide_vals)
        resolvent = self.resolvent_set(starts, guides, guide_bg, obs, context, n_members, guide_vals)

        def field(x: torch.Tensor, t: torch.Tensor) -> SDECoefficients:
            return self.coefficients(x, t, context, start_anomaly, replica, n_replicas, guide_set, resolvent)

        dw = increments.transpose(0, 2).transpose(1, 2)  # [steps, b, n, grid, var]
        additive = self.noise_increments(dw, starts, guides, guide_bg, obs, context, replica)
        scheme = scheme or StochasticHeun()
        if not torch.is_grad_enabled() and member_generator_field.supports(self, n_members, k):
            # the same flow, channels first, with what does not change over the steps prepared once (no autograd)
            solution = integrate(
                PreparedField(self, context, start_anomaly, replica, guide_set, resolvent),
                to_channels_first(x0),
                times,
                to_channels_first(dw),  # [steps, var, b, n, grid]
                scheme=scheme,
                return_trajectory=return_trajectory,
                additive=None if additive is None else to_channels_first(additive),
            )
            final = from_channels_first(solution.final)
            trajectory = None if solution.trajectory is None else from_channels_first(solution.trajectory)
        else:
            solution = integrate(
                field, x0, times, dw, scheme=scheme, return_trajectory=return_trajectory, additive=additive
            )
            final, trajectory = solution.final, solution.trajectory
        members = final if batched else final.squeeze(0)
        if trajectory is not None:
            trajectory = trajectory.transpose(0, 1)  # [b, steps + 1, n, grid, var]
            trajectory = trajectory if batched else trajectory.squeeze(0)
        return GeneratedMembers(members, start_index, replica, times, trajectory)


def base_flow_solution(
    backgrounds: torch.Tensor,
    guide_analyses: torch.Tensor,
    guide_backgrounds: torch.Tensor | None = None,
    *,
    settings: MemberGeneratorSettings | None = None,
) -> torch.Tensor:
    """Exact end point of the untrained generator's flow, ``xb + delta + exp(rho) (b_i - xb)``, ``[k, grid, var]``.

    What an untrained (zero last layer) :class:`MemberGeneratorCore` with ``variable_scale = 1`` approaches as its
    steps grow (see the module docstring). Unbatched inputs ``[k, grid, var]``, ``[N_s, grid, var]``.
    """
    settings = settings or MemberGeneratorSettings()
    n_var = backgrounds.shape[-1]
    mean, scale = torch.zeros(n_var, dtype=backgrounds.dtype), torch.ones(n_var, dtype=backgrounds.dtype)
    gb = None if guide_backgrounds is None else guide_backgrounds[None]
    context = pool_guides(
        backgrounds[None], guide_analyses[None], gb, settings=settings, variable_mean=mean, variable_scale=scale
    )
    out = context.centre + context.delta + torch.exp(context.rate) * (backgrounds[None] - context.centre)
    return out.squeeze(0)
