"""Stochastic flows of the member generator: time grids, Brownian increments, Stratonovich SDE integrators.

The generator moves each background member ``phi`` to an analysis member along

    d phi = u(phi, t) dt + s(phi, t) o dW,        t in [0, 1],

with elementwise ("diagonal") noise and the Stratonovich product ``o`` (the limit of smooth noise, which keeps the
chain rule, so a flow learned with one step size stays a discretisation of the same SDE at another).

``schedules``
    :class:`TimeSchedule` and its variants (:class:`UniformSchedule`, :class:`PowerSchedule`): the times
    ``0 = t_0 < ... < t_K = 1``.
``brownian``
    :func:`brownian_increments` (seeded by a ``torch.Generator``), :func:`coarsen_increments` (the same path on a
    coarser grid, for convergence studies).
``integrators``
    :class:`SDECoefficients`, :class:`StratonovichScheme` (:class:`StochasticHeun`, :class:`StochasticMidpoint`),
    :func:`integrate` -> :class:`FlowSolution`.
``ensemble_scores``
    Spread/skill and rank histograms of torch ensembles ``[..., ens, grid, var]`` (validation of generated members).
"""

from hybrid_eda.flows.brownian import brownian_increments, coarsen_increments
from hybrid_eda.flows.ensemble_scores import SpreadSkill, rank_histogram, spread_skill, truth_rank
from hybrid_eda.flows.integrators import (
    FlowSolution,
    SDECoefficients,
    StochasticHeun,
    StochasticMidpoint,
    StratonovichScheme,
    integrate,
)
from hybrid_eda.flows.schedules import PowerSchedule, TimeSchedule, UniformSchedule

__all__ = [
    "FlowSolution",
    "PowerSchedule",
    "SDECoefficients",
    "SpreadSkill",
    "StochasticHeun",
    "StochasticMidpoint",
    "StratonovichScheme",
    "TimeSchedule",
    "UniformSchedule",
    "brownian_increments",
    "coarsen_increments",
    "integrate",
    "rank_histogram",
    "spread_skill",
    "truth_rank",
]
