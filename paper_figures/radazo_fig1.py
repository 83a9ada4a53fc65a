"""R-AdaZO Figure 1 from TensorBoard event files: loss vs iteration on 4 synthetic functions, 5 rules.

    python paper_figures/radazo_fig1.py runs/radazo_fig1 --out docs/figures/radazo_fig1.png

Reads every run under RUNS_DIR (``zolab sweep experiments/radazo/fig1.yaml`` writes them), takes the task
and the rule from each run's ``hparams.yaml`` and its ``train/loss`` curve (f(θ_k) at step k), draws one
log-scale panel per function with one line per rule, and prints the rules ranked by final loss per
function, with the two claims these runs test (docs/algorithms.md §5): R1, R-AdaZO converges faster than the
four others on most functions; R4, ZO-AdaMM ≈ ZO-RMSProp. A run whose loss overflowed is drawn up to its
last finite point and ranked last as "diverged".
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paper_figures._tb import find_runs, label, read_hparams, read_scalars  # noqa: E402

FUNCTIONS = ("Quadratic", "Cubic", "Levy", "Rosenbrock")
RULES = {  # class name -> (colour, line style: ZO-AdaMM dashed, it lies on ZO-RMSProp), in the legend's order
    "ZOSGD": ("tab:gray", "-"),
    "ZOSignSGD": ("tab:green", "-"),
    "ZOAdaMM": ("tab:blue", "--"),
    "ZORMSProp": ("tab:orange", "-"),
    "RAdaZO": ("tab:red", "-"),
}
DIVERGED = 1e3  # a final loss above DIVERGED × the panel's initial loss (or non-finite) counts as diverged


def collect(runs_dir) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """{function: {rule class: (steps, train/loss)}} for every run under ``runs_dir``."""
    curves: dict[str, dict] = {}
    for run in find_runs(runs_dir):
        hp = read_hparams(run)
        task, rule = hp.get("task"), hp.get("rule")
        if task is None or rule is None:
            print(f"skipped {run}: no task/rule in hparams.yaml", file=sys.stderr)
            continue
        if rule in curves.get(task, {}):
            raise ValueError(f"two runs of {rule} on {task} under {runs_dir}: point RUNS_DIR at one sweep")
        curves.setdefault(task, {})[rule] = read_scalars(run, "train/loss")
    if not curves:
        raise FileNotFoundError(f"no zolab run (event files + hparams.yaml) under {runs_dir}")
    return curves


def initial_loss(rules: dict) -> float:
    """A function's starting loss: the smallest finite first logged value over its runs (they share x0)."""
    firsts = [float(v[0]) for _, v in rules.values() if math.isfinite(float(v[0]))]
    return min(firsts) if firsts else math.inf


def final_loss(values: np.ndarray, start: float) -> float:
    """The last logged loss; inf when the run diverged (non-finite, or above DIVERGED × ``start``)."""
    last = float(values[-1])
    if not math.isfinite(last) or last > DIVERGED * abs(start):
        return math.inf
    return last


def ranking(curves) -> dict[str, list[tuple[str, float]]]:
    """Per function, (rule, final loss) from best to worst."""
    out = {}
    for func, rules in curves.items():
        start = initial_loss(rules)
        out[func] = sorted(((r, final_loss(v, start)) for r, (_, v) in rules.items()), key=lambda x: x[1])
    return out


def _order(names, known):
    return [n for n in known if n in names] + sorted(n for n in names if n not in known)


def plot(curves, out) -> Path:
    """The 4-panel figure (2 × 2, log-scale loss vs iteration) as a PNG at ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    functions = _order(curves, FUNCTIONS)
    cols = min(2, len(functions))
    rows = math.ceil(len(functions) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for ax, func in zip(axes.flat, functions, strict=False):
        start = initial_loss(curves[func])
        for rule in _order(curves[func], RULES):
            steps, values = curves[func][rule]
            colour, style = RULES.get(rule, (None, "-"))
            ok = np.isfinite(values) & (values > 0)
            name = label(rule) + (" (diverged)" if final_loss(values, start) == math.inf else "")
            ax.plot(steps[ok], values[ok], label=name, color=colour, ls=style, lw=1.4)
        ax.set_yscale("log")
        if math.isfinite(start):
            ax.set_ylim(top=2 * start)  # a diverged run would squash the others
        ax.set_title(func)
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(functions):]:
        ax.axis("off")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def report(curves) -> str:
    """The ranking per function and what it says about claims R1 and R4."""
    lines = ["Final loss per function, best first:"]
    ranks = ranking(curves)
    wins = []
    for func in _order(ranks, FUNCTIONS):
        cells = [f"{label(r)} {'diverged' if v == math.inf else f'{v:.4g}'}" for r, v in ranks[func]]
        lines.append(f"  {func:<11} " + " < ".join(cells))
        if ranks[func][0][0] == "RAdaZO":
            wins.append(func)
    lines.append(f"R1 (R-AdaZO lowest final loss): {len(wins)}/{len(ranks)} functions"
                 + (f" ({', '.join(wins)})" if wins else ""))
    ratios = []
    for func in _order(ranks, FUNCTIONS):
        final = dict(ranks[func])
        if "ZOAdaMM" in final and "ZORMSProp" in final and math.isfinite(final["ZORMSProp"]):
            ratios.append(f"{func} {final['ZOAdaMM'] / final['ZORMSProp']:.3f}")
    if ratios:
        lines.append("R4 (ZO-AdaMM ≈ ZO-RMSProp), final-loss ratio AdaMM/RMSProp: " + ", ".join(ratios))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir", help="directory holding the sweep's runs (e.g. runs/radazo_fig1)")
    parser.add_argument("--out", default="radazo_fig1.png", help="PNG to write")
    args = parser.parse_args(argv)
    curves = collect(args.runs_dir)
    print(f"wrote {plot(curves, args.out)}")
    print(report(curves))
    return 0


if __name__ == "__main__":
    sys.exit(main())
