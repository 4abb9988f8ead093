"""What anemoi-training needs beyond its own pieces to train hybrid-eda's models (no task or method yet).

``resolvers``
    OmegaConf resolvers for the shipped configs (``${store_variables:PATH}``: a store's variable names, so the
    configs need not list 822 names), installed by the Hydra callback :class:`VarianceEmulatorCallback`.
``malloc``
    :func:`keep_freed_memory`: glibc malloc settings that halve the kernel time of CPU training steps.
``stores``
    ``hybrid-eda variance-data`` (or ``python -m hybrid_eda.training.stores``): the synthetic EDA and the member
    and std stores that ``configs/variance_emulator_synthetic.yaml`` trains on, in one command.
``member_generator``
    :class:`~hybrid_eda.training.member_generator.MemberGeneratorCallback`: the Hydra callback of the member
    generator's configs (the shuffled guide/target member split, ``${store_variables_without:PATH,_an_}``).

The variance emulator itself needs no custom task or method: anemoi's ``Autoencoder`` task (same date in and
out), ``SingleTraining`` and two datasets (members: all variables prognostic and without a loss; spread: all
variables diagnostic) carry it.
"""

from hybrid_eda.training.resolvers import VarianceEmulatorCallback, register_resolvers, store_variables

__all__ = ["VarianceEmulatorCallback", "register_resolvers", "store_variables"]
