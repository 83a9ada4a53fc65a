"""``zolab tune FILE``: a setting (a step size, μ, a rule option) tuned by an Optuna sampler and pruner, on validation.

A tune file is a sweep file whose grid is a search space::

    name: zo_sgd_lr                      # trials go to ROOT/NAME/trial_NNNN; the study is NAME
    base: ../radazo/base.yaml            # as in a sweep file
    space:                               # dotted config keys -> a range or a list of choices
      model.optimizer.init_args.lr: {low: 1.0e-4, high: 1.0, log: true}      # log-uniform
      model.optimizer.init_args.num_queries: {low: 1, high: 8, int: true}
      model.optimizer.init_args.estimator: [forward, central]                # categorical
    metric: val/loss                     # what trials are ranked by: a validation metric, never a test one
    direction: minimize                  # or maximize (an accuracy)
    trials: 20                           # the budget, all workers and machines together
    sampler: tpe                         # tpe, random or grid (every space entry a list); or {type: tpe, ...}
    pruner: hyperband                    # hyperband, successive_halving, median or none; or {type: ..., ...}
    seed: 0                              # the sampler's (worker i adds i)
    args: [--trainer.max_steps=2000]     # as in a sweep file; none may set a space key

Each trial is one ``zolab fit`` run in its worker's process, with Optuna's Lightning pruning callback, which
reports ``metric`` at each validation (its step: the epoch) and stops a trial the pruner gives up on; a run whose
trainer would evaluate the test split (``FinalTest``) is refused. A diverged run (NaN) counts as the worst value.
The storage, ``--workers``, ``--threads``, heartbeats, ``--resume`` and signals work as for ``zolab sweep``. At
the end: the table of trials and the best trial's full config in ``ROOT/NAME/best.yaml`` (``--out``), which
``zolab fit --config`` runs again (bitwise the same run: its seed is in it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.trial import FrozenTrial, TrialState

from zolab.lab import study as st
from zolab.lab.interrupt import SweepSignals
from zolab.lab.sweep import _prepare
from zolab.lab.sweep_display import quiet_lightning
from zolab.lab.sweep_spec import Run, _cli_value, _resolve, load
from zolab.lab.trials import final_metrics, fingerprint, status, table
from zolab.lab.workers import cores, spawn, use_threads

TUNE_KEYS = ("name", "base", "space", "metric", "direction", "trials", "sampler", "pruner", "seed", "args", "root")
SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
            "grid": optuna.samplers.GridSampler}
PRUNERS = {"hyperband": optuna.pruners.HyperbandPruner, "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
           "median": optuna.pruners.MedianPruner, "none": optuna.pruners.NopPruner}
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)  # towards the budget


@dataclass
class Tune:
    name: str
    file: Path
    space: dict[str, BaseDistribution]
    metric: str
    direction: str
    trials: int
    sampler: tuple[str, dict]
    pruner: tuple[str, dict]
    seed: int
    base: Run  # the base config and args, as the one run of an empty grid


def _choice(what: str, spec, known: dict) -> tuple[str, dict]:
    kind, options = (spec, {}) if isinstance(spec, str) else (
        (spec.get("type"), {k: v for k, v in spec.items() if k != "type"}) if isinstance(spec, dict) else (None, {}))
    if kind not in known:
        raise ValueError(f"tune: {what}: {spec!r}; allowed: one of {sorted(known)}, or a mapping with type: and "
                         "that class's options")
    return kind, options


def _distribution(key: str, spec, here: Path) -> BaseDistribution:
    where = f"tune: space[{key!r}]"
    if isinstance(spec, list) and spec:
        bad = [v for v in spec if v is not None and not isinstance(v, bool | int | float | str)]
        if bad:
            raise ValueError(f"{where}: choices must be numbers, strings, booleans or null, got {bad[0]!r}")
        return CategoricalDistribution([_resolve(v, here) for v in spec])
    if isinstance(spec, dict) and {"low", "high"} <= set(spec) and set(spec) <= {"low", "high", "log", "step", "int"}:
        try:
            if spec.get("int"):
                return IntDistribution(spec["low"], spec["high"], log=bool(spec.get("log")), step=spec.get("step", 1))
            return FloatDistribution(float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")),
                                     step=spec.get("step"))
        except (ValueError, TypeError) as err:
            raise ValueError(f"{where}: {err}") from None
    raise ValueError(f"{where}: {spec!r}; allowed: a non-empty list of choices, or a mapping {{low, high}} with "
                     "optional log: true, step: and int: true")


def load_tune(path, root=None, extra_args=None) -> Tune:
    """Parse a tune file; a ValueError names the bad entry."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"tune file {str(path)!r} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"tune file {path}: not readable YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"a tune file must be a mapping with keys {list(TUNE_KEYS)}")
    unknown = sorted(set(data) - set(TUNE_KEYS))
    if unknown:
        raise ValueError(f"tune: unknown key(s) {unknown}; allowed: {list(TUNE_KEYS)} (a sweep's grid: is space:)")
    here, space = path.resolve().parent, data.get("space")
    if not isinstance(space, dict) or not space:
        raise ValueError("tune: space must map dotted config keys to a range or a list of choices")
    space = {k: _distribution(k, v, here) for k, v in space.items()}
    metric, direction = data.get("metric", "val/loss"), data.get("direction", "minimize")
    if not isinstance(metric, str) or not metric.startswith("val/"):
        raise ValueError(f"tune: metric {metric!r}: tuning reads validation metrics only (val/...), never test")
    if direction not in ("minimize", "maximize"):
        raise ValueError(f"tune: direction {direction!r}; allowed: minimize, maximize")
    sampler, pruner = _choice("sampler", data.get("sampler", "tpe"), SAMPLERS), _choice(
        "pruner", data.get("pruner", "hyperband"), PRUNERS)
    grid = 1
    for key, dist in space.items():
        if sampler[0] == "grid" and not isinstance(dist, CategoricalDistribution):
            raise ValueError(f"tune: sampler grid needs a list of values for every space key; {key!r} is a range")
        grid *= len(dist.choices) if isinstance(dist, CategoricalDistribution) else 1
    trials, seed = data.get("trials", grid if sampler[0] == "grid" else 20), data.get("seed", 0)
    for what, v in (("trials", trials), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if what == "trials" else 0):
            raise ValueError(f"tune: {what}={v!r}; allowed: an integer >= {1 if what == 'trials' else 0}")
    args = [str(a) for a in (data.get("args") or [])] + list(extra_args or [])
    clash = [a for a in args if a.startswith("--") and a[2:].split("=", 1)[0] in space]
    if clash:
        raise ValueError(f"tune: {clash[0]!r} sets a key of the search space; drop it from args")
    base = data.get("base")
    if isinstance(base, str) and base.endswith((".yaml", ".yml")):
        base = _resolve(base, here)
    name, (run,) = load({"name": data.get("name") or path.stem, "base": base, "grid": {}, "args": args},
                        root=root or data.get("root"))
    return Tune(name, path, space, metric, direction, trials, sampler, pruner, seed, run)


