"""FZOO's claim (Dang et al., ICLR 2026, arXiv 2506.09034; FZ1 of docs/algorithms.md §3.16): its reader and row."""

from __future__ import annotations

import math

from zolab.claims import proxy_runs as P
from zolab.claims.stats import g
from zolab.claims.types import Claim, Job, Part, Result, Tolerance
from zolab.claims.zo_bench import moved, seeds_of, shown

# ------------------------------------------------------------------ FZ1: MeZO's best in 3× fewer forwards
FZ1_SWEEPS = {"p_mlp": ("claims/fz1_pmlp_mezo.yaml", "claims/fz1_pmlp_fzoo4.yaml", "claims/fz1_pmlp_fzoo8.yaml"),
              "p_hq": ("claims/fz1_phq_mezo.yaml", "claims/fz1_phq_fzoo4.yaml", "claims/fz1_phq_fzoo8.yaml")}
FZ1_RATIO = 3.0


def fz1_arm(run) -> str | None:
    rule = run.hp.get("rule")
    return "MeZO" if rule == "ZOSGD" else f"FZOO N={int(run.hp['num_queries'])}" if rule == "FZOO" else None


def read_fz1(proxy: str):
    """Forwards (steps × forwards a step: 2 for MeZO, N + 1 for FZOO) to MeZO's best seed-mean dev metric (its
    best η), MeZO's against FZOO's fastest (N, η); the two at the budget (the last logged value)."""
    tag, higher = ("val/acc", True) if proxy == "p_mlp" else ("val/loss", False)

    def read(runs) -> Result | None:
        arms = P.by_arm(runs.of(*FZ1_SWEEPS[proxy]), fz1_arm)
        fzoo = {a: grid for a, grid in arms.items() if a.startswith("FZOO")}
        if "MeZO" not in arms or not fzoo:
            return None
        lr, target = P.peak_lr(arms["MeZO"], tag, higher)
        if not math.isfinite(target):
            return Result("inconclusive", f"MeZO logged no finite {tag}")
        mezo_fe = 2 * P.steps_to(*P.step_curve(arms["MeZO"][lr], tag), target, higher)
        found = [((int(a.split("=")[1]) + 1) * P.steps_to(*P.step_curve(rs, tag), target, higher), a, f_lr)
                 for a, grid in fzoo.items() for f_lr, rs in grid.items()]
        fe, arm, f_lr = min(found)
        finals = [P.step_curve(rs, tag)[1][-1:] for grid in fzoo.values() for rs in grid.values()]
        finals = [f[0] for f in finals if f and math.isfinite(f[0])]
        fz_final = (max if higher else min)(finals) if finals else math.nan
        mezo_final = P.step_curve(arms["MeZO"][lr], tag)[1][-1]
        as_good = P.reaches(fz_final, mezo_final, higher)
        ratio = mezo_fe / fe if math.isfinite(fe) else 0.0
        verdict = "holds" if ratio >= FZ1_RATIO and as_good else "partly" if ratio > 1 else "fails"
        number = (f"MeZO's best {tag} {shown(target, higher)} (η {lr:g}) after {g(mezo_fe)} forwards; FZOO reaches "
                  f"it after {g(fe)} ({arm}, η {f_lr:g}): {ratio:.2f}× fewer; at the budget FZOO "
                  f"{shown(fz_final, higher)}, MeZO {shown(mezo_final, higher)}")
        return Result(verdict, number, f"FZOO as good at the budget: {as_good}",
                      moved=moved(arms["MeZO"][lr], tag, "best", higher, proxy, seeds_of(*arms.values())))

    return read


FZ1 = Claim(
    "FZ1", "FZOO reaches MeZO's accuracy with 3× fewer forward passes, and a better one",
    "+3% accuracy on average with 3× fewer forwards; RoBERTa-large: +5.6%, 18× fewer (SST-2 93.3 vs 90.5)",
    "at 8,000 forwards each (MeZO 4,000 steps at η ∈ 3 values; FZOO N = 4: 1,600 steps, N = 8: 888, η ∈ 5 values; "
    "3 seeds; dev metric every ~500 forwards): forwards for FZOO's fastest (N, η) seed-mean curve to reach MeZO's "
    "best seed-mean dev metric (P-mlp val/acc, P-hq val/loss) against MeZO's own; holds when MeZO needs ≥ 3× "
    "FZOO's forwards and FZOO's best (N, η) at the budget is at least MeZO's (at its η) at the budget; partly when "
    "FZOO is faster but not so (ratio in (1, 3), or ≥ 3 and worse at the budget); fails when the ratio is ≤ 1 "
    "(never reaching it counts 0)",
    (Part("p_mlp", "P-mlp, MeZO η ∈ {5e-4, 1e-3, 2e-3}, FZOO (Rademacher, form code) η ∈ {1.25e-3 … 2e-2} "
                   "(doublings), N ∈ {4, 8}, 3 seeds", tuple(Job(sweep=s) for s in FZ1_SWEEPS["p_mlp"]),
          read_fz1("p_mlp"), hours=3.5, tolerance=Tolerance("ZOSGD", "MeZO", "val/acc", 0.05, higher_is_better=True)),
     Part("p_hq", "P-hq, MeZO η ∈ {1.75e-4, 3.5e-4, 7e-4}, FZOO η ∈ {2.5e-3 … 4e-2} (doublings), N ∈ {4, 8}, "
                  "3 seeds", tuple(Job(sweep=s) for s in FZ1_SWEEPS["p_hq"]), read_fz1("p_hq"), hours=2.0,
          tolerance=Tolerance("ZOSGD", "MeZO", "val/loss", 0.1, relative=True))))

CLAIMS = (FZ1,)
