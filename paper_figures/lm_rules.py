"""Rules compared on a text task (claims R6, A1, B1, M1): accuracy, steps to a common loss, cost, curves.

    zolab sweep experiments/llm/sst2_minilm_rules.yaml
    python paper_figures/lm_rules.py runs/sst2_minilm_rules --out docs/figures/sst2_minilm_rules
    python paper_figures/lm_rules.py runs/sst2_smollm2_{mezo,radazo,meazo,zo_adamu,mezo_bcd} \
        --out docs/figures/sst2_smollm2

RUNS_DIR may be given several times; a run in ``.../NAME/version_N`` is called NAME.

For every run under RUNS_DIR (one per rule): the last ``val/acc`` and ``val/loss``, the training loss
smoothed over a window of ``--window`` logged points, the first step at which that smoothed loss reaches
the common target (the largest of the runs' smallest smoothed losses, so every run reaches it), and the
run's wall-clock per step (``sweep_run.yaml`` seconds / steps, load and validation included, or
``diagnostics/step_cost/wall_ms`` when the StepCost probe ran). Writes OUT.md (the table) and OUT.png (the
smoothed training-loss curves and, when the runs validated, the validation loss against the step).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paper_figures._tb import find_runs, read_hparams, read_scalars, scalar_tags  # noqa: E402


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` points (shorter at the start)."""
    c = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def run_name(run: Path) -> str:
    return run.parent.name if run.name.startswith("version_") else run.name


def collect(runs_dirs, window: int) -> dict[str, dict]:
    out = {}
    runs_dirs = [runs_dirs] if isinstance(runs_dirs, (str, Path)) else runs_dirs
    for run in [r for d in runs_dirs for r in find_runs(d)]:
        tags = scalar_tags(run)
        steps, loss = read_scalars(run, "train/loss")
        row = {"run": run, "rule": read_hparams(run).get("rule", run.name), "steps": steps,
               "smoothed": smooth(loss, window)}
        for tag in ("val/acc", "val/loss", "test/acc"):
            row[tag] = read_scalars(run, tag)[1][-1] if tag in tags else float("nan")
        if "val/acc" in tags and "val/loss" in tags:
            vs, va = read_scalars(run, "val/acc")
            row["val_history"] = list(zip(vs.tolist(), va.tolist(), read_scalars(run, "val/loss")[1].tolist()))
        if "diagnostics/step_cost/wall_ms" in tags:
            row["ms_per_step"] = float(np.median(read_scalars(run, "diagnostics/step_cost/wall_ms")[1]))
            row["cost_source"] = "StepCost median"
        else:
            status = Path(run) / "sweep_run.yaml"
            seconds = yaml.safe_load(status.read_text())["seconds"] if status.exists() else float("nan")
            row["ms_per_step"] = 1e3 * seconds / max(int(steps[-1]), 1)
            row["cost_source"] = "run seconds / steps"
        if "diagnostics/step_cost/peak_rss_mib" in tags:
            row["peak_mib"] = read_scalars(run, "diagnostics/step_cost/peak_rss_mib")[1].max()
        out[run_name(run)] = row
    if not out:
        raise SystemExit(f"no run under {runs_dirs}")
    return out


def table(rows: dict[str, dict]) -> str:
    target = max(r["smoothed"].min() for r in rows.values())
    mem = any("peak_mib" in r for r in rows.values())
    lines = [f"Common training-loss target: {target:.4f} (smoothed).", "",
             "| run | rule | steps | val acc | val loss | final train loss | steps to target | ms / step |"
             + (" peak MiB |" if mem else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|" if mem else "")]
    for name, r in rows.items():
        reach = int(r["steps"][np.argmax(r["smoothed"] <= target)])
        lines.append(f"| {name} | {r['rule']} | {int(r['steps'][-1]) + 1} | {r['val/acc']:.3f} | "
                     f"{r['val/loss']:.4f} | {r['smoothed'][-1]:.4f} | {reach} | {r['ms_per_step']:.1f} |"
                     + (f" {r.get('peak_mib', float('nan')):.0f} |" if mem else ""))
    sources = sorted({r["cost_source"] for r in rows.values()})
    lines += ["", f"ms / step: {', '.join(sources)} (wall-clock on the machine that ran it)."]
    history = {name: r["val_history"] for name, r in rows.items() if r.get("val_history")}
    if history:
        lines += ["", "Validation, step: accuracy / loss:", ""]
        for name, points in history.items():
            lines.append(f"- {name}: " + ", ".join(f"{int(s) + 1}: {a:.3f} / {v:.4f}" for s, a, v in points))
    return "\n".join(lines)


def figure(rows: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_val = any(r.get("val_history") for r in rows.values())  # validation loss: a second panel
    fig, axes = plt.subplots(1, 2 if with_val else 1, figsize=(11.0 if with_val else 6.4, 4.0), squeeze=False)
    ax = axes[0, 0]
    for name, r in rows.items():
        ax.plot(r["steps"], r["smoothed"], label=name, lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (smoothed)")
    ax.legend(fontsize=7, ncol=2)
    if with_val:
        ax = axes[0, 1]
        for name, r in rows.items():
            points = r.get("val_history") or []
            ax.plot([s + 1 for s, _, _ in points], [v for _, _, v in points], marker="o", ms=3, lw=1.2, label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs_dir", nargs="+")
    p.add_argument("--out", required=True, help="writes OUT.md and OUT.png")
    p.add_argument("--window", type=int, default=10, help="smoothing window, in logged points")
    a = p.parse_args(argv)
    rows = collect(a.runs_dir, a.window)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md = table(rows)
    out.with_suffix(".md").write_text(md + "\n")
    figure(rows, out.with_suffix(".png"))
    print(md)


if __name__ == "__main__":
    main()
