"""MiniLM-L6 on SST-2: the step-size grid, each rule's best step size, and the study's table.

    python paper_figures/minilm_table.py pilot --runs /work/main/runs
    python paper_figures/minilm_table.py grid --runs /work/main/runs [--write-best experiments/minilm/best]
    python paper_figures/minilm_table.py table --runs /work/main/runs

Reads the event files and ``hparams.yaml`` of the sweeps ``minilm_pilot``, ``minilm_grid``, ``minilm_seeds``,
``minilm_references`` and ``minilm_cost`` under RUNS (experiments/minilm/).

``pilot``: per pilot run (mode, lr), the validation loss at each validation, the test accuracy and the
median StepCost wall-clock per step (step 1 excluded).

``grid``: each rule's final validation loss (500 dev sentences) at every step size and its best step size
by the rule fixed before the grid ran (experiments/minilm/grid.yaml): the lowest final val/loss; a run
whose val/loss is not finite or above the start (``--start``, the zero-shot head's 0.5388 printed by
``zolab validate --config experiments/minilm/base.yaml``) is never chosen (when no step size qualifies,
the smallest is used, marked; the report says "diverged" for a loss not finite or above twice the
start); ties within 1e-4 go to the smaller step size. One extension, declared after ZO-SGD's and
MeZO-BCD's grid ran and before the others' had: when a rule's best is an end of its grid (the smallest
step size when it is the smallest, or when all failed; else the largest), the next point of the 1-3-10
sequence beyond it is run too (``--write-edges DIR`` writes that sweep, run ids with "-edge-") and joins the
choice; the extension is not extended. "moved" counts the step sizes that lowered the loss.
``--write-best DIR`` writes DIR/<rule>.yaml (the rule's grid file with the chosen lr; ZO-AdaMU's T1 set
to T/20 of the long runs, ``--long-steps``).

``table``: per rule (3 seeds: minilm_seeds and, as seed 0, its grid run; ``seed_runs``) and reference:
accuracy on the 872 sentences (test/acc,
mean ± std over seeds), test loss, the last validation loss, the steps to a common validation loss (the
highest last mean val/loss of R-AdaZO, ZO-AdaMM and ZO-RMSProp among those below the start, so that they
reach it; linear interpolation on the seed-mean curve, from the start at step 0), the peak resident
memory and the median StepCost wall-clock per step of the runs, and, for full fine-tuning (minilm_cost,
and the first-order full fine-tuning references), the same two cost columns. Wall-clock numbers are from
the shared machine.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np
import yaml

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paper_figures._tb import label, read_hparams, read_scalars, scalar_tags  # noqa: E402
from zolab.claims import minilm as study  # noqa: E402
from zolab.claims.experiments import Runs  # noqa: E402
from zolab.claims.minilm import steps_to  # noqa: E402, F401 - the table's steps to the common loss

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"  # the sweep files name the runs' folders
START = study.START_VAL_LOSS  # val/loss of the zero-shot start (zolab validate --config experiments/minilm/base.yaml)
START_TEST_ACC = study.START_TEST_ACC  # its test/acc on the 872 sentences (zolab test --config ...base.yaml)
TIE = 1e-4
RULES = ("ZOSGD", "RAdaZO", "ZOAdaMM", "ZORMSProp", "ZOAdaMU", "MEAZO", "MeZOBCD")  # the table's order
R6_RULES = ("RAdaZO", "ZOAdaMM", "ZORMSProp")
WALL, RSS = "diagnostics/step_cost/wall_ms", "diagnostics/step_cost/peak_rss_mib"


def last(run, tag) -> tuple[int, float]:
    """(step, value) of the last logged point of ``tag`` (nan when absent)."""
    if tag not in scalar_tags(run):
        return -1, math.nan
    steps, values = read_scalars(run, tag)
    return int(steps[-1]), float(values[-1])


def runs_of(folder: Path) -> list[tuple[Path, dict]]:
    """(run directory, hparams) of every run under ``folder``."""
    return [(r.path, r.hp) for r in Runs(folder.parent, EXPERIMENTS).folder(folder.name)]


def stems(rules_dir: Path) -> dict[str, str]:
    """Rule class name -> the stem of its file in ``rules_dir`` (by the file's class_path)."""
    out = {}
    for f in sorted(Path(rules_dir).glob("*.yaml")):
        spec = yaml.safe_load(f.read_text()) or {}
        out.setdefault(str(spec.get("class_path", "")).rsplit(".", 1)[-1], f.stem)
    return out


# ---------------------------------------------------------------------------------------------- pilot
def pilot(root: Path) -> str:
    lines = ["| mode | lr | val loss (step: value) | test acc | ms / step (shared) |", "|---|---|---|---|---|"]
    rows = []
    for run, hp in runs_of(root):
        steps, vals = read_scalars(run, "val/loss")
        s = summarise([run])
        curve = ", ".join(f"{t + 1}: {v:.4f}" if v < 10 else f"{t + 1}: {v:.3g}" for t, v in zip(steps, vals))
        rows.append((hp.get("task.mode", "?"), float(hp["lr"]),
                     f"| {hp.get('task.mode', '?')} | {float(hp['lr']):g} | {curve} | {fmt(s['test_acc'], 2, 100)} | "
                     f"{s['wall_ms']:.0f} |"))
    return "\n".join(lines + [r for *_, r in sorted(rows)])


# ---------------------------------------------------------------------------------------------- grid
EDGE = "-edge-"  # in the run id of an extension run (write_edges)


def grid(root: Path, start: float = START, edges: bool = True) -> dict[str, dict[float, float]]:
    """rule -> {lr: final val/loss} of the grid runs (``edges=False``: without the extension runs)."""
    out: dict[str, dict[float, float]] = {}
    for run, hp in runs_of(root):
        if not edges and EDGE in run.name:
            continue
        step, loss = last(run, "val/loss")
        out.setdefault(hp["rule"], {})[float(hp["lr"])] = loss if step >= 0 else None  # None: no validation yet
    return {r: dict(sorted(v.items())) for r, v in out.items()}


def diverged(loss: float | None, start: float = START) -> bool:
    """Never chosen: no validation (running or failed), not finite, or above the start."""
    return loss is None or not math.isfinite(loss) or loss > start


def best_lr(losses: dict[float, float], start: float = START) -> tuple[float, bool]:
    """(chosen lr, whether every lr diverged) by the selection rule (module doc)."""
    ok = {lr: v for lr, v in losses.items() if not diverged(v, start)}
    if not ok:
        return min(losses), True
    low = min(ok.values())
    return min(lr for lr, v in ok.items() if v <= low + TIE), False


def cell(loss: float, start: float = START) -> str:
    """A grid entry: the loss, marked when above the start; "diverged" when not finite or above twice it."""
    if loss is None:
        return "no val/loss (running or failed)"
    if not math.isfinite(loss) or loss > 2 * start:
        return "diverged" if not math.isfinite(loss) else f"diverged ({loss:.3g})"
    return f"{loss:.4f}" + (" (above the start)" if loss > start else "")


def grid_report(table: dict[str, dict[float, float]], start: float = START) -> str:
    lines = ["| rule | " + " | ".join(["final val loss at each step size (200 steps)", "best", "moved"]) + " |",
             "|---|---|---|---|"]
    for rule in [r for r in RULES if r in table] + sorted(set(table) - set(RULES)):
        losses = table[rule]
        cells = ", ".join(f"{lr:g}: {cell(v, start)}" for lr, v in losses.items())
        lr, all_diverged = best_lr(losses, start)
        moved = sum(not diverged(v, start) and v < start for v in losses.values())
        if all(v is None for v in losses.values()):
            lines.append(f"| {label(rule)} | {cells} | — | — |")
            continue
        lines.append(f"| {label(rule)} | {cells} | {lr:g}{' (all diverged)' if all_diverged else ''} | "
                     f"{moved}/{len(losses)} |")
    return "\n".join(lines)


def beyond(lr: float, up: bool) -> float:
    """The next point of the 1-3-10 sequence above (below) ``lr``: 1e-2 -> 3e-2, 1e-3 -> 3e-4, 3e-5 -> 1e-5."""
    exp = math.floor(math.log10(lr) + 1e-9)
    mant = round(lr / 10**exp, 6)
    if up:
        return float(f"{3 if mant < 3 else 1}e{exp if mant < 3 else exp + 1}")
    return float(f"{1 if mant > 1 else 3}e{exp if mant > 1 else exp - 1}")


def write_edges(table, rules_dir: Path, out_dir: Path, start: float = START) -> Path | None:
    """One extension of the grid (module doc): for every rule whose best step size is an end of its grid,
    DIR/<rule>-edge-lr=<lr>.yaml one 1-3-10 point beyond it, and DIR/grid_edges.yaml, the sweep of them
    (None and nothing written when no best is at an end). ``table`` must hold the grid without extensions."""
    files, stem_of = [], stems(rules_dir)
    for rule, losses in table.items():
        lr, _ = best_lr(losses, start)
        if lr not in (min(losses), max(losses)):
            continue
        new = beyond(lr, up=lr == max(losses) and lr != min(losses))
        stem = stem_of[rule]
        spec = yaml.safe_load((rules_dir / f"{stem}.yaml").read_text())
        spec["init_args"]["lr"] = new
        files.append(f"{stem}{EDGE}lr={new:g}.yaml")
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / files[-1]).write_text(yaml.safe_dump(spec, sort_keys=False))
    if not files:
        return None
    base = Path(os.path.relpath((rules_dir.parent / "base.yaml").resolve(), out_dir.resolve()))
    sweep = {"name": "minilm_grid", "base": base.as_posix(),  # relative to the sweep file: it can be moved
             "grid": {"model.optimizer": files},
             "args": ["--trainer.max_steps=200", "--trainer.val_check_interval=100"]}
    path = out_dir / "grid_edges.yaml"
    path.write_text("# Written by `python paper_figures/minilm_table.py grid --write-edges`: one grid point "
                    "beyond each best step size at an end of its grid.\n" + yaml.safe_dump(sweep, sort_keys=False))
    return path


