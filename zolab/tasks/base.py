"""What a task is to zolab: an ``nn.Module`` holding the trainable tensors and a loss of a batch.

The optimizer sees only ``loss(batch)`` values; probes may differentiate the same function (autograd) to
get the true gradient, so ``loss`` must be differentiable when grad is enabled, and side-effect free
(no RNG use, no state change), so that calling it extra times never changes a run.
"""

from __future__ import annotations

import torch
from torch import nn


class Task(nn.Module):
    """Subclasses implement ``loss``; ``metrics`` defaults to the loss; ``done`` can stop a run."""

    def loss(self, batch) -> torch.Tensor:
        """Scalar loss of ``batch`` at the current parameters (forward only)."""
        raise NotImplementedError

    def metrics(self, batch) -> dict[str, torch.Tensor]:
        """Validation metrics of ``batch`` (names without prefix)."""
        return {"loss": self.loss(batch)}

    supports_batched = False  # True when batched_loss is implemented
    batch_free = False  # True when a batch carries nothing (an exact objective): ZOModule.steps_per_batch > 1

    def batched_loss(self, points: torch.Tensor, batch) -> torch.Tensor:
        """Losses of stacked values of the task's single trainable tensor, shape (n, *param.shape) -> (n,).

        Optional: a task whose parameter is one tensor (a synthetic function, an attack's perturbation) may
        implement it and set ``supports_batched = True``; the optimizer then evaluates all K (+1) points of
        a step in one call (``ZOOptimizer.step(batched=...)``).
        """
        raise NotImplementedError(f"{type(self).__name__} has no batched_loss")

    def batch_size(self, batch) -> int:
        """Examples in ``batch`` (weights validation metrics across batches)."""
        return 1

    def done(self) -> bool:
        """True when the run should stop (an attack that succeeded, say). Must not sync in a hot loop."""
        return False

    def zo_named_parameters(self):
        """The trainable tensors the ZO optimizer perturbs (``requires_grad=True`` ones)."""
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]
