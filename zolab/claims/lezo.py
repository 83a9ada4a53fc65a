"""LeZO's claim (Wang et al., arXiv 2410.09823; LE1 of docs/algorithms.md §3.20): its reader and registry row.

Wall-clock comes from the StepCost probe (``diagnostics/step_cost/wall_ms``, every 10th step): a step's median
time, so validation and start-up are left out. The runs share a machine: its load moves both rules alike only
when their sweeps run in turn on an otherwise quiet machine."""

from __future__ import annotations

import math
import statistics

from zolab.claims import proxy_runs as P
from zolab.claims.stats import g
from zolab.claims.types import Claim, Job, Part, Result, Tolerance
from zolab.claims.zo_bench import moved, seeds_of, shown

LE1_SWEEPS = {"p_mlp": ("claims/le1_pmlp_mezo.yaml", "claims/le1_pmlp_lezo.yaml"),
              "p_lr_wide": ("claims/le1_plr_mezo.yaml", "claims/le1_plr_lezo.yaml")}
WALL = "diagnostics/step_cost/wall_ms"


def le1_arm(run) -> str | None:
    rule = run.hp.get("rule")
    return "MeZO" if rule == "ZOSGD" else f"LeZO ρ={float(P.option(run, 'rho', 0.75)):g}" if rule == "LeZO" else None


def step_ms(runs) -> float:
    """The median step time (ms) over every measured step of these runs (nan: none measured)."""
    times = [t for r in runs for t in r.series(WALL)[1] if math.isfinite(t)]
    return statistics.median(times) if times else math.nan


def read_le1(proxy: str):
    """Time to MeZO's best seed-mean dev metric (steps to it × the median step time), MeZO's at its best η against
    LeZO's fastest (ρ, η); and the per-step time ratio at that arm."""
    tag, higher = ("val/acc", True) if proxy == "p_mlp" else ("val/loss", False)

    def read(runs) -> Result | None:
        arms = P.by_arm(runs.of(*LE1_SWEEPS[proxy]), le1_arm)
        lezo = {a: grid for a, grid in arms.items() if a.startswith("LeZO")}
        if "MeZO" not in arms or not lezo:
            return None
        lr, target = P.peak_lr(arms["MeZO"], tag, higher)
        mezo_ms = step_ms(arms["MeZO"][lr])
        if not (math.isfinite(target) and math.isfinite(mezo_ms)):
            return Result("inconclusive", f"MeZO logged no finite {tag} or no step time ({WALL})")
        mezo_t = P.steps_to(*P.step_curve(arms["MeZO"][lr], tag), target, higher) * mezo_ms
        found = [(P.steps_to(*P.step_curve(rs, tag), target, higher) * step_ms(rs), step_ms(rs), a, l_lr)
                 for a, grid in lezo.items() for l_lr, rs in grid.items()]
        t, ms, arm, l_lr = min(found, key=lambda x: (x[0] if math.isfinite(x[0]) else math.inf, x[1]))
        ratio = mezo_t / t if math.isfinite(t) and t > 0 else 0.0
        per_step = ms / mezo_ms
        verdict = "holds" if ratio >= 3 else "partly" if ratio > 1 or per_step <= 0.5 else "fails"
        number = (f"MeZO's best {tag} {shown(target, higher)} (η {lr:g}) after {g(mezo_t / 1e3)} s; LeZO "
                  f"after {g(t / 1e3)} s ({arm}, η {l_lr:g}): {ratio:.2f}× faster; step time LeZO / MeZO "
                  f"{per_step:.2f}")
        return Result(verdict, number, moved=moved(arms["MeZO"][lr], tag, "best", higher, proxy,
                                                   seeds_of(*arms.values())))

    return read


LE1 = Claim(
    "LE1", "LeZO is over 3× faster than MeZO to the same accuracy", "> 3× speed-up over MeZO (SST-2, BoolQ, COPA; "
    "OPT) without accuracy loss; per-step time or time-to-accuracy not said",
    "4,000 steps, 3 seeds, η grid per rule, LeZO at ρ ∈ {0.5, 0.75} (P-mlp) or 0.75 (wide P-lr, 2 blocks); time "
    "to MeZO's best seed-mean dev metric (P-mlp val/acc, wide P-lr val/loss) = steps to it × the median step "
    "time: holds when MeZO's time is ≥ 3× LeZO's fastest (ρ, η); partly when LeZO is faster to it but less than "
    "3×, or its step takes ≤ ½ of MeZO's; fails otherwise",
    (Part("p_mlp", "P-mlp, MeZO η ∈ {5e-4, 1e-3, 2e-3}, LeZO η ∈ {5e-4 … 4e-3} (doublings) × ρ ∈ {0.5, 0.75}, "
                   "3 seeds, step time every 10 steps", tuple(Job(sweep=s) for s in LE1_SWEEPS["p_mlp"]),
          read_le1("p_mlp"), hours=4.0, tolerance=Tolerance("ZOSGD", "MeZO", "val/acc", 0.05, higher_is_better=True)),
     Part("p_lr_wide", "wide P-lr (1024² matrices, 2.1M numbers), MeZO and LeZO η ∈ {2.5e-6 … 2e-5} (doublings), "
                       "3 seeds", tuple(Job(sweep=s) for s in LE1_SWEEPS["p_lr_wide"]), read_le1("p_lr_wide"),
          hours=6.0, tolerance=Tolerance("ZOSGD", "MeZO", "val/loss", 0.1, relative=True))))

CLAIMS = (LE1,)
