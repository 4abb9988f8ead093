"""The global hybrid EDA: N_s real analysis members plus N - N_s generated ones, scored against the known truth.

For every date of a synthetic EDA (``hybrid-eda synthetic``: backgrounds, perturbed-observation analyses and the
truth, regenerated exactly from its manifest) the generator gets what a hybrid cycle has, and nothing else: all N
backgrounds and the first N_s analyses. Members ``N_s + 1 .. N`` start from their own backgrounds; the guides'
backgrounds are the first N_s (:class:`ModelSource`); a generator trained with observations
(``model.model.observations``) also gets the date's observations on the grid, the same for every member, NaN where
unobserved (read from the folder's ``truth/obs_{YYYYMMDDHH}.npz``: ``read_cases(..., observations=True)``). Four
ensembles are then scored per field, against the truth:

* ``full``: the N-member EDA (all analyses, what the hybrid replaces);
* ``real``: its first N_s members alone;
* ``hybrid:<source>``: the N_s real members plus the N - N_s members of each source (a generator checkpoint, the
  untrained flow, Gaussian resampling; :class:`MemberSource`);
* ``hybrid:more-real``: the upper bound, not an emulator: the N - N_s further analyses ``N + 1 .. 2N - N_s`` of the
  same synthetic EDA (regenerated with more members; member ``i`` does not depend on N), i.e. members exchangeable
  with the real ones, what a perfect generator would give (:class:`MoreRealMembers`).

Scores, area-weighted means over the grid, per field ``f`` and date, then averaged over dates:

* fair CRPS (anemoi's kernel ``CRPS`` with ``alpha = 1``, unbiased for the CRPS of the members' distribution);
* spread/skill ``sqrt(mean spread^2) / sqrt(mean (mean - truth)^2)`` and the reliability
  ``sqrt(1 + 1/M)`` times it (1 for a reliable M-member ensemble, whatever M; :mod:`hybrid_eda.flows.ensemble_scores`);
* the normalised MSE of the ensemble std against the N-member std, ``sum w (s - s_N)^2 / sum w s_N^2``.

Across fields (of different units) the summary averages ratios to the full EDA (CRPS, spread/skill) and the
normalised std MSEs; the issue's targets are :func:`targets` (CRPS and spread/skill within 2% of the full EDA,
std MSE at least 40% below that of the N_s real members).

Two properties of these scores bound what any generator can show. The fair CRPS is unbiased for every ensemble
size, so N_s exchangeable members have the fair CRPS of N in expectation: the standard ensemble CRPS (``crps_ens``,
``alpha = 0``) is the one that tells them apart. And the std of a hybrid shares only its N_s real members with the
full EDA's std. With ``K = N - N_s`` perfect (exchangeable) draws and Gaussian members, ``s_hyb^2 - s_N^2`` is a
fraction of the difference of two independent K-member variances and ``s_Ns^2 - s_N^2`` the same fraction of an
N_s-member minus a K-member one, so the MSE ratio is about ``(2 / (K - 1)) / (1 / (N_s - 1) + 1 / (K - 1))``: 0.54
at N = 50, N_s = 14, i.e. even a perfect generator cuts the std MSE by only ~46% (the measured ``more-real`` row).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_eda.errors import UserInputError

__all__ = [
    "EmulatorSource",
    "HybridCase",
    "HybridEvaluation",
    "MemberSource",
    "ModelSource",
    "MoreRealMembers",
    "absent_observation_files",
    "ensemble_scores",
    "evaluate_hybrid",
    "observation_file",
    "read_cases",
    "read_observations",
    "targets",
    "untrained_flow",
    "variable_of",
]

LOGGER = logging.getLogger(__name__)

#: Margins of the Done-when line: fair CRPS and spread/skill within 2% of the full EDA, std MSE 40% below N_s's.
CRPS_MARGIN, SPREAD_SKILL_MARGIN, STD_MSE_REDUCTION = 0.02, 0.02, 0.40


@dataclasses.dataclass(frozen=True, eq=False)
class HybridCase:
    """One date of an EDA: ``backgrounds, analyses [N, G, F]``, ``truth [G, F]`` and optionally the observations on
    the grid ``observations [G, F]`` (NaN where unobserved), physical units."""

    date: datetime
    variables: tuple[str, ...]
    backgrounds: np.ndarray
    analyses: np.ndarray
    truth: np.ndarray
    extra_analyses: np.ndarray | None = None
    observations: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.backgrounds.shape != self.analyses.shape or self.backgrounds.ndim != 3:
            raise UserInputError(
                f"backgrounds {self.backgrounds.shape} and analyses {self.analyses.shape} must both be [N, grid, field]"
            )
        if self.truth.shape != self.backgrounds.shape[1:]:
            raise UserInputError(f"truth {self.truth.shape} must be [grid, field] = {self.backgrounds.shape[1:]}")
        if self.observations is not None and self.observations.shape != self.truth.shape:
            raise UserInputError(
                f"observations {self.observations.shape} must be [grid, field] = {self.truth.shape} (NaN unobserved)"
            )


# --------------------------------------------------------------------------------------------------- data
def observation_file(path: str | Path, date: datetime) -> Path:
    """``path/truth/obs_{YYYYMMDDHH}.npz``: the observations of ``date`` in a synthetic EDA folder."""
    return Path(path) / "truth" / f"obs_{date.strftime('%Y%m%d%H')}.npz"


def absent_observation_files(path: str | Path, dates: Sequence[datetime]) -> list[Path]:
    """The :func:`observation_file` of each of ``dates`` that the folder ``path`` lacks."""
    return [f for f in (observation_file(path, d) for d in dates) if not f.is_file()]


def read_observations(path: str | Path, date: datetime, variables: Sequence[str], npoints: int) -> np.ndarray:
    """The observations of ``date`` on the grid, ``[G, F]`` in the order of ``variables`` (``t_1``, ...), NaN where
    unobserved (also every point of a field the file does not observe), from :func:`observation_file`."""
    file = observation_file(path, date)
    with np.load(file) as obs:
        names, values, index = [str(n) for n in obs["variables"]], obs["values"], obs["obs_index"]
    out = np.full((npoints, len(variables)), np.nan)
    for f, name in enumerate(variables):
        if name in names:
            out[index, f] = values[names.index(name)]
    return out


def read_cases(
    path: str | Path, dates: Sequence[int] | None = None, *, extra_members: int = 0, observations: bool = False
) -> tuple[Iterator[HybridCase], dict[str, Any]]:
    """The dates of a synthetic EDA folder (``hybrid-eda synthetic``) as :class:`HybridCase`, lazily.

    The folder's EDA is regenerated from its ``manifest.json`` (:func:`hybrid_eda.evaluation.data.config_from_manifest`,
    exact float64; the GRIB files hold the same values to 16-bit packing), date by date. ``extra_members > 0``
    regenerates it with ``N + extra_members`` members and keeps the last ones apart (``extra_analyses``): the first
    N are the folder's members whatever the total (one random stream per member). ``observations`` reads each date's
    observations from the folder (:func:`read_observations`) into ``HybridCase.observations``.

    Raises
    ------
    UserInputError
        No manifest, date indices out of range, or (with ``observations``) a date without its observation file.

    Returns
    -------
    cases : iterator of HybridCase
    info : dict
        ``grid`` (a :class:`~hybrid_eda.synthetic.grids.GaussianGrid`), ``members`` N, ``dates`` (all), ``seed``.
    """
    from hybrid_eda.evaluation.data import config_from_manifest
    from hybrid_eda.synthetic.eda import SyntheticEDA

    manifest = Path(path) / "manifest.json"
    if not manifest.is_file():
        raise UserInputError(
            f"{path} holds no manifest.json; give a synthetic EDA folder written by `hybrid-eda synthetic` (it has "
            "backgrounds, analyses and the truth the hybrid is scored against)"
        )
    config = config_from_manifest(json.loads(manifest.read_text()))
    n = config.members
    if extra_members:
        config = dataclasses.replace(config, members=n + int(extra_members))
    wanted = set(range(len(config.dates))) if dates is None else {int(i) for i in dates}
    if not wanted or min(wanted) < 0 or max(wanted) >= len(config.dates):
        raise UserInputError(f"date indices {sorted(wanted)} are not among the {len(config.dates)} dates of {path}")
    if observations:
        absent = [str(f) for f in absent_observation_files(path, [config.dates[i] for i in sorted(wanted)])]
        if absent:
            raise UserInputError(
                f"the generator was trained with observations but {path} has no observation file {absent[0]} "
                f"({len(absent)} of {len(wanted)} dates): give a synthetic EDA folder written by `hybrid-eda "
                "synthetic` (it writes truth/obs_*.npz), or evaluate a checkpoint trained without observations"
            )
    eda = SyntheticEDA(config)

    def cases() -> Iterator[HybridCase]:
        for state in eda.states():
            if state.index > max(wanted):
                return
            if state.index not in wanted:
                continue
            blocks = list(eda.fields(state))
            analyses = np.stack([b.analyses for b in blocks], axis=-1)  # [N + extra, G, F]
            names = tuple(b.name for b in blocks)
            obs = read_observations(path, state.date, names, eda.grid.npoints) if observations else None
            yield HybridCase(
                date=state.date,
                variables=names,
                backgrounds=np.stack([b.backgrounds[:n] for b in blocks], axis=-1),  # [N, G, F]
                analyses=analyses[:n],  # [N, G, F]
                truth=np.stack([b.truth for b in blocks], axis=-1),  # [G, F]
                extra_analyses=analyses[n:] if extra_members else None,
                observations=obs,  # [G, F] or None
            )

    info = {"grid": eda.grid, "members": n, "dates": tuple(config.dates), "seed": config.seed}
    return cases(), info


# --------------------------------------------------------------------------------------------------- sources
class MemberSource(ABC):
    """Emulated members of one case from what a hybrid cycle has: all backgrounds and the first N_s analyses."""

    #: Short name (the ``hybrid:<name>`` row) and what the table says about it.
    name: str = ""
    label: str = ""
    #: ``(date, N_s, members [N - N_s, G, F])`` of the latest call (:class:`~hybrid_eda.evaluation.hybrid_spread.
    #: RescaledSpread` rows reuse them instead of generating again).
    last: tuple[datetime, int, np.ndarray] | None = None

    def members(self, case: HybridCase, n_real: int, seed: int) -> np.ndarray:
        """Members ``N_s + 1 .. N`` ``[N - N_s, G, F]``: never sees ``case.analyses[N_s:]`` (only a view is passed)."""
        backgrounds, guides = case.backgrounds, case.analyses[:n_real]
        out = self._generate(backgrounds[n_real:], guides, backgrounds[:n_real], seed)
        expected = (backgrounds.shape[0] - n_real, *backgrounds.shape[1:])
        if out.shape != expected:
            raise ValueError(f"{self.name}: generated members have shape {out.shape}, expected {expected}")
        if not np.isfinite(out).all():
            raise RuntimeError(f"{self.name}: non-finite generated members at {case.date.isoformat()}")
        self.last = (case.date, n_real, out)
        return out

    @abstractmethod
    def _generate(self, starts: np.ndarray, guides: np.ndarray, guide_backgrounds: np.ndarray, seed: int) -> np.ndarray:
        """``starts [k, G, F]``, ``guides``/``guide_backgrounds [N_s, G, F]`` -> ``[k, G, F]`` members."""


class ModelSource(MemberSource):
    """A member generator with the public call ``generate(backgrounds, guide_analyses, n_members, generator, *,
    guide_backgrounds)`` (a :class:`~hybrid_eda.models.member_generator_core.MemberGeneratorCore`, or what
    ``hybrid_eda.models.load_member_generator(checkpoint)`` returns), physical units in and out.

    One member per start (``n_members = k``); its noise from ``torch.Generator().manual_seed(seed)``. A model trained
    with observations (``uses_observations``; ``observation_variables`` names, per analysis variable, its observation
    variable or None) gets ``case.observations`` of its observed variables, NaN for the others.
    """

    def __init__(self, model: Any, name: str, label: str, *, steps: int | None = None) -> None:
        self.model, self.name, self.label, self.steps = model, name, label, steps
        self.order: list[int] | None = None
        self._observations: np.ndarray | None = None  # [G, F] of the case being generated, model order

    @property
    def uses_observations(self) -> bool:
        """Whether the model was trained with observations (it then needs ``HybridCase.observations``)."""
        return bool(getattr(self.model, "uses_observations", False))

    def members(self, case: HybridCase, n_real: int, seed: int) -> np.ndarray:
        """As :meth:`MemberSource.members`, the fields in the model's order if it names them (``variables``).

        A checkpoint's variables are the store's (alphabetical: ``d_an_1, ..., vo_an_5``), the synthetic EDA's
        fields another order (``vo_1, d_1, ...``): each analysis variable ``t_an_3`` is the field ``t_3``.
        """
        if self.uses_observations and case.observations is None:
            raise UserInputError(
                f"{self.name}: the generator was trained with observations but the case of {case.date.isoformat()} "
                "has none; read the cases with read_cases(..., observations=True)"
            )
        names = getattr(self.model, "variables", None)
        if names is None:
            self._observations = case.observations if self.uses_observations else None
            return super().members(case, n_real, seed)
        fields = [v.replace("_an_", "_") if "_an_" in v else v.removesuffix("_an") for v in names]
        if sorted(fields) != sorted(case.variables):
            raise UserInputError(f"{self.name}: the model's fields {fields} are not the test EDA's {case.variables}")
        self.order = [case.variables.index(f) for f in fields]
        inverse = np.argsort(self.order)
        self._observations = None
        if self.uses_observations:
            observed = np.array([n is not None for n in getattr(self.model, "observation_variables", names)])
            self._observations = np.where(observed, case.observations[..., self.order], np.nan)  # [G, F]
        permuted = dataclasses.replace(case, variables=tuple(fields), backgrounds=case.backgrounds[..., self.order],
                                       analyses=case.analyses[..., self.order], truth=case.truth[..., self.order],
                                       extra_analyses=None, observations=None)  # fmt: skip
        out = super().members(permuted, n_real, seed)[..., inverse]
        self.last = (case.date, n_real, out)
        return out

    def _generate(self, starts, guides, guide_backgrounds, seed):
        import torch

        generator = torch.Generator().manual_seed(int(seed))
        extra = {} if self.steps is None else {"steps": self.steps}
        if self._observations is not None:
            extra["observations"] = torch.from_numpy(np.ascontiguousarray(self._observations, dtype=np.float32))
        with torch.no_grad():
            out = self.model.generate(
                torch.from_numpy(np.ascontiguousarray(starts, dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(guides, dtype=np.float32)),
                starts.shape[0],
                generator,
                guide_backgrounds=torch.from_numpy(np.ascontiguousarray(guide_backgrounds, dtype=np.float32)),
                **extra,
            )
        members = getattr(out, "members", out)  # GeneratedMembers, or a tensor
        return members.detach().cpu().numpy().astype(np.float64)


class EmulatorSource(MemberSource):
    """A Lorenz-96 member emulator (:mod:`hybrid_eda.l96.emulators`, e.g. ``gaussian``) on the flattened fields.

    Those emulators act on ``[k, n]`` states; here ``n = G F``, so the pointwise ones (``gaussian``: independent
    draws from the real analyses' mean and variance at each point and field) mean the same thing on the globe.
    Numpy noise from ``numpy.random.default_rng(seed)``.
    """

    def __init__(self, spec: str, label: str | None = None) -> None:
        from hybrid_eda.l96.emulators import get_emulator

        self.emulator = get_emulator(spec)
        self.name = self.emulator.name
        self.label = label or f"{self.name} resampling of the real analyses"

    def _generate(self, starts, guides, guide_backgrounds, seed):
        k, shape = starts.shape[0], starts.shape[1:]
        flat = {"guide_backgrounds": guide_backgrounds.reshape(guide_backgrounds.shape[0], -1)}
        out = self.emulator.generate(starts.reshape(k, -1), guides.reshape(guides.shape[0], -1), k,
                                     np.random.default_rng(int(seed)), **flat)  # fmt: skip
        return out.reshape(k, *shape)


class MoreRealMembers(MemberSource):
    """The upper bound, not an emulator: the case's ``extra_analyses`` (further members of the same EDA).

    Needs cases read with ``read_cases(..., extra_members=N - N_s)``.
    """

    name = "more-real"
    label = "more real analyses (a perfect generator: upper bound)"

    def members(self, case: HybridCase, n_real: int, seed: int) -> np.ndarray:
        k = case.analyses.shape[0] - n_real
        if case.extra_analyses is None or case.extra_analyses.shape[0] < k:
            held = 0 if case.extra_analyses is None else case.extra_analyses.shape[0]
            raise UserInputError(f"the upper bound needs {k} extra analyses per date, the cases hold {held}; read "
                                 f"them with read_cases(..., extra_members={k})")  # fmt: skip
        return case.extra_analyses[:k]

    def _generate(self, starts, guides, guide_backgrounds, seed):  # pragma: no cover - members() is overridden
        raise NotImplementedError


def untrained_flow(grid, backgrounds: np.ndarray, *, steps: int | None = None):
    """The untrained member generator core on ``grid`` (a deterministic shift + anomaly rescale flow).

    ``variable_mean``/``variable_scale`` (state features, spread floor) are the mean and std over the grid and
    members of ``backgrounds [N, G, F]`` (an input the generator may use); a sphere graph of the grid's points.
    """
    import torch

    from hybrid_eda.layers.graphs import sphere_graph
    from hybrid_eda.models.member_generator_core import MemberGeneratorCore, MemberGeneratorSettings

    flat = backgrounds.reshape(-1, backgrounds.shape[-1])
    settings = MemberGeneratorSettings() if steps is None else MemberGeneratorSettings(steps=steps)
    torch.manual_seed(0)  # the (unused) hidden layers of an untrained core: reproducible anyway
    return MemberGeneratorCore(
        n_variables=backgrounds.shape[-1],
        graph=sphere_graph(grid.latitudes, grid.longitudes),
        variable_mean=torch.tensor(flat.mean(axis=0), dtype=torch.float32),
        variable_scale=torch.tensor(np.maximum(flat.std(axis=0), 1e-30), dtype=torch.float32),
        settings=settings,
    )


# --------------------------------------------------------------------------------------------------- scores
def ensemble_scores(members: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Area-weighted scores ``[F]`` of ``members [M, G, F]`` against ``truth [G, F]`` (``weights [G]``, any scale).

    ``crps`` (fair: anemoi's ``CRPS(alpha=1)``), ``crps_ens`` (the standard ensemble CRPS, ``alpha=0``: it charges
    a finite ensemble ``E|X - X'| / (2 M)``, so it tells ensemble sizes apart where the fair one, unbiased for any
    M, does not), ``spread2`` (mean unbiased variance), ``mse`` (of the mean).
    """
    import torch
    from anemoi.training.losses import CRPS
    from anemoi.training.utils.enums import TensorDim

    if members.ndim != 3 or members.shape[1:] != truth.shape or members.shape[0] < 2:
        raise UserInputError(f"scores need members [M >= 2, G, F] and truth [G, F], got {members.shape}, {truth.shape}")
    w = np.asarray(weights, dtype=np.float64) / np.sum(weights)  # [G], sums to 1
    pred = torch.from_numpy(np.ascontiguousarray(members, dtype=np.float64))[None, None]  # [1, 1, M, G, F]
    target = torch.from_numpy(np.ascontiguousarray(truth, dtype=np.float64))[None, None, None]  # [1, 1, 1, G, F]
    crps = {}
    for name, alpha in (("crps", 1.0), ("crps_ens", 0.0)):
        loss = CRPS(alpha=alpha, backend="naive")
        loss.add_scaler(TensorDim.GRID, torch.from_numpy(w), name="node_weights")
        crps[name] = loss(pred, target, squash=False).numpy()  # [F]: sum over the grid of w * crps
    variance = members.var(axis=0, ddof=1)  # [G, F]
    error = np.square(members.mean(axis=0) - truth)
    return crps | {"spread2": w @ variance, "mse": w @ error}


def _std_errors(std: np.ndarray, reference: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    w = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    return {"std_se": w @ np.square(std - reference), "ref_std2": w @ np.square(reference)}


@dataclasses.dataclass
class HybridEvaluation:
    """Per-date, per-field sums of every ensemble (``full``, ``real``, ``hybrid:<source>``) and the maps.

    Attributes
    ----------
    variables : tuple of str
    n, n_real : int
        N and N_s.
    dates : list of datetime
    scores : dict
        ``{ensemble: {score: [D, F]}}`` (``crps``, ``spread2``, ``mse``, ``std_se``, ``ref_std2``).
    maps : dict
        ``{ensemble: [G, F]}`` ensemble std of the first date.
    labels : dict
        ``{ensemble: description}``.
    timings_s : dict
        Generation seconds per source, summed over dates.
    """

    variables: tuple[str, ...]
    n: int
    n_real: int
    dates: list[datetime] = dataclasses.field(default_factory=list)
    scores: dict[str, dict[str, list[np.ndarray]]] = dataclasses.field(default_factory=dict)
    maps: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    timings_s: dict[str, float] = dataclasses.field(default_factory=dict)

    def add(self, name: str, members: np.ndarray, case: HybridCase, weights: np.ndarray, reference_std: np.ndarray):
        """Score the ensemble ``members [M, G, F]`` of ``case`` under ``name``."""
        std = members.std(axis=0, ddof=1)
        rows = ensemble_scores(members, case.truth, weights) | _std_errors(std, reference_std, weights)
        for key, value in rows.items():
            self.scores.setdefault(name, {}).setdefault(key, []).append(value)
        if len(self.dates) == 1:
            self.maps[name] = std

    def per_field(self, name: str) -> dict[str, np.ndarray]:
        """Date-averaged scores ``[F]`` of ensemble ``name``: crps, spread_skill, reliability, std_nmse."""
        s = {key: np.stack(value) for key, value in self.scores[name].items()}  # [D, F]
        m = self.n if name != "real" else self.n_real
        spread_skill = np.sqrt(s["spread2"].mean(axis=0) / s["mse"].mean(axis=0))
        return {
            "crps": s["crps"].mean(axis=0),
            "crps_ens": s["crps_ens"].mean(axis=0),
            "spread_skill": spread_skill,
            "reliability": spread_skill * math.sqrt(1.0 + 1.0 / m),
            "rmse": np.sqrt(s["mse"].mean(axis=0)),
            "std_nmse": s["std_se"].sum(axis=0) / s["ref_std2"].sum(axis=0),
        }

    def summary(self) -> dict[str, Any]:
        """JSON-ready: per ensemble the field means of the ratios to the full EDA, the std MSEs and per-field rows."""
        full, real = self.per_field("full"), self.per_field("real")
        out: dict[str, Any] = {}
        for name in self.scores:
            row = self.per_field(name)
            crps_ratio = row["crps"] / full["crps"]
            ss_ratio = row["spread_skill"] / full["spread_skill"]
            crps_ens_ratio = row["crps_ens"] / full["crps_ens"]
            with np.errstate(divide="ignore", invalid="ignore"):
                reduction = 1.0 - row["std_nmse"] / real["std_nmse"]
            out[name] = {
                "label": self.labels.get(name, name),
                "members": self.n if name != "real" else self.n_real,
                "crps_ratio": float(crps_ratio.mean()),
                "crps_ratio_worst": float(crps_ratio[np.argmax(np.abs(crps_ratio - 1))]),
                "crps_ens_ratio": float(crps_ens_ratio.mean()),
                "spread_skill_ratio": float(ss_ratio.mean()),
                "spread_skill_ratio_worst": float(ss_ratio[np.argmax(np.abs(ss_ratio - 1))]),
                "reliability": float(row["reliability"].mean()),
                "std_nmse": float(row["std_nmse"].mean()),
                "std_mse_reduction": float(1.0 - row["std_nmse"].mean() / real["std_nmse"].mean()),
                "std_mse_reduction_worst": float(np.nanmin(reduction)) if name not in ("full", "real") else None,
                "fields": {
                    v: {key: float(value[i]) for key, value in row.items()} for i, v in enumerate(self.variables)
                },
                "by_variable": _by_variable(
                    self.variables, crps_ratio, crps_ens_ratio, ss_ratio, row["std_nmse"], real["std_nmse"]
                ),
            }
        return {
            "n": self.n,
            "n_real": self.n_real,
            "dates": [d.isoformat() for d in self.dates],
            "variables": list(self.variables),
            "ensembles": out,
            "targets": {name: targets(out[name]) for name in out if name.startswith("hybrid:")},
            "timings_s": {k: round(v, 2) for k, v in self.timings_s.items()},
        }


def variable_of(field: str) -> str:
    """The variable of a field: ``t_3`` -> ``t``, ``lnsp_1`` -> ``lnsp`` (a name without ``_`` is its own)."""
    return field.rsplit("_", 1)[0] if "_" in field else field


def _by_variable(
    fields: Sequence[str],
    crps_ratio: np.ndarray,
    crps_ens_ratio: np.ndarray,
    spread_skill_ratio: np.ndarray,
    std_nmse: np.ndarray,
    real_std_nmse: np.ndarray,
) -> dict[str, dict[str, float]]:
    """The summary's field means (ratios ``[F]``, std nMSEs ``[F]``) per variable, its levels together.

    A field ``t_3`` belongs to variable ``t`` (the name before the last ``_``; a name without one is its own
    variable). ``std_mse_reduction`` is ``1 - mean(std_nmse) / mean(real_std_nmse)`` over the variable's fields, as
    the summary's overall one is over all fields.
    """
    names = [variable_of(f) for f in fields]
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(names):
        idx = [i for i, n in enumerate(names) if n == name]
        out[name] = {
            "fields": len(idx),
            "crps_ratio": float(np.mean(crps_ratio[idx])),
            "crps_ens_ratio": float(np.mean(crps_ens_ratio[idx])),
            "spread_skill_ratio": float(np.mean(spread_skill_ratio[idx])),
            "std_mse_reduction": float(1.0 - np.mean(std_nmse[idx]) / np.mean(real_std_nmse[idx])),
        }
    return out


def targets(row: Mapping[str, Any]) -> dict[str, bool]:
    """The issue's Done-when checks for one hybrid row of :meth:`HybridEvaluation.summary`."""
    return {
        "crps_within_2pct": abs(row["crps_ratio"] - 1.0) <= CRPS_MARGIN,
        "spread_skill_within_2pct": abs(row["spread_skill_ratio"] - 1.0) <= SPREAD_SKILL_MARGIN,
        "std_mse_40pct_below_real": row["std_mse_reduction"] >= STD_MSE_REDUCTION,
    }


def evaluate_hybrid(
    cases: Iterator[HybridCase] | Sequence[HybridCase],
    sources: Sequence[MemberSource],
    n_real: int,
    weights: np.ndarray,
    *,
    seed: int = 0,
) -> HybridEvaluation:
    """Score the full EDA, its first ``n_real`` members and each source's hybrid on every case.

    Parameters
    ----------
    cases : iterable of HybridCase
        ``N`` members each (all the same N and fields).
    sources : sequence of MemberSource
        Their hybrids are ``hybrid:<source.name>``.
    n_real : int
        N_s >= 2, < N.
    weights : np.ndarray
        ``[G]`` area weights.
    seed : int
        Case ``i`` of source ``j`` draws its noise from seed ``seed + 1000 i + j``.
    """
    evaluation: HybridEvaluation | None = None
    names = [f"hybrid:{s.name}" for s in sources]
    if len(set(names)) != len(names):
        raise UserInputError(f"two member sources share a name: {names}; name them apart")
    for i, case in enumerate(cases):
        n = case.analyses.shape[0]
        if not 2 <= n_real < n:
            raise UserInputError(f"N_s = {n_real} real members of N = {n}: need 2 <= N_s < N (e.g. --real 14)")
        if evaluation is None:
            evaluation = HybridEvaluation(case.variables, n, n_real)
            evaluation.labels = {"full": f"full EDA ({n} members)", "real": f"{n_real} real members only"}
            for name, source in zip(names, sources, strict=True):
                evaluation.labels[name] = f"{n_real} real + {n - n_real} {source.label}"
        elif case.variables != evaluation.variables or n != evaluation.n:
            raise UserInputError(f"date {case.date.isoformat()} has other fields or members than the first date")
        evaluation.dates.append(case.date)
        reference = case.analyses.std(axis=0, ddof=1)
        evaluation.add("full", case.analyses, case, weights, reference)
        evaluation.add("real", case.analyses[:n_real], case, weights, reference)
        for j, (name, source) in enumerate(zip(names, sources, strict=True)):
            started = time.perf_counter()
            generated = source.members(case, n_real, seed + 1000 * i + j)
            evaluation.timings_s[name] = evaluation.timings_s.get(name, 0.0) + time.perf_counter() - started
            evaluation.add(name, np.concatenate([case.analyses[:n_real], generated]), case, weights, reference)
        LOGGER.info("hybrid members: %s scored (%d sources)", case.date.isoformat(), len(sources))
    if evaluation is None:
        raise UserInputError("no dates to evaluate")
    return evaluation
