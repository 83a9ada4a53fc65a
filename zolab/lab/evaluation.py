"""Validation and test logging shared by the ZO and first-order modules: val/* at the step's x, test/* as is."""

from __future__ import annotations


class EvaluationLogging:
    """Mixin for a LightningModule with a ``task``: during fit, val/* (Lightning's batch-size-weighted means)
    go to the loggers at x = global_step − 1, where that step's train/loss is, so curves from several runs
    and resumed runs line up; outside fit, Lightning logs them itself."""

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
