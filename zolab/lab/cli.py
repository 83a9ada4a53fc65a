"""``zolab fit | validate | test``: the LightningCLI of ZO runs (``zolab.entry`` dispatches the command here).

    zolab fit --config experiments/radazo/base.yaml [--model.optimizer.init_args.lr=1e-2 ...]
    zolab validate --config X.yaml --ckpt_path runs/NAME/version_0/checkpoints/....ckpt
    zolab fit --config X.yaml --print_config        # the full config, every default filled in

The task, the rule (with its schedules), the data and the trainer are chosen by ``class_path`` in YAML and
overridden from the command line, as in any LightningCLI. What zolab adds to the trainer:

- a ``TensorBoardLogger`` under ``runs/NAME/VERSION`` (``--name``: default the first config file's stem;
  ``--version``: default the next free ``version_N``; ``trainer.default_root_dir`` replaces ``runs``),
  unless the config sets ``trainer.logger``; the rule's hyper-parameters go to its HPARAMS tab. NAME and
  VERSION are single directory names: a run never writes outside its root;
- ``InterruptCheckpoint``: SIGINT (Ctrl-C) or SIGTERM during training lets the running step finish, leaves
  ``checkpoints/on_exception.ckpt`` in the run's directory and ends with status 130 or 143; any other
  exception during training also leaves that checkpoint; ``--ckpt_path`` resumes it exactly;
- atomic checkpoint files (``zolab.lab.rundir.AtomicCheckpointIO``), and one process per run directory;
- a ``TimedProgressBar`` (Lightning's TQDM bar, redrawn at most every 0.5 s: ``zolab.lab.progress``) unless the
  config brings its own or disables the bar;
- ``num_sanity_val_steps: 0``, ``max_steps: 1000``, ``seed_everything: 0``, checkpoints loaded with
  ``weights_only: true`` (a zolab checkpoint holds tensors and plain values only).

Everything that can be checked before training is: a bad config (unknown class, missing field, a value out of
range, ``precision: 16-mixed``, more than one process), a ``--ckpt_path`` that is missing, corrupt, made by
another task shape or with other optimizer settings (``--model.resume_overrides=[lr]`` keeps a new lr on
purpose), a run directory that already holds another run's checkpoints, and errors while the data are read.
Each stops with ``zolab: error: ...`` naming the field or file (exit status 2) and writes no checkpoint.
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

from lightning.pytorch.callbacks import (
    Callback,
    ModelCheckpoint,
    ModelSummary,
    OnExceptionCheckpoint,
    ProgressBar,
)
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from typing_extensions import override

from zolab.lab.interrupt import InterruptCheckpoint, Interrupted
from zolab.lab.module import ZOModule, check_precision
from zolab.lab.preflight import check_resume, check_run_dir
from zolab.lab.progress import TimedProgressBar
from zolab.lab.rundir import (
    AtomicCheckpointIO,
    CheckpointError,
    RunLock,
    check_name,
    checkpoint_files,
    inside,
    read_checkpoint,
)
from zolab.lab.strategy import ZOStrategy

RUNS_DIR = "runs"
SPECIAL_CKPT = ("last", "best", "hpc", "registry")  # Lightning's ckpt_path keywords
# raised before training: a config or data problem (Lightning's own config errors are MisconfigurationException)
SETUP_ERRORS = (ValueError, TypeError, OSError, ImportError, MisconfigurationException)
SETUP_ONLY = (SaveConfigCallback, ModelSummary)  # callbacks with nothing to do once training has started


class ConfigError(ValueError):
    """A config that cannot run; raised before training, its message names the field or file."""


class _TrainingStarted(Callback):
    """Marks the first training batch: an exception before it is a config or data problem (``cli_main``). Then it,
    and the callbacks whose work is done before training (the saved config, the model summary), leave the trainer's
    callbacks: Lightning calls every callback's hooks at every batch, a cost that millisecond steps notice (the
    list is replaced, not changed, while Lightning walks it)."""

    def __init__(self):
        self.started = False

    @override
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.started = True
        trainer.callbacks = [c for c in trainer.callbacks if c is not self and not isinstance(c, SETUP_ONLY)]


class ZOLabCLI(LightningCLI):
    """LightningCLI for ``ZOModule`` with zolab's trainer defaults and checks (module docstring).

    ``progress_bar``: the progress bar callback runs use instead of Lightning's (``zolab sweep`` shows one
    display for the whole sweep). ``callbacks``: added to the trainer's, not to the saved config (``zolab tune``'s
    pruning callback)."""

    def __init__(self, *args, progress_bar: ProgressBar | None = None, callbacks: tuple[Callback, ...] = (),
                 **kwargs):
        self._progress_bar = progress_bar
        self._callbacks = list(callbacks)
        self._started = _TrainingStarted()
        self._lock = None
        self._new_run_dir = None
        self._resume = None  # (path, loaded checkpoint) of fit's --ckpt_path
        self._optimizer = None  # the rule as built from the config, for the resume check
        given = sys.argv[1:] if kwargs.get("args") is None else kwargs["args"]
        self._only = given[0] if isinstance(given, list) and given and given[0] in self.subcommands() else None
        _CURRENT.append(self)
        super().__init__(*args, **kwargs)

    def subcommands(self=None) -> dict:
        """fit, validate, test (no predict: a ZO task has nothing to predict); only the one named on the command
        line once it is known (each subcommand's parser costs as much to build as the parse itself)."""
        names = {k: v for k, v in LightningCLI.subcommands().items() if k != "predict"}
        only = getattr(self, "_only", None)
        return {only: names[only]} if only in names else names

    def add_arguments_to_parser(self, parser):
        parser.add_argument("--name", type=str | None, default=None,
                            help="experiment name: logs go to runs/NAME/VERSION (default: the config file's stem)")
        parser.add_argument("--version", type=str | None, default=None,
                            help="run version inside runs/NAME (default: the next free version_N)")

    def _subconfig(self, config):
        return config.get(self.subcommand, config) if getattr(self, "subcommand", None) else config

    def parse_arguments(self, parser, args):
        super().parse_arguments(parser, args)
        config = self.config.get(self.config.get("subcommand"), self.config) if self.config.get("subcommand") else (
            self.config)
        seed = config.get("seed_everything")
        if not isinstance(seed, bool) and seed is not None and not (isinstance(seed, int) and 0 <= seed < 2**32):
            raise ConfigError(f"seed_everything={seed!r}; allowed: true, false or an integer in [0, 2**32)")
        for key in ("name", "version"):
            if config.get(key) is not None:
                try:
                    check_name(f"--{key}", config.get(key))
                except ValueError as err:
                    raise ConfigError(str(err)) from None
        ckpt = config.get("ckpt_path")
        subcommand = self.config.get("subcommand")
        if ckpt is not None and subcommand == "fit" and str(ckpt) in SPECIAL_CKPT:
            raise ConfigError(f"--ckpt_path={ckpt}: give the checkpoint's file (zolab resumes from explicit files; "
                              "`zolab sweep --resume` finds a run's newest one)")
        if ckpt is not None and str(ckpt) not in SPECIAL_CKPT:
            keys = ("state_dict",) if subcommand != "fit" else None
            try:
                loaded = read_checkpoint(ckpt, **({"keys": keys} if keys else {}))
            except CheckpointError as err:
                raise ConfigError(f"--ckpt_path: {err}") from None
            if subcommand == "fit":
                self._resume = (Path(str(ckpt)), loaded)

    def before_instantiate_classes(self):
        config = self._subconfig(self.config)
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
        config = self._subconfig(self.config)
        try:
            super().instantiate_classes()
        except ConfigError:
            raise
        except (ValueError, TypeError, ImportError, MisconfigurationException) as err:
            raise ConfigError(f"{_component(err, config)}: {err}") from err
        module = self.model
        try:
            self._optimizer = module.build_optimizer(self.trainer.max_steps)
        except (ValueError, TypeError) as err:
            opt = config.model.get("optimizer")
            where = f"model.{'resume_overrides' if 'resume_overrides' in str(err) else 'optimizer'}"
            where += f" ({opt.class_path})" if opt is not None and "resume_overrides" not in str(err) else ""
            raise ConfigError(f"{where}: {err}") from err
        if module.lr_scheduler_factory is not None:  # its first step on a throwaway rule: errors of step 1 now
            try:
                module.lr_scheduler_factory(module.build_optimizer(self.trainer.max_steps)).step()
            except Exception as err:
                sched = config.model.get("lr_scheduler")
                where = f"model.lr_scheduler ({sched.class_path})" if getattr(sched, "class_path", None) else (
                    "model.lr_scheduler")
                raise ConfigError(f"{where}: {type(err).__name__}: {err}") from err
        task = config.model.task
        module.extra_hparams.update({f"task.{k}": v for k, v in dict(task.get("init_args") or {}).items()})
        module.extra_hparams["max_steps"] = self.trainer.max_steps
        if self.trainer.world_size > 1 and not isinstance(self.trainer.strategy, ZOStrategy):
            strategy = type(self.trainer.strategy).__name__
            raise ConfigError(
                f"trainer.strategy={config.trainer.get('strategy')!r} ({strategy}) with "
                f"{self.trainer.num_nodes} node(s) x {self.trainer.num_devices} device(s) runs "
                f"{self.trainer.world_size} processes, each of which would step on its own data (unrelated models): "
                "use --trainer.strategy=zo (zolab.lab.strategy.ZOStrategy: one all-reduce of the losses a step)")
        if self._resume is not None:
            try:
                check_resume(module, self._optimizer, *self._resume)
            except ValueError as err:
                raise ConfigError(str(err)) from None

    def instantiate_trainer(self, **kwargs):
        config = self._subconfig(self.config_init)
        trainer_cfg = config.get("trainer", {})
        if trainer_cfg.get("logger") in (None, True):
            root = Path(trainer_cfg.get("default_root_dir") or RUNS_DIR)
            name = config.get("name") or _default_name(config)
            version = config.get("version")
            try:
                check_name("--name", name)
                if version is not None:
                    inside(root / name / version, root)
                elif (root / name).exists():
                    inside(root / name, root)
            except ValueError as err:
                raise ConfigError(str(err)) from None
            extra = {}
            if self._resume is not None:  # TensorBoard drops a killed run's events from the resumed step on
                extra["purge_step"] = int(self._resume[1]["global_step"])
            kwargs["logger"] = TensorBoardLogger(root, name=name, version=version, default_hp_metric=False, **extra)
        callbacks = list(trainer_cfg.get("callbacks") or [])
        extra = [self._started, *self._callbacks]
        if trainer_cfg.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in callbacks
        ):
            extra.append(self._progress_bar or TimedProgressBar())
        if self._progress_bar is not None and trainer_cfg.get("enable_model_summary") is not False and not any(
                isinstance(c, ModelSummary) for c in callbacks):
            extra.append(ModelSummary(max_depth=0))  # a sweep's display: no model table per run
        if trainer_cfg.get("enable_checkpointing") is not False:
            # Lightning adds its default ModelCheckpoint only when no Checkpoint callback is given
            if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
                extra.append(ModelCheckpoint())
            if not any(isinstance(c, InterruptCheckpoint | OnExceptionCheckpoint) for c in callbacks):
                extra.append(InterruptCheckpoint())
        kwargs["callbacks"] = callbacks + extra
        plugins = trainer_cfg.get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, list | tuple) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)

    def _check_run_dir(self) -> None:
        """The run directory holds no other run (``preflight.check_run_dir``); then this process holds it. With
        several processes, process 0 checks and holds the run (the others write nothing of it)."""
        if rank_zero_only.rank > 0:
            return
        run_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        try:
            check_run_dir(run_dir, self._resume)
            self._new_run_dir = None if run_dir.exists() else run_dir  # removed if the run fails before training
            self._lock = RunLock(run_dir).acquire()
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def before_fit(self):
        self._check_run_dir()
        self._resume = None  # release the memory-mapped checkpoint: Lightning loads it itself

    def fit(self, model, **kwargs):
        """``trainer.fit``; an exception before the first training batch is a ``ConfigError`` (config or data)."""
        try:
            self.trainer.fit(model, **kwargs)
        except SETUP_ERRORS as err:
            if self._started.started:
                raise
            self._remove_new_run_dir()
            raise ConfigError(f"before training: {err}") from err
        finally:
            self.release()

    def _remove_new_run_dir(self) -> None:
        """A run that failed before training leaves no run directory behind, if this process made it (its
        config.yaml, an empty event file and its lock: nothing trained, no checkpoint)."""
        run_dir = getattr(self, "_new_run_dir", None)
        if run_dir is not None and run_dir.is_dir() and not checkpoint_files(run_dir):
            for logger in self.trainer.loggers:
                logger.finalize("failed")  # close the event file before its folder goes
            self.release()
            shutil.rmtree(run_dir, ignore_errors=True)

    def release(self) -> None:
        """Release the run directory (for in-process sweeps: the next run may be this one resumed)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None


_CURRENT: list[ZOLabCLI] = []  # the CLI being built, for cli_main's error handling


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


FIRST_ORDER = "--first_order"  # zolab fit --first_order ...: the module is zolab.lab.firstorder.FirstOrderModule


def cli_main(args=None, run: bool = True, **kwargs) -> ZOLabCLI:
    """Build (and by default run) the CLI; ``args`` as on the command line (a list) or a config dict,
    None to read ``sys.argv``. ``--first_order`` anywhere in the list trains by backprop instead
    (``zolab.lab.firstorder.FirstOrderModule``: the first-order references). Raises ``ConfigError`` for anything
    wrong before training (nothing trained, no checkpoint written) and ``Interrupted`` when a signal stopped
    training."""
    argv = sys.argv
    module = ZOModule
    given = sys.argv[1:] if args is None else args
    if isinstance(given, list) and FIRST_ORDER in given:
        from zolab.lab.firstorder import FirstOrderModule

        module, args = FirstOrderModule, [a for a in given if a != FIRST_ORDER]
    if args is not None:  # in-process use (tests, sweeps): the caller's own argv is not ours
        sys.argv = sys.argv[:1]
    depth = len(_CURRENT)
    try:
        return ZOLabCLI(
            module,
            subclass_mode_data=True,
            args=args,
            run=run,
            save_config_kwargs={"overwrite": True},
            seed_everything_default=0,
            trainer_defaults={"max_steps": 1000, "num_sanity_val_steps": 0, "use_distributed_sampler": False},
            parser_kwargs={"description": "zolab: zeroth-order optimization with Lightning. Subcommands fit, "
                           "validate, test; and `zolab sweep FILE` (see `zolab sweep --help`)."},
            **kwargs,
        )
    except SETUP_ERRORS as err:
        cli = _CURRENT[depth] if len(_CURRENT) > depth else None
        if isinstance(err, ConfigError) or (cli is not None and cli._started.started):
            raise
        raise ConfigError(str(err)) from err
    finally:
        if len(_CURRENT) > depth:
            _CURRENT[depth].release()
        del _CURRENT[depth:]
        sys.argv = argv


def main(argv=None) -> int:
    """``zolab fit|validate|test ARGS``: the exit status (0 done, 2 a config error, 128 + signal when stopped by
    SIGINT/SIGTERM). ``argv`` None: the command line (``sys.argv``, which the processes of a multi-process run
    are started with again)."""
    try:
        cli_main(argv)  # None: LightningCLI reads sys.argv itself
    except ConfigError as err:
        print(f"zolab: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as err:
        print(f"zolab: {err}", file=sys.stderr)
        return err.exit_status
    except SIGTERMException:  # Lightning's SIGTERM outside training (validate, test): not a success
        print("zolab: stopped by SIGTERM", file=sys.stderr)
        return 128 + signal.SIGTERM
    return 0
