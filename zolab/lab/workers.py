"""``zolab sweep``: a sweep file's runs as trials of an Optuna study, run by N workers on each of any machines.

``zolab sweep FILE`` (``zolab.lab.sweep_spec`` describes the file and its runs, ``zolab.lab.sweep`` runs one,
``zolab.lab.study`` keeps the study) with
``--workers N`` starts N worker processes (``python -m zolab.lab.workers``), each with its share
of the CPU threads (``--threads``, default cores / N: ``torch.set_num_threads`` and ``OMP_NUM_THREADS``), and
forwards SIGINT and SIGTERM to them; the same command on another machine with the same ``--storage`` adds its
workers to the same study. With one worker (the default) the sweep's own process is the worker and runs its
trials in-process (or each in a subprocess: ``--subprocess``), as before. A worker claims a waiting trial (grid
order), prepares its run directory (a trial queued again resumes from its newest loadable checkpoint), runs
``zolab fit`` with a heartbeat, writes ``sweep_run.yaml``, records status, seconds and final metrics in the
study, and claims the next; with nothing left to claim it waits while other workers' trials run (taking over
any whose worker dies), then ends. A signal ends it after its run's checkpoint, the trial recorded as
interrupted. The sweep then prints the table of trials from the storage (``--summary``: only that).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shlex
import signal
import sys
import threading
import time

import yaml
from optuna.trial import TrialState

from zolab.lab import study as st
from zolab.lab.trials import final_metrics, objective, rows, status, table

SIGNALS = (signal.SIGINT, signal.SIGTERM)
STATUSES = ("done", "skipped", "failed", "interrupted", "pending", "running")


def parser() -> argparse.ArgumentParser:
    """``zolab sweep``'s options."""
    parser = argparse.ArgumentParser(prog="zolab sweep", description="Run a sweep file's grid of `zolab fit` runs as "
                                     "the trials of an Optuna study, with N workers on each of any machines.")
    parser.add_argument("file", help="the sweep YAML (name, base, grid, args)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their commands, run nothing")
    parser.add_argument("--subprocess", action="store_true", help="run each `zolab fit` in its own process")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the study and the existing run directories first")
    parser.add_argument("--resume", action="store_true",
                        help="skip finished runs, resume the others from their newest loadable checkpoint")
    parser.add_argument("--root", default=None, help="where runs go (default: the file's root, else runs/)")
    parser.add_argument("--workers", type=int, default=1,
                        help="trials run at a time on this machine, each worker in its own process (default 1: this "
                             "process)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per worker (default: cores / workers; with 1 worker, torch's default)")
    parser.add_argument("--storage", default=None,
                        help="the study's database URL, shared by every machine of the sweep (default: "
                             f"sqlite:///ROOT/NAME/{st.DB_FILE}), e.g. postgresql://USER@HOST/DB")
    parser.add_argument("--heartbeat", type=int, default=st.HEARTBEAT,
                        help=f"seconds between a running trial's heartbeats; after 3 missed ones another worker "
                             f"resumes it (default {st.HEARTBEAT})")
    parser.add_argument("--summary", action="store_true",
                        help="print the table of trials from the storage, run nothing (exit status 0 when every "
                             "run is done)")
    parser.epilog = "Any other --KEY=VALUE is a `zolab fit` override for every run (e.g. --trainer.max_steps=10)."
    return parser


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def use_threads(threads: int) -> None:
    """This process and its children compute on ``threads`` CPU threads."""
    import torch

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------ one worker
def work(study, storage, runs, *, use_subprocess=False, progress=None, tag="", log=print, poll=1.0) -> int | None:
    """Claim and run trials until none is waiting or running; returns the signal that stopped it (or None)."""
    from zolab.lab.interrupt import SweepSignals
    from zolab.lab.sweep_display import quiet_lightning

    order = {r.run_id: i for i, r in enumerate(runs)}
    by_id = {r.run_id: r for r in runs}
    quiet = quiet_lightning() if progress is not None else contextlib.nullcontext()
    with SweepSignals() as signals, quiet:
        while signals.signum is None:
            st.recover(study, storage)
            trial = st.claim(study, storage, order)
            if trial is None:
                if not any(t.user_attrs.get("run_id") in order for t in st.running(study)):
                    break
                time.sleep(poll)  # other workers' trials run: wait, to take over any whose worker dies
                continue
            run = dataclasses.replace(by_id[trial.user_attrs["run_id"]], extra=[])
            _run_trial(study, storage, trial, run, (order[run.run_id] + 1, len(order)), use_subprocess, signals,
                       progress, tag, log)
            if run.status == "interrupted":
                return run.signum or signals.signum
    return signals.signum


