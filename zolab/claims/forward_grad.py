"""Forward-Grad's claim (Baydin et al., arXiv 2202.08587; FG1 of docs/algorithms.md §3.19): its reader and registry
row. Part (a) of the claim, the JVP's slope equal to a float64 central difference as μ → 0, is a unit test
(tests/engine/test_schemes.py); this row reads (b) and (c)."""

from __future__ import annotations

import math

from zolab.claims import proxy_runs as P
from zolab.claims.types import Claim, Job, Moved, Part, Result, Tolerance

FG1_SWEEP, FG1_BACKPROP = "claims/fg1_pmlp.yaml", "claims/fg1_backprop.yaml"
TAG, WALL = "val/loss", "diagnostics/step_cost/wall_ms"


def median(xs) -> float:
    xs = sorted(x for x in xs if math.isfinite(x))
    return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2 if xs else math.nan


def wall_ms(runs) -> float:
    """The median step wall-clock over the runs' logged steps, step 1 left out (it compiles kernels)."""
    return median([v for r in runs for s, v in zip(*r.series(WALL)) if s > 0])


def read_fg1(runs) -> Result | None:
    arms = P.by_arm(runs.of(FG1_SWEEP), lambda r: {"ZOSGD": "MeZO", "ForwardGrad": "Forward-Grad"}.get(r.hp["rule"]))
    backprop = runs.of(FG1_BACKPROP)
    if "MeZO" not in arms or "Forward-Grad" not in arms or not backprop:
        return None
    finals = {}
    for a, grid in arms.items():  # the final seed-mean val/loss at the η where it is lowest
        finals[a] = min(((P.step_curve(rs, TAG)[1] or [math.nan])[-1], lr) for lr, rs in grid.items())
    loss_ok = finals["Forward-Grad"][0] <= finals["MeZO"][0]
    fg_lr = finals["Forward-Grad"][1]
    time_ratio = wall_ms(arms["Forward-Grad"][fg_lr]) / wall_ms(backprop)
    verdict = ("holds" if time_ratio <= 1.0 else "partly") if loss_ok else "fails"
    number = (f"final val/loss at equal steps: Forward-Grad {finals['Forward-Grad'][0]:.4g} (η {fg_lr:g}) vs MeZO "
              f"{finals['MeZO'][0]:.4g} (η {finals['MeZO'][1]:g}); wall-clock per step Forward-Grad / backprop "
              f"{time_ratio:.2f}× (StepCost medians, shared machine)")
    mezo = arms["MeZO"][finals["MeZO"][1]]
    seeds = min(len(rs) for grid in arms.values() for rs in grid.values())
    moved = Moved({"P-mlp": (P.first_mean(mezo, TAG), [r.last(TAG) for r in mezo])}, seeds)
    return Result(verdict, number, f"(b) loss ≤ MeZO's: {loss_ok}; (c) ≤ 1.0× backprop: {time_ratio <= 1.0}",
                  moved=moved)


FG1 = Claim(
    "FG1", "Forward gradients: at equal steps no worse than MeZO, and no slower than backprop per step",
    "up to 2× faster than backprop (wall-clock), small nets",
    "(b) Forward-Grad's final dev loss (seed mean, best η) ≤ MeZO's at the same steps and η grid; (c) its median "
    "step wall-clock ≤ 1.0× one forward + backward (plain SGD) on the same task: holds when both, partly when (b) "
    "only, fails when (b) fails",
    (Part("p_mlp", "P-mlp (pre-trained digits MLP), 3,000 steps, η ∈ {5e-4, 1e-3, 2e-3}, 3 seeds; backprop 300 steps, "
                   "3 data orders", (Job(sweep=FG1_SWEEP), Job(sweep=FG1_BACKPROP)), read_fg1, hours=1.0,
          tolerance=Tolerance("ZOSGD", "MeZO", "val/loss", 0.1, relative=True)),))

CLAIMS = (FG1,)
