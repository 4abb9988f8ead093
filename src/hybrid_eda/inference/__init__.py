"""anemoi-inference for hybrid-eda checkpoints: shipped inference configs and the helper that fills them in.

``configs/<model>.yaml`` is an anemoi-inference run config for checkpoints of the anemoi-training config of that
name (e.g. ``l96_forecaster``). ``hybrid-eda inference-config CHECKPOINT --out infer.yaml`` (:mod:`.config`)
writes it with the checkpoint's absolute path, a start date from its test period and, where needed, the store
to read, so ``anemoi-inference run infer.yaml`` runs without editing paths.
"""
