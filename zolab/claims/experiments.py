"""Where the registry's experiment files are, which runs each part expects, and whether those runs are all
there, finished, readable and made with the registered settings.

The experiments folder is, in this order: ``--experiments DIR``; ``./experiments`` in the working directory (a
checkout's root, where the default runs root ``runs/`` is too); the checkout zolab is installed from (an
editable install, as ``make`` makes). A candidate counts only when it holds every sweep file the registry
names, so an installed copy of zolab reads the same runs as the checkout it came from.

A sweep part expects exactly the runs its sweep files make (``zolab.lab.sweep.load``, imported only when the
sweep's folder exists: without runs nothing imports torch). Each must have its directory, a
``sweep_run.yaml`` saying ``done`` (a run without one is not known to have finished), readable
``hparams.yaml`` and event files, and the settings the sweep file gives now: the command its
``sweep_run.yaml`` records must set the same overrides on the same config files (the runs root, name, version,
the checkpoint a resume starts from and data folders aside).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from zolab.claims.events import Run, UnreadableRun, event_files

IGNORED = ("--trainer.default_root_dir", "--name", "--version", "--ckpt_path")  # where a run went, not what


class NoExperiments(ValueError):
    """No experiments folder with the registry's sweep files."""


def find_experiments(explicit: str | None, required: list[str]) -> Path:
    """The experiments folder (module doc's order); NoExperiments naming every place tried."""
    candidates = [("--experiments", Path(explicit))] if explicit else [
        ("the working directory", Path.cwd() / "experiments"),
        ("the checkout zolab is installed from", Path(__file__).resolve().parents[2] / "experiments")]
    tried = []
    for where, path in candidates:
        missing = [r for r in required if not (path / r).is_file()]
        if not missing:
            return path
        tried.append(f"{path} ({where}): " + (f"lacks {missing[0]}" + (f" and {len(missing) - 1} more sweep files"
                                                                         if len(missing) > 1 else "")
                                              if path.is_dir() else "no such folder"))
    raise NoExperiments("no experiments folder holding the registry's sweep files; tried " + "; ".join(tried)
                        + ". Run zolab claims from the checkout's root, or pass --experiments DIR")


@cache
def sweep_name(experiments: Path, sweep: str) -> str:
    """The folder a sweep file's runs go to under the root: its ``name:``, else its stem (as zolab sweep)."""
    file = Path(experiments) / sweep
    try:
        data = yaml.safe_load(file.read_text()) if file.is_file() else {}
    except yaml.YAMLError:
        data = {}
    return str((data if isinstance(data, dict) else {}).get("name") or file.stem)


class Runs:
    """The runs a part's reader reads. The scoreboard gives the checked runs of the part's sweeps; without
    them (a reader's tests) ``of`` finds every run with hparams.yaml and an event file under ROOT/<name>."""

    def __init__(self, root, experiments, checked: dict[str, list[Run]] | None = None):
        self.root, self.experiments, self.checked = Path(root), Path(experiments), checked

    def of(self, *sweeps: str) -> list[Run]:
        """The runs of these sweep files (paths relative to the experiments folder), sorted by directory."""
        found: dict[Path, Run] = {}
        for s in sweeps:
            if self.checked is not None:
                if s not in self.checked:
                    raise KeyError(f"{s} is not a sweep of this part; its sweeps: {sorted(self.checked)}")
                found.update({r.path: r for r in self.checked[s]})
            else:
                found.update({r.path: r for r in self.folder(sweep_name(self.experiments, s))})
        return [found[p] for p in sorted(found)]

    def folder(self, name: str) -> list[Run]:
        """Every run under ROOT/name, unchecked: context for a reading (a CNN's accuracy), never a verdict."""
        folder = self.root / name
        if not folder.is_dir():
            return []
        return [Run(p.parent) for p in sorted(folder.rglob("hparams.yaml")) if event_files(p.parent)]


@dataclass
class Check:
    """The state of a job's or part's runs: complete, not run, incomplete or mismatched; what is wrong, with
    the runs named; and the checked runs per sweep file."""

    state: str
    notes: list[str] = field(default_factory=list)
    runs: dict[str, list[Run]] = field(default_factory=dict)


def _named(names: list[str], show: int = 4) -> str:
    return ", ".join(names[:show]) + (f" and {len(names) - show} more" if len(names) > show else "")


def _overrides(tokens: list[str]) -> list[tuple[str, str]]:
    """The (key, value) settings of a ``zolab fit`` command line, in order, where-it-went keys left out."""
    out, it = [], iter(tokens)
    for token in it:
        if not token.startswith("--"):
            continue  # "zolab", "fit"
        key, eq, value = token.partition("=")
        value = value if eq else next(it, "")
        if key not in IGNORED and not key.endswith("data_dir"):
            out.append((key, value))
    return out


def _same(expected: str, recorded: str, experiments: Path) -> bool:
    """One setting's value: a config file by its path inside the experiments folder (the recorded path is
    relative to wherever the sweep ran), anything else as the YAML it is parsed as."""
    if expected.endswith((".yaml", ".yml")):
        try:
            tail = Path(expected).resolve().relative_to(experiments.resolve()).parts
        except ValueError:
            tail = Path(expected).parts
        return Path(recorded).parts[-len(tail):] == tail
    try:
        return yaml.safe_load(expected) == yaml.safe_load(recorded)
    except yaml.YAMLError:
        return expected == recorded