def _run_trial(study, storage, trial, run, where, use_subprocess, signals, progress, tag, log) -> None:
    from zolab.lab.sweep import STATUS_FILE, _execute, _prepare, _write_status

    i, n = where
    prefix = f"{tag}: " if tag else ""
    with st.Heartbeat(storage, trial._trial_id):
        others = [t for t in st.attempts(study).get(run.run_id, []) if t.number != trial.number]
        finished = [t for t in others if t.state == TrialState.COMPLETE]
        if finished:  # queued twice (two machines at once): record the finished one's result
            attrs = {k: finished[-1].user_attrs.get(k) for k in ("status", "error", "seconds", "metrics")}
            st.finish(study, storage, trial, TrialState.COMPLETE, finished[-1].value, {**attrs, "duplicate_of":
                                                                                      finished[-1].number})
            log(f"{prefix}[{i}/{n}] {run.run_id}: finished before, skipped")
            return
        try:
            prepared = _prepare(run, st.is_retry(trial), overwrite=False)
        except ValueError as err:
            run.status, run.error = "failed", str(err)
        else:
            if prepared == "skipped":  # finished, but its trial was not told so (its worker died in between)
                run.status = "done"
                saved = yaml.safe_load((run.run_dir / STATUS_FILE).read_text()) or {}
                run.seconds = float(saved.get("seconds") or 0.0)
            else:
                if progress is not None:
                    progress.start(i, n, run)
                start = time.perf_counter()
                run.status = _execute(run, use_subprocess, signals, progress)
                run.seconds = time.perf_counter() - start
                if run.run_dir.exists():
                    _write_status(run)
        metrics = final_metrics(run.run_dir) if run.run_dir.is_dir() else {}
        state = TrialState.COMPLETE if run.status == "done" else TrialState.FAIL
        st.finish(study, storage, trial, state, objective(metrics), {
            "status": run.status, "error": run.error, "seconds": round(run.seconds, 2), "metrics": metrics})
    line = f"{prefix}[{i}/{n}] {run.run_id}: {run.status} in {run.seconds:.1f} s" + (
        f" ({run.error})" if run.error else "")
    if progress is not None:
        progress.end(run, line)
    else:
        log(line)


