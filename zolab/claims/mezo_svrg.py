"""MeZO-SVRG's claim (Gautam et al., ICML 2024, arXiv 2404.08080; SV1 of docs/algorithms.md §5): readers and row.

On P-mlp in the paper's no-prompt setting (a fresh random head, n = 512 training images, batches of 64), every rule
gets 16,000 forwards (FE) and dev accuracy every 800. MeZO's target is its best mean dev accuracy; the FE ratio is
the FE MeZO needs to reach it over the FE MeZO-SVRG needs.
"""

from __future__ import annotations

import math

from zolab.claims.proxy_runs import best_lr, grid_value, group, mean_curve
from zolab.claims.stats import g, mean_std
from zolab.claims.types import Claim, Job, Moved, Part, Result, Tolerance

SV1_MEZO, SV1_Q2, SV1_Q5 = "claims/sv1_mezo.yaml", "claims/sv1_q2.yaml", "claims/sv1_q5.yaml"
ACC = "val/acc"


def peak(runs) -> float:
    """The highest mean dev accuracy over the runs' shared evaluations."""
    return max((v for _, v in mean_curve(runs, ACC)), default=math.nan)


def forwards_to(runs, level: float) -> float:
    """The FE at the first evaluation whose mean dev accuracy is ≥ level (inf: never)."""
    return next((f for f, v in mean_curve(runs, ACC) if v >= level), math.inf)


def shared_z(run) -> bool:
    return str(grid_value(run, "model.optimizer.init_args.shared_z", False)).lower() == "true"


def read_sv1(sweep: str, q: int):
    """holds: MeZO-SVRG reaches MeZO's best dev accuracy with ≤ 1/2 of MeZO's FE and its own best is no lower;
    partly: its best is higher but the FE ratio < 2; fails otherwise. Each rule at the η of its highest peak."""

    def read(runs) -> Result | None:
        mezo_runs = [r for r in runs.of(SV1_MEZO) if r.hp.get("rule") == "ZOSGD"]
        svrg = group([r for r in runs.of(sweep) if r.hp.get("rule") == "MeZOSVRG"], shared_z)
        if not mezo_runs or False not in svrg:
            return None
        lr_m, mezo = best_lr(mezo_runs, lambda r: max(r.series(ACC)[1], default=math.nan), lower=False)
        if not mezo:
            return None
        target, fe_mezo = peak(mezo), forwards_to(mezo, peak(mezo))
        said, verdict = [], None
        for coupled in (False, True):
            if coupled not in svrg:
                continue
            lr_s, runs_s = best_lr(svrg[coupled], lambda r: max(r.series(ACC)[1], default=math.nan), lower=False)
            fe_s, top = forwards_to(runs_s, target), peak(runs_s)
            ratio, gain = fe_mezo / fe_s if fe_s > 0 else math.inf, 100 * (top - target)
            if not coupled:
                verdict = "holds" if ratio >= 2 and gain >= 0 else "partly" if gain > 0 else "fails"
            said.append(f"shared_z={coupled} (η = {g(lr_s)}): FE to MeZO's best {g(fe_s)}, ratio {ratio:.2f}, best "
                        f"{100 * top:.1f}% ({gain:+.1f} points)")
        number = (f"q = {q}: MeZO's best mean dev accuracy {100 * target:.1f}% at {g(fe_mezo)} FE (η = {g(lr_m)}); "
                  f"MeZO-SVRG {said[0]}")
        start = mean_std([100 * r.first(ACC) for r in mezo])[0]
        return Result(verdict, number, "; ".join(said[1:]),
                      moved=Moved({"P-mlp": (start, [100 * max(r.series(ACC)[1]) for r in mezo])},
                                  min(len(mezo), len(svrg[False]))))

    return read


def _part(q: int, sweep: str, steps: int) -> Part:
    return Part(f"q{q}", f"P-mlp, random head, n = 512, b = 64; MeZO 8,000 steps, MeZO-SVRG q = {q} {steps:,} steps "
                         f"(16,000 FE each); η ∈ {{5e-4, 1e-3, 2e-3}} for all (η₁ = η₂), μ = 1e-3, 3 seeds",
                (Job(sweep=SV1_MEZO), Job(sweep=sweep)), read_sv1(sweep, q), hours=0.4,
                tolerance=Tolerance("ZOSGD", "MeZO", "dev accuracy", 1.0, " points", higher_is_better=True,
                                    start="its first evaluation, at 800 FE"))


SV1 = Claim(
    "SV1", "MeZO-SVRG reaches MeZO's peak accuracy with at least 2× less compute",
    "up to +20 points test accuracy over MeZO; MeZO's peak with 2× fewer GPU-hours (abstract)",
    "at equal forwards (16,000 FE, anchor chunks counted): holds when MeZO-SVRG (shared_z=False) reaches MeZO's best "
    "mean dev accuracy with ≤ 1/2 of the FE MeZO took to reach it and its own best is no lower; partly when its best "
    "is higher but the FE ratio is below 2; fails otherwise; each rule at the η of its highest peak on a shared grid; "
    "shared_z=True reported; the parts q = 2 and q = 5 combine (all hold: holds, all fail: fails, else partly)",
    (_part(2, SV1_Q2, 1600), _part(5, SV1_Q5, 2500)))

CLAIMS = (SV1,)
