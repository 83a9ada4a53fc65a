"""Scratch: the tensors an optimizer reuses from step to step instead of allocating them anew.

A fresh allocation the size of a parameter can cost as much as drawing its direction (page faults on every
step), so the points of a step, the batched step's (K, n) rows, ĝ for the torch rng and a several-block
step's spare tensors (``zolab.engine.update.Transaction``) are kept here between steps.
"""

from __future__ import annotations

from collections import defaultdict

import torch


class Scratch:
    """``scratch(key, shape, dtype, device)``: a tensor kept under ``key``, reallocated only when its shape,
    dtype or device changes; ``spares``: free tensors by (shape, dtype, device) for a transaction."""

    def __init__(self) -> None:
        self.tensors: dict = {}
        self.spares: dict = defaultdict(list)

    def __call__(self, key, shape, dtype, device) -> torch.Tensor:
        buf = self.tensors.get(key)
        if buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != device:
            buf = self.tensors[key] = torch.empty(shape, dtype=dtype, device=device)
        return buf

    def clear(self) -> None:
        """Free every kept tensor; the next step allocates them again."""
        self.tensors.clear()
        self.spares.clear()
