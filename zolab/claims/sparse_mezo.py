"""Sparse-MeZO's claim (Liu et al., NeurIPS 2025, arXiv 2402.15751; SM1 of docs/algorithms.md §3.15): its reader and
registry row."""

from __future__ import annotations

import math

from zolab.claims import proxy_runs as P
from zolab.claims.stats import g
from zolab.claims.types import Claim, Job, Moved, Part, Result, Tolerance

SM1_SWEEP = "claims/sm1_pmlp.yaml"
TAG = "val/acc"


def sm1_arm(run) -> str | None:
    rule = run.hp.get("rule")
    if rule == "ZOSGD":
        return "MeZO"
    if rule == "SparseMeZO":
        name = "R-MeZO" if P.option(run, "mask_on", "abs") == "random" else "S-MeZO"
        return f"{name} s={float(P.option(run, 'sparsity', 0.8)):g}"
    return None


def read_sm1(runs) -> Result | None:
    arms = P.by_arm(runs.of(SM1_SWEEP), sm1_arm)
    if any(a not in arms for a in ("MeZO", "S-MeZO s=0.8", "R-MeZO s=0.8")):
        return None
    lr, target = P.peak_lr(arms["MeZO"], TAG, True)
    if not math.isfinite(target):
        return Result("inconclusive", "MeZO logged no finite val/acc")
    mezo_steps = P.steps_to(*P.step_curve(arms["MeZO"][lr], TAG), target, True)
    steps = {a: P.fastest(grid, TAG, target, True) for a, grid in arms.items() if a != "MeZO"}
    bests = {a: P.peak_lr(grid, TAG, True)[1] for a, grid in arms.items()}
    sparse_steps = steps["S-MeZO s=0.8"][0]
    ratio = mezo_steps / sparse_steps if math.isfinite(sparse_steps) else 0.0
    beats = bests["S-MeZO s=0.8"] > bests["R-MeZO s=0.8"]
    verdict = "holds" if ratio >= 2 and beats else "fails" if ratio <= 1 else "partly"
    number = (f"MeZO's best val/acc {100 * target:.1f}% (η {lr:g}) at step {g(mezo_steps)}; S-MeZO s=0.8 reaches it "
              f"at step {g(sparse_steps)} ({ratio:.2f}× fewer steps); best val/acc "
              + ", ".join(f"{a} {100 * v:.1f}%" for a, v in sorted(bests.items())))
    detail = "steps to MeZO's best: " + ", ".join(f"{a} {g(s)} (η {e:g})" for a, (s, e) in sorted(steps.items()))
    seeds = min(len(rs) for grid in arms.values() for rs in grid.values())
    moved = Moved({"P-mlp": (P.first_mean(arms["MeZO"][lr], TAG), P.seed_bests(arms["MeZO"][lr], TAG, True))}, seeds)
    return Result(verdict, number, detail + f"; beats R-MeZO at s=0.8: {beats}", moved=moved)


SM1 = Claim(
    "SM1", "Sparse-MeZO (s = 0.8) reaches MeZO's accuracy in far fewer steps, and beats a random mask",
    "LLaMA-7b RTE 71.7 → 80.7, ~3.5× fewer steps to 70%",
    "steps (seed means, each arm at its fastest η) to MeZO's best dev accuracy (MeZO at its best η): holds when "
    "Sparse-MeZO at s = 0.8 needs ≤ 1/2 of MeZO's steps and its best dev accuracy is above R-MeZO's (random mask, "
    "s = 0.8); fails when it is not faster than MeZO; partly otherwise",
    (Part("p_mlp", "P-mlp (pre-trained digits MLP), 4,000 steps, MeZO, Sparse-MeZO and R-MeZO at s ∈ {0.5, 0.8}, "
                   "η ∈ {5e-4, 1e-3, 2e-3, 4e-3}, 3 seeds", (Job(sweep=SM1_SWEEP),), read_sm1, hours=3.0,
          tolerance=Tolerance("ZOSGD", "MeZO", "val/acc", 0.05, higher_is_better=True)),))

CLAIMS = (SM1,)
