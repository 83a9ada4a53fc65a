"""``zolab claims --run``: run the jobs of the selected CPU-feasible parts whose runs are not complete, and the
minutes each took."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

from zolab.claims.board import shown
from zolab.claims.experiments import check_job, sweep_name

TIMES_FILE = "claims_jobs.yaml"  # seconds each job took, under the runs root


def run_missing(selection, root: Path, data: str, experiments: Path, dry_run: bool = False, log=print) -> int:
    """Run, one after another, every selected CPU job whose runs are not complete (a sweep with ``--resume``:
    finished runs are kept). A job with runs made with other settings is not run over: it is reported and
    counted as failed. Returns the number of jobs that failed."""
    jobs = {j.key: j for _, parts in selection for p in parts if p.cpu for j in p.jobs}
    failed = 0
    for job in jobs.values():
        check = check_job(job, root, experiments)
        if check.state == "complete":
            log(f"done before: {job.key}")
            continue
        if check.state == "mismatched":
            log(f"not run: {job.key}: {'; '.join(check.notes)}. Move those runs out of {root}, then run again")
            failed += 1
            continue
        log(f"{'would run' if dry_run else 'running'}: {shlex.join(job.command(str(root), data, shown(experiments)))}")
        if dry_run:
            continue
        # the job runs in the checkout (paper_figures/ is there): the runs root and the data by absolute paths
        command = job.command(str(root.resolve()), os.path.abspath(data), str(experiments.resolve()))
        argv = [sys.executable, "-m", "zolab.entry", *command[1:]] if command[0] == "zolab" else (
            [sys.executable, *command[1:]] if command[0] == "python" else command)
        start = time.perf_counter()
        status = subprocess.run(argv, cwd=experiments.resolve().parent, check=False).returncode
        status = status or (0 if check_job(job, root, experiments).state == "complete" else 1)
        seconds = time.perf_counter() - start
        root.mkdir(parents=True, exist_ok=True)
        times_path = root / TIMES_FILE
        times = (yaml.safe_load(times_path.read_text()) or {}) if times_path.exists() else {}
        times[job.key] = {"seconds": round(seconds, 1) + float(times.get(job.key, {}).get("seconds", 0)),
                          "status": status}
        times_path.write_text(yaml.safe_dump(times, sort_keys=False))
        log(f"{'finished' if status == 0 else f'failed (exit status {status})'}: {job.key} in {seconds / 60:.1f} min")
        failed += status != 0
    return failed


def job_minutes(job, root: Path, experiments: Path) -> float | None:
    """Minutes a job took where it ran: the ``sweep_run.yaml`` seconds of every run in its sweep's folder (sweep
    files sharing a folder share the count), or what ``--run`` recorded."""
    if job.sweep:
        files = list((root / sweep_name(experiments, job.sweep)).glob("*/sweep_run.yaml"))
        seconds = [float((yaml.safe_load(f.read_text()) or {}).get("seconds", 0)) for f in files]
        return sum(seconds) / 60 if files else None
    times = (yaml.safe_load((root / TIMES_FILE).read_text()) or {}) if (root / TIMES_FILE).exists() else {}
    return float(times[job.key]["seconds"]) / 60 if job.key in times else None
