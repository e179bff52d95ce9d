"""Rollout datasets: the batch type (``batches``), the on-disk format (``storage``), collection
(``collect``), loaders for training and evaluation (``loaders``) and their commands (``commands``).

Submodules are imported on demand, so the command line starts without loading torch or mujoco.
"""
