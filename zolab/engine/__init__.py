"""The ZO engine: estimator, directions, perturbation, blocks, schedules, update and ops.

No module here imports Lightning, YAML or TensorBoard (tests/test_layers.py checks it).
"""
