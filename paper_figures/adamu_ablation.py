"""ZO-AdaMU schedule ablation (claim A2 of docs/algorithms.md §5) from TensorBoard event files.

    zolab sweep experiments/ablations/adamu_schedules.yaml
    python paper_figures/adamu_ablation.py [--runs runs/adamu_schedules] [--out docs/figures/adamu_ablation.png]

Top row: the schedule values α_t, β1_t, β2_t each arm ran with (``train/alpha``, ``train/betas1``,
``train/betas2``, logged by ``ZOModule``; a constant, which is not logged, is read from ``config.yaml``), one
panel per quantity. Bottom: ``train/loss`` against the step,
the mean over the arm's seeds (shaded: min to max). Prints each arm's final loss (mean ± spread over
seeds, from the last logged value), best first. Arms are the run ids' prefix before ``-seed=``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paper_figures._tb import find_runs, read_config, read_scalars  # noqa: E402

ARMS = ("hold", "paper_prose", "formula", "alpha_off", "beta1_off", "beta2_off", "all_off")
SCHEDULES = (("train/alpha", r"$\alpha_t$"), ("train/betas1", r"$\beta_{1,t}$"), ("train/betas2", r"$\beta_{2,t}$"))


def collect(runs_dir) -> dict[str, list]:
    """{arm: [run directory, ...]} from the run ids ``<arm>-seed=<s>``."""
    arms: dict[str, list] = {}
    for run in find_runs(runs_dir):
        arms.setdefault(run.name.split("-seed=")[0], []).append(run)
    if not arms:
        raise FileNotFoundError(f"no run with event files under {runs_dir}: run the sweep first")
    return dict(sorted(arms.items(), key=lambda kv: ARMS.index(kv[0]) if kv[0] in ARMS else len(ARMS)))


def schedule(run, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """A schedule's logged values; a constant (not a schedule, so not logged) from the run's config.yaml."""
    try:
        return read_scalars(run, tag)
    except KeyError:
        args = read_config(run)["model"]["optimizer"]["init_args"]
        value = args["alpha"] if tag == "train/alpha" else args["betas"][int(tag[-1]) - 1]
        steps, _ = read_scalars(run, "train/loss")
        return steps, np.full(len(steps), float(value))


def losses(runs) -> tuple[np.ndarray, np.ndarray]:
    """(steps, losses of shape (seeds, steps)) on the steps every seed logged."""
    curves = [read_scalars(r, "train/loss") for r in runs]
    common = sorted(set.intersection(*(set(s.tolist()) for s, _ in curves)))
    return np.array(common), np.stack([v[np.searchsorted(s, common)] for s, v in curves])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs/adamu_schedules")
    parser.add_argument("--out", default="docs/figures/adamu_ablation.png")
    args = parser.parse_args(argv)
    arms = collect(args.runs)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 7))
    grid = fig.add_gridspec(2, 3, height_ratios=(1, 1.4))
    colors = dict(zip(arms, plt.cm.tab10.colors, strict=False))
    for i, (tag, label) in enumerate(SCHEDULES):
        ax = fig.add_subplot(grid[0, i])
        for arm, runs in arms.items():
            steps, values = schedule(runs[0], tag)
            ax.plot(steps, values, label=arm, color=colors[arm], lw=1.2)
        ax.set(title=label, xlabel="step", ylim=(-0.03, 1.03))
    fig.axes[0].legend(fontsize=7)
    ax = fig.add_subplot(grid[1, :])
    finals = {}
    for arm, runs in arms.items():
        steps, values = losses(runs)
        ax.plot(steps, values.mean(0), label=f"{arm} ({len(runs)} seeds)", color=colors[arm])
        ax.fill_between(steps, values.min(0), values.max(0), color=colors[arm], alpha=0.15)
        finals[arm] = (values[:, -1].mean(), values[:, -1].min(), values[:, -1].max())
    ax.set(xlabel="step", ylabel="training loss (cross-entropy)", yscale="log",
           title="ZO-AdaMU on a 2,110-parameter MLP (digits): schedule ablation")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print("arm           final loss (mean, min-max over seeds)")
    for arm, (mean, lo, hi) in sorted(finals.items(), key=lambda kv: kv[1][0]):
        print(f"{arm:<13s} {mean:.4f}  ({lo:.4f}-{hi:.4f})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