def write_best(table, rules_dir: Path, out_dir: Path, long_steps: int, start: float = START) -> list[Path]:
    """DIR/<rule>.yaml for every rule of the grid: its grid file with the chosen lr (module doc)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written, stem_of = [], stems(rules_dir)
    for rule, losses in table.items():
        stem = stem_of[rule]
        spec = yaml.safe_load((rules_dir / f"{stem}.yaml").read_text())
        lr, all_diverged = best_lr(losses, start)
        spec["init_args"]["lr"] = lr
        if "t1" in spec["init_args"]:
            spec["init_args"]["t1"] = long_steps // 20
        note = " (every grid step size diverged: the smallest)" if all_diverged else ""
        path = out_dir / f"{stem}.yaml"
        path.write_text(f"# Written by `python paper_figures/minilm_table.py grid --write-best {out_dir}`: "
                        f"{label(rule)} at its best grid step size{note}.\n" + yaml.safe_dump(spec, sort_keys=False))
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------- table
def summarise(runs: list[Path]) -> dict:
    """Seed means and spreads of one group of runs (same rule and setting)."""
    def stat(tag, reduce=last):
        vals = np.array([reduce(r, tag)[1] for r in runs], dtype=float)
        return vals

    val_curves = []
    for r in runs:
        if "val/loss" in scalar_tags(r):
            s, v = read_scalars(r, "val/loss")
            val_curves.append((s + 1, v))  # val after step t is logged at x = t - 1
    out = {"n": len(runs), "test_acc": stat("test/acc"), "test_loss": stat("test/loss"),
           "val_loss": stat("val/loss"), "val_acc": stat("val/acc")}
    lengths = {len(s) for s, _ in val_curves}
    if val_curves and len(lengths) == 1:
        out["curve"] = (val_curves[0][0], np.mean([v for _, v in val_curves], axis=0))
    walls, rss = [], []
    for r in runs:
        tags = scalar_tags(r)
        if WALL in tags:
            s, w = read_scalars(r, WALL)
            walls += list(w[s > 0])  # step 1 (x = 0) pays the warm-up
        if RSS in tags:
            rss.append(read_scalars(r, RSS)[1].max())
    out["wall_ms"] = float(np.median(walls)) if walls else math.nan
    out["rss_mib"] = float(np.max(rss)) if rss else math.nan
    return out


def fmt(values: np.ndarray, digits: int, scale: float = 1.0) -> str:
    values = values[np.isfinite(values)] * scale
    if not len(values):
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def groups(root: Path, key) -> dict:
    out: dict = {}
    for run, hp in runs_of(root):
        out.setdefault(key(hp), []).append(run)
    return out


def reference_label(hp) -> str:
    mode = hp.get("task.mode", "?")
    what = {"head": "head on the frozen encoder", "lora": "LoRA + head", "full": "full fine-tuning"}.get(mode, mode)
    how = f"first order, {hp['rule']}" if hp.get("first_order") else f"ZO, {label(hp['rule'])}"
    return f"{how}: {what}"


def seed_runs(runs_root: Path) -> dict[str, list[Path]]:
    """Each rule's seed runs: minilm_seeds, plus its minilm_grid run as seed 0 (zolab.claims.minilm.seed_runs)."""
    return {rule: [r.path for r in runs] for rule, runs in study.seed_runs(Runs(runs_root, EXPERIMENTS)).items()}


