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
joins one short label per key (a class or file name, else ``key=value``). The runs go one after another,
in this process (default) or each in a subprocess (``--subprocess``); a failed run is reported and the
sweep goes on; Ctrl-C stops the sweep after the current run's checkpoint. Each finished run leaves
``sweep_run.yaml`` (status, command, seconds) beside its event files; ``--resume`` skips finished runs and
resumes interrupted ones from their ``checkpoints/on_exception.ckpt``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SWEEP_KEYS = ("name", "base", "grid", "args", "root")
STATUS_FILE = "sweep_run.yaml"


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
    return re.sub(r"[^A-Za-z0-9_.,=+-]+", "_", text)


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
    entry."""
    if isinstance(spec, str | Path):
        path = Path(spec)
        if not path.exists():
            raise ValueError(f"sweep file {str(spec)!r} not found")
        here, data = path.resolve().parent, yaml.safe_load(path.read_text())
        default_name = path.stem
    else:
        here, data, default_name = Path.cwd(), spec, "sweep"
    if not isinstance(data, dict):
        raise ValueError(f"a sweep must be a mapping with keys {list(SWEEP_KEYS)}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise ValueError(f"sweep: unknown key(s) {unknown}; allowed: {list(SWEEP_KEYS)}")
    name = str(name or data.get("name") or default_name)
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
    return (yaml.safe_load(path.read_text()) or {}).get("status") if path.exists() else None


def _execute(run: Run, use_subprocess: bool) -> str:
    """Run one ``zolab fit``; its status: done, failed or interrupted."""
    args = run.args + run.extra
    if use_subprocess:
        proc = subprocess.run([sys.executable, "-m", "zolab.cli", *args], check=False)
        interrupted = proc.returncode == 1 and (run.run_dir / "checkpoints" / "on_exception.ckpt").exists()
        if interrupted or proc.returncode in (130, -2):
            return "interrupted"
        run.error = "" if proc.returncode == 0 else f"exit status {proc.returncode}"
        return "done" if proc.returncode == 0 else "failed"
    from zolab.cli import cli_main

    try:
        cli_main(args)
    except SystemExit as exit_:  # Lightning turns Ctrl-C into sys.exit(1) after saving the checkpoint
        if exit_.code == 1:
            return "interrupted"
        run.error = f"exit status {exit_.code}"
        return "failed" if exit_.code else "done"
    except KeyboardInterrupt:
        return "interrupted"
    except Exception as err:  # a failed run must not stop the sweep
        run.error = f"{type(err).__name__}: {err}"
        return "failed"
    return "done"


def run_sweep(runs: list[Run], *, use_subprocess: bool = False, overwrite: bool = False, resume: bool = False,
              log=print) -> list[Run]:
    """Run ``runs`` one after another; returns them with status, seconds and error filled in."""
    existing = [r for r in runs if r.run_dir.exists()]
    if existing and not (overwrite or resume):
        names = ", ".join(str(r.run_dir) for r in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise ValueError(f"sweep: {len(existing)} run director(y/ies) exist ({names}); pass --overwrite to "
                         "replace them or --resume to skip finished runs and resume interrupted ones")
    for i, run in enumerate(runs, 1):
        if run.run_dir.exists():
            ckpt = run.run_dir / "checkpoints" / "on_exception.ckpt"
            if resume and _status(run.run_dir) == "done":
                run.status = "skipped"
                log(f"[{i}/{len(runs)}] {run.run_id}: finished before, skipped")
                continue
            if resume and ckpt.exists():
                run.extra = [f"--ckpt_path={ckpt}"]
            else:
                shutil.rmtree(run.run_dir)
        log(f"[{i}/{len(runs)}] {run.run_id}: {shlex.join(['zolab', *run.args, *run.extra])}")
        start = time.perf_counter()
        run.status = _execute(run, use_subprocess)
        run.seconds = time.perf_counter() - start
        if run.run_dir.exists():
            (run.run_dir / STATUS_FILE).write_text(yaml.safe_dump({
                "status": run.status, "seconds": round(run.seconds, 2), "values": run.values,
                "command": shlex.join(["zolab", *run.args, *run.extra]), "error": run.error,
            }, sort_keys=False))
        log(f"[{i}/{len(runs)}] {run.run_id}: {run.status} in {run.seconds:.1f} s" +
            (f" ({run.error})" if run.error else ""))
        if run.status == "interrupted":
            log("sweep interrupted: `zolab sweep FILE --resume` continues it")
            break
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="zolab sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="the sweep YAML (name, base, grid, args)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their commands, run nothing")
    parser.add_argument("--subprocess", action="store_true", help="run each `zolab fit` in its own process")
    parser.add_argument("--overwrite", action="store_true", help="delete existing run directories first")
    parser.add_argument("--resume", action="store_true",
                        help="skip finished runs, resume interrupted ones from their on_exception.ckpt")
    parser.add_argument("--root", default=None, help="where runs go (default: the file's root, else runs/)")
    parser.epilog = "Any other --KEY=VALUE is a `zolab fit` override for every run (e.g. --trainer.max_steps=10)."
    args, overrides = parser.parse_known_args(argv)
    bad = [a for a in overrides if not (a.startswith("--") and "=" in a and "." in a.split("=", 1)[0])]
    if bad:
        parser.error(f"unrecognized arguments {bad}: overrides are --KEY=VALUE with a dotted KEY")
    args.overrides = overrides
    try:
        name, runs = load(args.file, args.root, args.overrides)
        if args.dry_run:
            for i, run in enumerate(runs, 1):
                print(f"[{i}/{len(runs)}] {run.run_id}  ->  {run.run_dir}\n    {shlex.join(['zolab', *run.args])}")
            return 0
        run_sweep(runs, use_subprocess=args.subprocess, overwrite=args.overwrite, resume=args.resume)
    except ValueError as err:
        print(f"zolab sweep: error: {err}", file=sys.stderr)
        return 2
    counts = {s: sum(r.status == s for r in runs) for s in ("done", "skipped", "failed", "interrupted")}
    print(f"sweep {name}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" of {len(runs)} runs")
    for r in runs:
        if r.status == "failed":
            print(f"  failed: {r.run_id}: {r.error}")
    return 0 if counts["failed"] == counts["interrupted"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
