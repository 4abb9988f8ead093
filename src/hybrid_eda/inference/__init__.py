"""anemoi-inference for hybrid-eda checkpoints: shipped inference configs and the helper that fills them in.

``configs/<model>.yaml`` is an anemoi-inference run config for checkpoints of the anemoi-training config of that
name (e.g. ``l96_forecaster``). ``hybrid-eda inference-config CHECKPOINT --out infer.yaml`` (:mod:`.config`)
writes it with the checkpoint's absolute path, a start date from its test period and, where needed, the store
to read, so ``anemoi-inference run infer.yaml`` runs without editing paths.

``runner: variance-emulator`` (:mod:`.variance_runner`, entry point ``anemoi.inference.runners``) runs the EDA
variance emulator: M member fields (GRIB or a member store, :mod:`.member_fields`) in, the mean and quantiles
of the emulated N-member std out as GRIB (:mod:`.std_grib`), with what it needs read from the checkpoint's own
anemoi metadata (:mod:`.variance_checkpoint`); ``configs/variance_emulator.yaml`` is its documented config.
"""
