"""Losses anemoi 0.17 lacks: scores of a predictive distribution (``training_loss`` or ``validation_metrics``).

Each is an anemoi ``BaseLoss``, built by ``get_loss_function`` from its ``_target_`` and honouring anemoi's
scalers; ``pred`` carries the distribution's two parameters on the ensemble axis, ``[batch, time, 2, grid, var]``
(see :mod:`hybrid_eda.losses.base`)::

    training:
      training_loss:
        _target_: hybrid_eda.losses.LogNormalNLLLoss
        scalers: [general_variable, node_weights]
      validation_metrics:
        crps:
          _target_: hybrid_eda.losses.LogNormalCRPS
          scalers: [node_weights]

``base``
    :class:`DistributionLoss`: shape checks, NaN masking, scaling and reduction shared by all.
``nll``
    :class:`GaussianNLLLoss`, :class:`LogNormalNLLLoss`.
``crps``
    :class:`GaussianCRPS`, :class:`LogNormalCRPS` (closed forms).
``member_scores``
    :class:`GeneratedMemberScore`: anemoi's ensemble losses (CRPS, energy score) on the member generator's
    replicas of each target member.
"""

from hybrid_eda.losses.base import DistributionLoss
from hybrid_eda.losses.crps import GaussianCRPS, LogNormalCRPS
from hybrid_eda.losses.member_scores import GeneratedMemberScore
from hybrid_eda.losses.nll import GaussianNLLLoss, LogNormalNLLLoss

__all__ = [
    "DistributionLoss",
    "GaussianCRPS",
    "GaussianNLLLoss",
    "GeneratedMemberScore",
    "LogNormalCRPS",
    "LogNormalNLLLoss",
]
