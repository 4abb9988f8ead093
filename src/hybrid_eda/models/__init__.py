"""Models of hybrid-eda, with anemoi's model constructor contract (``model.model._target_``).

``variance_core``
    :class:`VarianceEmulatorCore`: the framework-free variance emulator (plain tensors and kwargs): M members in,
    a predictive distribution of the N-member std out, per point, level and variable.
``variance_emulator``
    :class:`VarianceEmulator`: the thin anemoi adapter (``model_config``, ``data_indices``, ``statistics``,
    ``graph_data``, ...), which unpacks the run config once and calls the core.
``member_generator_core``, ``member_generator``
    :class:`MemberGeneratorCore` (framework-free stochastic flow) and :class:`MemberGenerator`, its anemoi adapter
    (guide/target split per batch, physical units inside).
``member_generator_runner``
    :func:`load_member_generator`: an inference checkpoint as a function of physical backgrounds and guides.
``predictor``
    :func:`load_variance_predictor`: an inference checkpoint as a function of physical members (evaluation).
``checkpoints``
    :func:`~hybrid_eda.models.checkpoints.load_inference_model`: the one loader behind both, which refuses a
    missing file, a training checkpoint and another model's checkpoint with a message naming the fix.
"""

from hybrid_eda.models.member_generator import MemberGenerator
from hybrid_eda.models.member_generator_runner import MemberGeneratorRunner, load_member_generator
from hybrid_eda.models.predictor import VariancePredictor, load_variance_predictor
from hybrid_eda.models.variance_core import VarianceEmulatorCore, VarianceEmulatorSettings
from hybrid_eda.models.variance_emulator import VarianceEmulator

__all__ = [
    "MemberGenerator",
    "MemberGeneratorRunner",
    "load_member_generator",
    "VarianceEmulator",
    "VarianceEmulatorCore",
    "VarianceEmulatorSettings",
    "VariancePredictor",
    "load_variance_predictor",
]