# ------------------------------------------------------------------------------------------------ trials
class _Failed(Exception):
    """A trial that failed (the tune goes on)."""


class _Stop(Exception):
    """Stop the tune: a signal (``signum``) or a config that cannot run (``error``)."""

    def __init__(self, signum=None, error=""):
        super().__init__(error or f"signal {signum}")
        self.signum, self.error = signum, error


def _validation_pruning(trial, metric):
    from optuna_integration import PyTorchLightningPruningCallback

    from zolab.lab.final_test import FinalTest

    class ValidationPruning(PyTorchLightningPruningCallback):
        """Optuna's Lightning pruning callback, refusing a run that would evaluate the test split."""

        def setup(self, trainer, pl_module, stage):
            if any(isinstance(c, FinalTest) for c in trainer.callbacks):
                raise ValueError("the config's trainer.callbacks hold FinalTest, which evaluates the test split: "
                                 "tuning reads validation only; leave it out (and add it to the best config's run)")

    return ValidationPruning(trial, monitor=metric)


def _objective(tune: Tune, trial, signals) -> float:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from zolab.lab.cli import ConfigError, cli_main
    from zolab.lab.interrupt import Interrupted

    params = {}
    for key, d in tune.space.items():
        if isinstance(d, CategoricalDistribution):
            params[key] = trial.suggest_categorical(key, d.choices)
        elif isinstance(d, IntDistribution):
            params[key] = trial.suggest_int(key, d.low, d.high, log=d.log, step=d.step)
        else:
            params[key] = trial.suggest_float(key, d.low, d.high, log=d.log, step=d.step)
    retry = "run_id" in trial.user_attrs  # queued again (stale, lost, interrupted): it resumes in its directory
    run_id = trial.user_attrs.get("run_id") or f"trial_{trial.number:04d}"
    trial.set_user_attr("run_id", run_id)
    trial.set_user_attr("worker", {"host": st.HOST, "pid": os.getpid(), "trial": trial.number})
    args = [a for a in tune.base.args if not a.startswith("--version=")]
    args += [f"--{k}={_cli_value(v)}" for k, v in params.items()] + [f"--version={run_id}"]
    run = Run(run_id, params, args, tune.base.run_dir.parent / run_id)
    record = {"status": "failed", "error": "", "seconds": 0.0, "metrics": {}}
    start, signum, error, exc = time.perf_counter(), None, None, None
    try:
        _prepare(run, retry, overwrite=False)
        signals.in_run = True
        cli = cli_main(run.args + run.extra, callbacks=[_validation_pruning(trial, tune.metric)])
        value = cli.trainer.callback_metrics.get(tune.metric)
        if value is None:
            error = f"{tune.metric} was never logged: the runs must validate (e.g. trainer.val_check_interval)"
        record["status"] = "done"
    except optuna.TrialPruned as err:
        record["status"], exc = "pruned", err
    except (Interrupted, KeyboardInterrupt, SIGTERMException) as err:
        signum = getattr(err, "signum", 15 if isinstance(err, SIGTERMException) else 2)
        record["status"], record["error"] = "interrupted", f"stopped by signal {signum}"
    except ConfigError as err:
        error = str(err)
    except Exception as err:  # a failed trial: the tune goes on
        record["error"], exc = f"{type(err).__name__}: {err}", _Failed(f"{type(err).__name__}: {err}")
    finally:
        signals.in_run = False
    record["seconds"] = round(time.perf_counter() - start, 2)
    record["metrics"] = final_metrics(run.run_dir, prefixes=("val/",)) if run.run_dir.is_dir() else {}
    record["error"] = error or record["error"]
    for key, v in record.items():
        trial.set_user_attr(key, v)
    shown = " ".join(f"{k.rsplit('.', 1)[-1]}={v:.4g}" if isinstance(v, float) else f"{k.rsplit('.', 1)[-1]}={v}"
                     for k, v in params.items())
    print(f"{run_id} ({shown}): {record['status']} in {record['seconds']:.1f} s"
          + (f", {tune.metric} {float(value):.4g}" if record["status"] == "done" and not error else "")
          + (f" ({record['error']})" if record["error"] else ""), flush=True)
    if signum or error:
        raise _Stop(signum, error)
    if exc is not None:
        raise exc
    value = float(value)
    return value if value == value else (float("inf") if tune.direction == "minimize" else -float("inf"))


