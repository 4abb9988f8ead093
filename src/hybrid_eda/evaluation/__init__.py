"""Evaluation of the EDA variance emulator and the member generator: floors, non-neural baselines, scores, impact.

* :mod:`~hybrid_eda.evaluation.floor`: ``E[s_N | M members, truth, sigma_b]`` in closed form (the floor no
  estimator beats) and the oracle that knows ``sigma_b`` but not the truth;
* :mod:`~hybrid_eda.evaluation.data`: per-point statistics ``[date, grid, field]`` (``s_M``, ``s_N``,
  ``sigma_b``, mean error, front mask) from member arrays or the synthetic EDA;
* :mod:`~hybrid_eda.evaluation.smoothing`: Gaussian smoothing on the sphere (sparse kernel or spherical
  harmonics);
* :mod:`~hybrid_eda.evaluation.baselines`: raw ``s_M``, constant rescaling, the tuned isotropic filter,
  gradient boosting on multi-scale and flow features, and the truth-aware bounds;
* :mod:`~hybrid_eda.evaluation.features`: gradient magnitudes of the seen members' mean (the regression's flow
  features);
* :mod:`~hybrid_eda.evaluation.emulator`: the checkpoint hook (``load_emulator_predictor``) and the conversion of
  the emulator's predictive distribution;
* :mod:`~hybrid_eda.evaluation.cli`: ``hybrid-eda evaluate variance [CHECKPOINT] --train PATH --test PATH``;
* :mod:`~hybrid_eda.evaluation.probabilistic`, :mod:`~hybrid_eda.evaluation.scores`: normalised MSE, gap
  closed, coverage, PIT, CRPS, NLL;
* :mod:`~hybrid_eda.evaluation.suite`: fit everything on training dates, score on held-out ones, one JSON
  summary;
* :mod:`~hybrid_eda.evaluation.degradation`: test EDAs with other physics (``--shift``) and how the scores
  degrade there (the summary's ``degradation`` block);
* :mod:`~hybrid_eda.evaluation.significance`: normalised score changes of paired runs with AR(1)-corrected,
  Sidak-adjusted confidence intervals (Geer 2016), pooled over independent seeds;
  :mod:`~hybrid_eda.evaluation.impact_figure`: the talk-style normalised-RMS-change panels;
* :mod:`~hybrid_eda.evaluation.variance_impact` (+ ``_scores``, ``_figure``, ``_cli``): ``hybrid-eda evaluate
  variance-impact``, the emulator's variances inside the exact linear analysis of the synthetic EDA;
* :mod:`~hybrid_eda.evaluation.hybrid_members` (+ ``_cli``): ``hybrid-eda evaluate members``, N_s real plus
  generated members against the full EDA and the truth (fair and standard CRPS, spread/skill, std MSE, maps).

    train = from_synthetic(SyntheticEDAConfig(grid="O32", levels=5, members=50, seed=1, ...), m=5)
    test = from_synthetic(SyntheticEDAConfig(..., seed=2), m=5)
    summary = evaluate_baselines(train, test).summary()
"""

from hybrid_eda.evaluation.baselines import (
    BoostedRegression,
    Estimator,
    IsotropicFilter,
    Prediction,
    RawStd,
    Rescaled,
    SigmaB,
    SigmaOracle,
    TruthFloor,
)
from hybrid_eda.evaluation.data import EDAStatistics, from_members, from_stores, from_synthetic, from_synthetic_folder
from hybrid_eda.evaluation.degradation import Shift, degradation, parse_shift, shifted_config
from hybrid_eda.evaluation.floor import conditional_std_mean, conditional_variance_mean, floor_mse, oracle_std_mean
from hybrid_eda.evaluation.probabilistic import ParametricPrediction
from hybrid_eda.evaluation.scores import gap_closed, improvement_over_filter, nmse, probabilistic_scores
from hybrid_eda.evaluation.smoothing import KernelSmoother, SpectralSmoother, make_smoother
from hybrid_eda.evaluation.suite import (
    VarianceEvaluation,
    default_estimators,
    evaluate_baselines,
    evaluate_baselines_on,
)

__all__ = [
    "BoostedRegression",
    "EDAStatistics",
    "Estimator",
    "IsotropicFilter",
    "KernelSmoother",
    "ParametricPrediction",
    "Prediction",
    "RawStd",
    "Rescaled",
    "SigmaB",
    "Shift",
    "SigmaOracle",
    "SpectralSmoother",
    "TruthFloor",
    "VarianceEvaluation",
    "conditional_std_mean",
    "conditional_variance_mean",
    "default_estimators",
    "degradation",
    "evaluate_baselines",
    "evaluate_baselines_on",
    "floor_mse",
    "from_members",
    "from_stores",
    "from_synthetic",
    "from_synthetic_folder",
    "gap_closed",
    "improvement_over_filter",
    "make_smoother",
    "nmse",
    "oracle_std_mean",
    "parse_shift",
    "probabilistic_scores",
    "shifted_config",
]
