"""The leaderboard's readings: one row per rule from its complete runs and the probe, ranked, as a table and a figure.

Columns (docs/leaderboard.md says the same): forwards a step (Adam by backprop: its measured charge) and the
steps T they allow; the lr chosen on validation; test accuracy, mean ± std over the seed runs; the forwards at
which the rule's validation loss, mean over its seed runs, first reaches MeZO's final one (the same mean at
MeZO's last validation; linear between validations, from the untrained models' mean loss at 0; "—": never within
the budget), and over MeZO's; the probe's time of a step (and over MeZO's) and its peak memory over two forward
passes'; the lrs of the grid whose final validation accuracy is within 2 points of the rule's best.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from zolab.claims.events import Run
from zolab.claims.leaderboard import (
    CPU_FILE,
    FIRST_ORDER,
    REFERENCE,
    Protocol,
    RuleRuns,
    check_testbed,
    read_probe,
    steps,
)
from zolab.claims.minilm import steps_to
from zolab.claims.stats import g, mean_std, pm

ROBUST_POINTS = 2.0  # a grid lr is "robust" when its final validation accuracy is within this of the best


@dataclass
class Row:
    key: str
    label: str
    runs: RuleRuns
    entry: dict
    test: list[float] = field(default_factory=list)  # test accuracy in % per seed run
    curves: list[list[tuple[float, float, float]]] = field(default_factory=list)  # per seed: (forwards, acc, loss)
    reach: float = math.nan  # forwards to MeZO's final validation loss (nan: never)
    cpu_seconds: float = 0.0
    protocol_steps: int | None = None  # T, from the budget and the probe's forwards a step

    @property
    def complete(self) -> bool:
        return self.runs.state == "complete"

    def mean_curve(self) -> list[tuple[float, float, float]]:
        """(forwards, val/acc, val/loss) at each validation, means over the seed runs (up to the shortest)."""
        n = min((len(c) for c in self.curves), default=0)
        return [tuple(statistics.mean(c[j][i] for c in self.curves) for i in range(3)) for j in range(n)]

    def robust(self) -> tuple[int, int]:
        """(grid lrs within ROBUST_POINTS of the best final validation accuracy, grid lrs)."""
        best = max((a for a in self.runs.accuracy.values() if math.isfinite(a)), default=math.nan)
        good = [lr for lr in self.runs.grid if 100 * (best - self.runs.accuracy.get(lr, math.nan)) <= ROBUST_POINTS]
        return len(good), len(self.runs.grid)


def validations(run: Run, forwards_per_step: float) -> list[tuple[float, float, float]]:
    """(forwards, val/acc, val/loss) at each validation: the forwards the run logged at that step
    (``train/forwards``), else the step × forwards a step (Adam by backprop: its charge)."""
    x_acc, acc = run.series("val/acc")
    loss = dict(zip(*run.series("val/loss")))
    logged = dict(zip(*run.series("train/forwards")))
    return [(logged.get(x, (x + 1) * forwards_per_step), a, loss.get(x, math.nan)) for x, a in zip(x_acc, acc)]


def read_rows(root: Path, experiments: Path, p: Protocol, keys: list[str] | None = None) -> list[Row]:
    """Every selected rule's row, ranked: complete rows by mean test accuracy, then the others."""
    probe = read_probe(root, p)
    starts = probe.get("starts", {})
    cpu = cpu_record(root, p)
    rows = []
    for key, runs in check_testbed(root, experiments, p, keys).items():
        entry = runs.entry
        row = Row(key, entry.get("label") or key, runs, entry,
                  cpu_seconds=sum(float(v) for v in (cpu.get(key) or {}).values()))
        row.protocol_steps = steps(p, entry["forwards_per_step"]) if "forwards_per_step" in entry else None
        for run in runs.seeds:
            row.test.append(100 * run.last("test/acc"))
            row.curves.append(validations(run, entry["forwards_per_step"]))
        rows.append(row)
    reference = next((r for r in rows if r.key == REFERENCE and r.complete and r.curves), None)
    if reference is not None:
        target = reference.mean_curve()[-1][2]
        for row in (r for r in rows if r.complete and r.curves):
            starts_of = [starts.get(str(run.hp.get("task.seed")), {}).get("val/loss") for run in row.runs.seeds]
            curve = row.mean_curve()
            start = statistics.mean(starts_of) if None not in starts_of else curve[0][2]
            row.reach = steps_to([c[0] for c in curve], [c[2] for c in curve], target, start)
    rows.sort(key=lambda r: (not r.complete, -mean_std(r.test)[0] if r.test else 0.0, r.key))
    return rows


def reference_reach(rows: list[Row]) -> float:
    return next((r.reach for r in rows if r.key == REFERENCE), math.nan)


def cpu_record(root: Path, p: Protocol) -> dict:
    path = Path(root) / p.folder / CPU_FILE
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def markdown(rows: list[Row]) -> list[str]:
    """The table's lines (complete rows ranked, then the others with their state)."""
    ref = reference_reach(rows)
    lines = ["| rank | rule | forwards/step | steps | lr (validation) | test accuracy % | forwards to MeZO's "
             "validation loss (× MeZO's) | ms/step (× MeZO's) | memory / inference | robust lrs |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    rank = 0
    for r in rows:
        e = r.entry
        label = f"{r.label} (reference)" if r.key == FIRST_ORDER else r.label
        if not r.complete:
            lines.append(f"| — | {label} | {_fps(e)} | {r.protocol_steps or '—'} | — | {r.runs.state} | | | | |")
            continue
        rank += 1
        reach = r.reach
        ratio = f" ({reach / ref:.2f}×)" if math.isfinite(reach) and math.isfinite(ref) and ref > 0 else ""
        k, n = r.robust()
        lines.append(f"| {rank} | {label} | {_fps(e)} | {r.protocol_steps} | {r.runs.lr:g} | {pm(r.test, 3)} | "
                     f"{g(reach, 3) + ratio if math.isfinite(reach) else '—'} | "
                     f"{e['step_ms']:.2f} ({e['step_vs_reference']:.2f}×) | {e['memory_vs_inference']:.2f}× | "
                     f"{k}/{n} |")
    return lines


def _fps(entry: dict) -> str:
    if "forwards_per_step" not in entry:
        return "—"
    charged = entry.get("first_order") or "jvp_ratio" in entry  # time-based charges, not counted forwards
    return f"{entry['forwards_per_step']:g}" + (" (charged)" if charged else "")


def figure(rows: list[Row], title: str, path: Path) -> Path | None:
    """Validation accuracy (mean over seeds) against forwards, one curve per complete rule; None without any."""
    done = [r for r in rows if r.complete and r.curves]
    if not done:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, r in enumerate(sorted(done, key=lambda r: r.key)):
        curve = r.mean_curve()
        style = "--" if r.key == FIRST_ORDER else ":" if i >= 10 else "-"
        ax.plot([c[0] for c in curve], [100 * c[1] for c in curve], marker=".", lw=1.2, color=f"C{i % 10}", ls=style,
                label=r.label)
    ax.set(xlabel="forward passes (Adam by backprop: charged)", ylabel="validation accuracy % (mean over seeds)",
           title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
