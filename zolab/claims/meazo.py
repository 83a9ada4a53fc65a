"""MEAZO's claim (Dbouk et al., 2026; M1 of docs/algorithms.md §5): its reader and registry row."""

from __future__ import annotations

import math

from zolab.claims import minilm, testbeds
from zolab.claims.events import label
from zolab.claims.stats import pm
from zolab.claims.types import Claim, Part, Result

M1_POWER = minilm.accuracy_tolerance("ZOAdaMM", "ZO-AdaMM (ZO-Adam)")
RULES = ("MEAZO", "ZOAdaMM", "ZOSGD")


def read_m1(runs) -> Result | None:
    rules, cost = minilm.seed_runs(runs), minilm.by_rule(runs.of(minilm.COST))
    grid = minilm.by_rule(runs.of(*minilm.GRIDS))
    if not grid or not cost or any(n not in rules for n in RULES):
        return None
    a, b = minilm.accuracy(rules, "MEAZO"), minilm.accuracy(rules, "ZOAdaMM")
    diff, tol = minilm.similar(a, b)
    memory = minilm.peak_mib(cost, "MEAZO") / minilm.peak_mib(cost, "ZOSGD")
    finals = {n: {float(r.hp["lr"]): r.last("val/loss") for r in rs} for n, rs in grid.items()}
    best = min(v for f in finals.values() for v in f.values() if math.isfinite(v))
    good_level = best + 0.25 * (minilm.START_VAL_LOSS - best)  # 75% of the grid's best improvement on the start
    good = {n: sum(v <= good_level for v in f.values()) for n, f in finals.items()}
    robust = good.get("MEAZO", 0) >= max(good.get("ZOAdaMM", 0), good.get("ZOSGD", 0))
    checks = [abs(diff) <= tol, memory <= 1.05, robust]
    verdict = "holds" if all(checks) else "fails" if not any(checks) else "partly"
    number = (f"test accuracy MEAZO {pm(a)}% vs ZO-AdaMM {pm(b)}% ({diff:+.1f} points); peak memory MEAZO / "
              f"MeZO {memory:.2f}; lrs of the grid within 75% of the best improvement: "
              + ", ".join(f"{label(n)} {good.get(n, 0)}/{len(finals.get(n, {}))}" for n in RULES))

    def plot(ax):
        for n in RULES:
            lrs = sorted(finals.get(n, {}))
            ax.plot(lrs, [finals[n][lr] for lr in lrs], marker="o", label=label(n))
        ax.axhline(good_level, color="black", lw=0.5, ls="--")
        ax.set(xscale="log", xlabel="lr", ylabel="final validation loss", title="lr grid")
        ax.legend(fontsize=8)

    return Result(verdict, number, plot=plot, moved=minilm.accuracy_moved(rules, "ZOAdaMM", "MEAZO"))


M1_RULES = ("meazo", "zo_adamm", "zo_sgd")


def read_m1_testbed(testbed: str):
    def read(runs) -> Result | None:
        table = testbeds.rows(runs, testbed, M1_RULES)
        if table is None:
            return None
        a, b = table["meazo"].test, table["zo_adamm"].test
        diff, tol = minilm.similar(a, b)
        memory = testbeds.memory(table, "meazo")
        robust = {k: table[k].robust() for k in M1_RULES}
        robust_enough = robust["meazo"][0] >= max(robust["zo_adamm"][0], robust["zo_sgd"][0])
        checks = [abs(diff) <= tol, memory <= 1.05, robust_enough]
        verdict = "holds" if all(checks) else "fails" if not any(checks) else "partly"
        number = (f"test accuracy MEAZO {pm(a)}% vs ZO-AdaMM {pm(b)}% ({diff:+.1f} points, tolerance {tol:.1f}); "
                  f"peak memory MEAZO / MeZO {memory:.2f}; grid lrs within 2 points of the rule's best validation "
                  "accuracy: " + ", ".join(f"{table[k].label} {robust[k][0]}/{robust[k][1]}" for k in M1_RULES))
        return Result(verdict, number, moved=testbeds.accuracy_moved(runs, testbed, table, "zo_adamm", "meazo"))

    return read


M1 = Claim("M1", "MEAZO matches ZO-Adam at ZO-SGD memory and is robust to the step size", "abstract only (no number)",
           "three checks: test accuracy within max(1 point, seed std) of ZO-AdaMM; peak memory ≤ 1.05× MeZO's (full "
           "fine-tuning); at least as many grid lrs as ZO-AdaMM and MeZO reach 75% of the grid's best validation-loss "
           "improvement (on the testbeds T1, T2: the probe's peak memory on the testbed's model, and at least as "
           "many of the leaderboard's grid lrs within 2 points of the rule's best final validation accuracy as "
           "ZO-AdaMM and MeZO): holds when all three pass, fails when none does, partly otherwise",
           (Part("minilm", minilm.SETTINGS, minilm.JOBS, read_m1, hours=0, tolerance=M1_POWER),
            *testbeds.parts(lambda t: Part(t, testbeds.SETTINGS[t], (testbeds.job(t, M1_RULES),), read_m1_testbed(t),
                                           tolerance=testbeds.accuracy_tolerance("zo_adamm", "ZO-AdaMM (ZO-Adam)")))))

CLAIMS = (M1,)
