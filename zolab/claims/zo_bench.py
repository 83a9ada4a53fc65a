"""ZO-Bench's claims on ZO-Adam and ZO-SGD-Cons (Zhang et al., ICML 2024, arXiv 2402.11592; ZA1, CS1 of
docs/algorithms.md §3.11, §3.17): their readers and registry rows, and the scoring helpers FZ1 and LE1 share
(the sweeps themselves are read by ``zolab.claims.proxy_runs``).

Every rule here runs on the CPU proxies (experiments/proxies/p_hq.yaml, p_mlp.yaml) over an η grid and three
seeds; a rule's score at an η is the seed mean, and each rule is compared at its best η."""

from __future__ import annotations

import math

from zolab.claims import proxy_runs as P
from zolab.claims.stats import g, mean
from zolab.claims.types import Claim, Job, Moved, Part, Result, Tolerance


# ------------------------------------------------------------------ scoring proxy sweeps
def finite_or(v: float, worst: float) -> float:
    return v if math.isfinite(v) else worst


def score(runs, tag: str, how: str, higher: bool) -> float:
    """Seed mean of each run's ``how`` ("last": the value at the budget; "best": the best logged value; "tail":
    the mean of the last tenth of the logged values) of ``tag``; a seed with no finite value scores the worst."""
    worst = -math.inf if higher else math.inf
    vals = []
    for r in runs:
        ys = r.series(tag)[1]
        if how == "last":
            v = ys[-1] if ys else math.nan
        elif how == "best":
            v = P.best(ys, higher)
        else:
            tail = ys[-max(1, len(ys) // 10):]
            v = mean(tail) if tail else math.nan
        vals.append(finite_or(v, worst))
    return mean(vals)



def moved(runs, tag: str, how: str, higher: bool, cell: str, seeds: int) -> Moved:
    """The reference's start (seed mean of the first value) and each seed's end, for the power rule."""
    return Moved({cell: (P.first_mean(runs, tag), [score([r], tag, how, higher) for r in runs])}, seeds)


def seeds_of(*grids) -> int:
    return min((len(rs) for grid in grids for rs in grid.values()), default=0)


def shown(v: float, higher: bool) -> str:
    """An accuracy in %, a loss in 4 digits."""
    return f"{100 * v:.1f}%" if higher else g(v, 4)


# ------------------------------------------------------------------ ZA1: ZO-Adam against ZO-SGD at equal forwards
ZA1_SWEEPS = {"p_hq": ("claims/za1_phq_sgd.yaml", "claims/za1_phq_adam.yaml"),
              "p_mlp": ("claims/za1_pmlp_sgd.yaml", "claims/za1_pmlp_adam.yaml")}
ZA1_MARGIN = 0.005  # ZO-Adam's best dev accuracy must beat ZO-SGD's by half a point


def read_za1(proxy: str):
    """P-hq: val/loss at the 3,000-step budget, lower for ZO-Adam; P-mlp: best val/acc ≥ ZO-SGD's + 0.5 point.
    Both rules take 2 forwards a step, so equal steps are equal forwards."""
    tag, how, higher = ("val/loss", "last", False) if proxy == "p_hq" else ("val/acc", "best", True)

    def read(runs) -> Result | None:
        grids = P.by_arm(runs.of(*ZA1_SWEEPS[proxy]))
        if "ZOSGD" not in grids or "ZOAdam" not in grids:
            return None
        (lr_s, sgd), (lr_a, adam) = (P.best_lr_of(grids[n], lambda rs: score(rs, tag, how, higher), higher)
                                     for n in ("ZOSGD", "ZOAdam"))
        if not math.isfinite(sgd) or not math.isfinite(adam):
            return Result("inconclusive", f"a rule logged no finite {tag} at any η")
        wins = adam >= sgd + ZA1_MARGIN if higher else adam < sgd
        word = "best val/acc" if higher else "val/loss at 3,000 steps"
        number = (f"{word}: ZO-Adam {shown(adam, higher)} (η {lr_a:g}) vs ZO-SGD {shown(sgd, higher)} (η {lr_s:g})")
        ref = grids["ZOSGD"][lr_s]
        return Result("holds" if wins else "fails", number, moved=moved(ref, tag, how, higher, proxy,
                                                                         seeds_of(*grids.values())))

    return read


ZA1_LOSS_POWER = Tolerance("ZOSGD", "ZO-SGD", "val/loss", 0.1, relative=True)
ZA1_ACC_POWER = Tolerance("ZOSGD", "ZO-SGD", "val/acc", 0.05, higher_is_better=True)
ZA1 = Claim(
    "ZA1", "ZO-Adam beats well-tuned ZO-SGD at equal forwards (ZO-Bench's ranking; MEAZO's abstract says it does "
    "not)", "ZO-Bench's tables (numbers not transcribed)",
    "each rule at its best η of a 7-value grid, 3 seeds, 3,000 steps (2 forwards a step each): holds when ZO-Adam's "
    "seed-mean val/loss at the budget is lower than ZO-SGD's on P-hq and its seed-mean best val/acc is at least "
    "ZO-SGD's + 0.5 point on P-mlp; partly when only one of the two; fails when neither (MEAZO's counter-claim "
    "then holds)",
    (Part("p_hq", "P-hq, 3,000 steps, ZO-SGD η ∈ {2.2e-5 … 1.4e-3} (halvings), ZO-Adam η ∈ {1e-4 … 1e-1} "
                  "(×√10), 3 seeds", tuple(Job(sweep=s) for s in ZA1_SWEEPS["p_hq"]), read_za1("p_hq"), hours=2.0,
          tolerance=ZA1_LOSS_POWER),
     Part("p_mlp", "P-mlp, 3,000 steps, ZO-SGD η ∈ {1.25e-4 … 8e-3} (doublings), ZO-Adam η ∈ {1e-5 … 1e-2} "
                   "(×√10), 3 seeds", tuple(Job(sweep=s) for s in ZA1_SWEEPS["p_mlp"]), read_za1("p_mlp"),
          hours=3.5, tolerance=ZA1_ACC_POWER)))


# ------------------------------------------------------------------ CS1: the conservative step at equal forwards
CS1_SWEEPS = {"p_hq": ("claims/cs1_phq_sgd.yaml", "claims/cs1_phq_cons.yaml"),
              "p_mlp": ("claims/cs1_pmlp_sgd.yaml", "claims/cs1_pmlp_cons.yaml")}
CS1_FACTOR = 4.0  # "too large": 4× ZO-SGD's best η


def read_cs1(proxy: str):
    """Equal forwards (ZO-SGD 4,000 steps, ZO-SGD-Cons 1,600: 8,000 forwards each): training loss at the budget
    (P-hq: val/loss, the full objective; P-mlp: train/loss, mean of the last tenth) ≤ ZO-SGD's, each at its best
    η; robust: ZO-SGD-Cons at 4× ZO-SGD's best η ends finite and below its start."""
    tag = "val/loss" if proxy == "p_hq" else "train/loss"
    how = "last" if proxy == "p_hq" else "tail"

    def read(runs) -> Result | None:
        grids = P.by_arm(runs.of(*CS1_SWEEPS[proxy]))
        if "ZOSGD" not in grids or "ZOSGDCons" not in grids:
            return None
        (lr_s, sgd), (lr_c, cons) = (P.best_lr_of(grids[n], lambda rs: score(rs, tag, how, False), False)
                                     for n in ("ZOSGD", "ZOSGDCons"))
        if not math.isfinite(sgd):
            return Result("inconclusive", f"ZO-SGD logged no finite {tag} at any η")
        as_good = math.isfinite(cons) and cons <= sgd
        big = {lr: rs for lr, rs in grids["ZOSGDCons"].items() if math.isclose(lr, CS1_FACTOR * lr_s, rel_tol=1e-6)}
        if not big:
            return Result("inconclusive", f"no ZO-SGD-Cons run at {CS1_FACTOR:g}× ZO-SGD's best η {lr_s:g}")
        (rs,) = big.values()
        ends = [score([r], tag, how, False) for r in rs]
        robust = all(math.isfinite(e) and e < r.first(tag) for e, r in zip(ends, rs))
        verdict = "holds" if as_good and robust else "partly" if as_good or robust else "fails"
        number = (f"{tag} at 8,000 forwards: ZO-SGD-Cons {shown(cons, False)} (η {lr_c:g}) vs ZO-SGD "
                  f"{shown(sgd, False)} (η {lr_s:g}); ZO-SGD-Cons at η {CS1_FACTOR * lr_s:g}: "
                  + ", ".join(g(e, 4) for e in ends) + f" (start {g(mean([r.first(tag) for r in rs]), 4)})")
        ref = grids["ZOSGD"][lr_s]
        return Result(verdict, number, f"as good at equal forwards: {as_good}; robust at 4× η: {robust}",
                      moved=moved(ref, tag, how, False, proxy, seeds_of(*grids.values())))

    return read


CS1_POWER = Tolerance("ZOSGD", "ZO-SGD", "training loss", 0.1, relative=True)
CS1 = Claim(
    "CS1", "ZO-SGD-Cons never raises the same-batch loss, and at equal forwards it is as good as ZO-SGD and more "
           "robust to a too-large step", "ZO-Bench's table entry (numbers not transcribed); mechanism",
    "per proxy, each rule at its best η, 3 seeds, 8,000 forwards (ZO-SGD 4,000 steps, ZO-SGD-Cons 1,600 at 5 "
    "forwards): (a) ZO-SGD-Cons's seed-mean training loss at the budget ≤ ZO-SGD's; (b) at 4× ZO-SGD's best η "
    "every ZO-SGD-Cons seed ends finite and below its start; holds when both, partly when one, fails when neither; "
    "the claim combines the two proxies (the same-batch monotonicity is a unit test of the rule)",
    (Part("p_hq", "P-hq, ZO-SGD η ∈ {8.75e-5 … 1.4e-3}, ZO-SGD-Cons η ∈ {8.75e-5 … 5.6e-3} (doublings), 3 seeds, "
                  "non-finite steps skipped", tuple(Job(sweep=s) for s in CS1_SWEEPS["p_hq"]), read_cs1("p_hq"),
          hours=2.5, tolerance=CS1_POWER),
     Part("p_mlp", "P-mlp, ZO-SGD η ∈ {2.5e-4 … 4e-3}, ZO-SGD-Cons η ∈ {2.5e-4 … 1.6e-2} (doublings), 3 seeds, "
                   "non-finite steps skipped", tuple(Job(sweep=s) for s in CS1_SWEEPS["p_mlp"]), read_cs1("p_mlp"),
          hours=4.0, tolerance=CS1_POWER)),
    prediction="(b) holds everywhere by construction (a step that raises the batch loss is not taken); (a) fails on "
               "P-hq, where ZO-SGD-Cons gets 2.5× fewer steps of the same size")

CLAIMS = (ZA1, CS1)
