"""The settings of the variance-impact experiment (:mod:`hybrid_eda.l96.variance_impact`), importable cheaply.

Kept apart from the runner so that the command line can show their defaults without importing the testbed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from hybrid_eda.l96.config import ExperimentConfig

__all__ = ["CORRELATIONS", "FIRST_SCORE_SEED", "VarianceImpactSettings"]

#: Fixed correlations C of the controls' B.
CORRELATIONS = ("climatology", "eda")
#: Seeds below this train (the emulator, the scale); scores use seeds at or above it.
FIRST_SCORE_SEED = 100


@dataclass(frozen=True)
class VarianceImpactSettings:
    """Every setting of the variance-impact experiment (the twin and EDA come from ``preset``).

    Parameters
    ----------
    preset : str
        Lorenz-96 preset of the twin (``sakov2008``: 40 variables, all observed every 6 h step, R = I).
    members, subset : int
        EDA size N and the raw / emulator-fed subset M.
    seed, seeds : int
        Scored seeds ``seed .. seed + seeds - 1`` (``seed >= 100``; lower seeds train the emulator).
    cycles, spinup : int
        Cycles per scored seed and the first ones not scored.
    train_seed, train_seeds, train_cycles : int
        Training seeds (tuning the scale, the static variance, the EDA correlation), all below 100.
    scales : tuple of float
        Grid of the scale ``s`` on ``D``, tuned for the N-member row.
    leads : tuple of int
        Lead times in model steps (0 = analysis; 1 step = 6 h at dt = 0.05; one cycle = window steps).
    correlation : str
        ``climatology`` (the static B's correlation) or ``eda`` (time-mean EDA background correlation).
    smooth : int
        Half width ``w`` (grid points) of an extra row: the M-member variance averaged over ``2w + 1``
        neighbours on the ring (0 = no such row).
    noise : tuple of float
        Extra rows: the N-member variance times mean-preserving lognormal noise of these stds (a calibration of
        what a given variance error costs; empty = none).
    inflation, window, obs_every, obs_std : optional
        Overrides of the preset's EDA and observation network (``None``: the preset's).
    confidence : float
        Family-wise confidence of the intervals.
    block : int
        Also test every block of this many consecutive scored cycles of one seed on its own (92 daily cycles =
        June-August, the talk's sample); 0 = no block tests.
    outer_loops : int
        Gauss-Newton outer loops of the controls.
    """

    preset: str = "sakov2008"
    members: int = 50
    subset: int = 5
    seed: int = FIRST_SCORE_SEED
    seeds: int = 4
    cycles: int = 2000
    spinup: int = 200
    train_seed: int = 0
    train_seeds: int = 2
    train_cycles: int = 1000
    scales: tuple[float, ...] = (0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0)
    leads: tuple[int, ...] = (0, 1, 2, 4, 8, 20)
    correlation: str = "climatology"
    smooth: int = 0
    noise: tuple[float, ...] = ()
    inflation: float | None = None
    window: int | None = None
    obs_every: int | None = None
    obs_std: float | None = None
    confidence: float = 0.95
    block: int = 92
    outer_loops: int = 2

    def __post_init__(self) -> None:
        if self.correlation not in CORRELATIONS:
            raise ValueError(f"correlation must be one of {CORRELATIONS}, got {self.correlation!r}.")
        if not 2 <= self.subset < self.members:
            raise ValueError(f"need 2 <= subset < members, got subset={self.subset}, members={self.members}.")
        if self.train_seed + self.train_seeds > FIRST_SCORE_SEED or self.seed < FIRST_SCORE_SEED:
            raise ValueError(
                f"training seeds {self.train_seed}..{self.train_seed + self.train_seeds - 1} must lie below "
                f"{FIRST_SCORE_SEED} and scored seeds (--seed {self.seed}) at or above it, so that nothing is "
                "scored on the seeds the scale and the emulator were fitted on; use e.g. --seed 100."
            )
        if self.block != 0 and self.block < 3:
            raise ValueError(f"block must be 0 (no block tests) or at least 3 cycles, got {self.block}; use e.g. 92.")
        if self.smooth < 0:
            raise ValueError(f"smooth is a half width in grid points (0 = no smoothed row), got {self.smooth}.")
        if any(not v > 0 for v in self.noise):
            raise ValueError(f"noise levels are lognormal stds and must be > 0, got {self.noise}; use e.g. 0.1,0.2.")
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"scales must be positive numbers, got {self.scales}; use e.g. 0.5,1,2.")
        if not 0 <= self.spinup < self.cycles - 2 or not 0 <= self.spinup < self.train_cycles - 2:
            raise ValueError(
                f"spin-up {self.spinup} must leave at least 3 scored cycles of --cycles {self.cycles} and of "
                f"--train-cycles {self.train_cycles}."
            )

    def eda_config(self, seed: int, seeds: int, cycles: int) -> ExperimentConfig:
        """The EDA of seeds ``seed .. seed + seeds - 1`` over ``cycles`` cycles."""
        from hybrid_eda.l96.config import ExperimentConfig

        return ExperimentConfig.from_preset(
            self.preset,
            method="4dvar",
            members=self.members,
            cycles=cycles,
            spinup=self.spinup,
            seed=seed,
            batch=seeds,
            inflation=self.inflation,
            window=self.window,
            obs_every=self.obs_every,
            obs_std=self.obs_std,
        )
