"""Sweeps on an Optuna study: each grid point one trial in a storage, claimed once by any of many workers.

``zolab sweep FILE`` keeps its runs where they always were (``ROOT/NAME/RUN_ID``: TensorBoard version,
``sweep_run.yaml``, checkpoints); underneath, each run is one trial of an Optuna study named after the sweep
(``NAME``, or ``NAME/STEM`` for a file whose stem is not its name), in a storage: by default SQLite in
``ROOT/NAME/study.db`` (no server), or any database URL (``--storage postgresql://...``: many machines). A trial
holds its run id, its grid values (numbers also as Optuna parameters), its ``zolab fit`` arguments as they read
on any machine (the root left out, each YAML file named by the hash of its content) and, once it ends, its
status, error, seconds and final metrics (``zolab.lab.trials``).

A waiting trial becomes running in one transaction (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a row lock), so
exactly one worker gets it. Its worker records a heartbeat every ``heartbeat`` seconds; a running trial whose
heartbeat is older than 3 x that (a worker killed, a machine gone), or whose worker was a process of this machine
that no longer exists, fails and is queued again by Optuna's ``RetryHeartbeatStaleTrialCallback``: the next worker
resumes it from its newest checkpoint. Before any run, the study must hold this file's runs with the same
arguments: a changed or removed run is refused with its name, added runs are added and listed, and a run that
another sweep file of the same name defines otherwise is refused.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import warnings
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from zolab.lab.rundir import inside
from zolab.lab.trials import diff, fingerprint

DB_FILE = "study.db"
HEARTBEAT = 10  # seconds between heartbeats; a trial is stale after 3 of them
KIND, ORIGIN = "zolab.kind", "zolab.file"  # study attributes: "sweep" or "tune" (set last: the study is ready)
HOST = socket.gethostname()
optuna.logging.set_verbosity(optuna.logging.WARNING)


def study_name(name: str, file) -> str:
    """``NAME`` for ``NAME.yaml`` (or a mapping), ``NAME/STEM`` for a file ``STEM.yaml`` that says ``name: NAME``
    (two sweep files may share one runs folder, as experiments/minilm/grid.yaml and grid_sgd.yaml do)."""
    stem = Path(file).stem if file is not None else name
    return name if stem == name else f"{name}/{stem}"


def default_url(root, name: str) -> str:
    """The embedded storage: ``sqlite:///ROOT/NAME/study.db`` (refused if it would resolve outside ROOT)."""
    db = Path(root) / name / DB_FILE
    inside(db, root)
    return f"sqlite:///{db.resolve()}"


