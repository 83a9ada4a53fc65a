"""TimedProgressBar: the training bar is redrawn by time (at most every ``interval`` s) and at an epoch's end."""

import lightning as L
import pytest

from zolab.lab.module import ZOModule
from zolab.lab.progress import TimedProgressBar
from zolab.tasks.synthetic import Quadratic, SyntheticDataModule


class _Shown(L.Callback):
    """The count the training bar shows after each batch (runs after the bar's own hook)."""

    def __init__(self, bar):
        self.bar, self.shown, self.at_epoch_end = bar, [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.shown.append(self.bar.train_progress_bar.n)

    def on_train_epoch_end(self, trainer, pl_module):
        self.at_epoch_end.append(self.bar.train_progress_bar.n)


@pytest.mark.parametrize("interval, expected", [(3600.0, [1, 1, 1, 1, 5, 0, 0, 3]), (0.0, [1, 2, 3, 4, 5, 1, 2, 3])])
def test_the_training_bar_is_redrawn_by_time_and_at_the_epochs_end(tmp_path, interval, expected):
    bar = TimedProgressBar(interval=interval)
    shown = _Shown(bar)
    trainer = L.Trainer(max_steps=8, callbacks=[bar, shown], logger=False, enable_checkpointing=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(ZOModule(Quadratic(dim=4)), SyntheticDataModule(steps_per_epoch=5))
    assert shown.shown == expected  # an hour: the first batch, then each epoch's last
    assert shown.at_epoch_end == [5, 3]  # the second epoch: 3 batches to max_steps


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_interval_must_be_a_nonnegative_number(bad):
    with pytest.raises(ValueError, match="interval"):
        TimedProgressBar(interval=bad)
