"""ZOModule: any zolab rule on any task, as a LightningModule with manual optimization.

Each training step builds a forward-only closure ``lambda: task.loss(batch)`` and calls
``optimizer.step(closure)`` through Lightning's optimizer wrapper (so ``global_step``, checkpoints and
loops stay Lightning's). Dropout is off during ZO forwards by default (MeZO's code); ``zo_dropout=True``
keeps the task in train mode.

Example (YAML for ``zolab fit``)::

    model:
      task: {class_path: zolab.tasks.synthetic.Quadratic, init_args: {dim: 1000}}
      optimizer: {class_path: zolab.RAdaZO, init_args: {lr: 0.001, mu: 0.05, num_queries: 10}}
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import lightning as L
import torch

from zolab.rules import ZOSGD, ZOOptimizer
from zolab.tasks.base import Task

OptimizerFactory = Callable[[Iterable], ZOOptimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


def _accepts(factory, name: str) -> bool:
    """Whether the optimizer a factory builds takes keyword ``name`` and the factory left it unset."""
    target = getattr(factory, "func", factory)
    bound = getattr(factory, "keywords", {}) or {}
    try:
        return name in inspect.signature(target).parameters and bound.get(name) is None
    except (TypeError, ValueError):
        return False


class ZOModule(L.LightningModule):
    """Args:
    task: the ``Task`` (holds the trainable tensors and ``loss(batch)``).
    optimizer: a zolab rule class with its arguments (``class_path``/``init_args`` in YAML); the default is
        ``ZOSGD``. A rule that takes ``total_steps`` (ZO-AdaMU) gets ``trainer.max_steps`` when unset.
    lr_scheduler: optional ``torch.optim.lr_scheduler`` factory, stepped once per ZO step.
    zo_dropout: keep dropout on during ZO forwards (default off, as MeZO).
    log_every_n_steps: log ``train/*`` every n steps (None: the trainer's ``log_every_n_steps``).
    """

    def __init__(
        self,
        task: Task,
        optimizer: OptimizerFactory | None = None,
        lr_scheduler: SchedulerFactory | None = None,
        zo_dropout: bool = False,
        log_every_n_steps: int | None = None,
    ):
        super().__init__()
        if not isinstance(task, Task):
            raise TypeError(f"task must be a zolab.tasks.Task, got {type(task).__name__}")
        self.automatic_optimization = False
        self.task = task
        self.optimizer_factory = optimizer or ZOSGD
        self.lr_scheduler_factory = lr_scheduler
        self.zo_dropout = zo_dropout
        self.log_every_n_steps = log_every_n_steps

    # ------------------------------------------------------------------ optimizer
    def configure_optimizers(self):
        params = self.task.zo_named_parameters()
        kwargs = {}
        if _accepts(self.optimizer_factory, "total_steps"):
            max_steps = self.trainer.max_steps if self._trainer is not None else -1
            if max_steps is None or max_steps < 1:
                raise ValueError("this rule needs total_steps: set trainer.max_steps or the rule's total_steps")
            kwargs["total_steps"] = max_steps
        optimizer = self.optimizer_factory(params, **kwargs)
        if not isinstance(optimizer, ZOOptimizer):
            raise TypeError(f"optimizer must be a zolab rule (ZOOptimizer), got {type(optimizer).__name__}")
        if self.lr_scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.lr_scheduler_factory(optimizer)}

    @property
    def zo_optimizer(self) -> ZOOptimizer:
        """The underlying zolab optimizer (its ``record`` is the last step's record)."""
        return self.optimizers(use_pl_optimizer=False)

    def compute_loss(self, batch) -> torch.Tensor:
        """The task's loss at the current parameters (differentiable when grad is enabled): for probes."""
        return self.task.loss(batch)

    # ------------------------------------------------------------------ training
    def on_train_batch_start(self, batch, batch_idx):
        if self.task.training != self.zo_dropout:
            self.task.train(self.zo_dropout)
        if self.task.done():
            return -1  # Lightning: skip the rest of the epoch

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        zo = optimizer.optimizer
        closure = lambda: self.task.loss(batch)  # noqa: E731
        # Step the zolab optimizer itself, inside Lightning's step bookkeeping (global_step, profiler):
        # Lightning's precision plugin would otherwise run the on_before_optimizer_step hooks after each
        # of the 2K closure calls of a ZO step. Probes read the step record in on_train_batch_end.
        before, after = getattr(optimizer, "_on_before_step", None), getattr(optimizer, "_on_after_step", None)
        if before is not None and after is not None:
            before()
            loss = zo.step(closure)
            after()
        else:  # another Lightning version: the wrapped (slower) path
            loss = optimizer.step(closure=closure)
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        # self.log costs ~0.4 ms: log only at the steps the logger writes (and the first).
        every = self.log_every_n_steps or self.trainer.log_every_n_steps
        step = self.trainer.global_step
        if step % every == 0 or step == 1:
            self.log("train/loss", loss, prog_bar=True, batch_size=1)
            self.log("train/lr", float(zo.param_groups[0]["lr"]), batch_size=1)
            self.log("train/forwards", float(zo.zo["forwards"]), batch_size=1)
            for name, value in zo.schedule_values().items():
                self.log(f"train/{name}", float(value), batch_size=1)
        return loss

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch, batch_idx):
        metrics = self.task.metrics(batch)
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, prog_bar=True, batch_size=self.task.batch_size(batch))

    def test_step(self, batch, batch_idx):
        metrics = self.task.metrics(batch)
        self.log_dict({f"test/{k}": v for k, v in metrics.items()}, batch_size=self.task.batch_size(batch))