def shown(url: str) -> str:
    """The URL with its password hidden, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_storage(url: str, heartbeat: int = HEARTBEAT, create: bool = True) -> RDBStorage:
    """An RDBStorage with heartbeats and retries of stale trials, or a ValueError naming the URL and what is wrong
    (not a URL, a driver not installed, no server, a missing SQLite file when ``create`` is False)."""
    from sqlalchemy import event
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise ValueError(f"--storage {url!r} is not a database URL ({err}); e.g. sqlite:///PATH.db or "
                         "postgresql://USER@HOST/DB") from None
    where, backend = shown(url), parsed.get_backend_name()
    if isinstance(heartbeat, bool) or not isinstance(heartbeat, int) or heartbeat < 1:
        raise ValueError(f"--heartbeat={heartbeat!r}; allowed: an integer number of seconds >= 1")
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ValueError(f"--storage {where}: an in-memory database cannot be shared; give a file: sqlite:///PATH")
        if not create and not Path(parsed.database).is_file():
            raise ValueError(f"--storage {where}: no such database file (run the sweep first)")
        kwargs = {"connect_args": {"timeout": 120, "isolation_level": None}}  # transactions begun below
    else:
        kwargs = {"pool_pre_ping": True}
        if backend == "postgresql":
            kwargs["connect_args"] = {"connect_timeout": 20}
    try:
        for attempt in range(5):  # two processes creating a new database's tables at once: the later retries
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ExperimentalWarning)
                    storage = RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat,
                                         grace_period=3 * heartbeat,
                                         heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback())
                break
            except Exception as err:
                text = str(err.__cause__ or err).lower()
                if attempt == 4 or not any(m in text for m in ("already exists", "unique constraint", "locked")):
                    raise
                time.sleep(0.5 + attempt)
    except ImportError as err:
        extra = " (pip install 'zolab[sweep-pg]')" if backend == "postgresql" else ""
        raise ValueError(f"--storage {where}: its database driver is not installed: {err.__cause__ or err}{extra}"
                         ) from None
    except Exception as err:  # sqlalchemy's and Optuna's errors: no server, a bad file, a foreign schema
        reason = (str(err.__cause__ or err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"--storage {where}: cannot open it: {reason}") from None
    if backend == "sqlite":  # every transaction takes the write lock first: a claim reads and writes atomically
        event.listen(storage.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        storage.engine.dispose()
    return storage


# ------------------------------------------------------------------------------------------------ the grid
def _template(run, resume: bool) -> FrozenTrial:
    """A waiting trial for ``run``; its numeric grid values are also Optuna parameters (one-point distributions,
    so that later grid points stay compatible), for the dashboard's plots."""
    params, dists = {}, {}
    for key, value in run.values.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            params[key] = value
            dists[key] = IntDistribution(value, value) if isinstance(value, int) else FloatDistribution(value, value)
    return optuna.trial.create_trial(state=TrialState.WAITING, params=params, distributions=dists, user_attrs={
        "run_id": run.run_id, "values": run.values, "args": fingerprint(run), "resume": resume})


