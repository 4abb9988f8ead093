"""anemoi's ``ConstantImputer`` for batches with an ensemble axis (``hybrid_eda.models.ensemble_imputer``).

anemoi-models 0.17's imputers fill ``x[b, t, ..., grid, var]`` through a NaN mask taken from the first member and
unsqueezed, not expanded, over the ensemble axis, so a boolean index ``[b, t, 1, grid]`` meets ``[b, t, M, grid]``
and fails (``IndexError: The shape of the mask ... does not match``). This one fills every NaN of each imputed
variable in place, member by member; the config, the statistics and the loss mask are anemoi's::

    processors:
      normalizer: {...}
      imputer:                         # after the normaliser: the value is in normalised units
        _target_: hybrid_eda.models.ensemble_imputer.EnsembleConstantImputer
        config: {default: none, -9999.0: [t_obs_1, ...]}

The member generator's synthetic config uses it for the observations (NaN where unobserved), which anemoi refuses
after the processors; ``model.model.observation_fill`` turns the value back into NaN.
"""

from __future__ import annotations

import torch
from anemoi.models.preprocessing.imputer import ConstantImputer

__all__ = ["EnsembleConstantImputer"]


class EnsembleConstantImputer(ConstantImputer):
    """:class:`anemoi.models.preprocessing.imputer.ConstantImputer` that also fills ``[b, t, M, grid, var]``."""

    def fill_with_value(
        self, x: torch.Tensor, index_x: list[int], nan_locations: torch.Tensor, index_nl: list[int]
    ) -> torch.Tensor:
        """``x [b, t, (M,) grid, var]`` with the NaNs of each imputed variable replaced by its value, in place."""
        for idx_src, idx_dst, value in zip(index_nl, index_x, self.replacement, strict=False):
            if idx_src is not None and idx_dst is not None:
                column = x[..., idx_dst]  # a view: [b, t, (M,) grid]
                column.masked_fill_(torch.isnan(column), float(value))
        return x
