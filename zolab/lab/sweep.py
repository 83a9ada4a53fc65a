"""``zolab sweep FILE``: ablations in one command, each run a ``zolab fit`` with its own TensorBoard version.

A sweep file::

    name: beta1_ablation               # runs go to runs/NAME/RUN_ID (TensorBoard: one run per RUN_ID)
    base: ../radazo/base.yaml          # a config (path relative to this file) or an inline mapping
    grid:                              # dotted config keys -> values; one run per combination,
      model.optimizer.init_args.betas: [[0.0, 0.99], [0.5, 0.99], [0.9, 0.99], [0.99, 0.99]]
    args: [--trainer.max_steps=2000]   # optional: extra command-line overrides for every run

Each run is exactly ``zolab fit --config BASE --KEY=VALUE ... --name NAME --version RUN_ID`` (``--dry-run``
prints these commands), so a grid value means what it means on the command line: a class path
(``model.task: zolab.tasks.synthetic.Levy``), a mapping, or a YAML file (a path relative to the sweep file)
whose entries are merged onto the base, as LightningCLI does. The first grid key varies slowest. RUN_ID
joins one short label per key (a class or file name, else ``key=value``); NAME is one directory name, so
runs stay inside the root. The runs go one after another, in this process (default) or each in a subprocess
(``--subprocess``); a failed run is reported and the sweep goes on. SIGINT (Ctrl-C) or SIGTERM stops the sweep
after the current run's checkpoint (exit status 130 or 143). Each run leaves ``sweep_run.yaml`` (status,
command, seconds) beside its event files. ``--resume`` skips finished runs and resumes every other one from
the newest checkpoint it can load among ``checkpoints/*.ckpt`` (a run killed with kill -9 resumes from its
last periodic checkpoint); it never deletes a checkpoint: a run whose checkpoint files all fail to load is
reported as failed and left alone, and only a run directory without any checkpoint is cleared and run again.
On a terminal the sweep shows one line refreshed in place (run i of N, its step, the ETAs); otherwise one line
per run; a summary table ends it.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from lightning.pytorch.callbacks import ProgressBar
from typing_extensions import override

from zolab.lab.cli import Interrupted
from zolab.lab.rundir import RunLock, check_name, checkpoint_files, inside, newest_checkpoint

SWEEP_KEYS = ("name", "base", "grid", "args", "root")
STATUS_FILE = "sweep_run.yaml"
LOG_FILE = "sweep_run.log"  # a subprocess run's output, when the sweep shows its own display
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Run:
    """One run of a sweep: its id, the grid values it takes, and its ``zolab fit`` arguments."""

    run_id: str
    values: dict
    args: list[str]
    run_dir: Path
    status: str = "pending"
    seconds: float = 0.0
    error: str = ""
    extra: list[str] = field(default_factory=list)
    steps: int | None = None  # global_step at the end (in-process runs)
    loss: float | None = None  # the last train/loss shown (in-process runs)
    signum: int | None = None  # the signal that interrupted it


def _label(key: str, value) -> str:
    if isinstance(value, str) and value.endswith((".yaml", ".yml")):
        return Path(value).stem
    if isinstance(value, dict) and "class_path" in value:
        return str(value["class_path"]).rsplit(".", 1)[-1]
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+", value):
        return value.rsplit(".", 1)[-1]  # a class path
    text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return f"{key.rsplit('.', 1)[-1]}={text}"


def _safe(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9_.,=+-]+", "_", text)
    return "_" + text if text in (".", "..") else text


def _resolve(value, here: Path):
    """A YAML file path relative to the sweep file becomes absolute; everything else stays."""
    if isinstance(value, str) and value.endswith((".yaml", ".yml")):
        path = Path(value) if Path(value).is_absolute() else here / value
        if not path.exists():
            raise ValueError(f"sweep: file {value!r} not found (paths are relative to the sweep file, {here})")
        return str(path.resolve())
    return value


def _cli_value(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)  # numbers, booleans, lists and mappings: JSON is YAML, which jsonargparse reads


def _display(path: str) -> str:
    """Relative to the working directory when below it (shorter commands), else absolute."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def load(spec, root: str | None = None, extra_args: list[str] | None = None,
         name: str | None = None) -> tuple[str, list[Run]]:
    """Parse a sweep (a path or a mapping) into its name and its runs, in order; ``root``, ``name`` and
    ``extra_args`` (``--KEY=VALUE`` for every run) override the file's. Raises ValueError naming the bad
    entry (a name that is not one directory name included)."""
    if isinstance(spec, str | Path):
        path = Path(spec)
        if not path.exists():
            raise ValueError(f"sweep file {str(spec)!r} not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as err:
            raise ValueError(f"sweep file {path}: not readable YAML: {err}") from None
        here, default_name = path.resolve().parent, path.stem
    else:
        here, data, default_name = Path.cwd(), spec, "sweep"
    if not isinstance(data, dict):
        raise ValueError(f"a sweep must be a mapping with keys {list(SWEEP_KEYS)}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise ValueError(f"sweep: unknown key(s) {unknown}; allowed: {list(SWEEP_KEYS)}")
    name = check_name("sweep: name", name or data.get("name") or default_name)
    base = data.get("base")
    if base is None:
        base_args = []
    elif isinstance(base, str):
        base_args = ["--config", _display(_resolve(base, here)) if base.endswith((".yaml", ".yml")) else base]
    elif isinstance(base, dict):
        base_args = ["--config", json.dumps(base)]
    else:
        raise ValueError(f"sweep: base must be a config path or a mapping, got {type(base).__name__}")
    grid = data.get("grid") or {}
    if not isinstance(grid, dict):
        raise ValueError(f"sweep: grid must map dotted keys to lists of values, got {type(grid).__name__}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"sweep: grid[{key!r}] must be a non-empty list of values, got {values!r}")
    common = [str(a) for a in (data.get("args") or [])] + list(extra_args or [])
    for a in common:
        if re.match(r"--(name|version|trainer\.default_root_dir)(=|$)", a):
            raise ValueError(f"sweep: {a!r}: the sweep sets --name, --version and the root itself (use name: and "
                             "root: in the sweep file, or --root)")
    root = Path(root or data.get("root") or "runs")
    runs, seen = [], {}
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
        values = dict(zip(keys, combo, strict=True))
        run_id = _safe("-".join(_label(k, v) for k, v in values.items()) or "run")
        if run_id in seen:
            raise ValueError(f"sweep: two runs would share the id {run_id!r}: {seen[run_id]} and {values}")
        seen[run_id] = values
        args = ["fit", *base_args]
        for k, v in values.items():
            v = _resolve(v, here)
            args.append(f"--{k}={_display(v) if isinstance(v, str) and os.path.isabs(v) else _cli_value(v)}")
        args += [*common, f"--trainer.default_root_dir={root}", f"--name={name}", f"--version={run_id}"]
        runs.append(Run(run_id, values, args, root / name / run_id))
    return name, runs


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


# ------------------------------------------------------------------------------------------------ signals
class _Signals:
    """The sweep's SIGINT/SIGTERM handling: forwarded to a running subprocess (started in its own session, so
    that a terminal's Ctrl-C reaches it only through here); ``Interrupted`` raised inside an in-process run that
    has not started training (training replaces this handler with its own, which saves a checkpoint first);
    between runs, the sweep stops before the next one."""

    def __init__(self):
        self.child: subprocess.Popen | None = None
        self.in_run = False
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        return False

    def _handle(self, signum, frame):
        self.signum = signum
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)
        elif self.in_run:
            raise Interrupted(signum)


def _execute(run: Run, use_subprocess: bool, signals: _Signals, progress=None) -> str:
    """Run one ``zolab fit``; its status: done, failed or interrupted."""
    args = run.args + run.extra
    if use_subprocess:
        log = None
        if progress is not None:  # the sweep's display replaces the run's own output, kept in the run's folder
            run.run_dir.mkdir(parents=True, exist_ok=True)
            log = open(run.run_dir / LOG_FILE, "a")
        try:
            signals.child = subprocess.Popen([sys.executable, "-m", "zolab.lab.cli", *args], start_new_session=True,
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
    quiet = _quiet_lightning() if progress is not None else contextlib.nullcontext()
    with _Signals() as signals, quiet:
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


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning's per-run banners (devices, seed, model summary, "max_steps reached") off while the sweep's
    display runs; warnings still show."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# ------------------------------------------------------------------------------------------------ display
def _clock(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class SweepProgress:
    """One display for a sweep: on a terminal, one line refreshed in place (run i of N, its step, the run's and
    the sweep's ETA); otherwise one line per run when it ends. ``summary`` prints a table of all runs."""

    def __init__(self, name: str, stream=None, tty: bool | None = None, refresh_seconds: float = 0.5):
        self.name, self.stream = name, stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.refresh_seconds = refresh_seconds
        self._i = self._n = 0
        self._run: Run | None = None
        self._durations: list[float] = []  # seconds per step of finished runs (sweep ETA)
        self._width = 0
        self._last = 0.0

    def callback(self, run: Run) -> _RunProgress:
        """The progress-bar callback of one in-process run (in place of Lightning's bar)."""
        return _RunProgress(self, run)

    def start(self, i: int, n: int, run: Run) -> None:
        self._i, self._n, self._run, self._last = i, n, run, 0.0
        self._show(f"[{i}/{n}] {run.run_id}: starting", force=True)

    def update(self, step: int, total: int | None, seconds: float, loss: float | None) -> None:
        now = time.monotonic()
        if not self.tty or now - self._last < self.refresh_seconds:
            return
        self._last = now
        rate = seconds / step if step else None
        run_eta = rate * (total - step) if rate is not None and total else None
        left = self._n - self._i
        per_run = (sum(self._durations) / len(self._durations)) if self._durations else (
            rate * total if rate is not None and total else None)
        sweep_eta = run_eta + left * per_run if run_eta is not None and per_run is not None else None
        loss_text = f"  loss {loss:.4g}" if loss is not None else ""
        steps = f"{step:,}/{total:,}" if total else f"{step:,}"
        self._show(f"sweep {self.name}  run {self._i}/{self._n} {self._run.run_id}  step {steps}{loss_text}  "
                   f"ETA run {_clock(run_eta)}, sweep {_clock(sweep_eta)}")

    def end(self, run: Run, line: str) -> None:
        if run.status == "done":
            self._durations.append(run.seconds)
        self._show(line, force=True, final=True)

    def _show(self, text: str, force: bool = False, final: bool = False) -> None:
        if self.tty:
            pad = max(self._width - len(text), 0)
            self.stream.write("\r" + text + " " * pad + ("\n" if final else ""))
            self._width = 0 if final else len(text)
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()

    @staticmethod
    def summary(runs: list[Run]) -> str:
        """A table: run, status, steps, last train/loss, seconds."""
        rows = [("run", "status", "steps", "train/loss", "seconds")]
        for r in runs:
            rows.append((r.run_id, r.status, "-" if r.steps is None else f"{r.steps:,}",
                         "-" if r.loss is None else f"{r.loss:.4g}", f"{r.seconds:.1f}" if r.seconds else "-"))
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths)))
                 for row in rows]
        return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


