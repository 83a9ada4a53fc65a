"""``zolab``: the LightningCLI entry point.

    zolab fit --config experiments/radazo/quadratic.yaml [--model.optimizer.init_args.lr=1e-2 ...]
    zolab validate --config X.yaml --ckpt_path runs/NAME/version_0/checkpoints/....ckpt
    zolab fit --config X.yaml --print_config        # the full config, every default filled in
    zolab sweep experiments/radazo/fig1.yaml [--dry-run]   # see zolab.sweep

The task, the rule (with its schedules), the data and the trainer are chosen by ``class_path`` in YAML and
overridden from the command line, as in any LightningCLI. What zolab adds to the trainer:

- a ``TensorBoardLogger`` under ``runs/NAME/VERSION`` (``--name``: default the first config file's stem;
  ``--version``: default the next free ``version_N``; ``trainer.default_root_dir`` replaces ``runs``),
  unless the config sets ``trainer.logger``; the rule's hyper-parameters go to its HPARAMS tab;
- ``InterruptCheckpoint``: Ctrl-C (or any exception) during ``fit`` lets the running step finish and
  leaves ``checkpoints/on_exception.ckpt`` in the run's directory; ``--ckpt_path`` resumes it exactly;
- a ``TQDMProgressBar`` refreshed every 20 steps (unless the config brings its own or disables the bar);
- ``num_sanity_val_steps: 0``, ``max_steps: 1000``, ``seed_everything: 0``, checkpoints loaded with
  ``weights_only: true`` (a zolab checkpoint holds tensors and plain values only).

A bad config (unknown class, missing field, a value out of range, ``precision: 16-mixed``) stops before
training with ``zolab: error: ...`` naming the field (exit status 2).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from lightning.pytorch.callbacks import Callback, ModelCheckpoint, OnExceptionCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from typing_extensions import override

from zolab.module import ZOModule, check_precision

RUNS_DIR = "runs"
PROGRESS_REFRESH_RATE = 20


class ConfigError(ValueError):
    """A config that cannot run; raised before training, its message names the field."""


class InterruptCheckpoint(Callback):
    """Ctrl-C safe checkpoints. A SIGINT during ``fit`` lets the current step finish (a ZO step is never cut
    in half), saves ``DIRPATH/FILENAME.ckpt`` at that step's end (where Lightning's own step checkpoints
    are taken, so the resumed run logs at the right steps), then stops the run with ``KeyboardInterrupt``.
    Any other exception during ``fit`` also leaves that checkpoint. A second Ctrl-C interrupts at once.
    ``zolab fit ... --ckpt_path DIRPATH/FILENAME.ckpt`` resumes exactly.

    A plain ``Callback``, not Lightning's ``OnExceptionCheckpoint``: with that one in the trainer,
    ``fit(ckpt_path=None)`` silently resumes from the newest "last" checkpoint it can find.

    Args:
        dirpath: where to save; default ``<trainer.log_dir>/checkpoints`` (resolved at setup).
        filename: file name without ``.ckpt`` (default ``on_exception``).

    Example::

        trainer = L.Trainer(callbacks=[InterruptCheckpoint()], max_steps=10_000)
        # Ctrl-C ...  then: trainer.fit(module, datamodule, ckpt_path=".../checkpoints/on_exception.ckpt")
    """

    def __init__(self, dirpath: str | None = None, filename: str = "on_exception"):
        if not filename:
            raise ValueError("InterruptCheckpoint: filename must not be empty")
        self.dirpath, self.filename = dirpath, filename
        self._fitting = False
        self._pending = False  # Ctrl-C seen, the running step not finished yet
        self._saved_step = None  # the step whose end was saved because of a Ctrl-C
        self._previous = None

    @property
    def ckpt_path(self) -> str | None:
        return None if self.dirpath is None else os.path.join(self.dirpath, self.filename + ".ckpt")

    @override
    def setup(self, trainer, pl_module, stage):
        self._fitting = stage == "fit"
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.log_dir or trainer.default_root_dir, "checkpoints")

    # ---------------------------------------------------------------- SIGINT deferral
    def _on_sigint(self, signum, frame):
        if self._pending or self._saved_step is not None:  # second Ctrl-C: stop now
            self._restore()
            raise KeyboardInterrupt
        self._pending = True
        print("\nzolab: Ctrl-C: saving a checkpoint after this step (press again to stop at once)", file=sys.stderr)

    def _restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _save(self, trainer):
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)  # full state (optimizer, loops): resumable
        print(f"zolab: checkpoint at step {trainer.global_step}: {self.ckpt_path}", file=sys.stderr)

    @override
    def on_train_start(self, trainer, pl_module):
        self._pending, self._saved_step = False, None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._pending:  # the step is complete: save here, as ModelCheckpoint(every_n_train_steps) does
            self._pending = False
            self._saved_step = trainer.global_step
            self._save(trainer)

    @override
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._saved_step is not None:  # the saved step's logging is done: stop before the next one
            self._restore()
            raise KeyboardInterrupt

    @override
    def on_train_end(self, trainer, pl_module):
        self._restore()

    @override
    def on_exception(self, trainer, pl_module, exception):
        self._restore()
        if self._fitting and self.ckpt_path is not None and self._saved_step != trainer.global_step:
            self._save(trainer)

    @override
    def teardown(self, trainer, pl_module, stage):
        self._restore()


class ZOLabCLI(LightningCLI):
    """LightningCLI for ``ZOModule`` with zolab's trainer defaults and config checks (module docstring)."""

    @staticmethod
    def subcommands() -> dict:
        """fit, validate, test (no predict: a ZO task has nothing to predict)."""
        return {k: v for k, v in LightningCLI.subcommands().items() if k != "predict"}

    def add_arguments_to_parser(self, parser):
        parser.add_argument("--name", type=str | None, default=None,
                            help="experiment name: logs go to runs/NAME/VERSION (default: the config file's stem)")
        parser.add_argument("--version", type=str | None, default=None,
                            help="run version inside runs/NAME (default: the next free version_N)")

    def before_instantiate_classes(self):
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        try:
            check_precision(config.trainer.precision)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if "weights_only" in config and config.weights_only is None:
            config.weights_only = True  # --ckpt_path loads tensors and plain values only
        if config.get("model") is None or config.model.get("task") is None:
            raise ConfigError("model.task is required: a zolab.tasks.Task by class_path (e.g. "
                              "zolab.tasks.synthetic.Quadratic)")

    def instantiate_classes(self):
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, ImportError) as err:
            raise ConfigError(f"{_component(err, config)}: {err}") from err
        module = self.model
        try:
            module.build_optimizer(self.trainer.max_steps)
        except (ValueError, TypeError) as err:
            opt = config.model.get("optimizer")
            where = f"model.optimizer ({opt.class_path})" if opt is not None else "model.optimizer"
            raise ConfigError(f"{where}: {err}") from err
        task = config.model.task
        module.extra_hparams.update({f"task.{k}": v for k, v in dict(task.get("init_args") or {}).items()})
        module.extra_hparams["max_steps"] = self.trainer.max_steps

    def instantiate_trainer(self, **kwargs):
        config = self.config_init.get(self.subcommand, self.config_init) if self.subcommand else self.config_init
        trainer_cfg = config.get("trainer", {})
        if trainer_cfg.get("logger") in (None, True):
            root = trainer_cfg.get("default_root_dir") or RUNS_DIR
            kwargs["logger"] = TensorBoardLogger(root, name=config.get("name") or _default_name(config),
                                                 version=config.get("version"), default_hp_metric=False)
        callbacks = list(trainer_cfg.get("callbacks") or [])
        extra = []
        if trainer_cfg.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in callbacks
        ):
            extra.append(TQDMProgressBar(refresh_rate=PROGRESS_REFRESH_RATE))
        if trainer_cfg.get("enable_checkpointing") is not False:
            # Lightning adds its default ModelCheckpoint only when no Checkpoint callback is given
            if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
                extra.append(ModelCheckpoint())
            if not any(isinstance(c, InterruptCheckpoint | OnExceptionCheckpoint) for c in callbacks):
                extra.append(InterruptCheckpoint())
        if extra:
            kwargs["callbacks"] = callbacks + extra
        return super().instantiate_trainer(**kwargs)


