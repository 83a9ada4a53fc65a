"""ZOModule: any zolab rule on any task, as a LightningModule with manual optimization.

Each training step builds a forward-only closure ``lambda: task.loss(batch)`` and calls
``optimizer.step(closure)`` (with ``batched=task.batched_loss`` when the task has one: all K (+1) points in
one call) inside Lightning's step bookkeeping (so ``global_step``, checkpoints and
loops stay Lightning's). Dropout is off during ZO forwards by default (MeZO's code); ``zo_dropout=True``
keeps the task in train mode.

Precisions: ``32``, ``64``, ``bf16-mixed``, ``bf16-true``, ``16-true``. ``16-mixed`` is refused before
training: its GradScaler steps without a closure and rejects closure optimizers.
At the start of ``fit`` the rule's hyper-parameters (``zo_hparams()``) go to every logger, and to
TensorBoard's HPARAMS tab with ``train/loss`` and ``val/loss`` as its metrics.

Example (YAML for ``zolab fit``)::

    model:
      task: {class_path: zolab.tasks.synthetic.Quadratic, init_args: {dim: 1000}}
      optimizer: {class_path: zolab.RAdaZO, init_args: {lr: 0.001, mu: 0.05, num_queries: 10}}
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

from zolab.engine.parallel import batch_length, check_in_step, shard, shard_size
from zolab.lab.evaluation import EvaluationLogging, hparam_value
from zolab.lab.full_batch import FullBatch, wanted_evaluators
from zolab.lab.strategy import ZOStrategy
from zolab.rules import ZOSGD, ZOOptimizer
from zolab.tasks.base import Task

OptimizerFactory = Callable[[Iterable], ZOOptimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


SUPPORTED_PRECISIONS = ("32-true", "64-true", "bf16-mixed", "bf16-true", "16-true")
_PRECISION_ALIASES = {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}


def check_precision(precision) -> str:
    """The Lightning precision string for ``precision`` if zolab supports it, else a ValueError naming it.

    ``16-mixed`` (also ``16``) is refused: Lightning's GradScaler steps without a closure and rejects closure
    optimizers, and a ZO step has no gradients to scale anyway.
    """
    name = "32-true" if precision is None else _PRECISION_ALIASES.get(str(precision), str(precision))
    if name in SUPPORTED_PRECISIONS:
        return name
    why = (
        ": Lightning's 16-mixed uses a GradScaler, which steps without a closure and rejects closure "
        "optimizers such as zolab's rules (use bf16-mixed, or 16-true for fp16 weights)"
        if name == "16-mixed" else ""
    )
    raise ValueError(
        f"trainer.precision={precision!r} is not supported by zolab{why}; "
        "allowed: 32, 64, bf16-mixed, bf16-true, 16-true"
    )


def _accepts(factory, name: str) -> bool:
    """Whether the optimizer a factory builds takes keyword ``name`` and the factory left it unset."""
    target, bound = factory, {}
    while isinstance(target, functools.partial):  # LightningCLI: partial(helper, instantiator, cls, **init_args)
        bound = {**(target.keywords or {}), **bound}
        classes = [a for a in target.args if isinstance(a, type) and issubclass(a, ZOOptimizer)]
        target = classes[0] if classes else target.func
    try:
        return name in inspect.signature(target).parameters and bound.get(name) is None
    except (TypeError, ValueError):
        return False


class ZOModule(EvaluationLogging, L.LightningModule):
    """Args:
    task: the ``Task`` (holds the trainable tensors and ``loss(batch)``).
    optimizer: a zolab rule class with its arguments (``class_path``/``init_args`` in YAML); the default is
        ``ZOSGD``. A rule that takes ``total_steps`` (ZO-AdaMU) gets ``trainer.max_steps`` when unset.
    lr_scheduler: optional ``torch.optim.lr_scheduler`` factory, stepped once per ZO step.
    zo_dropout: keep dropout on during ZO forwards (default off, as MeZO).
    log_every_n_steps: log ``train/*`` every n steps (None: the trainer's ``log_every_n_steps``).
    steps_per_batch: ZO steps per training batch (default 1), for tasks whose batch carries nothing
        (``task.batch_free``: the synthetic functions). Lightning's work per batch (hooks, loops, fetch) is a
        fixed cost that sub-millisecond steps notice (``benchmarks/lightning_overhead.py`` measures it); N steps
        a batch divide it by N. ``global_step`` still
        counts ZO steps and ``max_steps`` is exact, the parameters are those of N × as many batches of one
        step, and TensorBoard's x-axis stays the ZO step (zolab logs Lightning's ``step`` key); but
        Lightning's batch-counted settings (``trainer.log_every_n_steps``, ``val_check_interval``, the
        progress bar) count batches of N steps (``SyntheticDataModule``'s epoch stays ``steps_per_epoch``
        ZO steps), ``train/*`` is the batch's last step, and diagnostics (which read each step) refuse N > 1.
    resume_overrides: group hyper-parameters (e.g. ``["lr"]``) that a resumed run takes from this config
        instead of the checkpoint; any other changed setting makes the resume an error (``ZOOptimizer``'s
        ``load_state_dict``). Recorded in hparams.

    ``train/*`` goes straight to the loggers at x = the ZO step (``train/loss`` at x = k is f(θ_k)), every
    ``log_every_n_steps`` steps (batches when N > 1), and ``val/*`` at x = the last step's: positions are a
    function of the ZO step alone, so a resumed run logs where the uninterrupted one does.
    """

    def __init__(
        self,
        task: Task,
        optimizer: OptimizerFactory | None = None,
        lr_scheduler: SchedulerFactory | None = None,
        zo_dropout: bool = False,
        log_every_n_steps: int | None = None,
        steps_per_batch: int = 1,
        resume_overrides: list[str] | None = None,
    ):
        super().__init__()
        if not isinstance(task, Task):
            raise TypeError(f"task must be a zolab.tasks.Task, got {type(task).__name__}")
        if isinstance(steps_per_batch, bool) or not isinstance(steps_per_batch, int) or steps_per_batch < 1:
            raise ValueError(f"steps_per_batch={steps_per_batch!r}; allowed: an integer >= 1")
        if steps_per_batch > 1 and not task.batch_free:
            raise ValueError(
                f"steps_per_batch={steps_per_batch} needs a task whose batch carries nothing (batch_free, e.g. "
                f"the synthetic functions); {type(task).__name__} would reuse one data batch for several "
                "steps: allowed here: 1"
            )
        self.steps_per_batch = steps_per_batch
        self.automatic_optimization = False
        self.task = task
        self.optimizer_factory = optimizer or ZOSGD
        self.lr_scheduler_factory = lr_scheduler
        self.zo_dropout = zo_dropout
        if log_every_n_steps is not None and (isinstance(log_every_n_steps, bool) or not isinstance(
                log_every_n_steps, int) or log_every_n_steps < 1):
            raise ValueError(f"log_every_n_steps={log_every_n_steps!r}; allowed: None or an integer >= 1")
        self.log_every_n_steps = log_every_n_steps
        if isinstance(resume_overrides, str) or not all(isinstance(k, str) for k in resume_overrides or ()):
            raise ValueError(f"resume_overrides={resume_overrides!r}; allowed: a list of hyper-parameter names")
        self.resume_overrides = tuple(resume_overrides or ())
        self.extra_hparams: dict = {}  # more hyper-parameters to log (the CLI puts the task's init_args here)
        self._stepping = None  # training_step's (step, parallel, in_step_checks), made once a fit (_stepper)

    # ------------------------------------------------------------------ optimizer
    def build_optimizer(self, max_steps: int | None = None) -> ZOOptimizer:
        """The zolab rule on the task's trainable tensors; ``max_steps`` fills ``total_steps`` when the rule
        takes it and it is unset (ZO-AdaMU's annealing)."""
        params = self.task.zo_named_parameters()
        kwargs = {}
        if _accepts(self.optimizer_factory, "total_steps"):
            if max_steps is None or max_steps < 1:
                raise ValueError("this rule needs total_steps: set trainer.max_steps or the rule's total_steps")
            kwargs["total_steps"] = max_steps
        optimizer = self.optimizer_factory(params, **kwargs)
        if not isinstance(optimizer, ZOOptimizer):
            raise TypeError(f"optimizer must be a zolab rule (ZOOptimizer), got {type(optimizer).__name__}")
        unknown = sorted(set(self.resume_overrides) - set(optimizer.defaults))
        if unknown:
            raise ValueError(f"resume_overrides {unknown} are not hyper-parameters of {type(optimizer).__name__}; "
                             f"allowed: {sorted(optimizer.defaults)} (the rule, seed, estimator and blocks cannot "
                             "change on resume)")
        optimizer.resume_overrides = self.resume_overrides  # Lightning's restore calls load_state_dict(state)
        return optimizer.bind(self.task)  # the modules that own the tensors (for perturb: module)

    def setup(self, stage: str) -> None:
        check_precision(self.trainer.precision)
        if self.trainer.world_size > 1 and not isinstance(self.trainer.strategy, ZOStrategy):
            raise ValueError(
                f"trainer.strategy={type(self.trainer.strategy).__name__} runs {self.trainer.world_size} processes, "
                "each of which would step on its own data: unrelated models. Use zolab's strategy "
                "(--trainer.strategy=zo, or zolab.lab.strategy.ZOStrategy(data=..., query=...)): one all-reduce of the "
                "losses a step keeps the processes in step")
        every = self.trainer.log_every_n_steps
        if self.log_every_n_steps is None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"trainer.log_every_n_steps={every!r}; allowed: an integer >= 1 (zolab logs train/* every "
                             "that many steps)")

    def configure_optimizers(self):
        optimizer = self.build_optimizer(self.trainer.max_steps if self._trainer is not None else None)
        if self._trainer is not None and isinstance(self.trainer.strategy, ZOStrategy):
            optimizer.grad_estimator.parallel = self.trainer.strategy.points()
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

    def zo_hparams(self) -> dict:
        """The rule, its hyper-parameters (first param group, current values; a schedule as its repr), its
        estimator options, the task and ``extra_hparams``: plain values, ready for a logger."""
        opt = self.zo_optimizer
        hp = {"rule": type(opt).__name__, "task": type(self.task).__name__,
              "task_params": sum(p.numel() for _, p in self.task.zo_named_parameters())}
        for k, v in opt.param_groups[0].items():
            if k in ("params", "param_names", "decay_1d"):
                continue
            if k in opt.schedules:
                v = opt.schedules[k]
            if isinstance(v, tuple):
                hp.update({f"{k}{i}" if k != "betas" else f"beta{i + 1}": x for i, x in enumerate(v)})
            else:
                hp[k] = v
        for k in ("num_queries", "estimator", "scale", "seed", "nonfinite", "state_dtype", "state_rounding"):
            hp[k] = getattr(opt, k, None)
        hp["granularity"] = opt.block_plan.granularity
        hp["directions"] = opt.sampler.name
        hp["blocks"] = opt.block_spec
        hp["resume_overrides"] = ",".join(self.resume_overrides)
        hp.update(self.extra_hparams)
        return {k: hparam_value(v) for k, v in hp.items()}

    # ------------------------------------------------------------------ global RNG in checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The global torch RNG (dropout during ZO forwards with ``zo_dropout=True`` draws from it), so that a
        resumed run draws what the uninterrupted one would (Lightning re-seeds it at start)."""
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["zolab_rng"] = rng

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._rng_to_restore = checkpoint.get("zolab_rng")

    def on_train_start(self) -> None:
        if self.trainer.world_size > 1 and isinstance(self.trainer.train_dataloader, torch.utils.data.DataLoader) and \
                isinstance(self.trainer.train_dataloader.sampler, torch.utils.data.DistributedSampler):
            raise ValueError("several processes with Lightning's DistributedSampler: each process would read other "
                             "batches; zolab shards each global batch itself: pass use_distributed_sampler=False to "
                             "the Trainer (the zolab CLI does)")
        self._verified_at, self._full = None, None
        self._stepping = None  # the optimizer's step and lookups, made at the first batch of this fit
        rng, self._rng_to_restore = getattr(self, "_rng_to_restore", None), None
        if rng is not None:
            torch.set_rng_state(rng["cpu"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])

    def on_fit_start(self) -> None:
        if self.trainer.is_global_zero:  # loggers write from process 0 only
            self._log_hparams(self.zo_hparams())

    # ------------------------------------------------------------------ training
    def __setattr__(self, name, value):
        # Lightning sets _current_fx_name before and after every hook (about 20 times a batch); nn.Module's
        # __setattr__ checks each value against parameters, buffers and submodules (two Python-level isinstance
        # checks), which a hook's name never is: a cost per batch that millisecond steps notice
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def on_train_batch_start(self, batch, batch_idx):
        task = self.task
        if task.training != self.zo_dropout:
            task.train(self.zo_dropout)
        if task.done():
            # -1 skips the rest of the epoch; should_stop ends the fit (else each new epoch is skipped at
            # once, global_step never reaches max_steps, and the loop never ends)
            self.trainer.should_stop = True
            return -1

    def training_step(self, batch, batch_idx):
        if self._stepping is None:
            self._stepping = self._stepper(self.optimizers())
        zo_step, parallel, in_step_checks, opt, batched_ok = self._stepping
        trainer, task = self.trainer, self.task
        if parallel is not None:  # several processes: this one's shard of the global batch, weighted by its real
            n = batch_length(batch)  # size (0: an empty shard, not evaluated)
            parallel.weight = 1.0 if n is None else float(shard_size(n, parallel.data_index, parallel.data))
            batch = shard(batch, parallel.data_index, parallel.data)
        closure = lambda: task.loss(batch)  # noqa: E731
        # A one-tensor task with a batched objective (synthetic functions) evaluates all K (+1) points of
        # the step in one call (Task.batched_loss); the closure is then not called. A scheme without points (a
        # forward-mode pass, Forward-Grad) differentiates the closure instead.
        batched = functools.partial(task.batched_loss, batch=batch) if (
            task.supports_batched and batched_ok) else None
        n, max_steps = self.steps_per_batch, trainer.max_steps
        if n > 1 and max_steps is not None and max_steps >= 0:  # max_steps stays exact
            n = max(1, min(n, max_steps - trainer.global_step))
        for i in range(n):
            if i and task.done():
                trainer.should_stop = True
                break
            loss = zo_step(closure, batched, self._evaluators(opt, closure))
        step = trainer.global_step
        if in_step_checks:
            self._verify(every=True, last=max_steps is not None and 0 < max_steps <= step)
        # train/* (a host transfer of the loss, the loggers' writes) only at the steps written, which depend on
        # the ZO step alone
        every = self.log_every_n_steps or trainer.log_every_n_steps
        batches = -(-step // self.steps_per_batch)  # batches of steps_per_batch steps so far
        if batches % every == 0 or step <= self.steps_per_batch:
            self._log_train(loss, write=batches % every == 0)
        return loss

    # Lightning reads training_step's signature every batch (inspect.getfullargspec: does it take batch_idx?);
    # inspect returns a stored __signature__ instead of building it again
    training_step.__signature__ = inspect.signature(training_step)

    def on_train_end(self) -> None:
        self._verify(every=False, last=True)  # a run that ended early (task.done, max_epochs) is compared too

    def _verify(self, every: bool, last: bool) -> None:
        """Several processes: compare their parameters bitwise every ``verify_every`` steps and at the run's last
        step (a RuntimeError when they differ; ``verify_every=0``: never)."""
        n = getattr(self.trainer.strategy, "verify_every", 0)
        step = self.trainer.global_step
        if n and isinstance(self.trainer.strategy, ZOStrategy) and ((every and step % n == 0) or last):
            self.verify_in_step()

    def verify_in_step(self) -> None:
        """Several processes (``ZOStrategy`` with ``verify_every`` > 0): a RuntimeError unless their parameters are
        bitwise the same (one collective: every process must call it at the same step). Once a step."""
        step = self.trainer.global_step
        if getattr(self.trainer.strategy, "verify_every", 0) and getattr(self, "_verified_at", None) != step and \
                isinstance(self.trainer.strategy, ZOStrategy) and self.trainer.world_size > 1:
            check_in_step([p for _, p in self.task.zo_named_parameters()])
            self._verified_at = step

    def _stepper(self, optimizer):
        """``(step, parallel, in_step_checks, rule, batched_ok)``, made once a fit rather than at every batch:
        ``step(closure, batched) -> loss`` is one ZO step inside Lightning's step bookkeeping (global_step,
        profiler), then the lr scheduler; ``parallel`` the rule's data-parallel plan (None in one process);
        ``in_step_checks`` whether the processes' parameters are compared (``_verify``); ``rule`` the ZO optimizer;
        ``batched_ok`` whether its difference scheme can use a batched objective."""
        scheduler = self.lr_schedulers()
        # Lightning's public step: it counts the step (global_step) and its precision plugin runs the
        # on_before_optimizer_step hooks after each closure call (2K a ZO step; none with a batched objective).
        # Probes read the step record in on_train_batch_end.

        def step(closure, batched, evaluators):
            loss = optimizer.step(closure=closure, batched=batched, **evaluators)
            if scheduler is not None:
                scheduler.step()
            return loss

        parallel = optimizer.optimizer.grad_estimator.parallel
        strategy = self.trainer.strategy
        in_step_checks = isinstance(strategy, ZOStrategy) and bool(getattr(strategy, "verify_every", 0))
        rule = optimizer.optimizer
        data_parallel = parallel if hasattr(parallel, "data_index") else None
        return step, data_parallel, in_step_checks, rule, rule.grad_estimator.scheme.batched

    def _evaluators(self, opt: ZOOptimizer, closure) -> dict:
        """The extra evaluators the rule reads at its next step (``opt.evaluators_at(t)``, else every one its scheme
        declares): ``full`` is the task's loss over the whole training subset (``FullBatch``: the data module's
        ``full_batches()``; a batch-free task's closure). MeZO-SVRG asks for it on anchor steps only."""
        names = wanted_evaluators(opt)
        if not names:
            return {}
        if set(names) != {"full"}:
            raise ValueError(f"{type(opt).__name__} reads evaluators {sorted(names)}; ZOModule makes: ['full']")
        if self.trainer.world_size > 1:
            raise ValueError(f"{type(opt).__name__} evaluates the whole training subset, which ZOModule does not "
                             "shard over processes; allowed: one process")
        if getattr(self, "_full", None) is None:
            source = getattr(self.trainer.datamodule, "full_batches", None)
            if source is None and not self.task.batch_free:
                raise ValueError(f"{type(opt).__name__} evaluates the whole training subset: the data module must "
                                 f"give full_batches() (the proxy, synthetic, SST-2 features and MNIST modules do); "
                                 f"{type(self.trainer.datamodule).__name__} does not")
            batches = move_data_to_device(list(source()), self.device) if source is not None else None
            self._full = FullBatch(self.task, batches) if batches is not None else closure
        return {"full": self._full}

    def _log_train(self, loss, write: bool) -> None:
        """``train/loss`` for the progress bar and callbacks; with ``write``, ``train/*`` to every logger at the ZO
        step's x. Written directly (not through Lightning's step-counted logging, which a resumed run counts
        differently), and as Python numbers: ``self.log`` would keep the loss in Lightning's results, which turn it
        into a number again after every batch (a device sync per batch on a GPU)."""
        value = float(loss)
        self.trainer.progress_bar_metrics["train/loss"] = value
        self.trainer.callback_metrics["train/loss"] = loss.detach()
        if not write or not self.loggers:
            return
        zo = self.zo_optimizer
        metrics = {"train/loss": value, "train/lr": float(zo.param_groups[0]["lr"]),
                   "train/forwards": float(zo.zo["forwards"])}
        metrics.update({f"train/{name}": float(v) for name, v in zo.schedule_values().items()})
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self._x_axis())
