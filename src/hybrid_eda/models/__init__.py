"""Models of hybrid-eda, with anemoi's model constructor contract (``model.model._target_``).

``variance_core``
    :class:`VarianceEmulatorCore`: the framework-free variance emulator (plain tensors and kwargs): M members in,
    a predictive distribution of the N-member std out, per point, level and variable.
``variance_emulator``
    :class:`VarianceEmulator`: the thin anemoi adapter (``model_config``, ``data_indices``, ``statistics``,
    ``graph_data``, ...), which unpacks the run config once and calls the core.
``predictor``
    :func:`load_variance_predictor`: an inference checkpoint as a function of physical members (evaluation).
"""

from hybrid_eda.models.predictor import VariancePredictor, load_variance_predictor
from hybrid_eda.models.variance_core import VarianceEmulatorCore, VarianceEmulatorSettings
from hybrid_eda.models.variance_emulator import VarianceEmulator

__all__ = [
    "VarianceEmulator",
    "VarianceEmulatorCore",
    "VarianceEmulatorSettings",
    "VariancePredictor",
    "load_variance_predictor",
]