def table(runs_root: Path, start: float = START) -> str:
    seeds = {k: summarise(v) for k, v in seed_runs(runs_root).items()}
    refs = {k: (summarise(v), float(read_hparams(v[0]).get("lr", math.nan)))
            for k, v in groups(runs_root / "minilm_references", reference_label).items()}
    cost = {k: summarise(v) for k, v in groups(runs_root / "minilm_cost", lambda hp: hp["rule"]).items()}
    lrs = {hp["rule"]: float(hp["lr"]) for _, hp in runs_of(runs_root / "minilm_seeds")}
    finals = [seeds[r]["curve"][1][-1] for r in R6_RULES if r in seeds and "curve" in seeds[r]]
    finals = [f for f in finals if f < start]  # a rule that ends above the start reaches no common loss
    target = max(finals) if finals else math.nan
    lines = [f"Common validation loss (R6): {target:.4f} (the highest last mean val loss of R-AdaZO, ZO-AdaMM, "
             f"ZO-RMSProp; start {start:.4f})", "",
             "| run | lr | seeds | test acc (872) | test loss | last val loss | steps to common val loss | "
             "peak RSS MiB | ms / step (shared) | full FT: peak RSS MiB | full FT: ms / step (shared) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def row(name, lr, s, full=None):
        to = steps_to(*s["curve"], target, start) if "curve" in s and math.isfinite(target) else math.nan
        full_cells = ("—", "—") if full is None else (f"{full['rss_mib']:.0f}", f"{full['wall_ms']:.0f}")
        lines.append(f"| {name} | {lr:g} | {s['n']} | {fmt(s['test_acc'], 2, 100)} | {fmt(s['test_loss'], 4)} | "
                     f"{fmt(s['val_loss'], 4)} | {'not reached' if math.isnan(to) else f'{to:.0f}'} | "
                     f"{s['rss_mib']:.0f} | {s['wall_ms']:.0f} | {full_cells[0]} | {full_cells[1]} |")

    for rule in [r for r in RULES if r in seeds]:
        row(f"ZO, {label(rule)}: LoRA + head", lrs[rule], seeds[rule], cost.get(rule))
    for name in sorted(refs):
        s, lr = refs[name]
        row(name, lr, s, s if name.endswith("full fine-tuning") else None)
    return "\n".join(lines + hessian_lines(runs_root / "minilm_seeds"))


HESSIAN = ("effective_rank", "stable_rank", "lambda_max", "trace")


def hessian_lines(root: Path) -> list[str]:
    """The Hessian probe's values along the run that has it (claim Z1), one row per probe step."""
    out = []
    for run, _ in runs_of(root):
        tags = scalar_tags(run)
        if f"diagnostics/hessian/{HESSIAN[0]}" not in tags:
            continue
        series = {k: read_scalars(run, f"diagnostics/hessian/{k}") for k in HESSIAN}
        out += ["", f"Hessian probe on {run.name} (trainable tensors, stochastic path; step = t):", "",
                "| step | " + " | ".join(HESSIAN) + " |", "|---" * (len(HESSIAN) + 1) + "|"]
        for i, x in enumerate(series[HESSIAN[0]][0]):
            out.append(f"| {x + 1} | " + " | ".join(f"{series[k][1][i]:.4g}" for k in HESSIAN) + " |")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["pilot", "grid", "table"])
    parser.add_argument("--runs", default="runs", help="the runs root holding the minilm_* sweeps")
    parser.add_argument("--start", type=float, default=START, help="the zero-shot start's val/loss")
    parser.add_argument("--write-best", default=None, help="grid: write DIR/<rule>.yaml with the chosen lr")
    parser.add_argument("--write-edges", default=None,
                        help="grid: write DIR/grid_edges.yaml, the one extension beyond best step sizes at an end")
    parser.add_argument("--rules-dir", default=str(Path(__file__).resolve().parents[1] / "experiments/minilm/rules"))
    parser.add_argument("--long-steps", type=int, default=200, help="the long runs' T (ZO-AdaMU's T1 = T/20)")
    args = parser.parse_args(argv)
    runs = Path(args.runs)
    if args.what == "pilot":
        print(pilot(runs / "minilm_pilot"))
        return 0
    if args.what == "grid":
        found = grid(runs / "minilm_grid", args.start)
        if not found:
            print(f"no grid runs under {runs / 'minilm_grid'}", file=sys.stderr)
            return 1
        print(grid_report(found, args.start))
        if args.write_edges:
            path = write_edges(grid(runs / "minilm_grid", args.start, edges=False), Path(args.rules_dir),
                               Path(args.write_edges), args.start)
            print(f"wrote {path}" if path else "no best step size at an end of its grid: no extension")
        if args.write_best:
            for path in write_best(found, Path(args.rules_dir), Path(args.write_best), args.long_steps, args.start):
                print(f"wrote {path}")
        return 0
    print(table(runs, args.start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
