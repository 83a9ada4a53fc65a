"""The progress bar of ``zolab fit``: Lightning's TQDM bar, its training bar redrawn by time, not by batch count."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import TQDMProgressBar
from typing_extensions import override


class TimedProgressBar(TQDMProgressBar):
    """Lightning's ``TQDMProgressBar`` whose training bar is redrawn after a batch only once ``interval`` seconds
    (default 0.5) have passed since the last redraw, and at an epoch's last batch. A fixed count of batches would
    redraw a run of millisecond steps dozens of times a second, more than anyone reads and at a cost such steps
    notice, and a run of slow steps only every few minutes. The count is brought up to date at an epoch's
    end (also one that stops early). Validation bars are Lightning's."""

    def __init__(self, interval: float = 0.5, **kwargs):
        kwargs.setdefault("refresh_rate", 1)  # every batch that gets past the clock is drawn
        super().__init__(**kwargs)
        if not interval >= 0:
            raise ValueError(f"TimedProgressBar: interval={interval!r}; allowed: a number of seconds >= 0")
        self.interval = interval
        self._next_draw, self._batches = 0.0, 0

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now, self._batches = time.monotonic(), batch_idx + 1
        if now >= self._next_draw or self._batches == self.train_progress_bar.total:
            self._next_draw = now + self.interval
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    @override
    def on_train_epoch_end(self, trainer, pl_module):
        if self.is_enabled:
            self.train_progress_bar.n = self._batches  # a run that stops early ends on its count
        super().on_train_epoch_end(trainer, pl_module)