# ------------------------------------------------------------------------------------------------ N workers
def spawn(argv: list[str], n: int, threads: int, module: str = "zolab.lab.workers") -> tuple[list[int], int | None]:
    """Run ``python -m MODULE ARGV --worker=i`` for i = 1..n, each on ``threads`` threads and in its own
    session (a terminal's Ctrl-C reaches them through this process, which forwards SIGINT and SIGTERM); wait for
    all. Returns their exit statuses and the signal this process received (or None)."""
    env = {**os.environ, **{v: str(threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
    procs: list = []
    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    import subprocess

    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, forward) for s in SIGNALS} if main else {}
    try:
        for i in range(1, n + 1):
            procs.append(subprocess.Popen([sys.executable, "-m", module, *argv, f"--worker={i}"],
                                          env=env, start_new_session=True))
        while any(p.poll() is None for p in procs):  # polling also reaps a killed worker at once
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:  # this process failed: its workers do not outlive it
                p.terminate()
                p.wait()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return [p.returncode for p in procs], (received[0] if received else None)


def sweep_main(args, overrides: list[str], name: str, runs, file) -> int:
    """The sweep of ``runs`` on its study, with ``main``'s parsed arguments. Exit status: 0 when every run is done,
    1 when any is not, 128 + signal when a signal stopped it. Raises ValueError for bad input, before any run."""
    from zolab.lab.sweep_display import SweepProgress

    if args.workers < 1 or (args.threads is not None and args.threads < 1):
        raise ValueError(f"--workers={args.workers}, --threads={args.threads}: allowed: integers >= 1")
    root = runs[0].run_dir.parent.parent
    for run in runs:  # every path the sweep may delete or write stays inside its root
        st.inside(run.run_dir, root)
    sname = st.study_name(name, file)
    url = args.storage or st.default_url(root, name)
    if args.summary:
        storage = st.open_storage(url, args.heartbeat, create=False)
        study = st.prepare(storage, sname, runs, file, join=True)
        return _report(study, runs, name, set(), None, only_table=True)
    if not args.storage:
        (root / name).mkdir(parents=True, exist_ok=True)
    storage = st.open_storage(url, args.heartbeat)
    threads = args.threads or (max(1, cores() // args.workers) if args.workers > 1 else None)
    print(f"sweep {name}: {len(runs)} runs -> {root / name}", flush=True)
    study = st.prepare(storage, sname, runs, file, resume=args.resume, overwrite=args.overwrite,
                       log=lambda line: print(line, flush=True))
    print(f"study {sname!r} in {st.shown(storage.url)}: {args.workers} worker(s)"
          + (f" x {threads} thread(s)" if threads else ""), flush=True)
    before = {rid for rid, ts in st.attempts(study).items() if status(ts) == "done"}
    for i, run in enumerate(runs, 1):
        if run.run_id in before:
            print(f"[{i}/{len(runs)}] {run.run_id}: finished before, skipped", flush=True)
    if args.workers == 1:
        if threads:
            use_threads(threads)
        signum = work(study, storage, runs, use_subprocess=args.subprocess, progress=SweepProgress(name),
                      log=lambda line: print(line, flush=True), poll=min(1.0, args.heartbeat))
    else:
        argv = [str(args.file), "--root", str(root), "--storage", url, "--heartbeat", str(args.heartbeat),
                "--threads", str(threads), *(["--subprocess"] if args.subprocess else []), *overrides]
        codes, signum = spawn(argv, args.workers, threads)
        stopped = [c - 128 for c in codes if c in (128 + signal.SIGINT, 128 + signal.SIGTERM)]
        signum = signum or (stopped[0] if stopped else None)
        died = [f"worker {i}: exit status {c}" for i, c in enumerate(codes, 1) if c not in (0, 130, 143)]
        if died:
            print("sweep: " + "; ".join(died) + " (its trials went to the other workers or wait for --resume)")
    return _report(study, runs, name, before, signum)


def _report(study, runs, name, before, signum, only_table=False) -> int:
    keys = list(runs[0].values)
    by_run = st.attempts(study)
    table_rows = rows(by_run, [r.run_id for r in runs], keys)
    print(table(table_rows, keys))
    states = [("skipped" if r["status"] == "done" and r["run"] in before else r["status"]) for r in table_rows]
    if not only_table:
        counts = {s: states.count(s) for s in dict.fromkeys([*STATUSES, *states])}
        print(f"sweep {name}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" of {len(runs)} runs")
        for r in table_rows:
            if r["status"] not in ("done", "pending", "running"):
                print(f"  {r['status']}: {r['run']}: {r.get('error') or ''}")
        if signum:
            print("sweep interrupted: `zolab sweep FILE --resume` continues it")
            return 128 + signum
    if any(s not in ("done", "skipped") for s in states):
        if not only_table and any(s in ("failed", "interrupted") for s in states):
            print("`zolab sweep FILE --resume` runs the failed and interrupted runs again (from their checkpoints)")
        return 1
    return 0


def main(argv=None) -> int:
    """``zolab sweep``: exit status 0 when every run is done, 1 when one is not, 2 for bad input (nothing run),
    128 + signal when stopped by SIGINT or SIGTERM."""
    from zolab.lab.sweep_spec import load

    cli = parser()
    args, overrides = cli.parse_known_args(argv)
    bad = [a for a in overrides if not (a.startswith("--") and "=" in a and "." in a.split("=", 1)[0])]
    if bad:
        cli.error(f"unrecognized arguments {bad}: overrides are --KEY=VALUE with a dotted KEY")
    if args.overwrite and args.resume:
        cli.error("--overwrite and --resume exclude each other")
    try:
        name, runs = load(args.file, args.root, overrides)
        if args.dry_run:
            for i, run in enumerate(runs, 1):
                print(f"[{i}/{len(runs)}] {run.run_id}  ->  {run.run_dir}\n    {shlex.join(['zolab', *run.args])}")
            return 0
        return sweep_main(args, overrides, name, runs, args.file)
    except ValueError as err:
        print(f"zolab sweep: error: {err}", file=sys.stderr)
        return 2


def worker_main(argv=None) -> int:
    """A worker process started by ``spawn``: join the study and work (exit status 0, or 128 + signal)."""
    from zolab.lab.sweep_display import SweepProgress
    from zolab.lab.sweep_spec import load

    cli = argparse.ArgumentParser(prog="python -m zolab.lab.workers", description="one worker of `zolab sweep`")
    cli.add_argument("file")
    cli.add_argument("--root", required=True)
    cli.add_argument("--storage", required=True)
    cli.add_argument("--heartbeat", type=int, default=st.HEARTBEAT)
    cli.add_argument("--threads", type=int, required=True)
    cli.add_argument("--subprocess", action="store_true")
    cli.add_argument("--worker", type=int, required=True)
    args, overrides = cli.parse_known_args(argv)
    use_threads(args.threads)
    try:
        name, runs = load(args.file, args.root, overrides)
        storage = st.open_storage(args.storage, args.heartbeat, create=False)
        study = st.prepare(storage, st.study_name(name, args.file), runs, args.file, join=True)
    except ValueError as err:
        print(f"zolab sweep: worker {args.worker}: error: {err}", file=sys.stderr)
        return 2
    signum = work(study, storage, runs, use_subprocess=args.subprocess, progress=SweepProgress(name, tty=False),
                  tag=f"worker {args.worker}", poll=min(1.0, args.heartbeat))
    return 128 + signum if signum else 0


if __name__ == "__main__":
    sys.exit(worker_main())