def attempts(study) -> dict[str, list[FrozenTrial]]:
    """Each run id's trials, oldest first (trials marked ``duplicate`` left out)."""
    out: dict[str, list[FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False):
        if "run_id" in t.user_attrs and t.user_attrs.get("status") != "duplicate":
            out.setdefault(t.user_attrs["run_id"], []).append(t)
    return out


def load_study(storage, name: str, kind: str, wait: float = 120.0):
    """The study ``name`` once its creator has marked it ready, or a ValueError. Its creator sets ``zolab.file`` at
    once, then adds the trials, then ``zolab.kind``: a study without the first after 2 s was not made by zolab."""
    study = optuna.load_study(study_name=name, storage=storage)
    start = time.monotonic()
    while study.user_attrs.get(KIND) is None:
        if time.monotonic() - start > (wait if ORIGIN in study.user_attrs else 2.0):
            break
        time.sleep(0.2)
    found = study.user_attrs.get(KIND)
    if found != kind:
        what = f"is a zolab {found}, not a {kind}" if found else "was not made by zolab (no zolab.kind attribute)"
        raise ValueError(f"study {name!r} in {shown(storage.url)} {what}: refused; choose another name")
    return study


def prepare(storage, name: str, runs, file=None, *, resume=False, overwrite=False, join=False, log=print):
    """The sweep's study, ready to claim from. New: its runs as waiting trials (with ``resume``, a run whose
    directory exists resumes; with ``overwrite``, an existing study and run directories are deleted first).
    Existing: it must hold these runs with these arguments (added runs are added and named; ``join`` adds
    nothing, as a worker started by a sweep); with ``resume``, failed and interrupted runs are queued again.
    Raises ValueError, before any run, for anything that does not match."""
    from zolab.lab.sweep import _clear

    root = runs[0].run_dir.parent.parent
    names = set(optuna.get_all_study_names(storage))
    _check_siblings(storage, names, name, runs)
    if overwrite and not join:  # the directories first: one that a live run holds is refused, nothing deleted
        for run in runs:
            if run.run_dir.exists():
                _clear(run.run_dir, root)
        if name in names:
            optuna.delete_study(study_name=name, storage=storage)
            names.discard(name)
    if name not in names and not join:
        existing = [r for r in runs if r.run_dir.exists()]
        if existing and not resume:
            shown_dirs = ", ".join(str(r.run_dir) for r in existing[:3]) + (" ..." if len(existing) > 3 else "")
            raise ValueError(f"sweep: {len(existing)} run director(y/ies) exist ({shown_dirs}) and no study holds "
                             "them; pass --overwrite to replace them or --resume to skip finished runs and resume "
                             "the others")
        try:
            study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
        except DuplicatedStudyError:  # another worker created it a moment ago: join it
            pass
        else:
            study.set_user_attr(ORIGIN, {"path": str(Path(file).resolve()) if file else None, "host": HOST})
            study.add_trials([_template(r, resume=r.run_dir.exists()) for r in runs])
            study.set_user_attr(KIND, "sweep")
            return study
    elif name not in names:
        raise ValueError(f"no study {name!r} in {shown(storage.url)}")
    study = load_study(storage, name, "sweep")
    _check_same_runs(study, storage, name, runs, file)
    stored = attempts(study)
    added = [r for r in runs if r.run_id not in stored]
    if added and not join:
        study.add_trials([_template(r, resume=r.run_dir.exists()) for r in added])
        log(f"sweep {name}: the grid grew: {len(added)} run(s) added to the study: "
            + ", ".join(r.run_id for r in added))
    if resume and not join:
        recover(study, storage)
        requeue(study, [r.run_id for r in runs])
    return study


def _check_same_runs(study, storage, name, runs, file) -> None:
    stored = {rid: ts[0].user_attrs.get("args") for rid, ts in attempts(study).items()}
    mine = {r.run_id: fingerprint(r) for r in runs}
    common = [rid for rid in mine if rid in stored]
    changed = [rid for rid in common if stored[rid] != mine[rid]]
    removed = [rid for rid in stored if rid not in mine]
    if not (changed or removed):
        return
    origin = study.user_attrs.get(ORIGIN) or {}
    where = f"study {name!r} in {shown(storage.url)}"
    here = str(Path(file).resolve()) if file else None
    if origin.get("path") == here and origin.get("host") == HOST or len(changed) < len(common):
        head = f"{file} changed under {where}"
    else:
        head = f"{where} was made by another sweep file ({origin.get('path')} on {origin.get('host')}) than {file}"
    diffs = {rid: diff(stored[rid], mine[rid]) for rid in changed}
    if len(changed) > 1 and len(set(diffs.values())) == 1:
        parts = [f"every run's {diffs[changed[0]]}" if len(changed) == len(common) else
                 f"runs {', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}: {diffs[changed[0]]}"]
    else:
        parts = [f"run {rid}: {diffs[rid]}" for rid in changed[:3]]
        parts += [f"{len(changed) - 3} more changed run(s)"] if len(changed) > 3 else []
    if removed:
        parts.append(f"run(s) in the study but not in the file: {', '.join(removed[:5])}"
                     + (f" and {len(removed) - 5} more" if len(removed) > 5 else ""))
    raise ValueError(f"{head}: " + "; ".join(parts) + ". Refused before any run: restore the file, give the sweep "
                     "another name, or pass --overwrite to delete the study and its run directories")


def _check_siblings(storage, names, name, runs) -> None:
    """Other sweep files of the same sweep name share the runs folder: none may define one of these runs otherwise."""
    base = name.split("/")[0]
    mine = {r.run_id: fingerprint(r) for r in runs}
    for other in sorted(n for n in names if n != name and (n == base or n.startswith(base + "/"))):
        study = optuna.load_study(study_name=other, storage=storage)
        for rid, trials in attempts(study).items():
            if rid in mine and trials[0].user_attrs.get("args") != mine[rid]:
                raise ValueError(f"run {rid} of {name!r} is also a run of study {other!r} in {shown(storage.url)} "
                                 f"(another sweep file of the same name) with other arguments "
                                 f"({diff(trials[0].user_attrs.get('args'), mine[rid])}): the two would write one "
                                 "run directory; refused before any run")


def requeue(study, run_ids) -> list[str]:
    """Queue again each run whose newest trial failed or was interrupted (none finished): its next worker resumes
    it. Returns their run ids."""
    out = []
    for rid, trials in attempts(study).items():
        if rid in run_ids and trials[-1].state == TrialState.FAIL and not any(
                t.state == TrialState.COMPLETE for t in trials):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                RetryHeartbeatStaleTrialCallback()(study, trials[-1])
            out.append(rid)
    return out


# ------------------------------------------------------------------------------------------------ claims
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process not yet reaped by its parent is a zombie: dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


_UNMARKED: dict[int, float] = {}  # running trials seen without their worker's mark: trial id -> when first seen


def recover(study, storage) -> None:
    """Fail and queue again the running trials that lost their worker: heartbeat older than the grace period
    (any machine), a worker process of this machine that is gone (at once, without waiting for the grace), or no
    worker's mark for the grace period (a worker killed between its claim and its first heartbeat)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    now = time.monotonic()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker") or {}
        if worker.get("trial") != t.number:  # this process's own clock: machines' clocks may differ
            if now - _UNMARKED.setdefault(t._trial_id, now) < 3 * storage.heartbeat_interval:
                continue
        elif worker.get("host") != HOST or _alive(int(worker.get("pid", 0))):
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "status", "lost")
            storage.set_trial_user_attr(t._trial_id, "error", f"worker {HOST}:{worker['pid']} died" if worker.get(
                "trial") == t.number else "its worker never marked it (killed while claiming it?)")
            failed = storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:  # another worker got there first
            continue
        if failed:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                RetryHeartbeatStaleTrialCallback()(study, storage.get_trial(t._trial_id))


def claim(study, storage, order: dict[str, int]) -> FrozenTrial | None:
    """The first waiting trial in grid order that this process turns into a running one (exactly one process
    can), marked with this worker and a first heartbeat; None when none is waiting."""
    waiting = [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
               if t.user_attrs.get("run_id") in order]
    for t in sorted(waiting, key=lambda t: (order[t.user_attrs["run_id"]], t.number)):
        try:
            if not storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
                continue
        except UpdateFinishedTrialError:
            continue
        storage.record_heartbeat(t._trial_id)
        storage.set_trial_user_attr(t._trial_id, "worker", {"host": HOST, "pid": os.getpid(), "trial": t.number})
        return storage.get_trial(t._trial_id)
    return None


def is_retry(trial: FrozenTrial) -> bool:
    """A trial queued again (stale, lost or failed before) or created for a run directory that exists: resume."""
    return "failed_trial" in trial.system_attrs or bool(trial.user_attrs.get("resume"))


def running(study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


class Heartbeat:
    """Records the trial's heartbeat every ``storage.heartbeat_interval`` seconds in a thread, while in ``with``."""

    def __init__(self, storage, trial_id: int):
        self.storage, self.trial_id = storage, trial_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{trial_id}")

    def _beat(self):
        while not self._stop.wait(self.storage.heartbeat_interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # the database away for a moment: the next beat retries (the grace allows 2)
                pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


def finish(study, storage, trial: FrozenTrial, state: TrialState, value: float | None, attrs: dict) -> None:
    """Record a trial's end: ``attrs`` (status, error, seconds, metrics) and its state. If another worker failed it
    meanwhile as stale (this worker paused past the grace), a finished run is recorded as a new trial."""
    for key, v in attrs.items():
        try:
            storage.set_trial_user_attr(trial._trial_id, key, v)
        except UpdateFinishedTrialError:
            break
    values = None if state != TrialState.COMPLETE else [_finite(value)]
    study.tell(trial.number, values, state=state, skip_if_finished=True)
    if state == TrialState.COMPLETE and storage.get_trial(trial._trial_id).state != TrialState.COMPLETE:
        study.add_trial(optuna.trial.create_trial(
            state=state, values=values, params=trial.params, distributions=trial.distributions,
            user_attrs={**trial.user_attrs, **attrs}))


def _finite(value) -> float:
    """A trial's value: NaN (a diverged run) becomes +inf, which Optuna keeps (NaN would fail the trial)."""
    return float("inf") if value is None or value != value else float(value)

