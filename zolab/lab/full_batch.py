"""The whole training subset's loss, for rules that read it at some steps (MeZO-SVRG's anchors).

``wanted_evaluators`` says which extra evaluators a rule reads at its next step; ``FullBatch`` is the ``full``
one: the task's loss over the data module's ``full_batches()``. ZOModule and the leaderboard probe share both.
"""

from __future__ import annotations

import torch

from zolab.tasks.base import Task


def wanted_evaluators(opt) -> tuple[str, ...]:
    """The extra evaluators a rule reads at its next step: ``opt.evaluators_at(t)``, else every one its scheme
    declares (``full``: MeZO-SVRG's whole-subset loss on anchor steps)."""
    at = getattr(opt, "evaluators_at", None)
    return tuple(at(opt.zo["step"] + 1) if at is not None else opt.grad_estimator.scheme.evaluators)


class FullBatch:
    """The task's loss over a list of batches (their size-weighted mean: the whole set's mean loss), one forward
    per batch (``forwards``, which the step counts)."""

    def __init__(self, task: Task, batches: list):
        self.task, self.batches = task, batches
        self.sizes = [task.batch_size(b) for b in batches]
        self.forwards = len(batches)

    def __call__(self) -> torch.Tensor:
        return sum(self.task.loss(b) * n for b, n in zip(self.batches, self.sizes)) / sum(self.sizes)
