"""Shared pieces of the diagnostics tests: an in-memory logger, a tiny net with dropout and BatchNorm, fit()."""

from __future__ import annotations

import functools
import warnings

import lightning as L
import torch
from lightning.pytorch.loggers import Logger
from torch import nn

from zolab.lab.module import ZOModule
from zolab.tasks.base import Task
from zolab.tasks.synthetic import SyntheticDataModule


class MemoryLogger(Logger):
    """Keeps every (step, metrics) the trainer and the probes log."""

    def __init__(self):
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    name, version = "memory", 0

    @property
    def experiment(self):
        return None

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, {k: float(v) for k, v in metrics.items()}))

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def series(self, key: str) -> list[tuple[int, float]]:
        return [(s, m[key]) for s, m in self.rows if key in m]


class RunningCenter(nn.Module):
    """x − mean(x) over the batch, keeping a running mean in train mode, as BatchNorm does (torch's CPU
    batch_norm double backward is slow, ~35 ms a call, so the tests use this instead)."""

    def __init__(self, width: int):
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(width))

    def forward(self, x):
        if self.training:
            with torch.no_grad():
                self.running_mean.mul_(0.9).add_(x.mean(0), alpha=0.1)
            return x - x.mean(0)
        return x - self.running_mean


class TinyNet(Task):
    """6 → 8 (centring, tanh, dropout) → 1, MSE on 4 rows of a fixed 16-row data set chosen by the batch
    index: two modules (two MeZO-BCD blocks), d = 65, dropout masks and running statistics to disturb."""

    def __init__(self, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("X", torch.randn(16, 6, generator=gen))
        self.register_buffer("y", torch.randn(16, 1, generator=gen))
        torch.manual_seed(seed)
        self.hidden = nn.Sequential(nn.Linear(6, 8), RunningCenter(8), nn.Tanh(), nn.Dropout(0.2))
        self.head = nn.Linear(8, 1)

    def loss(self, batch):
        rows = (torch.arange(4) + 4 * int(batch)) % 16
        return nn.functional.mse_loss(self.head(self.hidden(self.X[rows])), self.y[rows])


def fit(task, rule, callbacks=(), steps: int = 30, zo_dropout: bool = False, **opt_kwargs):
    """Train ``task`` with ``rule`` for ``steps`` steps; returns (module, logger)."""
    module = ZOModule(task, optimizer=functools.partial(rule, **opt_kwargs), zo_dropout=zo_dropout,
                      log_every_n_steps=1)
    logger = MemoryLogger()
    trainer = L.Trainer(max_steps=steps, logger=logger, callbacks=list(callbacks), enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=1,
                        limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu", devices=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, SyntheticDataModule(steps_per_epoch=1000))
    return module, logger
