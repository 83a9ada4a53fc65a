"""SubZero's claim (Yu et al., ICCV 2025, arXiv 2410.08989; SZ1 of docs/algorithms.md §5): its readers and row.

(a) on P-lr: the estimates of a T₀ window add up closer to the window's true gradient than MeZO's (WindowAlignment);
(b) on P-mlp: test accuracy no worse than MeZO's. Per step both have the same expected cosine with ∇f; a gain in
(a) can only come from reusing the subspace over the window.
"""

from __future__ import annotations

import math

from zolab.claims.proxy_runs import grid_value, group, not_worse, paired, rule_file, seed_of
from zolab.claims.stats import mean_std, pm
from zolab.claims.types import Claim, Job, Moved, Part, Result, Tolerance

SZ1_LR, SZ1_MLP, SZ1_CELLS = "claims/sz1_lr.yaml", "claims/sz1_mlp.yaml", "claims/sz1_mlp_cells.yaml"
WINDOW = "diagnostics/window_alignment/cos"
VERDICT_FILE = "subzero_r8_t250"  # (a) is read at r = 8 (zolab's default); r = 4 is reported


def window_cos(run) -> float:
    """The run's mean window cosine over its logged windows (nan when none)."""
    values = [v for v in run.series(WINDOW)[1] if math.isfinite(v)]
    return sum(values) / len(values) if values else math.nan


def read_sz1_lr(runs) -> Result | None:
    by = group(runs.of(SZ1_LR), rule_file)
    if "mezo" not in by or VERDICT_FILE not in by:
        return None
    pairs = paired(by[VERDICT_FILE], by["mezo"], window_cos)
    higher = bool(pairs) and all(a > b for a, b in pairs)
    number = (f"mean cos(Σ ĝ, Σ ∇F) over 250-step windows: SubZero (r = 8) {pm([a for a, _ in pairs])} vs MeZO "
              f"{pm([b for _, b in pairs])}, higher in {sum(a > b for a, b in pairs)}/{len(pairs)} seeds")
    step = {k: pm([mean_std(r.series('diagnostics/window_alignment/cos_step')[1])[0] for r in rs])
            for k, rs in sorted(by.items())}
    detail = ("per-step cos(ĝ, ∇F), window means: " + ", ".join(f"{k} {v}" for k, v in step.items())
              + (f"; SubZero r = 4: {pm([window_cos(r) for r in by['subzero_r4_t250']])}" if "subzero_r4_t250" in by
                 else ""))
    mezo = by["mezo"]
    start = mean_std([r.first("val/loss") for r in mezo])[0]
    return Result("holds" if higher else "fails", number, detail,
                  moved=Moved({"P-lr": (start, [r.last("val/loss") for r in mezo])}, len(pairs)))


def read_sz1_mlp(runs) -> Result | None:
    by = group(runs.of(SZ1_MLP), lambda r: r.hp.get("rule"))
    if "SubZero" not in by or "ZOSGD" not in by:
        return None
    sub, mezo = sorted(by["SubZero"], key=seed_of), sorted(by["ZOSGD"], key=seed_of)
    ok, diff, tol = not_worse([100 * r.last("test/acc") for r in sub], [100 * r.last("test/acc") for r in mezo],
                              True, floor=1.0)
    number = (f"test accuracy SubZero (r = 8, T₀ = 1,000) {pm([100 * r.last('test/acc') for r in sub])}% vs MeZO "
              f"{pm([100 * r.last('test/acc') for r in mezo])}% ({diff:+.1f} points, tolerance {tol:.1f})")
    cells = group(runs.of(SZ1_CELLS), lambda r: (int(grid_value(r, "model.optimizer.init_args.rank", 0)),
                                                 int(grid_value(r, "model.optimizer.init_args.t0", 0))))
    detail = "test accuracy by (r, T₀): " + ", ".join(
        f"({r}, {t0}) {pm([100 * x.last('test/acc') for x in rs])}%" for (r, t0), rs in sorted(cells.items()))
    start = mean_std([100 * r.first("val/acc") for r in mezo])[0]
    return Result("holds" if ok else "fails", number, detail if cells else "",
                  moved=Moved({"P-mlp": (start, [100 * r.last("val/acc") for r in mezo])}, min(len(sub), len(mezo))))


SZ1 = Claim(
    "SZ1", "SubZero beats MeZO: better accuracy, lower angle error of the estimate",
    "+1.89% average over MeZO (OPT-13B, 11 tasks, full fine-tuning); lower angle error and variance (README figure)",
    "(a) P-lr, r = 8, T₀ = 250, η = 1e-3: holds when SubZero's mean window cosine cos(Σ ĝ, Σ ∇F) over the 250-step "
    "windows is above MeZO's in every seed; (b) P-mlp, r = 8, T₀ = 1,000, η = 1e-3: holds when SubZero's test accuracy "
    "≥ MeZO's − max(1 point, seed std); the claim holds when both do, partly when one, fails when neither",
    (Part("P-lr", "P-lr, 4,000 steps (16 windows), μ = 1e-3, 3 seeds, WindowAlignment(window=250) (a backward a step); "
                  "MeZO and SubZero r ∈ {4, 8}", (Job(sweep=SZ1_LR),), read_sz1_lr, hours=0.4,
          tolerance=Tolerance("ZOSGD", "MeZO", "loss over the training inputs (val/loss)", 0.1, relative=True)),
     Part("P-mlp", "P-mlp, 4,000 steps, μ = 1e-3, 3 seeds; (r, T₀) ∈ {4, 8} × {250, 1,000} reported",
          (Job(sweep=SZ1_MLP), Job(sweep=SZ1_CELLS)), read_sz1_mlp, hours=0.5,
          tolerance=Tolerance("ZOSGD", "MeZO", "validation accuracy", 1.0, " points", higher_is_better=True))))

CLAIMS = (SZ1,)
