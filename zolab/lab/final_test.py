"""FinalTest: the task's metrics on the test split at the end of ``fit``, in the same run's event files.

``zolab fit`` ends after training; the test split (SST-2: the 872 validation sentences) would otherwise need
a second command with the checkpoint. This callback evaluates ``task.metrics`` on the datamodule's
``test_dataloader()`` when training ends normally (not when it is interrupted), weighting each batch by
``task.batch_size``, and logs ``test/<name>`` to every logger at the x of the last step's ``train/loss``
(global step − 1). Nothing in the run changes: no gradients, the task's train/eval modes and the RNG are
restored. Works with any module that holds a ``task`` (``ZOModule``, ``FirstOrderModule``).
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import move_data_to_device


class FinalTest(Callback):
    """Args: prefix of the logged names (``"test"``).

    Example (YAML, under ``trainer:``)::

        callbacks:
          - class_path: zolab.lab.final_test.FinalTest
    """

    def __init__(self, prefix: str = "test"):
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix={prefix!r}; allowed: a non-empty string")
        self.prefix = prefix
        self.metrics: dict[str, float] = {}

    def setup(self, trainer, pl_module, stage):
        """Refuse, before training, a run it cannot test."""
        if stage != "fit":
            return
        if not hasattr(pl_module, "task"):
            raise TypeError(f"FinalTest evaluates a module's task; {type(pl_module).__name__} has no 'task'")
        datamodule = trainer.datamodule
        if datamodule is None or not callable(getattr(datamodule, "test_dataloader", None)):
            raise ValueError("FinalTest needs a LightningDataModule with test_dataloader(); the run has none")

    def on_train_end(self, trainer, pl_module):
        self.metrics = evaluate(pl_module.task, trainer.datamodule.test_dataloader(), pl_module.device)
        named = {f"{self.prefix}/{k}": v for k, v in self.metrics.items()}
        for logger in trainer.loggers:
            logger.log_metrics(named, step=max(trainer.global_step - 1, 0))
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in named.items()})
        if trainer.is_global_zero:  # every process evaluates the whole test set; one prints it
            print("final test: " + ", ".join(f"{k} {v:.4f}" for k, v in named.items()))


@torch.no_grad()
def evaluate(task, loader, device) -> dict[str, float]:
    """Batch-size-weighted means of ``task.metrics`` over ``loader``, in eval mode (modes restored)."""
    modes = [(m, m.training) for m in task.modules()]
    sums: dict[str, float] = {}
    total = 0
    try:
        task.eval()
        with torch.random.fork_rng(devices=[]):
            for batch in loader:
                n = task.batch_size(batch)
                for k, v in task.metrics(move_data_to_device(batch, device)).items():
                    sums[k] = sums.get(k, 0.0) + float(v) * n
                total += n
    finally:
        for m, mode in modes:
            m.training = mode
    if total == 0:
        raise ValueError("FinalTest: the test dataloader is empty")
    return {k: v / total for k, v in sums.items()}
