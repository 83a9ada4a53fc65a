"""The equal-budget leaderboard: its protocol per testbed, each rule's sweeps, and the runs they expect.

A testbed's protocol is ``experiments/leaderboard/<testbed>.yaml``: the budget B in forward passes, the lr grid,
the seeds. The probe (``zolab.lab.leaderboard_probe``, kept in ``<root>/leaderboard_<testbed>/probe.json``)
measures on the testbed's model what the protocol needs of each rule: its forwards a step, whether its step grows
with the loss, its time and memory a step, and the start's metrics. From both, each rule (every key of
``zolab.rules.RULES``, and ``FIRST_ORDER``: Adam by backprop, charged its measured cost a step in forwards) gets:

    steps T   ⌊B / forwards a step⌋, rounded down to a multiple of the validations (validation every T/20 steps)
    tuning    one run per lr of the grid (× scale_free_factor for a rule whose step does not grow with the loss),
              seed ``tune_seed``; a best lr at an end of the runs adds the next value beyond it, ``extend`` times
              at most; the best is the highest final validation accuracy (ties: the smaller lr), never test
    seeds     one run per seed of ``seeds`` at the best lr (a seed sets ``seed_keys`` and the rule's seed)

Each is a sweep built here (``tune_spec``, ``seed_spec``), written under the runs root and run with ``zolab sweep
--resume``; ``check_rule`` expects exactly their runs (``experiments.check_runs``: present, done, made with these
settings, readable), so a rule registered later joins with no edit. Nothing here imports torch: the sweep
machinery is imported only once a testbed's runs are on disk.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from zolab.claims.events import Run
from zolab.claims.experiments import Check, check_runs

FIRST_ORDER = "adam_backprop"  # the reference row: Adam by backprop (its own cost, in forwards)
CPU_FILE = "cpu_seconds.yaml"  # under the testbed's runs folder: CPU seconds per rule and phase, and the probe's
REFERENCE = "zo_sgd"  # MeZO: the row the forwards-to-its-loss column and the claims' comparisons measure against
KEYS = ("title", "config", "budget", "validations", "mu", "lr_grid", "scale_free_factor", "extend", "tune_seed",
        "seeds", "seed_keys", "first_order", "planned_hours")


@dataclass(frozen=True)
class Protocol:
    """A testbed's protocol (experiments/leaderboard/<testbed>.yaml; the keys' comments there)."""

    testbed: str
    title: str
    config: Path  # the fit config, absolute
    budget: int
    validations: int
    mu: float
    lr_grid: tuple[float, ...]
    scale_free_factor: float
    extend: int
    tune_seed: int
    seeds: tuple[int, ...]
    seed_keys: tuple[str, ...]
    first_order: str
    planned_hours: float

    @property
    def folder(self) -> str:
        """The folder under the runs root: every run of this testbed's leaderboard, its probe and sweeps."""
        return f"leaderboard_{self.testbed}"


def testbeds(experiments: Path) -> list[str]:
    """The testbeds with a protocol file in experiments/leaderboard/ (``<name>.yaml`` beside ``<name>_fit.yaml``)."""
    folder = Path(experiments) / "leaderboard"
    return sorted(p.stem for p in folder.glob("*.yaml") if (folder / f"{p.stem}_fit.yaml").is_file())