class _RunProgress(ProgressBar):
    """The progress bar of one in-process run of a sweep: reports its step to the sweep's display."""

    def __init__(self, display: SweepProgress, run: Run):
        super().__init__()
        self.display, self.run = display, run
        self._enabled = True
        self._start = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @override
    def on_train_start(self, trainer, pl_module):
        self._start = time.perf_counter()
        self._first_step = trainer.global_step

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = trainer.progress_bar_metrics.get("train/loss")
        self.run.loss = float(loss) if loss is not None else self.run.loss
        self.run.steps = trainer.global_step
        if self._enabled:
            done = trainer.global_step - self._first_step
            total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
            rate_seconds = time.perf_counter() - self._start
            # the ETA from this process's steps: a resumed run starts at its checkpoint's step
            self.display.update(done, None if total is None else total - self._first_step, rate_seconds,
                                self.run.loss)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="zolab sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="the sweep YAML (name, base, grid, args)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their commands, run nothing")
    parser.add_argument("--subprocess", action="store_true", help="run each `zolab fit` in its own process")
    parser.add_argument("--overwrite", action="store_true", help="delete existing run directories first")
    parser.add_argument("--resume", action="store_true",
                        help="skip finished runs, resume the others from their newest loadable checkpoint")
    parser.add_argument("--root", default=None, help="where runs go (default: the file's root, else runs/)")
    parser.epilog = "Any other --KEY=VALUE is a `zolab fit` override for every run (e.g. --trainer.max_steps=10)."
    args, overrides = parser.parse_known_args(argv)
    bad = [a for a in overrides if not (a.startswith("--") and "=" in a and "." in a.split("=", 1)[0])]
    if bad:
        parser.error(f"unrecognized arguments {bad}: overrides are --KEY=VALUE with a dotted KEY")
    if args.overwrite and args.resume:
        parser.error("--overwrite and --resume exclude each other")
    try:
        name, runs = load(args.file, args.root, overrides)
        if args.dry_run:
            for i, run in enumerate(runs, 1):
                print(f"[{i}/{len(runs)}] {run.run_id}  ->  {run.run_dir}\n    {shlex.join(['zolab', *run.args])}")
            return 0
        progress = SweepProgress(name)
        print(f"sweep {name}: {len(runs)} runs -> {runs[0].run_dir.parent}", flush=True)
        run_sweep(runs, use_subprocess=args.subprocess, overwrite=args.overwrite, resume=args.resume,
                  progress=progress, log=lambda line: print(line, flush=True))
    except ValueError as err:
        print(f"zolab sweep: error: {err}", file=sys.stderr)
        return 2
    print(progress.summary(runs))
    counts = {s: sum(r.status == s for r in runs) for s in ("done", "skipped", "failed", "interrupted", "pending")}
    print(f"sweep {name}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" of {len(runs)} runs")
    for r in runs:
        if r.status == "failed":
            print(f"  failed: {r.run_id}: {r.error}")
    stopped = [r.signum for r in runs if r.signum]
    if stopped:
        return 128 + stopped[0]
    return 0 if counts["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
