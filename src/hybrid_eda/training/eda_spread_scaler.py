"""Loss weights per field in units of its EDA spread, read from the training store (an anemoi loss scaler).

In the normaliser's mean-std units a field's EDA spread ``s_f`` (mean ensemble std over the store's dates and
grid, divided by the normaliser's std of the field) spans two orders of magnitude on the synthetic global EDA
(``d`` 0.39 ... ``lnsp`` 0.006), so an unweighted loss all but ignores the fields of small spread. This scaler
gives field ``f`` the weight

    w_f = (reference / s_f) ** exponent

for every prognostic output (one weight per variable *and level*, which anemoi's ``GeneralVariableLossScaler``,
one weight per variable, cannot give). With ``reference = 0.2`` and ``exponent = 1`` it gives the hand-fitted
weights of ``member_generator_synthetic`` (d 0.5, vo 0.9, lnsp 33, t 0.7 at level 1 to 4.1 at level 5) from the
store itself. Used through ``_target_`` in ``training.scalers``::

    eda_spread:
      _target_: hybrid_eda.training.eda_spread_scaler.EDASpreadLossScaler
      dataset: ${dataloader.stores.eda}
      end: ${dataloader.training.datasets.eda.end}   # training dates only
      reference: 0.2
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from anemoi.training.losses.scalers.variable import BaseVariableLossScaler

from hybrid_eda.errors import UserInputError

__all__ = ["EDASpreadLossScaler", "eda_spread"]

LOGGER = logging.getLogger(__name__)


def eda_spread(dataset: Any, names: list[str], stdev: np.ndarray, *, dates_step: int = 4) -> dict[str, float]:
    """The EDA spread of each field in the normaliser's units: ``mean_t mean_g std_ens(x) / stdev``.

    Parameters
    ----------
    dataset :
        An anemoi dataset (``open_dataset``): ``len(dataset)`` dates, ``dataset[i]`` ``[variable, ensemble, grid]``,
        ``dataset.name_to_index``.
    names : list of str
        The fields to measure.
    stdev : np.ndarray
        ``[variable]`` the normaliser's std, in ``dataset.name_to_index`` order.
    dates_step : int
        Every ``dates_step``-th date from the first (the spread changes slowly; 4 at 6-hourly dates is daily).

    Returns
    -------
    dict
        ``{name: s_f}``.

    Raises
    ------
    UserInputError
        A store without members, a field not in the store, or a field of zero spread or std.
    """
    if dates_step < 1:
        raise UserInputError(f"dates_step must be >= 1, got {dates_step}")
    missing = [n for n in names if n not in dataset.name_to_index]
    if missing:
        raise UserInputError(
            f"the EDA-spread scaler's store has no field {', '.join(missing)}; give the training store"
        )
    rows = [dataset.name_to_index[n] for n in names]
    total = np.zeros(len(names))
    dates = range(0, len(dataset), dates_step)
    for i in dates:
        sample = np.asarray(dataset[i])[rows]  # [F, E, G]
        if sample.shape[1] < 2:
            raise UserInputError(
                f"the EDA-spread scaler needs an ensemble store (>= 2 members), this one has {sample.shape[1]}"
            )
        total += sample.std(axis=1, ddof=1).mean(axis=-1)
    spread = total / len(dates) / np.asarray(stdev, dtype=np.float64)[rows]
    bad = [n for n, s in zip(names, spread, strict=True) if not np.isfinite(s) or s <= 0]
    if bad:
        raise UserInputError(f"fields {', '.join(bad)} have no EDA spread (or a zero std) in the store; weight them "
                             "by hand (GeneralVariableLossScaler) instead")  # fmt: skip
    return dict(zip(names, spread.tolist(), strict=True))


class EDASpreadLossScaler(BaseVariableLossScaler):
    """Per-field loss weight ``(reference / s_f) ** exponent``, ``s_f`` the field's EDA spread (module docstring).

    Parameters
    ----------
    data_indices : IndexCollection
    metadata_extractor : ExtractVariableGroupAndLevel
    dataset : str or dict
        The store (anything ``anemoi.datasets.open_dataset`` takes), normally ``${dataloader.stores.eda}``.
    statistics : dict, optional
        The normaliser's statistics (anemoi passes the training dataset's); ``stdev`` in dataset order. Default: the
        store's own.
    reference : float
        The spread that gets weight 1.
    exponent : float
        1: each field in units of its spread; 0.5 halves the contrast (in log); 0: all weights 1.
    end : str, optional
        Last date read (the training period's end), as ``open_dataset(end=...)``.
    dates_step : int
        Read every ``dates_step``-th date.
    norm : str, optional
        anemoi's scaler normalisation (None, unit-sum, unit-mean, l1).
    """

    def __init__(
        self,
        data_indices,
        metadata_extractor,
        dataset: Any,
        statistics: Mapping[str, np.ndarray] | None = None,
        reference: float = 0.2,
        exponent: float = 1.0,
        end: str | None = None,
        dates_step: int = 4,
        norm: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(data_indices, metadata_extractor=metadata_extractor, norm=norm)
        del kwargs
        if not reference > 0 or not np.isfinite(reference):
            raise UserInputError(f"reference must be a spread > 0, got {reference}")
        if not np.isfinite(exponent):
            raise UserInputError(f"exponent must be finite, got {exponent}")
        self.dataset, self.statistics = dataset, statistics
        self.reference, self.exponent = float(reference), float(exponent)
        self.end, self.dates_step = end, int(dates_step)

    def _open(self):
        from anemoi.datasets import open_dataset

        return open_dataset(self.dataset) if self.end is None else open_dataset(self.dataset, end=self.end)

    def spreads(self) -> dict[str, float]:
        """``{output name: s_f}`` over the model's outputs."""
        store = self._open()
        names = sorted(
            self.data_indices.model.output.name_to_index, key=self.data_indices.model.output.name_to_index.get
        )
        if self.statistics is None:
            stdev = np.asarray(store.statistics["stdev"])
        else:  # anemoi's statistics are in the training dataset's order: re-index by name to the store's
            order = self.data_indices.name_to_index
            given = np.asarray(self.statistics["stdev"])
            stdev = np.full(len(store.name_to_index), np.nan)
            for name, i in store.name_to_index.items():
                if name in order:
                    stdev[i] = given[order[name]]
        return eda_spread(store, names, stdev, dates_step=self.dates_step)

    def get_scaling_values(self, **_kwargs) -> torch.Tensor:
        """``[len(data.output.full)]`` weights, 1 where the model has no output."""
        weights = torch.ones((len(self.data_indices.data.output.full),), dtype=torch.float32)
        spreads = self.spreads()
        for name, idx in self.data_indices.model.output.name_to_index.items():
            weights[idx] = (self.reference / spreads[name]) ** self.exponent
        LOGGER.info("EDA-spread loss weights: %s", {n: round(float(weights[i]), 3) for n, i in
                                                     self.data_indices.model.output.name_to_index.items()})  # fmt: skip
        return weights
