"""Predictive distributions of a pointwise quantity: the contract between models, losses and evaluation.

A model that predicts a distribution (the variance emulator predicts one of the N-member sample std s_N) returns
its parameters stacked on the ensemble axis of anemoi's tensor layout (``TensorDim``: batch, time, ensemble, grid,
variable)::

    pred[b, t, 2, grid, var]       pred[:, :, 0] = first parameter, pred[:, :, 1] = second (positive) parameter

and :meth:`PredictiveDistribution.from_tensor` turns that tensor back into a distribution whose parameters are
``[b, t, 1, grid, var]``, so they broadcast against anemoi's target ``y[b, t, 1, grid, var]``. A network's last
layer builds the tensor with ``Gaussian.from_raw(raw).to_tensor()``: positive by construction (see
:meth:`Gaussian.from_raw`). Any leading shape works (``[..., 2, grid, var]``); only the last three axes are named.

``base``
    :class:`PredictiveDistribution`, the abstract base (``mean``, ``variance``, ``quantile``, ``cdf``/``pit``,
    ``log_prob``, ``crps``, ``sample``, ``from_raw``, ``from_tensor``/``to_tensor``).
``gaussian``
    :class:`Gaussian` (loc, scale), closed-form CRPS of Gneiting et al. (2005).
``lognormal``
    :class:`LogNormal` (mu, sigma) of a positive quantity, closed-form CRPS of Baran & Lerch (2015).
"""

from hybrid_eda.distributions.base import PARAMETER_AXIS, PredictiveDistribution
from hybrid_eda.distributions.gaussian import Gaussian
from hybrid_eda.distributions.lognormal import LogNormal

__all__ = ["PARAMETER_AXIS", "Gaussian", "LogNormal", "PredictiveDistribution"]
