"""ZO-AdaMU's claims (Jiang et al., AAAI 2024; A1, A2 of docs/algorithms.md §5): their readers and registry rows."""

from __future__ import annotations

from zolab.claims import minilm, testbeds
from zolab.claims.plots import bars
from zolab.claims.stats import mean_std, pm
from zolab.claims.types import Claim, Job, Moved, Part, Result, Tolerance, gpu

# ------------------------------------------------------------------ A1: accuracy at similar memory
A1_POWER = minilm.accuracy_tolerance("ZOSGD", "MeZO")


def read_a1(runs) -> Result | None:
    rules, cost = minilm.seed_runs(runs), minilm.by_rule(runs.of(minilm.COST))
    if "ZOAdaMU" not in rules or "ZOSGD" not in rules or not cost:
        return None
    a, b = minilm.accuracy(rules, "ZOAdaMU"), minilm.accuracy(rules, "ZOSGD")
    diff, tol = minilm.similar(a, b)
    memory = minilm.peak_mib(cost, "ZOAdaMU") / minilm.peak_mib(cost, "ZOSGD")
    verdict = "fails" if diff < -tol else "holds" if diff > tol and memory <= 1.1 else "partly"
    number = (f"test accuracy ZO-AdaMU {pm(a)}% vs MeZO {pm(b)}% ({diff:+.1f} points, tolerance {tol:.1f}); "
              f"peak memory ratio {memory:.2f}")
    return Result(verdict, number, plot=minilm.curves_plot(rules, "val/acc", ("ZOAdaMU", "ZOSGD"),
                                                           "validation accuracy"),
                  moved=minilm.accuracy_moved(rules, "ZOSGD", "ZOAdaMU"))


A1_RULES = ("zo_adamu", "zo_sgd")
A1_TESTBED_POWER = testbeds.accuracy_tolerance("zo_sgd", "MeZO")


def read_a1_testbed(testbed: str):
    def read(runs) -> Result | None:
        table = testbeds.rows(runs, testbed, A1_RULES)
        if table is None:
            return None
        a, b = table["zo_adamu"].test, table["zo_sgd"].test
        diff, tol = minilm.similar(a, b)
        memory = testbeds.memory(table, "zo_adamu")
        verdict = "fails" if diff < -tol else "holds" if diff > tol and memory <= 1.1 else "partly"
        number = (f"test accuracy ZO-AdaMU {pm(a)}% vs MeZO {pm(b)}% ({diff:+.1f} points, tolerance {tol:.1f}); "
                  f"peak memory ratio {memory:.2f} (the probe's, over two forward passes each)")
        return Result(verdict, number, moved=testbeds.accuracy_moved(runs, testbed, table, "zo_sgd", "zo_adamu"))

    return read


A1 = Claim("A1", "ZO-AdaMU beats MeZO in accuracy at similar memory",
           "SST-2 92.1 vs 91.4, COPA 89.0 vs 88.0 (OPT-13B; ZO-AdaMU Tab. 1)",
           "test accuracy, mean over seeds: holds when ZO-AdaMU is higher by more than max(1 point, seed std) at "
           "≤ 1.1× MeZO's peak memory (full fine-tuning; on the testbeds T1, T2 the probe's peak memory on the "
           "testbed's model); fails when lower by more than that; partly otherwise",
           (Part("minilm", minilm.SETTINGS, minilm.JOBS, read_a1, hours=0, tolerance=A1_POWER),
            *testbeds.parts(lambda t: Part(t, testbeds.SETTINGS[t], (testbeds.job(t, A1_RULES),), read_a1_testbed(t),
                                           tolerance=A1_TESTBED_POWER)),
            gpu(["llm/sst2_opt1.3b_mezo.yaml", "llm/sst2_opt1.3b_zo_adamu.yaml", "llm/copa_opt1.3b_mezo.yaml",
                 "llm/copa_opt1.3b_zo_adamu.yaml"], "OPT-1.3B full fine-tuning, SST-2 and COPA")))


# ------------------------------------------------------------------ A2: the annealing schedules
ADAMU = "ablations/adamu_schedules.yaml"
A2_POWER = Tolerance("all_off", "ZO-AdaMU without annealing", "final training loss", 0.10, relative=True,
                     start="its first logged training loss")


def read_a2(runs) -> Result | None:
    arms: dict[str, list] = {}
    for r in runs.of(ADAMU):
        arms.setdefault(r.path.name.split("-seed=")[0], []).append(r)
    if "hold" not in arms or "all_off" not in arms:
        return None
    finals = {arm: [r.last("train/loss") for r in rs] for arm, rs in arms.items()}
    hold, off = mean_std(finals["hold"]), mean_std(finals["all_off"])
    spread = max(max(finals["hold"]) - min(finals["hold"]), max(finals["all_off"]) - min(finals["all_off"]))
    beats = off[0] - hold[0] > spread
    singles = {a: finals[a] for a in ("alpha_off", "beta1_off", "beta2_off") if a in finals}
    each = all(mean_std(v)[0] > hold[0] for v in singles.values())
    verdict = "fails" if not beats else "holds" if each else "partly"
    number = (f"final loss annealed (default) {pm(finals['hold'])} vs no annealing {pm(finals['all_off'])}; "
              + ", ".join(f"{a.replace('_', ' ')} {pm(v)}" for a, v in singles.items())
              + f" ({len(finals['hold'])} seeds)")
    start = mean_std([r.first("train/loss") for r in arms["all_off"]])[0]
    moved = Moved({"the MLP": (start, finals["all_off"])}, min(len(finals["hold"]), len(finals["all_off"])))

    def plot(ax):
        bars(ax, {"final loss": finals}, "final training loss", log=True, title="ZO-AdaMU schedule arms")

    return Result(verdict, number, plot=plot, moved=moved)


A2 = Claim("A2", "annealing matters: ZO-AdaMU's α, β1, β2 schedules each help",
           "ablations of the schedules (ZO-AdaMU, OPT-13B)",
           "final training loss, mean over seeds: fails unless the annealed default beats no annealing by more than "
           "the seed spread; holds when also switching off any one schedule is worse; partly otherwise",
           (Part("mlp", "2,110-parameter MLP on 256 digits, full batch, 2,000 steps, T1 = 100, η = 1e-2, μ = 1e-3, "
                        "7 arms × 2 seeds", (Job(sweep=ADAMU),), read_a2, hours=0.4, tolerance=A2_POWER),))

CLAIMS = (A1, A2)