def optimize(tune: Tune, study, worker: int = 0) -> _Stop | None:
    """Run trials in this process until the budget is reached; returns what stopped it early, if anything."""
    kind, options = tune.sampler
    if kind == "grid":
        sampler = optuna.samplers.GridSampler({k: d.choices for k, d in tune.space.items()}, seed=tune.seed + worker,
                                              **options)
    else:
        sampler = SAMPLERS[kind](**{"seed": tune.seed + worker, **({"constant_liar": True} if kind == "tpe" else {}),
                                    **options})
    study.sampler, study.pruner = sampler, PRUNERS[tune.pruner[0]](**tune.pruner[1])
    left = tune.trials - len(study.get_trials(deepcopy=False, states=COUNTED))
    if left <= 0 and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial's own line says how it ended
    with SweepSignals() as signals, quiet_lightning():
        def stop_on_signal(study, trial):
            if signals.signum is not None:
                study.stop()

        try:
            study.optimize(lambda trial: _objective(tune, trial, signals), n_trials=max(left, 1), catch=(_Failed,),
                           callbacks=[optuna.study.MaxTrialsCallback(tune.trials, states=COUNTED), stop_on_signal])
        except _Stop as stop:
            return stop
        return _Stop(signals.signum) if signals.signum is not None else None


