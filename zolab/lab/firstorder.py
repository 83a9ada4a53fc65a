"""FirstOrderModule: a zolab task trained by backprop with a torch optimizer (the first-order references).

The same task, data and logging as ``ZOModule``, but automatic optimization: ``training_step`` returns
``task.loss(batch)`` and Lightning runs the backward and the optimizer (default ``torch.optim.Adam``). It
logs the tags a ZO run logs, at the same x (step t at x = t − 1, written straight to the loggers so that a
resumed run writes where the uninterrupted one does): ``train/loss`` (the batch's loss at θ_{t−1}) and
``train/lr`` every ``log_every_n_steps``, ``val/*`` at the last step's x, ``test/*`` with
``zolab.lab.final_test.FinalTest``, and ``diagnostics/step_cost/wall_ms`` and ``peak_rss_mib`` at step 1 and
every ``step_cost_every`` steps (the step's wall-clock from batch start to batch end, backward and update
included, and the process's peak resident memory so far), as the StepCost probe does for ZO runs; the
probes themselves read a ZO optimizer's step record and refuse this module.

Dropout is on in training by default (``dropout=True``, the usual first-order recipe; ``ZOModule`` turns it
off, as MeZO does); its masks come from torch's global RNG, seeded with ``seed`` when training starts and
saved in checkpoints, so a resumed run draws the masks the uninterrupted run would. Run it with
``zolab fit --first_order --config X.yaml``; X's ``model.optimizer`` is a torch optimizer, e.g.
``{class_path: torch.optim.Adam, init_args: {lr: 2.0e-5}}``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable

import lightning as L
import torch

from zolab.lab.evaluation import EvaluationLogging, hparam_value
from zolab.rules import ZOOptimizer
from zolab.tasks.base import Task

try:
    import resource
except ImportError:  # Windows: no getrusage
    resource = None

OptimizerFactory = Callable[[Iterable], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]
_RNG_KEY = "first_order_rng_state"


class FirstOrderModule(EvaluationLogging, L.LightningModule):
    """Args:
    task: the ``Task`` (its trainable tensors are the ``requires_grad`` ones, as for ZO).
    optimizer: a torch optimizer class with its arguments (default ``torch.optim.Adam``, lr 1e-3).
    lr_scheduler: optional ``torch.optim.lr_scheduler`` factory, stepped once per step.
    dropout: train mode (dropout on) during training steps (default True).
    seed: seeds torch's RNG (the dropout masks) when training starts.
    log_every_n_steps: log ``train/*`` every n steps (None: the trainer's).
    step_cost_every: log ``diagnostics/step_cost/*`` at step 1 and every n steps (0: never).
    """

    def __init__(self, task: Task, optimizer: OptimizerFactory | None = None,
                 lr_scheduler: SchedulerFactory | None = None, dropout: bool = True, seed: int = 0,
                 log_every_n_steps: int | None = None, step_cost_every: int = 50):
        super().__init__()
        if not isinstance(task, Task):
            raise TypeError(f"task must be a zolab.tasks.Task, got {type(task).__name__}")
        if isinstance(step_cost_every, bool) or not isinstance(step_cost_every, int) or step_cost_every < 0:
            raise ValueError(f"step_cost_every={step_cost_every!r}; allowed: an integer >= 0")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed={seed!r}; allowed: an integer")
        self.task = task
        self.optimizer_factory = optimizer or torch.optim.Adam
        self.lr_scheduler_factory = lr_scheduler
        self.dropout, self.seed = dropout, seed
        self.log_every_n_steps, self.step_cost_every = log_every_n_steps, step_cost_every
        self.extra_hparams: dict = {}  # the CLI puts the task's init_args here, as for ZOModule
        self._rng_state: torch.Tensor | None = None  # from a checkpoint: the RNG state to continue with
        self._step_start: float | None = None

    # ------------------------------------------------------------------ optimizer
    def build_optimizer(self, max_steps: int | None = None) -> torch.optim.Optimizer:
        """The torch optimizer on the task's trainable tensors (``max_steps`` is accepted for the CLI's
        check, as ``ZOModule.build_optimizer``, and unused)."""
        params = [p for _, p in self.task.zo_named_parameters()]
        if not params:
            raise ValueError(f"{type(self.task).__name__} has no trainable tensors (requires_grad=True)")
        optimizer = self.optimizer_factory(params)
        if isinstance(optimizer, ZOOptimizer) or not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a first-order torch.optim.Optimizer (e.g. torch.optim.Adam), got "
                            f"{type(optimizer).__name__}; zolab's ZO rules run without --first_order (ZOModule)")
        return optimizer

    def configure_optimizers(self):
        optimizer = self.build_optimizer()
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = {"scheduler": self.lr_scheduler_factory(optimizer), "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def compute_loss(self, batch) -> torch.Tensor:
        return self.task.loss(batch)

    def hparams_to_log(self) -> dict:
        """``rule`` (the optimizer's class name), its first group's hyper-parameters, the task, ``seed``,
        ``dropout`` and ``extra_hparams``: plain values."""
        opt = self.optimizers(use_pl_optimizer=False)
        hp = {"rule": type(opt).__name__, "task": type(self.task).__name__, "first_order": True,
              "task_params": sum(p.numel() for _, p in self.task.zo_named_parameters())}
        for k, v in opt.param_groups[0].items():
            if k in ("params", "param_names") or v is None:
                continue
            if isinstance(v, tuple) and k == "betas":
                hp.update({f"beta{i + 1}": x for i, x in enumerate(v)})
            else:
                hp[k] = v
        hp.update(seed=self.seed, dropout=self.dropout, **self.extra_hparams)
        return {k: hparam_value(v) for k, v in hp.items()}

    def on_fit_start(self) -> None:
        self._log_hparams(self.hparams_to_log())

    # ------------------------------------------------------------------ RNG (dropout masks) across resumes
    def on_train_start(self) -> None:
        if self._rng_state is not None:  # resumed: continue the saved stream
            torch.set_rng_state(self._rng_state)
            self._rng_state = None
        else:
            torch.manual_seed(self.seed)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[_RNG_KEY] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._rng_state = checkpoint.get(_RNG_KEY)

    # ------------------------------------------------------------------ training
    def _step_cost_step(self, t: int) -> bool:
        return self.step_cost_every > 0 and (t == 1 or t % self.step_cost_every == 0)

    def on_train_batch_start(self, batch, batch_idx):
        self.task.train(self.dropout)  # every submodule (a loaded model starts in eval mode whatever task.training)
        if self._step_cost_step(self.trainer.global_step + 1):
            self._step_start = time.perf_counter()

    def training_step(self, batch, batch_idx):
        loss = self.task.loss(batch)
        t = self.trainer.global_step + 1  # this step's number (global_step counts finished updates)
        every = self.log_every_n_steps or self.trainer.log_every_n_steps
        if t % every == 0 or t == 1:
            self.log("train/loss", loss.detach(), prog_bar=True, logger=False, batch_size=1)
        if t % every == 0 and self.loggers:  # written at x = t − 1, a function of the step alone (as ZO runs)
            lr = float(self.optimizers(use_pl_optimizer=False).param_groups[0]["lr"])
            for logger in self.loggers:
                logger.log_metrics({"train/loss": float(loss.detach()), "train/lr": lr}, step=t - 1)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self._step_start is None:
            return
        wall_ms = 1000.0 * (time.perf_counter() - self._step_start)
        self._step_start = None
        metrics = {"diagnostics/step_cost/wall_ms": wall_ms}
        if resource is not None:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
            metrics["diagnostics/step_cost/peak_rss_mib"] = rss / (2**20 if sys.platform == "darwin" else 2**10)
        for logger in self.loggers:  # at x = t − 1, where this step's train/loss is
            logger.log_metrics(metrics, step=self.trainer.global_step - 1)

