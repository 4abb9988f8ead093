"""The member generator's drift and diffusion for generation without autograd: channels first, prepared once a call.

:meth:`~hybrid_eda.models.member_generator_core.MemberGeneratorCore.coefficients` rebuilds every input feature at
each field evaluation, stacks and concatenates them, embeds them and transposes the tokens to the graph blocks'
grid-first layout. When nothing is differentiated (the runner, the Lorenz-96 cycle, validation), most of that is
the same at every evaluation of one ``generate`` call, and on small problems (a 40-point ring, one variable, ten
members, latent 8) eager torch spends its time in the overhead of small operations and in ``[tokens, 8] @ [8, 8]``
matrix products, which CPU BLAS runs 4-5 times slower than the same product transposed. :class:`PreparedField`
computes the same drift and diffusion, equal to float32 rounding, with:

* channels first: the state ``x[var, b, n, grid]`` (for one variable the memory of ``[b, n, grid, var]``) and the
  tokens ``h[latent, b n, grid]``, so every product with a weight is ``[width, latent] @ [latent, tokens]``
  (:meth:`~hybrid_eda.layers.blocks.GridMessagePassing.forward_channels_first`,
  :meth:`~hybrid_eda.layers.member_mixing.MemberMixing.forward_channels_first`) and the neighbour sums are products
  with the dense kernels ``[grid, grid]`` (small grids only: :data:`MAX_DENSE_GRID`);
* the embedding ``W [features] + bias`` split by feature, ``W_z z + W_s s + W_p [m, r] + (W_g g + bias + time +
  node)``: the guide, state and observation features ``g``, the start anomaly ``s``, the node embedding and the time
  embedding (one per time) are embedded once per call; per evaluation only the member's ``z = (phi - c(t)) / sb``
  and its replica's pooled mean and log RMS ``m, r`` (one per replica, broadcast over its members);
* replicas as an axis, ``[., b R, k, grid]`` (``n = R k`` members): the pooled features and the member mixing are
  means over that axis, no scatter and no group checks;
* drift and diffusion by ``addcmul``.

It needs whole replicas (``n`` a multiple of ``k``: the cycle's ``n = k`` and training's ``n = R k``) and a grid of
at most :data:`MAX_DENSE_GRID` points; the core falls back to :meth:`coefficients` otherwise and whenever autograd
is on (training).
"""

from __future__ import annotations

import torch

from hybrid_eda.flows import SDECoefficients
from hybrid_eda.layers.ensemble_resolvent import ResolventSet
from hybrid_eda.layers.particle_attention import GuideSet

#: Smallest mean square kept before a log (unit-free); the core's ``_TINY``.
_TINY = 1e-12
#: Member features ahead of the pooled ones in the core's feature order: z, start anomaly, particle mean, log RMS.
_N_MEMBER_FEATURES = 4
#: Largest grid the prepared field takes (its neighbour sums use dense ``[grid, grid]`` kernels per head).
MAX_DENSE_GRID = 256


def to_channels_first(x: torch.Tensor) -> torch.Tensor:
    """``x[..., b, n, grid, var] -> [..., var, b, n, grid]`` (contiguous; no copy for one variable)."""
    return x.movedim(-1, -4).contiguous()


def from_channels_first(x: torch.Tensor) -> torch.Tensor:
    """``x[..., var, b, n, grid] -> [..., b, n, grid, var]`` (contiguous; no copy for one variable)."""
    return x.movedim(-4, -1).contiguous()


def supports(core: torch.nn.Module, n_members: int, k: int) -> bool:
    """Whether :class:`PreparedField` takes this generation: whole replicas and a small grid."""
    return n_members % k == 0 and int(core.n_grid) <= MAX_DENSE_GRID