def prepare(storage, tune: Tune, resume=False, overwrite=False, join=False):
    """The tune's study: new, or the existing one if it was made for the same space, metric, base and args."""
    from zolab.lab.sweep import _clear

    root, spec = tune.base.run_dir.parent.parent, {
        "space": {k: distribution_to_json(d) for k, d in tune.space.items()}, "metric": tune.metric,
        "direction": tune.direction, "args": [a for a in fingerprint(tune.base) if not a.startswith("--version=")]}
    folder = root / tune.name
    existing = sorted(folder.glob("trial_*")) if folder.is_dir() else []
    names = set(optuna.get_all_study_names(storage))
    if overwrite and not join:
        if tune.name in names:
            optuna.delete_study(study_name=tune.name, storage=storage)
            names.discard(tune.name)
        for path in existing:
            _clear(path, root)
        existing = []
    if tune.name not in names and not join:
        if existing and not resume:
            raise ValueError(f"tune: {folder} holds trial directories and no study; pass --overwrite or --resume")
        try:
            study = optuna.create_study(study_name=tune.name, storage=storage, direction=tune.direction)
        except optuna.exceptions.DuplicatedStudyError:
            pass
        else:
            study.set_user_attr(st.ORIGIN, {"path": str(tune.file.resolve()), "host": st.HOST})
            study.set_user_attr("zolab.tune", spec)
            study.set_user_attr(st.KIND, "tune")
            return study
    elif tune.name not in names:
        raise ValueError(f"no study {tune.name!r} in {st.shown(storage.url)}")
    study = st.load_study(storage, tune.name, "tune")
    if study.user_attrs.get("zolab.tune") != spec:
        old = study.user_attrs.get("zolab.tune") or {}
        what = [k for k in spec if old.get(k) != spec[k]]
        raise ValueError(f"study {tune.name!r} in {st.shown(storage.url)} was made for another {' and '.join(what)} "
                         f"(file {(study.user_attrs.get(st.ORIGIN) or {}).get('path')}): refused before any run; "
                         "give the tune another name, or pass --overwrite to delete the study and its trials")
    if resume and not join:
        st.recover(study, storage)
        st.requeue(study, {t.user_attrs.get("run_id") for t in study.get_trials(deepcopy=False)})
    return study