def _default_name(config) -> str:
    """The first config file's stem ("zolab" for inline configs or none)."""
    paths = [p for p in (config.get("config") or []) if p is not None]
    if not paths:
        return "zolab"
    path = getattr(paths[0], "relative", None) or str(paths[0])
    return Path(str(path)).stem


def _component(err: Exception, config) -> str:
    """Best guess at the config entry an instantiation error comes from (the class named in the message)."""
    text = str(err)
    for key in ("model.task", "model.optimizer", "model.lr_scheduler", "data"):
        node = config
        for part in key.split("."):
            node = node.get(part) if node is not None and hasattr(node, "get") else None
        class_path = getattr(node, "class_path", None) if node is not None else None
        if class_path and class_path.rsplit(".", 1)[-1] in text:
            return f"{key} ({class_path})"
    return "config"


FIRST_ORDER = "--first_order"  # zolab fit --first_order ...: the module is zolab.firstorder.FirstOrderModule


def cli_main(args=None, run: bool = True, **kwargs) -> ZOLabCLI:
    """Build (and by default run) the CLI; ``args`` as on the command line (a list) or a config dict,
    None to read ``sys.argv``. ``--first_order`` anywhere in the list trains by backprop instead
    (``zolab.firstorder.FirstOrderModule``: the first-order references)."""
    argv = sys.argv
    module = ZOModule
    given = sys.argv[1:] if args is None else args
    if isinstance(given, list) and FIRST_ORDER in given:
        from zolab.firstorder import FirstOrderModule

        module, args = FirstOrderModule, [a for a in given if a != FIRST_ORDER]
    if args is not None:  # in-process use (tests, sweeps): the caller's own argv is not ours
        sys.argv = sys.argv[:1]
    try:
        return ZOLabCLI(
            module,
            subclass_mode_data=True,
            args=args,
            run=run,
            save_config_kwargs={"overwrite": True},
            seed_everything_default=0,
            trainer_defaults={"max_steps": 1000, "num_sanity_val_steps": 0},
            parser_kwargs={"description": "zolab: zeroth-order optimization with Lightning. Subcommands fit, "
                           "validate, test; and `zolab sweep FILE` (see `zolab sweep --help`)."},
            **kwargs,
        )
    finally:
        sys.argv = argv


def main(argv=None):
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] == "sweep":
        from zolab.sweep import main as sweep_main

        return sweep_main(args[1:])
    try:
        cli_main(argv)  # None: LightningCLI reads sys.argv itself
    except ConfigError as err:
        print(f"zolab: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
