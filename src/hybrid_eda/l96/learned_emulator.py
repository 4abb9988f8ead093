"""A trained member generator in the Lorenz-96 hybrid cycle: ``--emulator path/to/inference-last.ckpt``.

:class:`LearnedGenerator` is a :class:`~hybrid_eda.l96.emulators.MemberEmulator` that wraps a generator *runner*,
anything with the member generator contract (:func:`hybrid_eda.models.load_member_generator`'s runner, or a
:class:`~hybrid_eda.models.member_generator_core.MemberGeneratorCore` itself)::

    runner.generate(backgrounds[b, k, grid, var], guide_analyses[b, N_s, grid, var], n_members,
                    generator: torch.Generator, *, guide_backgrounds=[b, N_s, grid, var],
                    observations=[b, grid, var])  ->  [b, n_members, grid, var]  (or an object with ``.members``)

On Lorenz-96 the grid is the ring of ``n`` variables and there is one variable, so the cycle's ``[B, k, n]`` arrays
get a trailing ``var`` axis of size 1. The cycle's whole batch of B experiments goes through one call.

**What it sees.** Exactly what every emulator sees: the emulated members' backgrounds, the N_s real analyses, their
backgrounds and the window's observations (only if the runner's ``generate`` takes ``observations``; the first
observation time of the window, the analysis time, mapped onto the ring when every variable is observed). The
hidden analyses are never computed in a hybrid cycle, so they cannot be passed.

**Seeding.** Each call draws one 63-bit integer from every experiment's emulator stream and seeds a
``torch.Generator`` with the :class:`numpy.random.SeedSequence` of those integers: a run is reproducible bit for
bit with the same seed and batch, and changes with another seed. Unlike the numpy baselines, experiment ``k`` of a
batch is *not* the single run with seed ``s + k`` (the runner draws the noise of the whole batch at once); the
truths and observations still are, so rows stay paired seed by seed.

Specs (:func:`hybrid_eda.l96.emulators.get_emulator`)::

    path/to/inference-last.ckpt                       a trained checkpoint (H5's anemoi training)
    generator:checkpoint=PATH,steps=16                the same, with another number of flow steps
    generator:untrained=true                          the untrained core on the ring (the test double: the
                                                      background ensemble shifted by the guides' mean increment,
                                                      its anomalies rescaled by their spread ratio); labelled
                                                      ``untrained generator`` in tables
    generator:checkpoint=PATH,noise=0.6,spread=0.9    calibration knobs (below), with any of the above

**Calibration knobs.** A flow trained one cycle ahead can be over- or under-dispersed once it cycles (on the
4D-Var EDA 5+15 its hybrid's spread/skill was 1.63, on the EnKF 10+10 0.66), so two knobs rescale what it adds:

* ``noise=A`` (default 1, ``A >= 0``) scales the flow's **diffusion** by ``A``: the Brownian increments ``dW`` of
  every member are the ones the runner would draw itself, multiplied by ``A`` (in the Stratonovich schemes the noise
  enters only as ``s(phi) dW``, so ``A dW`` is exactly the diffusion ``A s``). ``A = 0`` is the deterministic flow
  (its drift still moves and spreads the members); ``A = 1`` draws nothing itself and is the trained flow bit for
  bit. The scaled increments go to the runner's ``generate(increments=...)`` (the checkpoint runner forwards them to
  its core); a runner without that parameter refuses ``noise != 1``.
* ``spread=A`` (default 1, ``A > 0``) rescales the generated members' anomalies about **their own mean** by ``A``,
  per experiment: ``x_j <- e + A (x_j - e)``, ``e`` the mean of the generated members. Their mean, hence the hybrid
  mean (the analysis), is unchanged; only the share of the spread the generated members carry changes. (About the
  hybrid mean the knob would also pull the generated mean towards the real analyses' and move the analysis.)

Both are tuned like inflation, on training seeds (never on the seeds of the table), together with it.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from hybrid_eda.errors import UserInputError
from hybrid_eda.l96.emulators import MemberEmulator

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from hybrid_eda.l96.config import ExperimentConfig

__all__ = ["CHECKPOINT_SUFFIXES", "LearnedGenerator", "load_runner", "torch_generator"]

LOGGER = logging.getLogger(__name__)

#: File endings that make an ``--emulator`` spec a checkpoint path.
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")


def torch_generator(rng: Any) -> torch.Generator:
    """A ``torch.Generator`` seeded from the cycle's emulator stream(s) (one 63-bit draw from each experiment's).

    ``rng`` is a :class:`numpy.random.Generator` or a :class:`~hybrid_eda.l96.seeding.BatchGenerator`; every
    experiment's stream advances by the same one draw per call, whatever the runner does.
    """
    import torch

    streams = list(rng) if hasattr(rng, "generators") else [rng]
    draws = [int(g.integers(0, 2**63 - 1)) for g in streams]
    seed = int(np.random.SeedSequence(draws).generate_state(1, np.uint64)[0]) & (2**63 - 1)
    return torch.Generator().manual_seed(seed)


@functools.lru_cache(maxsize=4)
def _cached_runner(path: str, mtime: float) -> Any:
    from hybrid_eda.models.member_generator_runner import load_member_generator

    return load_member_generator(path)


def load_runner(checkpoint: str | Path) -> Any:
    """The runner of a trained member generator checkpoint (loaded once per file and modification time).

    Raises
    ------
    UserInputError
        No such file; a file that is no torch checkpoint; or the loader's own error (a training checkpoint, a
        checkpoint of another model), with the spec it came from.
    """
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise UserInputError(
            f"--emulator {checkpoint}: no checkpoint at {path.resolve()}; give a member generator run's "
            "checkpoint/<run-id>/inference-last.ckpt (train one with anemoi-training train "
            "--config-name=member_generator_l96), or a baseline such as local-regression."
        )
    resolved = path.resolve()
    try:
        return _cached_runner(str(resolved), resolved.stat().st_mtime)
    except UserInputError as err:
        raise UserInputError(f"--emulator {checkpoint}: {err}") from err
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as err:
        raise UserInputError(
            f"--emulator {checkpoint}: {resolved} is not a torch checkpoint ({type(err).__name__}: {err}); give a "
            "member generator run's checkpoint/<run-id>/inference-last.ckpt."
        ) from err


def _untrained_core(n: int, steps: int | None) -> Any:
    """The untrained core on the Lorenz-96 ring of ``n`` points, one variable (deterministic: zero last layer)."""
    import torch

    from hybrid_eda.layers.graphs import ring_graph
    from hybrid_eda.models.member_generator_core import MemberGeneratorCore, MemberGeneratorSettings

    settings = MemberGeneratorSettings() if steps is None else MemberGeneratorSettings(steps=steps)
    torch.manual_seed(0)  # the initial weights of the layers before the (zero) last one: fixed
    return MemberGeneratorCore(n_variables=1, graph=ring_graph(n, 2), settings=settings).eval()


class LearnedGenerator(MemberEmulator):
    """The member generator as a hybrid-cycle emulator: one member per background, the batch in one call.

    Not in :data:`~hybrid_eda.l96.emulators.EMULATORS` (the table's default rows need no argument): the spec
    ``generator:...`` or a checkpoint path selects it (:func:`~hybrid_eda.l96.emulators.get_emulator`).

    Parameters
    ----------
    runner : object, optional
        Has ``generate(backgrounds, guide_analyses, n_members, generator, *, guide_backgrounds, ...)``
        (see the module docstring); ``None`` with ``untrained=True`` builds the untrained core on first use.
    source : str
        Where the runner came from (the checkpoint path), for ``repr`` and the tables.
    steps : int, optional
        Flow integration steps, passed to the runner when it takes ``steps`` (default: the runner's own).
    untrained : bool
        The runner is the untrained core (labelled ``untrained generator``).
    noise : float
        Scale ``A >= 0`` of the flow's diffusion (of its Brownian increments); 1 is the trained flow.
    spread : float
        Scale ``A > 0`` of the generated members' anomalies about their own mean; 1 leaves them as generated.

    Raises
    ------
    UserInputError
        No runner and not ``untrained``; ``steps < 1``; ``noise`` negative or not finite; ``spread`` not positive or
        not finite.
    """

    name: ClassVar[str] = "generator"
    one_per_background = True
    min_guides = 2
    supports_batch = True
    label: ClassVar[str] = "emulator"

    def __init__(
        self,
        runner: Any = None,
        *,
        source: str = "",
        steps: int | None = None,
        untrained: bool = False,
        noise: float = 1.0,
        spread: float = 1.0,
    ):
        if runner is None and not untrained:
            raise UserInputError("a LearnedGenerator needs a runner or untrained=True.")
        if steps is not None and steps < 1:
            raise UserInputError(f"generator steps must be >= 1, got {steps}.")
        noise, spread = float(noise), float(spread)
        if not (math.isfinite(noise) and noise >= 0):
            raise UserInputError(
                f"generator noise scales the flow's diffusion and must be a finite number >= 0, got {noise}; "
                "1 is the trained flow, 0 the deterministic one (e.g. generator:checkpoint=PATH,noise=0.6)."
            )
        if not (math.isfinite(spread) and spread > 0):
            raise UserInputError(
                f"generator spread scales the generated members' anomalies and must be a finite number > 0, got "
                f"{spread}; 1 leaves them as generated (e.g. generator:checkpoint=PATH,spread=0.8)."
            )
        self.runner, self.source, self.steps, self.untrained = runner, source, steps, untrained
        self.noise, self.spread = noise, spread
        self.label = "untrained generator" if untrained else "emulator"  # type: ignore[misc]
        self._accepts: set[str] | None = None

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | Path, steps: int | None = None, *, noise: float = 1.0, spread: float = 1.0
    ) -> LearnedGenerator:
        """The generator of a trained checkpoint (:func:`load_runner`)."""
        return cls(load_runner(checkpoint), source=str(checkpoint), steps=steps, noise=noise, spread=spread)

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> LearnedGenerator:
        """``generator:checkpoint=PATH[,steps=S][,noise=A][,spread=A]`` or ``generator:untrained=true[,...]``."""
        unknown = set(params) - {"checkpoint", "steps", "untrained", "noise", "spread"}
        if unknown:
            raise UserInputError(
                "emulator 'generator' takes checkpoint=PATH, steps=S, untrained=true, noise=A and spread=A, "
                f"got {', '.join(sorted(unknown))}."
            )
        steps = None
        if "steps" in params:
            try:
                steps = int(params["steps"])
            except ValueError:
                raise UserInputError(f"generator steps must be an integer, got {params['steps']!r}.") from None
        scales = {}
        for key in ("noise", "spread"):
            if key in params:
                try:
                    scales[key] = float(params[key])
                except ValueError:
                    raise UserInputError(
                        f"generator {key} must be a number, got {params[key]!r} (e.g. generator:checkpoint=PATH,"
                        f"{key}=0.8)."
                    ) from None
        untrained = params.get("untrained", "false").lower()
        if untrained not in ("true", "false", "1", "0"):
            raise UserInputError(f"generator untrained must be true or false, got {params['untrained']!r}.")
        if untrained in ("true", "1"):
            if "checkpoint" in params:
                raise UserInputError("give generator either checkpoint=PATH or untrained=true, not both.")
            return cls(None, source="untrained core", steps=steps, untrained=True, **scales)
        if "checkpoint" not in params:
            raise UserInputError(
                "emulator 'generator' needs checkpoint=PATH (a trained inference-last.ckpt) or untrained=true "
                "(the untrained core, a test double); e.g. generator:checkpoint=run/inference-last.ckpt,steps=8."
            )
        return cls.from_checkpoint(params["checkpoint"], steps=steps, **scales)

    def unsupported(self, config: ExperimentConfig) -> str | None:
        if self.runner is None:
            return None
        n_grid = getattr(self.runner, "n_grid", None)
        if n_grid is not None and int(n_grid) != int(config.n):  # type: ignore[arg-type]
            return (
                f"the member generator {self.source} was trained on a grid of {n_grid} points, the experiment has "
                f"n={config.n}; use --n {n_grid} or a generator trained on this ring."
            )
        return None

    # ------------------------------------------------------------------------------------------ generation
    def _runner_for(self, n: int) -> Any:
        if self.runner is None:
            self.runner = _untrained_core(n, self.steps)
        return self.runner

    def _accepted(self, runner: Any) -> set[str]:
        if self._accepts is None:
            parameters = inspect.signature(runner.generate).parameters
            self._accepts = {name for name in ("observations", "steps", "increments") if name in parameters}
        return self._accepts

    def _flow_steps(self, runner: Any) -> int:
        """The number of flow steps a call integrates: ``steps``, else the runner's (or its core's) own."""
        if self.steps is not None:
            return self.steps
        own = getattr(runner, "steps", None)
        return int(own if own is not None else runner.settings.steps)

    def _increments(self, b: int, n_members: int, n_grid: int, steps: int, generator: torch.Generator):
        """``noise`` times the Brownian increments ``[b, n_members, steps, grid, 1]`` the core would draw itself.

        The same draws in the same order as :meth:`MemberGeneratorCore.generate` (member by member, on its uniform
        time grid), so ``noise=A`` drives every member along ``A`` times the path of ``noise=1``.
        """
        import torch

        from hybrid_eda.flows.brownian import brownian_increments
        from hybrid_eda.flows.schedules import UniformSchedule

        times = UniformSchedule().times(steps, dtype=torch.float32)
        paths = [brownian_increments(times, (b, n_grid, 1), generator, dtype=torch.float32) for _ in range(n_members)]
        return self.noise * torch.stack(paths).permute(2, 0, 1, 3, 4)  # [n, steps, b, grid, 1] -> [b, n, steps, ...]

    def _check_noise(self, accepts: set[str], runner: Any) -> None:
        """``noise != 1`` needs a runner whose ``generate`` takes the scaled increments."""
        if "increments" not in accepts:
            raise UserInputError(
                f"generator noise={self.noise:g} needs a runner whose generate() takes increments=; "
                f"{type(runner).__name__} does not: use noise=1."
            )

    def _generate(self, backgrounds, guide_analyses, n_members, rng, *, guide_backgrounds, observations):
        import torch

        batched = backgrounds.ndim == 3  # [B, k, n]
        as_batch = (lambda a: a) if batched else (lambda a: a[None])
        runner = self._runner_for(backgrounds.shape[-1])
        accepts = self._accepted(runner)

        def field(a: np.ndarray | None) -> torch.Tensor | None:  # [B, m, n] -> [B, m, n, 1] float32
            return None if a is None else torch.as_tensor(as_batch(a)[..., None], dtype=torch.float32)

        kwargs: dict[str, Any] = {"guide_backgrounds": field(guide_backgrounds)}
        if "observations" in accepts and observations is not None:
            y = as_batch(observations)  # [B, L, p]
            if y.shape[-1] == backgrounds.shape[-1]:  # every variable observed: p = n, y[:, 0] on the ring
                kwargs["observations"] = torch.as_tensor(y[:, 0, :, None], dtype=torch.float32)  # [B, n, 1]
            else:
                LOGGER.warning(
                    "observations of %d of %d variables are not passed to the generator (it takes them on the grid)",
                    y.shape[-1],
                    backgrounds.shape[-1],
                )
        if self.steps is not None and "steps" in accepts:
            kwargs["steps"] = self.steps
        generator = torch_generator(rng)
        if self.noise != 1.0:  # scaled increments, drawn here exactly as the core would draw them
            self._check_noise(accepts, runner)
            b = 1 if not batched else backgrounds.shape[0]
            steps = self._flow_steps(runner)
            kwargs["increments"] = self._increments(b, int(n_members), backgrounds.shape[-1], steps, generator)
        with torch.no_grad():
            out = runner.generate(field(backgrounds), field(guide_analyses), int(n_members), generator, **kwargs)
        members = getattr(out, "members", out)  # the core returns GeneratedMembers
        members = members.detach().cpu().numpy() if isinstance(members, torch.Tensor) else np.asarray(members)
        members = members[..., 0].astype(np.float64)  # [B, n_members, n]
        if self.spread != 1.0:  # anomalies about the generated members' own mean, per experiment
            centre = members.mean(axis=1, keepdims=True)  # [B, 1, n]
            members = centre + self.spread * (members - centre)
        return members if batched else members[0]

    def __repr__(self) -> str:
        steps = "" if self.steps is None else f", steps={self.steps}"
        scales = "".join(f", {k}={v:g}" for k, v in (("noise", self.noise), ("spread", self.spread)) if v != 1.0)
        return f"LearnedGenerator({self.source!r}{steps}{scales})"