def write_best(tune: Tune, study, out: Path) -> FrozenTrial | None:
    """The best finished trial's full config, as a file ``zolab fit --config`` runs (no name/version/ckpt_path)."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    run_dir = tune.base.run_dir.parent / best.user_attrs["run_id"]
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    for key in ("ckpt_path", "version"):
        config.pop(key, None)
    config["name"] = f"{tune.name}_best"
    (config.get("trainer") or {}).pop("default_root_dir", None)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f".{out.name}.part")
    part.write_text(f"# zolab tune {tune.file}: the best of {len(study.trials)} trials, {best.user_attrs['run_id']} "
                    f"({tune.metric} {best.value:.6g})\n# zolab fit --config {out}\n"
                    + yaml.safe_dump(config, sort_keys=False))
    part.replace(out)
    return best


def main(argv=None) -> int:
    """``zolab tune FILE``: exit status 0 with a best config written, 1 when no trial finished, 2 for bad input,
    128 + signal when stopped by SIGINT or SIGTERM."""
    cli = argparse.ArgumentParser(prog="zolab tune", description=__doc__.split("\n\n")[0].strip("`"))
    cli.add_argument("file", help="the tune YAML (name, base, space, metric, trials, sampler, pruner, args)")
    cli.add_argument("--root", default=None, help="where trials go (default: the file's root, else runs/)")
    cli.add_argument("--out", default=None, help="the best config (default ROOT/NAME/best.yaml)")
    cli.add_argument("--overwrite", action="store_true", help="delete the study and its trial directories first")
    cli.add_argument("--resume", action="store_true", help="queue failed and interrupted trials again")
    cli.add_argument("--workers", type=int, default=1, help="trials at a time on this machine (processes)")
    cli.add_argument("--threads", type=int, default=None, help="CPU threads per worker (default cores / workers)")
    cli.add_argument("--storage", default=None, help=f"database URL (default sqlite:///ROOT/NAME/{st.DB_FILE})")
    cli.add_argument("--heartbeat", type=int, default=st.HEARTBEAT, help="seconds between a trial's heartbeats")
    cli.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)  # a worker started by --workers
    args, overrides = cli.parse_known_args(argv)
    if args.overwrite and args.resume:
        cli.error("--overwrite and --resume exclude each other")
    try:
        tune = load_tune(args.file, args.root, overrides)
        root = tune.base.run_dir.parent.parent
        url = args.storage or st.default_url(root, tune.name)
        if not args.storage:
            (root / tune.name).mkdir(parents=True, exist_ok=True)
        storage = st.open_storage(url, args.heartbeat, create=not args.worker)
        study = prepare(storage, tune, args.resume, args.overwrite, join=bool(args.worker))
    except ValueError as err:
        print(f"zolab tune: error: {err}", file=sys.stderr)
        return 2
    if args.worker:
        use_threads(args.threads or 1)
        stop = optimize(tune, study, args.worker)
        return 128 + stop.signum if stop and stop.signum else (2 if stop else 0)
    print(f"tune {tune.name}: {tune.trials} trials -> {root / tune.name}; study in {st.shown(storage.url)}", flush=True)
    if args.workers > 1:
        threads = args.threads or max(1, cores() // args.workers)
        codes, signum = spawn([args.file, "--root", str(root), "--storage", url, "--heartbeat", str(args.heartbeat),
                               "--threads", str(threads), *overrides], args.workers, threads, module="zolab.lab.tune")
        stop = _Stop(signum) if signum else next((_Stop(c - 128) for c in codes if c in (130, 143)), None)
        stop = stop or (_Stop(error="a worker stopped on a config error") if 2 in codes else None)
    else:
        if args.threads:
            use_threads(args.threads)
        stop = optimize(tune, study)
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"run": t.user_attrs.get("run_id", f"trial_{t.number:04d}"), **t.params, "status": status([t]),
                     **(t.user_attrs.get("metrics") or {}), "seconds": t.user_attrs.get("seconds")})
    print(table(rows, list(tune.space)))
    best = write_best(tune, study, Path(args.out) if args.out else root / tune.name / "best.yaml")
    if best is not None:
        print(f"best: {best.user_attrs['run_id']} ({tune.metric} {best.value:.4g}): "
              + ", ".join(f"{k}={v}" for k, v in best.params.items())
              + f"\n  zolab fit --config {args.out or root / tune.name / 'best.yaml'}")
    if stop is not None:
        print(f"zolab tune: stopped: {stop.error or 'by a signal'}" + ("" if stop.error else
              "; `zolab tune FILE --resume` continues it"), file=sys.stderr)
        return 128 + stop.signum if stop.signum else 2
    return 0 if best is not None else 1


if __name__ == "__main__":
    sys.exit(main())