class PreparedField:
    """``field(x[var, b, n, grid], t) -> SDECoefficients`` of one ``generate`` call (see the module docstring).

    Parameters
    ----------
    core : MemberGeneratorCore
        The generator (its weights are read, not copied: do not update them while the field is in use).
    context : GuideContext
        :meth:`~hybrid_eda.models.member_generator_core.MemberGeneratorCore.condition` of the call,
        ``[b, 1, grid, var]`` fields.
    start_anomaly : torch.Tensor
        ``[b, n, grid, var]``: each member's ``(b_i - xb) / sb``.
    replica : torch.Tensor
        ``[n]`` long, ``j // k``: whole replicas of ``k`` members each.
    guide_set, resolvent : optional
        As for :meth:`coefficients` (used only with the core's particle attention / ensemble resolvent on).
    """

    def __init__(
        self,
        core: torch.nn.Module,
        context,
        start_anomaly: torch.Tensor,
        replica: torch.Tensor,
        guide_set: GuideSet | None = None,
        resolvent: tuple[ResolventSet, torch.Tensor] | None = None,
    ) -> None:
        b, n, n_grid, n_var = start_anomaly.shape
        n_replicas = int(replica[-1]) + 1
        if n % n_replicas or n_grid > MAX_DENSE_GRID:
            raise ValueError(f"PreparedField needs whole replicas and grid <= {MAX_DENSE_GRID}: {n}, {n_grid}")
        self.core, self.replica, self.n_replicas = core, replica, n_replicas
        self.shape = (n_var, b, n, n_grid)
        self.k = n // n_replicas
        self.guide_set, self.resolvent = guide_set, resolvent
        dtype, device = start_anomaly.dtype, start_anomaly.device
        self.kernels = [mp.dense_kernels(core.graph, dtype, device) for mp in core.message_passing]
        # [var, b, 1, grid] each
        self.centre, self.delta = to_channels_first(context.centre), to_channels_first(context.delta)
        self.spread, self.rate = to_channels_first(context.spread), to_channels_first(context.rate)
        latent = core.settings.latent
        weight = core.embedding.weight.view(latent, n_var, -1)  # [latent, var, features]
        self.w_member = weight[:, :, 0].contiguous()  # [latent, var]
        self.w_pooled = torch.cat([weight[:, :, 2], weight[:, :, 3]], dim=1)  # [latent, 2 var]
        guide_features = context.guide_features.permute(3, 4, 0, 1, 2).reshape(-1, b * n_grid)  # [var f, b grid]
        w_fixed = weight[:, :, _N_MEMBER_FEATURES:].reshape(latent, -1)  # [latent, var f]
        fixed = torch.addmm(core.embedding.bias[:, None], w_fixed, guide_features).view(latent, b, 1, n_grid)
        if core.node_embedding is not None:
            fixed = fixed + core.node_embedding(core.node_features).t()[:, None, None, :]  # [latent, 1, 1, grid]
        start = weight[:, :, 1] @ to_channels_first(start_anomaly).view(n_var, -1)  # [latent, b n grid]
        self.base = start.view(latent, b, n, n_grid).add_(fixed).view(latent, -1)
        self.needs_values = bool(core.settings.particle_attention or resolvent is not None)
        self.start_anomaly = start_anomaly
        self._time: dict[float, torch.Tensor] = {}

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """``[latent, 1]``: the core's time embedding at ``t`` (0-d), computed once per time of the call."""
        key = float(t)
        if key not in self._time:
            core = self.core
            angle = (t * core.time_scale).reshape(1)
            self._time[key] = core.time_embedding(torch.cat([core.time_features(angle), t.reshape(1)]))[:, None]
        return self._time[key]

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> SDECoefficients:
        """Drift and diffusion ``[var, b, n, grid]`` of the particles ``x[var, b, n, grid]`` at time ``t`` (0-d)."""
        core = self.core
        n_var, b, n, n_grid = self.shape
        groups = (b * self.n_replicas, self.k, n_grid)
        anomaly = x - (self.centre + t * self.delta)  # [var, b, n, grid]
        z = anomaly / self.spread
        by_replica = z.view(n_var, *groups)
        mean = by_replica.mean(dim=2)  # [var, b R, grid]
        log_rms = 0.5 * torch.log((by_replica * by_replica).mean(dim=2) + _TINY)
        pooled = torch.cat([mean, log_rms]).view(2 * n_var, -1)
        pooled = torch.addmm(self.time_embedding(t), self.w_pooled, pooled)  # [latent, b R grid]
        h = torch.addmm(self.base, self.w_member, z.view(n_var, -1))  # [latent, b n grid]
        latent = h.shape[0]
        h.view(latent, *groups).add_(pooled.view(latent, groups[0], 1, n_grid))
        for mp, mixing, kernels in zip(core.message_passing, core.member_mixing, self.kernels, strict=True):
            h = mp.forward_channels_first(h.view(latent, b * n, n_grid), kernels)
            h = mixing.forward_channels_first(h.view(latent, *groups))
        weight, bias = core.output.weight, core.output.bias
        out = torch.addmm(bias[:, None], weight, h.view(latent, -1)).view(2, n_var, b, n, n_grid)
        correction, sigma = out.unbind(dim=0)  # [var, b, n, grid] each
        if self.needs_values:  # added one by one, in the order of coefficients()
            for term in self._ensemble_terms(z, h.view(latent, b, n, n_grid)):
                correction = correction + term
        drift = torch.addcmul(self.delta, self.rate, anomaly).addcmul_(self.spread, correction)
        return SDECoefficients(drift=drift, diffusion=self.spread * sigma)

    def _ensemble_terms(self, z: torch.Tensor, tokens: torch.Tensor) -> list[torch.Tensor]:
        """The particle attention and ensemble resolvent terms that are on, each ``[var, b, n, grid]`` (computed in
        the core's ``[b, n, grid, ...]`` layout from ``z`` and the tokens ``[latent, b, n, grid]``)."""
        core = self.core
        values = torch.stack([z.movedim(0, -1), self.start_anomaly], dim=-1)  # [b, n, grid, var, 2]
        terms = []
        if core.settings.particle_attention:
            natural = tokens.movedim(0, -1)  # [b, n, grid, latent]
            terms.append(core.particle_attention(natural, values, self.replica, self.n_replicas, self.guide_set))
        if self.resolvent is not None:
            prepared, guide_vals = self.resolvent
            terms.append(core.ensemble_resolvent(values, guide_vals, prepared, values.shape[1]))
        return [term.movedim(-1, 0) for term in terms]