def settings_diff(expected_args: list[str], command: str, experiments: Path) -> str:
    """'' when the recorded command sets what the sweep file sets now; else what differs."""
    exp, rec = _overrides(expected_args), _overrides(shlex.split(command))
    if len(exp) == len(rec) and all(a == c and _same(b, d, experiments) for (a, b), (c, d) in zip(exp, rec)):
        return ""

    def short(k, v):
        return f"{k}={v if len(v) <= 60 else v[:57] + '...'}"

    extra = [short(k, v) for k, v in rec if not any(k == k2 and _same(v2, v, experiments) for k2, v2 in exp)]
    missing = [short(k, v) for k, v in exp if not any(k == k2 and _same(v, v2, experiments) for k2, v2 in rec)]
    said = ([f"run with {' '.join(extra)}"] if extra else []) + ([f"without {' '.join(missing)}"] if missing else [])
    return "; ".join(said) or "the same settings in another order"


def _status(run_dir: Path) -> tuple[str | None, str]:
    """(status, recorded command) from ``sweep_run.yaml``; (None, '') without one."""
    path = run_dir / "sweep_run.yaml"
    if not path.exists():
        return None, ""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        return "unreadable sweep_run.yaml", ""
    return (data.get("status"), str(data.get("command") or "")) if isinstance(data, dict) else ("unreadable", "")


def check_sweep(sweep: str, root: Path, experiments: Path) -> Check:
    """Every run a sweep file makes: present, done, made with its settings and readable."""
    folder = root / sweep_name(experiments, sweep)
    if not folder.is_dir():
        return Check("not run")
    from zolab.lab import sweep as sweeps  # Lightning: only once runs are on disk

    try:
        _, expected = sweeps.load(experiments / sweep, root=str(root))
    except ValueError as err:
        return Check("incomplete", [f"{sweep} does not load: {err}"])
    return check_runs(sweep, expected, experiments)


def check_runs(sweep: str, expected: list, experiments: Path) -> Check:
    """Runs a sweep makes (``zolab.lab.sweep.Run``s, ``sweep`` naming them in the notes): "not run" when none has
    started, else complete, incomplete or mismatched with the runs named; the checked runs under ``sweep``."""
    if not any(r.run_dir.is_dir() for r in expected):
        return Check("not run")
    absent, unfinished, mismatched, unreadable, runs = [], [], [], [], []
    for r in expected:
        name = f"{r.run_dir.parent.name}/{r.run_id}"
        status, command = _status(r.run_dir) if r.run_dir.is_dir() else (None, "")
        if not r.run_dir.is_dir():
            absent.append(name)
        elif status != "done":
            unfinished.append(f"{name} ({status or 'no sweep_run.yaml: not known to have finished'})")
        elif diff := (settings_diff(r.args, command, experiments) if command else "sweep_run.yaml records no command"):
            mismatched.append(f"{name} ({diff})")
        else:
            run = Run(r.run_dir)
            try:
                run.hp, run.scalars  # noqa: B018 - read now: a damaged run is named here, not in a reader
                runs.append(run)
            except UnreadableRun as err:
                unreadable.append(f"{name} ({err})")
    n = len(expected)
    notes = [f"{what}: {len(names)} of the {n} runs of {sweep}: {_named(names)}"
             for what, names in (("made with other settings", mismatched), ("not started", absent),
                                 ("not finished", unfinished), ("unreadable", unreadable)) if names]
    state = "mismatched" if mismatched else "incomplete" if notes else "complete"
    return Check(state, notes, {sweep: runs})


def check_output(job, root: Path, experiments: Path) -> Check:
    """A command's output: present and, for a JSON with settings, made with them."""
    path = (experiments if job.in_experiments else root) / job.output
    if not path.exists():
        return Check("not run")
    if not job.settings:
        return Check("complete")
    try:
        recorded = json.loads(path.read_text()).get("settings", {})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
        return Check("incomplete", [f"unreadable: {job.output} ({type(err).__name__})"])
    differ = []
    for key, want in job.settings:
        got = recorded.get(key)
        got = len(got) if isinstance(got, list) and isinstance(want, int) else got  # e.g. the victims chosen
        if got != want:
            differ.append(f"{key} {got!r}, registered {want!r}")
    return Check("mismatched", [f"made with other settings: {job.output} ({'; '.join(differ)})"]) if differ else (
        Check("complete"))


def check_job(job, root: Path, experiments: Path, memo: dict | None = None) -> Check:
    """One job's runs (``memo`` keeps each sweep's check for the parts that share it)."""
    if job.dynamic is not None:
        return job.dynamic.check(root, experiments)
    if not job.sweep:
        return check_output(job, root, experiments)
    memo = {} if memo is None else memo
    if job.sweep not in memo:
        memo[job.sweep] = check_sweep(job.sweep, root, experiments)
    return memo[job.sweep]


def check_part(part, root: Path, experiments: Path, memo: dict | None = None) -> Check:
    """A part's runs: "not run" when none of its measuring jobs left anything, else complete, incomplete (the
    missing, unfinished and unreadable runs named) or mismatched (the runs made with other settings named). A
    prerequisite (a file later jobs need: the CNN, the chosen step sizes) counts only through those jobs."""
    checks = [(job, check_job(job, root, experiments, memo)) for job in part.jobs]
    if all(c.state == "not run" for job, c in checks if not job.prerequisite):
        return Check("not run")
    notes = [n for _, c in checks for n in c.notes]
    absent = [job.key for job, c in checks if c.state == "not run" and not job.prerequisite]
    if absent:
        notes.append(f"not run: {', '.join(absent)}")
    runs = {k: v for _, c in checks for k, v in c.runs.items()}
    state = "mismatched" if any(c.state == "mismatched" for _, c in checks) else "incomplete" if notes else "complete"
    return Check(state, notes, runs)


