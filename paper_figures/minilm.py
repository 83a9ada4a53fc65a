"""MiniLM-L6 on SST-2: validation loss against the step, the step-size grid, test accuracy.

    python paper_figures/minilm.py --runs /work/main/runs --out docs/figures/minilm.png

Reads the event files and ``hparams.yaml`` of ``minilm_seeds``, ``minilm_references`` and ``minilm_grid``
under RUNS. Left: each rule's validation loss (500 dev sentences) against the step, the mean over its
seeds with the seeds' range shaded, from the shared zero-shot start; the references dashed. Middle: each
rule's final validation loss at every step size of the grid (200 steps), diverged runs as crosses at the
top (claim M1's robustness). Right: accuracy on the 872 test sentences, mean and range over seeds (grey:
the zero-shot start). Grey lines elsewhere: the start's validation loss.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paper_figures._tb import label, read_scalars, scalar_tags  # noqa: E402
from paper_figures.minilm_table import (  # noqa: E402
    RULES,
    START,
    START_TEST_ACC,
    diverged,
    grid,
    groups,
    reference_label,
    seed_runs,
)


def curves(runs: list[Path]) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, (n_seeds, n_points) val losses), from the start at step 0; None without validation."""
    got = [read_scalars(r, "val/loss") for r in runs if "val/loss" in scalar_tags(r)]
    if not got or len({len(s) for s, _ in got}) != 1:
        return None
    steps = np.concatenate([[0], got[0][0] + 1])
    return steps, np.array([np.concatenate([[START], v]) for _, v in got])


def test_acc(runs: list[Path]) -> np.ndarray:
    return np.array([read_scalars(r, "test/acc")[1][-1] for r in runs if "test/acc" in scalar_tags(r)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--out", default="docs/figures/minilm.png")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = Path(args.runs)
    seeds = seed_runs(runs)  # minilm_seeds, and each rule's grid run as its seed 0
    refs = groups(runs / "minilm_references", reference_label)
    if not seeds and not refs:
        print(f"no minilm_seeds or minilm_references runs under {runs}", file=sys.stderr)
        return 1
    colors = dict(zip(RULES, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, (ax, gx, bx) = plt.subplots(1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    bars = []
    for rule in [r for r in RULES if r in seeds]:
        name, color = label(rule), colors[rule]
        found = curves(seeds[rule])
        if found is not None:
            steps, vals = found
            ax.plot(steps, vals.mean(0), color=color, label=f"{name} ({len(vals)} seeds)")
            ax.fill_between(steps, vals.min(0), vals.max(0), color=color, alpha=0.2)
        bars.append((name, test_acc(seeds[rule]), color))
    for i, (name, group) in enumerate(sorted(refs.items())):
        found = curves(group)
        style = dict(color=f"C{7 + i % 3}", ls="--" if name.startswith("ZO") else ":")
        if found is not None:
            steps, vals = found
            ax.plot(steps, vals.mean(0), label=f"{name} ({len(vals)})", **style)
        bars.append((name.replace("first order, ", "FO ").replace(": ", "\n"), test_acc(group), style["color"]))
    ax.axhline(START, color="grey", lw=0.8)
    ax.set(xlabel="step", ylabel="validation loss (500 dev sentences)", title="validation loss (mean, seed range)")
    ax.legend(fontsize=7)

    table = grid(runs / "minilm_grid")
    top = max([v for losses in table.values() for v in losses.values() if not diverged(v)] + [START]) + 0.005
    for rule in [r for r in RULES if r in table]:
        lrs = np.array(list(table[rule]))
        losses = [table[rule][lr] for lr in lrs]
        ok = np.array([not diverged(v) for v in losses])
        losses = np.array([np.nan if v is None else v for v in losses], dtype=float)
        gx.plot(lrs[ok], losses[ok], "o-", color=colors[rule], label=label(rule))
        gx.plot(lrs[~ok], np.full((~ok).sum(), top), "x", color=colors[rule], ms=9)
    gx.axhline(START, color="grey", lw=0.8)
    gx.set(xscale="log", xlabel="step size", ylabel="validation loss at step 200",
           title="grid (one seed; x: diverged)")
    gx.legend(fontsize=7)

    names = [b[0] for b in bars]
    means = [100 * b[1].mean() if len(b[1]) else math.nan for b in bars]
    lo = [m - 100 * b[1].min() if len(b[1]) else 0 for m, b in zip(means, bars)]
    hi = [100 * b[1].max() - m if len(b[1]) else 0 for m, b in zip(means, bars)]
    bx.barh(range(len(bars)), means, xerr=[lo, hi], color=[b[2] for b in bars])
    bx.set_yticks(range(len(bars)), names, fontsize=7)
    bx.axvline(100 * START_TEST_ACC, color="grey", lw=0.8)  # the zero-shot start
    bx.invert_yaxis()
    finite = [m for m in means if math.isfinite(m)]
    if finite:
        bx.set_xlim(min(finite) - 5, max(finite) + 3)
    bx.set(xlabel="test accuracy, % (872 sentences)", title="accuracy (mean, seed range)")
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
