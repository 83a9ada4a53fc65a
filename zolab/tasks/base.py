"""What a task is to zolab: an ``nn.Module`` holding the trainable tensors and a loss of a batch, and
``ResumableLoader``, the shuffled training batches a checkpoint can resume exactly.

The optimizer sees only ``loss(batch)`` values; probes may differentiate the same function (autograd) to
get the true gradient, so ``loss`` must be differentiable when grad is enabled, and side-effect free
(no RNG use, no state change), so that calling it extra times never changes a run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler


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


def check_seed(name: str, seed) -> int:
    """``seed`` if it is an integer in [0, 2**63) (what ``torch.Generator.manual_seed`` keeps as given), else a
    ValueError naming it: no silent wrap-around."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"{name}={seed!r}; allowed: an integer in [0, 2**63)")
    return seed


class _SkipBatches(Sampler):
    """A batch sampler that drops its first ``skip`` batches (indices only: no example is loaded)."""

    def __init__(self, batch_sampler: BatchSampler):
        self.batch_sampler, self.skip = batch_sampler, 0

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self):
        skip, self.skip = self.skip, 0
        batches = iter(self.batch_sampler)
        for _ in range(skip):
            if next(batches, None) is None:
                return
        if skip < len(self):  # after a whole epoch, stop as Lightning does: at its last batch, not past it
            yield from batches


def as_batch(batch):
    """The collate function of a dataset whose ``__getitems__`` fetches a whole batch: the batch, as fetched."""
    return batch


class ResumableLoader(DataLoader):
    """The shuffled training batches of a data task, resumable from a Lightning checkpoint.

    The order is exactly that of ``DataLoader(dataset, batch_size, shuffle=True, generator=Generator().manual_seed(
    seed))`` read as Lightning reads it (the same random draws, epoch after epoch, each epoch read up to its last
    batch). ``state_dict()`` (saved by Lightning in the checkpoint's loop state) holds the generator's state at
    the start of the current epoch and how many of its batches were trained; after ``load_state_dict``, the next
    epoch's iteration replays those draws and continues with the next batch, so a resumed run sees the batches
    the uninterrupted one would (Lightning resumes a loader that has ``state_dict``).

    Args: dataset, batch_size, seed, collate_fn as for ``DataLoader``; ``trained``: a callable returning a count
    of trained batches that only grows (the data modules pass Lightning's processed batches; without it, the
    batches yielded count: a batch whose step failed then counts as trained).
    """

    def __init__(self, dataset, batch_size: int, seed: int, collate_fn=None, trained: Callable[[], int] | None = None):
        generator = torch.Generator().manual_seed(check_seed("seed", seed))
        batches = _SkipBatches(BatchSampler(RandomSampler(dataset, generator=generator), batch_size, drop_last=False))
        super().__init__(dataset, batch_sampler=batches, generator=generator, collate_fn=collate_fn)
        self._batches, self._trained = batches, trained
        self._epoch_state: torch.Tensor | None = None  # generator state when the current epoch began
        self._yielded = 0
        self._trained_before = 0  # trained() when the current epoch's first batch was drawn, minus skipped ones
        self._resume: tuple[torch.Tensor, int] | None = None

    def __iter__(self):
        return self._epoch()

    def _epoch(self):
        """One epoch, drawn at its first batch: an iterator made and dropped unused (Lightning makes one more when
        it resumes from an epoch's end) draws nothing, so the random stream stays the uninterrupted run's."""
        skip = 0
        if self._resume is not None:
            state, skip = self._resume
            self._resume = None
            self.generator.set_state(state)
            if skip >= len(self):  # saved at the epoch's end: replay its draws, start the next epoch
                self._batches.skip = skip
                for _ in super().__iter__():
                    pass
                skip = 0
        self._epoch_state = self.generator.get_state()
        self._batches.skip, self._yielded = skip, skip
        self._trained_before = (self._trained() if self._trained is not None else 0) - skip
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict:
        if self._epoch_state is None:
            return {}
        trained = self._trained() - self._trained_before if self._trained is not None else self._yielded
        return {"generator": self._epoch_state.clone(), "batches": int(min(max(trained, 0), len(self)))}

    def load_state_dict(self, state_dict: dict) -> None:
        if not state_dict:
            return
        state, batches = state_dict.get("generator"), state_dict.get("batches")
        if not isinstance(state, torch.Tensor) or isinstance(batches, bool) or not isinstance(batches, int) or (
                batches < 0):
            raise ValueError(f"{type(self).__name__}: a saved state needs a generator state and batches >= 0, got "
                             f"{sorted(state_dict)}")
        self._resume = (state, batches)


def lightning_progress(datamodule) -> Callable[[], int] | None:
    """The training batches processed so far in this fit (a batch whose step raised is not), from the
    datamodule's trainer; None when the datamodule is not attached to one."""
    trainer = getattr(datamodule, "trainer", None)
    if trainer is None:
        return None
    return lambda: trainer.fit_loop.epoch_loop.batch_progress.total.processed
