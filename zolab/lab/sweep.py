"""A sweep's runs one after another, each a ``zolab fit`` with its own TensorBoard version.

The file and its runs: ``zolab.lab.sweep_spec``; the ``zolab sweep`` command, which runs them as the trials of an
Optuna study with any number of workers: ``zolab.lab.workers``. The runs go one after
another, in this process (default) or each in a subprocess (``--subprocess``); a failed run is reported and the
sweep goes on. SIGINT (Ctrl-C) or SIGTERM stops the sweep after the current run's checkpoint (exit status 130
or 143). Each run leaves ``sweep_run.yaml`` (status, command, seconds) beside its event files. ``--resume``
skips finished runs and resumes every other one from the newest checkpoint it can load among
``checkpoints/*.ckpt`` (a run killed with kill -9 resumes from its last periodic checkpoint); it never deletes a
checkpoint: a run whose checkpoint files all fail to load is reported as failed and left alone, and only a run
directory without any checkpoint is cleared and run again. On a terminal the sweep shows one line refreshed in
place (run i of N, its step, the ETAs); otherwise one line per run; a summary table ends it
(``zolab.lab.sweep_display``).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from zolab.lab.interrupt import Interrupted, SweepSignals
from zolab.lab.rundir import RunLock, checkpoint_files, inside, newest_checkpoint
from zolab.lab.sweep_display import SweepProgress, quiet_lightning
from zolab.lab.sweep_spec import Run, load

__all__ = ["Run", "SweepProgress", "load", "run_sweep"]

STATUS_FILE = "sweep_run.yaml"
LOG_FILE = "sweep_run.log"  # a subprocess run's output, when the sweep shows its own display


def _status(run_dir: Path) -> str | None:
    path = run_dir / STATUS_FILE
    try:
        return (yaml.safe_load(path.read_text()) or {}).get("status") if path.exists() else None
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError):
        return None  # a damaged status file: the run is not known to be done


def _write_status(run: Run) -> None:
    """``sweep_run.yaml``, written atomically (a kill during the write leaves the previous file)."""
    path = run.run_dir / STATUS_FILE
    part = path.with_name(f".{STATUS_FILE}.{os.getpid()}.part")
    part.write_text(yaml.safe_dump({
        "status": run.status, "seconds": round(run.seconds, 2), "values": run.values,
        "command": shlex.join(["zolab", *run.args, *run.extra]), "error": run.error,
    }, sort_keys=False))
    os.replace(part, path)


def _clear(run_dir: Path, root: Path) -> None:
    """Delete a run directory: only inside the root (links resolved), and not while another process holds it."""
    inside(run_dir, root)
    lock = RunLock(run_dir).acquire()  # refuses a directory a live run writes
    try:
        shutil.rmtree(run_dir)
    finally:
        lock.release()


def _execute(run: Run, use_subprocess: bool, signals: SweepSignals, progress=None) -> str:
    """Run one ``zolab fit``; its status: done, failed or interrupted."""
    args = run.args + run.extra
    if use_subprocess:
        log = None
        if progress is not None:  # the sweep's display replaces the run's own output, kept in the run's folder
            run.run_dir.mkdir(parents=True, exist_ok=True)
            log = open(run.run_dir / LOG_FILE, "a")
        try:
            signals.child = subprocess.Popen([sys.executable, "-m", "zolab.entry", *args], start_new_session=True,
                                             stdout=log, stderr=subprocess.STDOUT if log else None)
            code = signals.child.wait()
        finally:
            signals.child = None
            if log is not None:
                log.close()
        if code in (128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM):
            run.signum = abs(code) % 128
            run.error = f"stopped by {signal.Signals(run.signum).name}"
            return "interrupted"
        run.error = "" if code == 0 else f"exit status {code}" + (f" (see {run.run_dir / LOG_FILE})" if log else "")
        return "done" if code == 0 else "failed"
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from zolab.lab.cli import cli_main

    signals.in_run = True
    try:
        cli = cli_main(args, progress_bar=progress.callback(run) if progress is not None else None)
    except Interrupted as err:
        run.signum, run.error = err.signum, str(err)
        return "interrupted"
    except SIGTERMException:
        run.signum, run.error = signal.SIGTERM, "stopped by SIGTERM"
        return "interrupted"
    except KeyboardInterrupt:
        run.signum, run.error = signal.SIGINT, "stopped by SIGINT"
        return "interrupted"
    except SystemExit as exit_:  # Lightning turns a KeyboardInterrupt outside training into sys.exit(1)
        if exit_.code == 1:
            run.signum, run.error = signal.SIGINT, "stopped by SIGINT"
            return "interrupted"
        run.error = f"exit status {exit_.code}"
        return "failed" if exit_.code else "done"
    except Exception as err:  # a failed run must not stop the sweep
        run.error = f"{type(err).__name__}: {err}"
        return "failed"
    finally:
        signals.in_run = False
    run.steps = cli.trainer.global_step
    late = [c.late_signal for c in cli.trainer.callbacks if getattr(c, "late_signal", None)]
    if late:  # a signal during the run's last step or validation: the run is done, the sweep stops after it
        signals.signum = late[0]
    return "done"


def run_sweep(runs: list[Run], *, use_subprocess: bool = False, overwrite: bool = False, resume: bool = False,
              log=print, progress: SweepProgress | None = None) -> list[Run]:
    """Run ``runs`` one after another; returns them with status, seconds and error filled in. ``progress``: one
    display for the whole sweep (None: each run shows its own). A signal stops the sweep after the current
    run's checkpoint; the runs not started stay ``pending``."""
    existing = [r for r in runs if r.run_dir.exists()]
    if existing and not (overwrite or resume):
        names = ", ".join(str(r.run_dir) for r in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise ValueError(f"sweep: {len(existing)} run director(y/ies) exist ({names}); pass --overwrite to "
                         "replace them or --resume to skip finished runs and resume the others")
    for run in runs:  # every path the sweep may delete or write stays inside its root
        inside(run.run_dir, run.run_dir.parent.parent)
    quiet = quiet_lightning() if progress is not None else contextlib.nullcontext()
    with SweepSignals() as signals, quiet:
        for i, run in enumerate(runs, 1):
            if signals.signum is not None:  # a signal between two runs: stop before the next
                log("sweep interrupted: `zolab sweep FILE --resume` continues it")
                break
            try:
                status = _prepare(run, resume, overwrite)
            except ValueError as err:
                run.status, run.error = "failed", str(err)
                log(f"[{i}/{len(runs)}] {run.run_id}: failed ({err})")
                continue
            if status == "skipped":
                run.status = "skipped"
                log(f"[{i}/{len(runs)}] {run.run_id}: finished before, skipped")
                continue
            if progress is None:
                log(f"[{i}/{len(runs)}] {run.run_id}: {shlex.join(['zolab', *run.args, *run.extra])}")
            else:
                progress.start(i, len(runs), run)
            start = time.perf_counter()
            run.status = _execute(run, use_subprocess, signals, progress)
            run.seconds = time.perf_counter() - start
            if run.run_dir.exists():
                _write_status(run)
            line = f"[{i}/{len(runs)}] {run.run_id}: {run.status} in {run.seconds:.1f} s" + (
                f" ({run.error})" if run.error else "")
            if progress is None:
                log(line)
            else:
                progress.end(run, line)
            if run.status == "interrupted":
                log("sweep interrupted: `zolab sweep FILE --resume` continues it")
                break
        if signals.signum is not None and not any(r.signum for r in runs):
            pending = next((r for r in runs if r.status == "pending"), None)
            if pending is not None:  # report the signal on the first run it kept from starting
                pending.signum, pending.error = signals.signum, f"stopped by {signal.Signals(signals.signum).name}"
    return runs


def _prepare(run: Run, resume: bool, overwrite: bool) -> str:
    """Before a run: "skipped" (done before, with ``resume``) or "ready", with ``run.extra`` set to resume it."""
    run.extra = []
    root = run.run_dir.parent.parent
    if not run.run_dir.exists():
        return "ready"
    if resume:
        if _status(run.run_dir) == "done":
            return "skipped"
        ckpt, _, bad = newest_checkpoint(run.run_dir)
        if ckpt is not None:
            run.extra = [f"--ckpt_path={ckpt}"]
            return "ready"
        if bad or checkpoint_files(run.run_dir):
            raise ValueError(f"no loadable checkpoint in {run.run_dir / 'checkpoints'}: " + "; ".join(bad) +
                             ". Nothing was deleted: move these files away, or pass --overwrite")
    elif not overwrite:
        raise ValueError(f"{run.run_dir} exists: pass --overwrite or --resume")
    _clear(run.run_dir, root)
    return "ready"
