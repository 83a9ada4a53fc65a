"""``zolab leaderboard --run``: probe the rules the testbed's probe lacks, then run each rule's missing sweeps (its
tuning, the tuning's extensions, its seeds; ``zolab sweep --resume``, in this process), recording the CPU seconds
each took in ``<root>/leaderboard_<testbed>/cpu_seconds.yaml``. Resumable: finished runs are kept, interrupted
ones resume from their checkpoints, and a rule whose runs were made with other settings is reported, not run over.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import yaml

from zolab.claims import leaderboard as lb
from zolab.claims.leaderboard import FIRST_ORDER, Protocol, check_rule, probed, read_probe, rule_entries
from zolab.claims.leaderboard_table import CPU_FILE, cpu_record


def class_path(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text(text)
    os.replace(part, path)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive advisory lock on ``path`` (no lock where there is no ``fcntl``: one process per testbed there)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _add_cpu(root: Path, p: Protocol, key: str, phase: str | None, seconds: float) -> None:
    path = Path(root) / p.folder / CPU_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    # locked: two `--run` processes on disjoint --rules of one testbed must not lose each other's seconds
    with _locked(path.with_name(f".{CPU_FILE}.lock")):
        record = cpu_record(root, p)
        if phase is None:
            record[key] = round(float(record.get(key, 0)) + seconds, 1)
        else:
            phases = record.setdefault(key, {})
            phases[phase] = round(float(phases.get(phase, 0)) + seconds, 1)
        _write(path, yaml.safe_dump(record, sort_keys=False))


def probe_missing(root: Path, p: Protocol, keys: list[str], log=print) -> None:
    """Measure the selected rules the probe lacks (and the start metrics, once)."""
    from zolab.rules import RULES

    record = read_probe(root, p)
    if record and record.get("settings") != lb.probe_settings(p):
        raise ValueError(f"{lb.probe_path(root, p)} was measured with {record.get('settings')}, the protocol gives "
                         f"{lb.probe_settings(p)}: move it (and the runs it planned) out of {root}, then run again")
    missing = [k for k in keys if k not in record.get("rules", {})]
    if not missing and record.get("starts"):
        return
    from zolab.lab.leaderboard_probe import probe

    log(f"probing on {p.testbed}: {', '.join(missing) or 'the start metrics'}")
    start = time.process_time()
    new = probe(p.config, root, rules={k: class_path(RULES[k]) for k in missing if k != FIRST_ORDER},
                first_order=p.first_order if FIRST_ORDER in missing else None, mu=p.mu, budget=p.budget,
                seed_keys=list(p.seed_keys), seeds=[] if record.get("starts") else [p.tune_seed, *p.seeds])
    rules = {**record.get("rules", {}),
             **{FIRST_ORDER if k == "first_order" else k: v for k, v in new["rules"].items()}}
    record = {"settings": lb.probe_settings(p), "machine": record.get("machine", new["machine"]),
              "inference_peak_bytes": record.get("inference_peak_bytes", new["inference_peak_bytes"]),
              "starts": record.get("starts") or new["starts"], "rules": rules}
    _write(lb.probe_path(root, p), json.dumps(record, indent=1) + "\n")
    _add_cpu(root, p, "probe", None, time.process_time() - start)


def spec_file(root: Path, p: Protocol, key: str, phase: str, spec: dict) -> Path:
    lrs = spec["grid"].get("model.optimizer.init_args.lr", [])
    name = f"{key}-{phase}" + (f"-lr={lrs[0]:g}" if phase == "extend" else "")
    path = Path(root) / p.folder / "sweeps" / f"{name}.yaml"
    _write(path, yaml.safe_dump(spec, sort_keys=False))
    return path


class Stopped(Exception):
    """A sweep was stopped by SIGINT or SIGTERM: ``--run`` stops too (never goes on to the next rule)."""

    def __init__(self, status: int):
        super().__init__(f"stopped by signal {status - 128}: `zolab leaderboard --run` again continues it")
        self.status = status


def run_testbed(root: Path, experiments: Path, p: Protocol, keys: list[str] | None, dry_run: bool = False,
                log=print) -> int:
    """Run what the selected rules miss on this testbed; the number of rules that failed or were not run over.
    Raises Stopped when a signal stopped a sweep (its run keeps its checkpoint; the same command resumes it)."""
    from zolab.lab import leaderboard_probe
    from zolab.lab.workers import main as sweep  # zolab sweep: the runs as trials of an Optuna study

    leaderboard_probe.threads(1)
    root = Path(root)
    entries = rule_entries(root, p, keys)
    if dry_run and not all(probed(e) for e in entries.values()):
        unprobed = ", ".join(k for k, e in entries.items() if not probed(e))
        log(f"would probe on {p.testbed}: {unprobed} (their sweeps follow from the probe: not listed)")
    elif not dry_run:
        probe_missing(root, p, list(entries), log)
        entries = rule_entries(root, p, keys)
    failed = 0
    for key, entry in entries.items():
        done: set[str] = set()
        while probed(entry):
            runs = check_rule(root, experiments, p, key, entry)
            if runs.state == "mismatched" or entry.get("error"):
                log(f"not run: {key}: {'; '.join(runs.notes)}" + (f". Move those runs out of {root / p.folder}, "
                                                                  "then run again" if not entry.get("error") else ""))
                failed += 1
                break
            if not runs.specs:
                log(f"done: {key} on {p.testbed} (lr {runs.lr:g})")
                break
            phase, spec = runs.specs[0]
            path = spec_file(root, p, key, phase, spec)
            if dry_run:
                log(f"would run: zolab sweep {path} --root={root} --resume")
                break
            if str(path) + repr(spec) in done:  # the sweep ran and its runs are still not complete: it failed
                log(f"failed: {key}: {path} leaves runs unfinished: {'; '.join(runs.notes)}")
                failed += 1
                break
            done.add(str(path) + repr(spec))
            log(f"running: zolab sweep {path} --root={root} --resume")
            start = time.process_time()
            status = sweep([str(path), f"--root={root}", "--resume"])
            _add_cpu(root, p, key, phase, time.process_time() - start)
            if status in (128 + signal.SIGINT, 128 + signal.SIGTERM):
                raise Stopped(status)
            if status:
                log(f"failed (exit status {status}): {key} {phase} ({path})")
                failed += 1
                break
    return failed
