"""Logging shared by the ZO and first-order modules: hyper-parameters to HPARAMS, val/* at the step's x, test/*."""

from __future__ import annotations

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard.summary import hparams as _tb_hparams


def hparam_value(v):
    """A value TensorBoard's HPARAMS tab takes (bool, int, float, str)."""
    if isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return v.item()
    return str(v)


class EvaluationLogging:
    """Mixin for a LightningModule with a ``task``: during fit, val/* (Lightning's batch-size-weighted means)
    go to the loggers at x = global_step − 1, where that step's train/loss is, so curves from several runs
    and resumed runs line up; outside fit, Lightning logs them itself."""

    def _log_hparams(self, hp: dict) -> None:
        """``hp`` (plain values) to every logger; to TensorBoard's HPARAMS tab with ``train/loss`` and ``val/loss``
        as its metrics, without Lightning's placeholder ``hp_metric`` scalar."""
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(hp, metrics={})  # hparams.yaml only
                writer = logger.experiment._get_file_writer()  # as TensorBoardLogger.log_hyperparams does
                for summary in _tb_hparams(hp, {"train/loss": 0.0, "val/loss": 0.0}):
                    writer.add_summary(summary)
            else:
                logger.log_hyperparams(hp)

    def _x_axis(self) -> int:
        """The x at which the last step's values are logged: global_step − 1 (train/loss at x = k is f(θ_k))."""
        return max(self.trainer.global_step - 1, 0)

    def on_validation_start(self) -> None:
        self._val_keys: set[str] = set()

    def validation_step(self, batch, batch_idx):
        metrics = {f"val/{k}": v for k, v in self.task.metrics(batch).items()}
        fitting = self.trainer.state.fn == "fit"  # during fit, on_validation_end writes val/* at the step's x
        self.log_dict(metrics, prog_bar=True, batch_size=self.task.batch_size(batch), logger=not fitting)
        self._val_keys.update(metrics)

    def on_validation_end(self) -> None:
        if self.trainer.state.fn != "fit" or self.trainer.sanity_checking or not self.loggers:
            return
        reduced = self.trainer.callback_metrics  # Lightning's batch-size-weighted means of this validation
        metrics = {k: float(reduced[k]) for k in sorted(self._val_keys) if k in reduced}
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self._x_axis())

    def test_step(self, batch, batch_idx):
        metrics = self.task.metrics(batch)
        self.log_dict({f"test/{k}": v for k, v in metrics.items()}, batch_size=self.task.batch_size(batch))