def load_protocol(experiments: Path, testbed: str) -> Protocol:
    path = Path(experiments) / "leaderboard" / f"{testbed}.yaml"
    if not path.is_file():
        raise ValueError(f"no leaderboard protocol {path}; allowed testbeds: {testbeds(experiments)}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or sorted(data) != sorted(KEYS):
        got = sorted(data) if isinstance(data, dict) else data
        raise ValueError(f"{path}: the keys must be {list(KEYS)}, got {got}")
    grid = tuple(sorted(float(x) for x in data["lr_grid"]))
    if len(grid) < 3 or grid[0] <= 0:
        raise ValueError(f"{path}: lr_grid needs at least 3 positive values (its spacing is continued beyond an end)")
    return Protocol(testbed, str(data["title"]), (path.parent / data["config"]).resolve(), int(data["budget"]),
                    int(data["validations"]), float(data["mu"]), grid, float(data["scale_free_factor"]),
                    int(data["extend"]), int(data["tune_seed"]), tuple(int(s) for s in data["seeds"]),
                    tuple(data["seed_keys"]), str(data["first_order"]), float(data["planned_hours"]))


# ------------------------------------------------------------------ the probe's record
def probe_path(root: Path, p: Protocol) -> Path:
    return Path(root) / p.folder / "probe.json"


def read_probe(root: Path, p: Protocol) -> dict:
    """The probe's record ({} when none): ``rules`` (key -> class, label, forwards_per_step, scale_free, step_ms,
    step_vs_reference, memory_vs_inference, or error), ``starts`` (seed -> the untrained model's metrics), the
    machine, and the settings it was measured with (``config``, ``mu``)."""
    path = probe_path(root, p)
    return json.loads(path.read_text()) if path.is_file() else {}


def probe_settings(p: Protocol) -> dict:
    return {"config": f"{p.config.parent.name}/{p.config.name}", "mu": p.mu, "budget": p.budget}


# ------------------------------------------------------------------ steps, grid, sweeps
def steps(p: Protocol, forwards_per_step: float) -> int:
    """T = ⌊B / forwards a step⌋ rounded down to a multiple of the validations (at least one interval)."""
    return max(p.validations, math.floor(p.budget / forwards_per_step + 1e-9) // p.validations * p.validations)


def _round(x: float) -> float:
    return float(f"{x:.3g}")


def grid(p: Protocol, scale_free: bool) -> list[float]:
    return [_round(x * (p.scale_free_factor if scale_free else 1.0)) for x in p.lr_grid]


def beyond(lrs: list[float], up: bool) -> float:
    """The next value past an end, the grid's spacing continued (1, 3, 10 -> 30; 1e-5, 3e-5, 1e-4 -> 3e-6)."""
    a = sorted(lrs)
    return _round(a[-1] * a[-2] / a[-3]) if up else _round(a[0] * a[1] / a[2])


def seed_key(entry: dict) -> str:
    """The setting a seed sets beside the protocol's seed_keys: the ZO rule's direction seed, or the first-order
    module's (dropout masks)."""
    return "model.seed" if entry.get("first_order") else "model.optimizer.init_args.seed"


def _args(p: Protocol, entry: dict) -> list[str]:
    t = steps(p, entry["forwards_per_step"])
    args = [f"--trainer.max_steps={t}", f"--trainer.val_check_interval={t // p.validations}"]
    if entry.get("first_order"):
        return [*args, "--first_order"]
    return [*args, f"--model.optimizer.init_args.mu={p.mu:g}", "--model.optimizer.init_args.nonfinite=skip"]


def tune_spec(p: Protocol, entry: dict, lrs: list[float]) -> dict:
    """The sweep of a rule's tuning runs at ``lrs`` (one seed)."""
    seeds = [f"--{k}={p.tune_seed}" for k in (*p.seed_keys, seed_key(entry))]
    return {"name": p.folder, "base": str(p.config),
            "grid": {"model.optimizer": [entry["class"]], "model.optimizer.init_args.lr": list(lrs)},
            "args": [*_args(p, entry), *seeds]}


def seed_spec(p: Protocol, entry: dict, lr: float, seed: int) -> dict:
    """The sweep of one seed run at the rule's best lr (a sweep varies one key a run; a seed sets several)."""
    return {"name": p.folder, "base": str(p.config),
            "grid": {"model.optimizer": [entry["class"]], seed_key(entry): [seed]},
            "args": [*_args(p, entry), f"--model.optimizer.init_args.lr={lr:g}",
                     *(f"--{k}={seed}" for k in p.seed_keys)]}


def expected_runs(spec: dict, root: Path) -> list:
    """The runs ``zolab sweep`` makes of ``spec`` under ``root`` (zolab.lab.sweep_spec: imports torch)."""
    from zolab.lab.sweep_spec import load

    return load(spec, root=str(root))[1]


# ------------------------------------------------------------------ a rule's runs
def final_accuracy(run: Run) -> float:
    """The last validation accuracy; nan when the run's validation loss or accuracy is not finite."""
    acc, loss = run.last("val/acc"), run.last("val/loss")
    return acc if math.isfinite(acc) and math.isfinite(loss) else math.nan


def best_lr(tuned: dict[float, float]) -> float | None:
    """The lr with the highest final validation accuracy (ties: the smaller lr); None when none is finite."""
    finite = {lr: a for lr, a in tuned.items() if math.isfinite(a)}
    return min(finite, key=lambda lr: (-finite[lr], lr)) if finite else None


@dataclass
class RuleRuns:
    """What a rule's runs hold: its state (complete, incomplete, mismatched, not run) with notes, its tuning runs
    by lr (and their final validation accuracies), its chosen lr and its seed runs."""

    key: str
    entry: dict
    state: str = "not run"
    notes: list[str] = field(default_factory=list)
    tuning: dict[float, Run] = field(default_factory=dict)
    accuracy: dict[float, float] = field(default_factory=dict)
    grid: list[float] = field(default_factory=list)
    lr: float | None = None
    seeds: list[Run] = field(default_factory=list)
    specs: list[tuple[str, dict]] = field(default_factory=list)  # (phase, sweep) to run next, in order


def _merge(into: RuleRuns, check: Check, label: str) -> bool:
    """Fold a sweep's check into the rule's state; whether the sweep is complete."""
    if check.state == "complete":
        return True
    into.state = "mismatched" if "mismatched" in (check.state, into.state) else "incomplete"
    into.notes += check.notes or [f"not run: {label}"]
    return False


def check_rule(root: Path, experiments: Path, p: Protocol, key: str, entry: dict) -> RuleRuns:
    """The state of a rule's runs and, as far as they are complete, their readings; ``specs`` holds the sweeps
    that make the missing runs (the tuning, its extensions, then the seeds), each once the one before is done."""
    out = RuleRuns(key, entry)
    if entry.get("error"):
        out.notes = [f"the probe could not step it: {entry['error']}"]
        return out
    out.grid = lrs = grid(p, entry["scale_free"])
    ups = downs = 0
    while True:
        todo = [lr for lr in lrs if lr not in out.tuning]
        spec = tune_spec(p, entry, todo)
        expected = expected_runs(spec, root)
        check = check_runs(f"{key} tuning", expected, experiments)
        if check.state == "not run" and not out.tuning:
            out.specs.append(("tune", spec))
            return out
        out.state = out.state if out.tuning else "complete"
        if not _merge(out, check, f"{key} tuning at lr {', '.join(f'{lr:g}' for lr in todo)}"):
            out.specs.append(("tune" if len(todo) > 1 else "extend", spec))
            return out
        lr_of = {r.run_dir: float(r.values["model.optimizer.init_args.lr"]) for r in expected}
        for run in check.runs[f"{key} tuning"]:
            out.tuning[lr_of[run.path]] = run
            out.accuracy[lr_of[run.path]] = final_accuracy(run)
        out.lr = best_lr(out.accuracy)
        if out.lr is None:
            out.state = "incomplete"
            out.notes.append(f"{key}: no tuning run ended with a finite validation loss and accuracy")
            return out
        if out.lr == max(lrs) and ups < p.extend:
            lrs, ups = [*lrs, beyond(lrs, up=True)], ups + 1
        elif out.lr == min(lrs) and downs < p.extend:
            lrs, downs = [*lrs, beyond(lrs, up=False)], downs + 1
        else:
            break
    specs = [seed_spec(p, entry, out.lr, seed) for seed in p.seeds]
    expected = [expected_runs(spec, root) for spec in specs]
    check = check_runs(f"{key} seeds", [r for runs in expected for r in runs], experiments)
    if _merge(out, check, f"{key} seeds at lr {out.lr:g}"):
        out.seeds = check.runs[f"{key} seeds"]
    else:
        done = {run.path for run in check.runs.get(f"{key} seeds", [])}
        out.specs += [(f"seed{seed}", spec) for seed, spec, runs in zip(p.seeds, specs, expected)
                      if any(r.run_dir not in done for r in runs)]
    return out


def probed(entry: dict) -> bool:
    """Whether the probe measured the rule (or found it cannot step)."""
    return "forwards_per_step" in entry or "error" in entry


def rule_entries(root: Path, p: Protocol, keys: list[str] | None = None) -> dict[str, dict]:
    """The rules of this testbed's leaderboard (the registry's, then ``FIRST_ORDER``; ``keys`` selects) with
    their probe entries (only its label for a rule the probe has not measured). Imports zolab.rules (torch): only once
    the testbed's runs are on disk."""
    from zolab.rules import RULES

    probed = read_probe(root, p).get("rules", {})
    out = {k: probed.get(k, {"label": getattr(RULES.get(k), "label", "") or k}) for k in [*RULES, FIRST_ORDER]}
    unknown = sorted(set(keys or ()) - set(out))
    if unknown:
        raise ValueError(f"unknown rules {unknown}; allowed: {list(out)}")
    return {k: v for k, v in out.items() if keys is None or k in keys}


def check_testbed(root: Path, experiments: Path, p: Protocol, keys: list[str] | None = None) -> dict[str, RuleRuns]:
    """Every selected rule's runs (no runs folder: every rule "not run", without importing torch)."""
    if not (Path(root) / p.folder).is_dir():
        return {k: RuleRuns(k, {}) for k in keys or ()}
    out = {}
    for key, entry in rule_entries(root, p, keys).items():
        out[key] = check_rule(root, experiments, p, key, entry) if probed(entry) else RuleRuns(
            key, entry, notes=[f"not probed yet (`zolab leaderboard --run --testbed {p.testbed}` probes it)"])
    return out


# ------------------------------------------------------------------ a claim part's runs on the leaderboard
@dataclass(frozen=True)
class LeaderboardJob:
    """The runs a claim part reads on the leaderboard: these rules' tuning and seed runs on one testbed (a
    ``Job``'s ``dynamic``: which seed runs it expects follows from its tuning runs)."""

    testbed: str
    rules: tuple[str, ...]

    def check(self, root: Path, experiments: Path) -> Check:
        p = load_protocol(experiments, self.testbed)
        if not (Path(root) / p.folder).is_dir():
            return Check("not run")
        states = check_testbed(Path(root), Path(experiments), p, list(self.rules))
        if all(r.state == "not run" for r in states.values()):
            return Check("not run")
        notes = [f"{k}: {r.state}" + (f" ({'; '.join(r.notes)})" if r.notes else "")
                 for k, r in states.items() if r.state != "complete"]
        state = "mismatched" if any(r.state == "mismatched" for r in states.values()) else (
            "incomplete" if notes else "complete")
        return Check(state, notes, {f"{p.folder}/{k}": r.seeds for k, r in states.items()})

    @property
    def units(self) -> tuple[str, ...]:
        """What its minutes count (each once across the claims that share it): the probe and each rule's runs."""
        return (f"leaderboard_{self.testbed}/probe", *(f"leaderboard_{self.testbed}/{k}" for k in self.rules))

    def minutes(self, root: Path, units) -> float | None:
        """CPU minutes ``--run`` recorded for these units (None: none recorded)."""
        path = Path(root) / f"leaderboard_{self.testbed}" / CPU_FILE
        record = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
        seconds = [record.get(u.split("/", 1)[1]) for u in units]
        seconds = [sum(map(float, s.values())) if isinstance(s, dict) else float(s) for s in seconds if s]
        return sum(seconds) / 60 if seconds else None
