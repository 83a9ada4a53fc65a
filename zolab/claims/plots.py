"""Figures the claims' readers share (drawn on a matplotlib Axes the docs writer gives them)."""

from __future__ import annotations

import math

from zolab.claims.events import label
from zolab.claims.stats import mean_std


def bars(ax, groups: dict[str, dict[str, list[float]]], ylabel: str, log: bool = True, title: str = ""):
    """Grouped bars: one group per key, one bar per series (mean, error bar = std over seeds); a series named by
    a rule class is labelled with the rule's label."""
    import numpy as np

    series = list(dict.fromkeys(k for g in groups.values() for k in g))
    width = 0.8 / max(1, len(series))
    for i, name in enumerate(series):
        xs, ms, ss = [], [], []
        for j, g in enumerate(groups.values()):
            vals = [v for v in g.get(name, []) if math.isfinite(v)]
            if vals:
                m, s = mean_std(vals)
                xs.append(j + (i - (len(series) - 1) / 2) * width)
                ms.append(m)
                ss.append(s)
        ax.bar(xs, ms, width, yerr=ss, capsize=2, label=label(name))
    ax.set_xticks(np.arange(len(groups)), list(groups))
    if log:
        ax.set_yscale("log")
    ax.set(ylabel=ylabel, title=title)
    ax.legend(fontsize=7)


def beta_plot(table: dict[float, list[list[float]]], labels, xlabel: str, ylabel: str, log: bool = False):
    """Two series against β (one point per β, mean ± std over seeds)."""
    def plot(ax):
        betas = list(table)
        for i, name in enumerate(labels):
            stats = [mean_std(table[b][i]) for b in betas]
            ax.errorbar(range(len(betas)), [m for m, _ in stats], yerr=[s for _, s in stats], marker="o",
                        capsize=3, label=name)
        ax.set_xticks(range(len(betas)), [f"{b:g}" for b in betas])
        ax.set(xlabel=xlabel, ylabel=ylabel, title="second-half means ± std over seeds")
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=8)

    return plot
