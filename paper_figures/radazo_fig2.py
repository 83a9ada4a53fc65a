"""R-AdaZO Figure 2 from TensorBoard event files: claims R2 (panel a) and R3 (panel b) of docs/algorithms.md §5.

    zolab sweep experiments/radazo/fig2a.yaml && zolab sweep experiments/radazo/fig2b.yaml
    python paper_figures/radazo_fig2.py [--runs runs] [--out docs/figures/radazo_fig2.png]

(a) cos(ĝ_t, ∇F_t) and cos(m_t, ∇F_t) (``diagnostics/alignment/*``) against β1, each the mean over the
second half of the run (error bars: the standard deviation over those probe steps); R2 holds when
cos(m) > cos(g) at every β1 > 0 and the cosine of m rises with β1 (the paper adds a small drop at very high
β1). (b) the relative errors ‖v − v*‖/‖v*‖ of R-AdaZO's refined v and of the conventional ĝ²-based v
(``diagnostics/second_moment/*``) against β2, same averaging, log scale; R3 holds when the refined error is
below the conventional one at every β2 and falls as β2 grows. The script prints the numbers and its verdict
on both claims.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paper_figures._tb import find_runs, read_config, read_scalars  # noqa: E402

ALIGN = ("diagnostics/alignment/cos_g", "diagnostics/alignment/cos_m")
ERROR = ("diagnostics/second_moment/rel_error_conventional", "diagnostics/second_moment/rel_error_rule")


def _betas(run) -> tuple[float, float]:
    config = read_config(run)
    try:
        b1, b2 = config["model"]["optimizer"]["init_args"]["betas"]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{run}: config.yaml has no model.optimizer.init_args.betas") from err
    return float(b1), float(b2)


def second_half(run, tag: str) -> tuple[float, float]:
    """Mean and standard deviation of a probe scalar over the second half of the run's probe steps."""
    _, values = read_scalars(run, tag)
    tail = values[len(values) // 2 :]
    return float(tail.mean()), float(tail.std())


def sweep_table(runs_dir, tags: tuple[str, str], beta_index: int) -> dict[float, dict[str, tuple[float, float]]]:
    """{β: {tag: (mean, std)}} over every run under ``runs_dir``."""
    table = {}
    for run in find_runs(runs_dir):
        beta = _betas(run)[beta_index]
        if beta in table:
            raise ValueError(f"two runs with β{beta_index + 1} = {beta} under {runs_dir}")
        table[beta] = {tag: second_half(run, tag) for tag in tags}
    if not table:
        raise FileNotFoundError(f"no run with event files under {runs_dir}: run the sweep first")
    return dict(sorted(table.items()))


def verdict_r2(table) -> tuple[bool, str]:
    betas = [b for b in table if b > 0]
    above = all(table[b][ALIGN[1]][0] > table[b][ALIGN[0]][0] for b in betas)
    cos_m = [table[b][ALIGN[1]][0] for b in betas]
    i = int(np.argmax(cos_m))
    peak = betas[i]
    rising = all(x < y for x, y in zip(cos_m[:i], cos_m[1 : i + 1]))  # up to the peak
    text = (f"cos(m) > cos(g) at every β1 > 0: {above}; cos(m) rises with β1 up to β1 = {peak}"
            f"{' (then drops)' if peak != betas[-1] else ' (the largest tried)'}: {rising}")
    return above and rising, text


def verdict_r3(table) -> tuple[bool, str]:
    betas = list(table)
    lower = all(table[b][ERROR[1]][0] < table[b][ERROR[0]][0] for b in betas)
    rule = [table[b][ERROR[1]][0] for b in betas]
    falling = all(y < x for x, y in zip(rule, rule[1:]))
    ratio = np.mean([table[b][ERROR[0]][0] / table[b][ERROR[1]][0] for b in betas])
    text = (f"refined error < conventional at every β2: {lower} (conventional/refined ≈ {ratio:.1f}×); "
            f"refined error falls as β2 grows: {falling}")
    return lower and falling, text


def plot(align, error, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(10, 3.8))

    def panel(ax, results, curves, beta):
        """One marker line per curve: mean ± std over runs, one x tick per β value."""
        betas = list(results)
        for tag, label, color in curves:
            ax.errorbar(range(len(betas)), [results[b][tag][0] for b in betas],
                        yerr=[results[b][tag][1] for b in betas], marker="o", capsize=3, label=label, color=color)
        ax.set_xticks(range(len(betas)), [f"{b:g}" for b in betas])
        ax.set_xlabel(beta)

    panel(ax_a, align, ((ALIGN[0], r"$\cos(\hat g_t, \nabla F)$", "tab:gray"),
                        (ALIGN[1], r"$\cos(m_t, \nabla F)$", "tab:red")), r"$\beta_1$")
    ax_a.set(ylabel="cosine with the true gradient", title="(a) alignment (R2)")
    ax_a.legend()
    panel(ax_b, error, ((ERROR[0], r"conventional $v$ (from $\hat g^2$, eq. 5)", "tab:gray"),
                        (ERROR[1], r"R-AdaZO $v$ (from $m^2$, eq. 6)", "tab:red")), r"$\beta_2$")
    ax_b.set_yscale("log")
    ax_b.set(ylabel=r"$\|v_t - v^*_t\| / \|v^*_t\|$", title="(b) second moment (R3)")
    ax_b.legend()
    fig.suptitle("R-AdaZO on Quadratic (d = 1,000, K = 10): means over the second half of each run", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs", help="the sweeps' root (runs/radazo_fig2a, runs/radazo_fig2b)")
    parser.add_argument("--out", default="docs/figures/radazo_fig2.png")
    args = parser.parse_args(argv)
    align = sweep_table(Path(args.runs) / "radazo_fig2a", ALIGN, 0)
    error = sweep_table(Path(args.runs) / "radazo_fig2b", ERROR, 1)
    print("β1      cos(g)           cos(m)")
    for b, row in align.items():
        (g, g_sd), (m, m_sd) = row[ALIGN[0]], row[ALIGN[1]]
        print(f"{b:<7g} {g:.3f} ± {g_sd:.3f}   {m:.3f} ± {m_sd:.3f}")
    print("β2      RE conventional   RE refined")
    for b, row in error.items():
        (c, c_sd), (r, r_sd) = row[ERROR[0]], row[ERROR[1]]
        print(f"{b:<7g} {c:.3g} ± {c_sd:.2g}   {r:.3g} ± {r_sd:.2g}")
    for claim, (holds, text) in (("R2", verdict_r2(align)), ("R3", verdict_r3(error))):
        print(f"{claim} {'holds' if holds else 'does not hold'}: {text}")
    plot(align, error, Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
