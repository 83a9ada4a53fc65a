"""R-AdaZO Table 1: iterations to a successful black-box attack on MNIST, per rule (claim R5).

    python -m zolab.lab.attack_runner --victims 10 --seeds 3 --max-iters 3000 --out runs/attack/table1.json
    python paper_figures/radazo_table1.py runs/attack/table1.json --out docs/figures/radazo_table1

Reads the runner's JSON (several, when the rules were split over processes) and writes ``OUT.md`` (the table
in the paper's layout: mean ± std of the iterations of successful runs, failures counted apart, speed-up
against ZO-RMSProp) and ``OUT.png`` (one bar per rule with its std and every run as a dot; failures drawn at
the cap). The paper's numbers (ZO-RMSProp 15.6k ± 3.2k, ZO-AdaMM 15.5k ± 4.1k, R-AdaZO 2.9k ± 0.8k, 5.4×)
come from the authors' own network and hyper-parameters, which the paper does not give; compare ratios, not
counts."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

PAPER = {"ZO-RMSProp": "15.6k ± 3.2k", "ZO-AdaMM": "15.5k ± 4.1k", "R-AdaZO": "2.9k ± 0.8k"}
BASELINE = "ZO-RMSProp"


def table(result: dict) -> str:
    """The Markdown table of a runner result."""
    rules = result["rules"]
    base = rules.get(BASELINE, {}).get("mean", math.nan)
    # paired view: the (victim, seed) runs that every rule broke
    common = [i for i in range(len(next(iter(rules.values()))["runs"]))
              if all(r["runs"][i] is not None for r in rules.values())]
    lines = [
        "| rule | iterations to success (mean ± std) | failures / runs | speed-up vs ZO-RMSProp "
        f"| mean on the {len(common)} runs all rules broke | paper |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rules.items():
        cell = f"{r['mean']:.0f} ± {r['std']:.0f}" if r["successes"] else "—"
        speed = f"{base / r['mean']:.1f}×" if r["successes"] and not math.isnan(base) else "—"
        paired = f"{sum(r['runs'][i] for i in common) / len(common):.0f}" if common else "—"
        paper = PAPER.get(name, "—")
        fails = f"{r['failures']} / {len(r['runs'])}"
        lines.append(f"| {name} | {cell} | {fails} | {speed} | {paired} | {paper} |")
    s = result["settings"]
    lines.append("")
    lines.append(
        f"{len(s['victims'])} victims × {s['seeds']} seeds, cap {s['max_iters']} iterations, "
        f"η = {s['lr']}, μ = {s['mu']}, K = {s['num_queries']}, {s['directions']} directions, "
        f"{s['estimator']} estimator, β = {tuple(s['betas'])}, ε = {s['eps']}."
    )
    return "\n".join(lines)


def merge(results: list[dict]) -> dict:
    """One result from runner outputs that split the rules between processes (same settings otherwise)."""
    settings = {k: v for k, v in results[0]["settings"].items()}
    out = {"settings": settings, "rules": {}, "commands": [r.get("command", "") for r in results]}
    for r in results:
        if r["settings"] != settings:
            raise ValueError("runner outputs with different settings cannot go in one table")
        out["rules"].update(r["rules"])
    order = ["ZO-SGD", "ZO-signSGD", "ZO-AdaMM", "ZO-RMSProp", "R-AdaZO"]
    rank = {name: i for i, name in enumerate(order)}
    out["rules"] = dict(sorted(out["rules"].items(), key=lambda kv: rank.get(kv[0], len(order))))
    return out


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules, cap = result["rules"], result["settings"]["max_iters"]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for i, (name, r) in enumerate(rules.items()):
        ok = [x for x in r["runs"] if x is not None]
        if ok:
            ax.bar(i, r["mean"], yerr=r["std"], color="tab:red" if name == "R-AdaZO" else "tab:gray",
                   alpha=0.6, capsize=4)
        runs = [cap if x is None else x for x in r["runs"]]
        offsets = [(j / max(len(runs) - 1, 1) - 0.5) * 0.5 for j in range(len(runs))]
        ax.scatter([i + o for o in offsets], runs, s=6, color="black",
                   marker=".", zorder=3)
        if r["failures"]:
            ax.annotate(f"{r['failures']} failed", (i, cap), ha="center", va="bottom", fontsize=8)
    ax.axhline(cap, color="black", lw=0.5, ls="--")
    ax.set_xticks(range(len(rules)), list(rules))
    ax.set_ylabel("iterations to success")
    ax.set_title("Black-box targeted attack on MNIST (R-AdaZO Table 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", help="JSON files written by zolab.lab.attack_runner (merged by rule)")
    p.add_argument("--out", default="docs/figures/radazo_table1", help="writes OUT.md and OUT.png")
    a = p.parse_args(argv)
    result = merge([json.loads(Path(r).read_text()) for r in a.results])
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md = table(result)
    out.with_suffix(".md").write_text(md + "\n")
    figure(result, out.with_suffix(".png"))
    print(md)
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
