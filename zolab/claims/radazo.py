"""R-AdaZO's claims (Shu et al., ICML 2025; R1–R6 of docs/algorithms.md §5): their readers and registry rows.

Sweep paths are relative to the experiments folder. Comparisons name ZO-RMSProp as their reference, the rule
R-AdaZO refines and the baseline its paper measures against (MeZO, the default reference, diverges on Cubic
and Rosenbrock at these settings: docs/figures/radazo_fig1.png).
"""

from __future__ import annotations

import json
import math

from zolab.claims import minilm, testbeds
from zolab.claims.events import label
from zolab.claims.plots import bars, beta_plot
from zolab.claims.stats import mean_std, pm
from zolab.claims.types import Claim, Job, Moved, Part, Result, Tolerance, gpu

# ------------------------------------------------------------------ R1, R4: Figure 1 on the synthetic functions
FIG1, FIG1_SEEDS = "radazo/fig1.yaml", "claims/fig1_seeds.yaml"
FUNCTIONS = ("Quadratic", "Cubic", "Levy", "Rosenbrock")
DIVERGED = 1e3  # a final loss above 1e3 × the function's initial loss (or not finite) counts as diverged (inf)
FIG1_POWER = Tolerance("ZORMSProp", "ZO-RMSProp", "final training loss", 0.10, relative=True,
                       start="its first logged training loss, on every function")


def fig1_table(runs) -> tuple[dict, dict] | None:
    """({function: {rule: {seed: final train/loss}}} with diverged runs as inf, {the same: first logged loss})."""
    if not runs:
        return None
    finals: dict = {}
    firsts: dict = {}
    for r in runs:
        task, rule, seed = r.hp.get("task"), r.hp.get("rule"), int(r.hp.get("seed", 0))
        values = r.series("train/loss")[1]
        if values:
            finals.setdefault(task, {}).setdefault(rule, {})[seed] = values[-1]
            firsts.setdefault(task, {}).setdefault(rule, {})[seed] = values[0]
    for task, rules in finals.items():
        start = min((v for f in firsts[task].values() for v in f.values() if math.isfinite(v)), default=math.inf)
        for per_seed in rules.values():
            for s, v in per_seed.items():
                if not math.isfinite(v) or v > DIVERGED * start:
                    per_seed[s] = math.inf
    return finals, firsts


def fig1_moved(finals, firsts, compared) -> Moved:
    """ZO-RMSProp's start and final losses per function; the fewest seeds among the compared rules."""
    ref = FIG1_POWER.reference
    cells = {t: (mean_std(firsts[t].get(ref, {}).values())[0], list(finals[t].get(ref, {}).values())) for t in finals}
    return Moved(cells, min(len(rules.get(n, {})) for rules in finals.values() for n in compared))


def read_r1(sweep: str):
    def read(runs) -> Result | None:
        table = fig1_table(runs.of(sweep))
        if table is None:
            return None
        finals, firsts = table
        wins, ratios = [], []
        for task in [f for f in FUNCTIONS if f in finals] + sorted(set(finals) - set(FUNCTIONS)):
            rules = finals[task]
            means = {rule: mean_std(v.values())[0] for rule, v in rules.items()}
            if min(means, key=lambda k: means[k]) == "RAdaZO":
                wins.append(task)
            others = [rule for rule in rules if rule != "RAdaZO"]
            per_seed = [v / min(rules[o].get(s, math.inf) for o in others)
                        for s, v in rules.get("RAdaZO", {}).items()]
            ratios.append(f"{task} {pm(per_seed, 2)}")
        n = len(finals)
        verdict = "holds" if 2 * len(wins) > n else "partly" if 2 * len(wins) == n else "fails"
        seeds = max(len(v) for rules in finals.values() for v in rules.values())
        number = (f"R-AdaZO lowest final loss on {len(wins)}/{n} functions ({', '.join(wins) or 'none'}); "
                  f"its final loss / the best other's: {'; '.join(ratios)} ({seeds} seed{'s' * (seeds > 1)})")

        def plot(ax):
            bars(ax, {t: {r: list(v.values()) for r, v in rules.items()} for t, rules in finals.items()},
                 "final training loss", title="final loss per function (diverged runs left out)")

        compared = {r for rules in finals.values() for r in rules}
        return Result(verdict, number, plot=plot, moved=fig1_moved(finals, firsts, compared))

    return read


def read_r4_fig1(sweep: str):
    def read(runs) -> Result | None:
        table = fig1_table(runs.of(sweep))
        if table is None:
            return None
        finals, firsts = table
        cells, close, far = [], 0, 0
        for task, rules in finals.items():
            a, b = rules.get("ZOAdaMM", {}), rules.get("ZORMSProp", {})
            ratio = [a[s] / b[s] for s in a if s in b and math.isfinite(a[s]) and math.isfinite(b[s])]
            if not ratio:
                continue
            m = mean_std(ratio)[0]
            close += abs(m - 1) <= 0.1
            far += not 0.5 <= m <= 2
            cells.append(f"{task} {pm(ratio)}")
        n = len(cells)
        verdict = "holds" if n and close == n else "fails" if 2 * far > n else "partly"
        return Result(verdict, f"final loss ZO-AdaMM / ZO-RMSProp: {'; '.join(cells)}",
                      moved=fig1_moved(finals, firsts, ("ZOAdaMM", "ZORMSProp")))

    return read


R1 = Claim(
    "R1", "R-AdaZO converges faster than ZO-SGD, ZO-signSGD, ZO-AdaMM and ZO-RMSProp on most of Quadratic, Cubic, "
          "Levy and Rosenbrock", "faster on most functions (R-AdaZO Fig. 1; its numbers were lost)",
    "per function, the rule with the lowest final training loss (mean over seeds; diverged = inf): holds when "
    "R-AdaZO is lowest on most functions (≥ 3 of 4), partly on half (2), fails on fewer",
    (Part("proxy", "d = 10,000, K = 10, 20,000 iterations, η = 1e-3, μ = 0.05, sphere directions, forward "
                   "differences, one seed (docs/algorithms.md §6)", (Job(sweep=FIG1),), read_r1(FIG1), hours=0.6,
          tolerance=FIG1_POWER),
     Part("seeds", "the same at d = 1,000, K = 1, 4,000 iterations (as `make demo`), 3 direction seeds",
          (Job(sweep=FIG1_SEEDS, workers=2),), read_r1(FIG1_SEEDS), hours=0.1, tolerance=FIG1_POWER)))


# ------------------------------------------------------------------ R2, R3: Figure 2 (probes over β)
FIG2A_SEEDS, FIG2B_SEEDS = "claims/fig2a_seeds.yaml", "claims/fig2b_seeds.yaml"


def beta_table(runs, tags: tuple[str, str], index: int) -> dict[float, list[list[float]]] | None:
    """{β: [[second-half mean of tags[0] per seed], [of tags[1] per seed]]}, sorted by β."""
    if not runs:
        return None
    table: dict[float, list[list[float]]] = {}
    for r in runs:
        row = table.setdefault(float(r.hp[f"beta{index + 1}"]), [[], []])
        for i, tag in enumerate(tags):
            values = r.series(tag)[1]
            tail = values[len(values) // 2:]
            row[i].append(sum(tail) / len(tail) if tail else math.nan)
    return dict(sorted(table.items()))


def read_r2(runs) -> Result | None:
    table = beta_table(runs.of(FIG2A_SEEDS), ("diagnostics/alignment/cos_g", "diagnostics/alignment/cos_m"), 0)
    if table is None:
        return None
    betas = list(table)
    g = {b: mean_std(table[b][0]) for b in betas}
    m = {b: mean_std(table[b][1]) for b in betas}
    above = all(m[b][0] > g[b][0] for b in betas if b > 0)
    body = betas[:-1]  # up to the second-largest β1
    rising = all(m[x][0] < m[y][0] for x, y in zip(body, body[1:]))
    hi, top = betas[-1], betas[-2]
    drop = m[hi][0] < m[top][0] - max(m[hi][1], m[top][1])
    verdict = "fails" if not above else "holds" if rising and drop else "partly"
    number = (f"cos(m, ∇F) {pm(table[betas[0]][1])} (β1 = {betas[0]:g}) -> {pm(table[top][1])} (β1 = {top:g}) -> "
              f"{pm(table[hi][1])} (β1 = {hi:g}); cos(ĝ, ∇F) {pm(table[top][0])}")
    detail = (f"cos(m) > cos(ĝ) at every β1 > 0: {above}; rises up to β1 = {top:g}: {rising}; "
              f"drops at β1 = {hi:g} beyond the seed spread: {drop}")
    return Result(verdict, number, detail, beta_plot(table, ("cos(ĝ, ∇F)", "cos(m, ∇F)"), "β1",
                                                     "cosine with the true gradient"))


def read_r3(runs) -> Result | None:
    tags = ("diagnostics/second_moment/rel_error_conventional", "diagnostics/second_moment/rel_error_rule")
    table = beta_table(runs.of(FIG2B_SEEDS), tags, 1)
    if table is None:
        return None
    betas = list(table)
    conv = {b: mean_std(table[b][0])[0] for b in betas}
    rule = {b: mean_std(table[b][1])[0] for b in betas}
    lower = all(rule[b] < conv[b] for b in betas)
    falling = all(rule[y] < rule[x] for x, y in zip(betas, betas[1:]))
    verdict = "fails" if not lower else "holds" if falling else "partly"
    factor = [c / r for b in betas for c, r in zip(table[b][0], table[b][1])]
    number = (f"refined v's error {pm(table[betas[0]][1])} (β2 = {betas[0]:g}) -> {pm(table[betas[-1]][1])} "
              f"(β2 = {betas[-1]:g}); conventional / refined error {pm(factor, 2)} over all β2")
    detail = f"refined < conventional at every β2: {lower}; refined error falls as β2 grows: {falling}"
    return Result(verdict, number, detail,
                  beta_plot(table, ("conventional v (ĝ²)", "R-AdaZO's v (m²)"), "β2", "‖v − v*‖ / ‖v*‖", log=True))


R2 = Claim("R2", "cos(m, ∇F) > cos(ĝ, ∇F); it rises with β1, with a small drop at very high β1",
           "Fig. 2a (curves; numbers lost)",
           "second-half means over seeds: fails unless cos(m) > cos(ĝ) at every β1 > 0; holds when cos(m) also "
           "rises up to β1 = 0.99 and drops at 0.999 by more than the seed spread; partly otherwise",
           (Part("quadratic", "R-AdaZO on Quadratic, d = 1,000, K = 10, 1,000 steps, β1 ∈ {0, …, 0.999}, 3 seeds",
                 (Job(sweep=FIG2A_SEEDS, workers=2),), read_r2, hours=0.05),))
R3 = Claim("R3", "R-AdaZO's refined v (from m²) has a lower relative error to v* than the conventional v (from "
                 "ĝ²); the error falls as β2 grows", "Fig. 2b (curves; numbers lost)",
           "second-half means over seeds: fails unless the refined error is below the conventional one at every "
           "β2; holds when it also falls strictly with β2; partly otherwise",
           (Part("quadratic", "R-AdaZO on Quadratic, d = 1,000, K = 10, 1,000 steps, β2 ∈ {0.5, …, 0.999}, 3 seeds",
                 (Job(sweep=FIG2B_SEEDS, workers=2),), read_r3, hours=0.05),))


# ------------------------------------------------------------------ R5 (and R4): the black-box attack
ATTACK_RULES = ("ZO-RMSProp", "ZO-AdaMM", "R-AdaZO")  # the runner's names
CNN = Job(argv=("python", "-m", "zolab.tasks.mnist", "--config", "{experiments}/mnist/train_cnn.yaml",
                "--data.data_dir={data}/mnist", "--model.save_to={root}/mnist/cnn.pt",
                "--trainer.default_root_dir={root}/mnist", "--trainer.logger.init_args.save_dir={root}/mnist"),
          output="mnist/cnn.pt", prerequisite=True)
ATTACK_SETTINGS = (("victims", 10), ("seeds", 3), ("max_iters", 2000), ("lr", 0.01), ("mu", 0.005),
                   ("num_queries", 5), ("eps", 0.2))
ATTACK_POWER = Tolerance("ZO-RMSProp", "ZO-RMSProp", "success rate", 25, " points", higher_is_better=True,
                         start="0%: no victim broken")


def attack_job(rule: str) -> Job:
    out = f"attack/table1_2k_{rule}.json"
    return Job(argv=("python", "-m", "zolab.lab.attack_runner", "--checkpoint={root}/mnist/cnn.pt",
                     "--data-dir={data}/mnist", "--victims=10", "--seeds=3", "--max-iters=2000", "--lr=0.01",
                     "--num-queries=5", "--rules", rule, f"--out={{root}}/{out}"), output=out, settings=ATTACK_SETTINGS)


ATTACK_JOBS = (CNN, *(attack_job(r) for r in ATTACK_RULES))


def attack_results(root) -> dict | None:
    """{rule: {"runs": [iterations or None per (victim, seed)], "seeds": S}} from the runner's JSON files."""
    out = {}
    for rule in ATTACK_RULES:
        path = root / f"attack/table1_2k_{rule}.json"
        if path.exists():
            data = json.loads(path.read_text())
            out[rule] = {"runs": data["rules"][rule]["runs"], "seeds": data["settings"]["seeds"]}
    return out if len(out) == len(ATTACK_RULES) else None


def _paired(a: list, b: list, seeds: int) -> tuple[list[float], int]:
    """Per seed, mean(b)/mean(a) over the victims both broke; and how many runs both broke."""
    ratios, both = [], 0
    for s in range(seeds):
        pairs = [(x, y) for i, (x, y) in enumerate(zip(a, b)) if i % seeds == s and x is not None and y is not None]
        both += len(pairs)
        if pairs:
            ratios.append(sum(y for _, y in pairs) / sum(x for x, _ in pairs))
    return ratios, both


def attack_moved(res: dict) -> Moved:
    """ZO-RMSProp's success rate per seed (runs are ordered victim by victim, seed by seed)."""
    runs, seeds = res["ZO-RMSProp"]["runs"], res["ZO-RMSProp"]["seeds"]
    rates = [100 * mean_std([x is not None for i, x in enumerate(runs) if i % seeds == s])[0] for s in range(seeds)]
    return Moved({"the attack": (0.0, rates)}, seeds)


def _iters(runs: list) -> str:
    ok = [x for x in runs if x is not None]
    return f"{pm(ok)} iterations ({len(runs) - len(ok)}/{len(runs)} failed)"


def read_r5(runs) -> Result | None:
    res = attack_results(runs.root)
    if res is None:
        return None
    rad, rms, seeds = res["R-AdaZO"]["runs"], res["ZO-RMSProp"]["runs"], res["R-AdaZO"]["seeds"]
    speedup, both = _paired(rad, rms, seeds)  # ZO-RMSProp's iterations / R-AdaZO's, per seed
    fails = [sum(x is None for x in r) for r in (rad, rms)]
    s = mean_std(speedup)[0] if speedup else math.nan
    more_failures = fails[0] > fails[1] + len(rad) // 10
    verdict = "holds" if s >= 2.7 and fails[0] <= fails[1] else "fails" if not s > 1 or more_failures else "partly"
    cnn = [r.last("test/acc") for r in runs.folder("mnist/train_cnn") if r.series("test/acc")[1]]
    number = (f"speed-up over ZO-RMSProp {pm(speedup, 2)}× on the {both} runs both broke (per seed); "
              f"R-AdaZO {_iters(rad)}, ZO-RMSProp {_iters(rms)}, ZO-AdaMM {_iters(res['ZO-AdaMM']['runs'])}"
              + (f"; the CNN's test accuracy {100 * cnn[-1]:.2f}%" if cnn else ""))

    def plot(ax):
        for i, rule in enumerate(ATTACK_RULES):
            its = res[rule]["runs"]
            ok = [x for x in its if x is not None]
            ax.bar(i, mean_std(ok)[0] if ok else 0, yerr=mean_std(ok)[1] if ok else 0, capsize=4, alpha=0.6)
            ax.scatter([i + (j / max(len(its) - 1, 1) - 0.5) * 0.5 for j in range(len(its))],
                       [2000 if x is None else x for x in its], s=5, color="black")
        ax.set_xticks(range(len(ATTACK_RULES)), ATTACK_RULES)
        ax.set(ylabel="iterations to success (failures at 2,000)", title="targeted attack, 10 victims × 3 seeds")

    return Result(verdict, number, plot=plot, moved=attack_moved(res))


def read_r4_attack(runs) -> Result | None:
    res = attack_results(runs.root)
    if res is None:
        return None
    adamm, rms, seeds = res["ZO-AdaMM"]["runs"], res["ZO-RMSProp"]["runs"], res["ZO-AdaMM"]["seeds"]
    ratio, both = _paired(rms, adamm, seeds)  # ZO-AdaMM's iterations / ZO-RMSProp's
    m = mean_std(ratio)[0] if ratio else math.nan
    gap = abs(sum(x is None for x in adamm) - sum(x is None for x in rms))
    verdict = "holds" if 0.8 <= m <= 1.25 and gap <= 3 else "fails" if not 0.5 <= m <= 2 else "partly"
    return Result(verdict, f"attack iterations ZO-AdaMM / ZO-RMSProp {pm(ratio, 2)} on the {both} runs both broke; "
                           f"failures differ by {gap}", moved=attack_moved(res))


R4 = Claim(
    "R4", "ZO-AdaMM ≈ ZO-RMSProp everywhere: the first moment adds little", "same curves (Fig. 1, Tab. 1)",
    "Figure 1: holds when ZO-AdaMM's final loss is within 10% of ZO-RMSProp's on every function, fails when "
    "outside [0.5, 2]× on most; attack: holds when iterations (runs both broke) are within [0.8, 1.25]× and "
    "failures differ by ≤ 3 of 30, fails outside [0.5, 2]×; partly otherwise",
    (Part("proxy", "Figure 1 at the proxy settings, one seed", (Job(sweep=FIG1),), read_r4_fig1(FIG1),
          tolerance=FIG1_POWER),
     Part("seeds", "Figure 1 reduced, 3 seeds", (Job(sweep=FIG1_SEEDS, workers=2),), read_r4_fig1(FIG1_SEEDS),
          tolerance=FIG1_POWER),
     Part("attack", "the R5 attack runs", ATTACK_JOBS, read_r4_attack, tolerance=ATTACK_POWER)))
R5 = Claim(
    "R5", "black-box targeted attack on MNIST: R-AdaZO needs 5.4× fewer iterations than ZO-RMSProp",
    "ZO-RMSProp 15.6k ± 3.2k, ZO-AdaMM 15.5k ± 4.1k, R-AdaZO 2.9k ± 0.8k iterations (Tab. 1)",
    "speed-up = ZO-RMSProp's / R-AdaZO's mean iterations on the runs both broke, per seed: holds when ≥ 2.7 "
    "(half the paper's) and R-AdaZO fails no more often; fails when ≤ 1 or R-AdaZO fails on 10% more runs; "
    "partly otherwise",
    (Part("attack", "the project's CNN (experiments/mnist/train_cnn.yaml), 10 victims × 3 seeds, ≤ 2,000 iterations, "
                    "η = 0.01, μ = 0.005, K = 5, sphere, forward, β = (0.9, 0.99), ε = 0.2", ATTACK_JOBS, read_r5,
          hours=1.3, tolerance=ATTACK_POWER),))


# ------------------------------------------------------------------ R6: steps to a common SST-2 loss
R6_POWER = Tolerance("ZORMSProp", "ZO-RMSProp", "validation loss", 0.01,
                     start=f"{minilm.START_VAL_LOSS}, the zero-shot head's")


def read_r6(runs) -> Result | None:
    rules = minilm.seed_runs(runs)
    names = ("RAdaZO", "ZORMSProp", "ZOAdaMM")
    if any(n not in rules for n in names):
        return None
    tag = "val/loss"
    level = max(min(r.series(tag)[1] or [math.inf]) for n in names for r in rules[n])  # every run reaches it
    steps = {n: {int(r.hp.get("seed", 0)): minilm.steps_to(*r.series(tag), level) for r in rules[n]} for n in names}
    cells, speedups = [], []
    for other in names[1:]:
        ratio = [steps[other][s] / steps["RAdaZO"][s] for s in steps["RAdaZO"] if s in steps[other]]
        speedups.append(mean_std(ratio)[0])
        cells.append(f"{pm(ratio, 2)}× sooner than {label(other)}")
    verdict = "holds" if min(speedups) >= 2 else "fails" if max(speedups) <= 1 else "partly"
    number = (f"R-AdaZO reaches validation loss {level:.4f} {', '.join(cells)} "
              f"(steps {', '.join(f'{label(n)} {pm(steps[n].values())}' for n in names)})")
    moved = Moved({"SST-2": (minilm.START_VAL_LOSS, [r.last(tag) for r in rules["ZORMSProp"]])},
                  min(len(rules[n]) for n in names))
    return Result(verdict, number, plot=minilm.curves_plot(rules, tag, names, "validation loss (500 sentences)"),
                  moved=moved)


R6_RULES = ("radazo", "zo_rmsprop", "zo_adamm")
R6_TESTBED_POWER = Tolerance("ZORMSProp", "ZO-RMSProp", "validation loss", 0.05, relative=True,
                             start="the untrained models', mean over the 5 seeds")


def read_r6_testbed(testbed: str):
    def read(runs) -> Result | None:
        table = testbeds.rows(runs, testbed, R6_RULES)
        if table is None:
            return None
        start = testbeds.start(runs, testbed, "val/loss")
        curves = {k: table[k].curves for k in R6_RULES}
        level = max(min(c[2] for c in curve) for k in R6_RULES for curve in curves[k])  # every seed run reaches it
        reach = {k: [minilm.steps_to([c[0] for c in curve], [c[2] for c in curve], level, start) for curve in curves[k]]
                 for k in R6_RULES}  # forwards, per seed (the seeds are the same for every rule)
        cells, speedups = [], []
        for other in R6_RULES[1:]:
            ratio = [b / a for a, b in zip(reach["radazo"], reach[other])]
            speedups.append(mean_std(ratio)[0])
            cells.append(f"{pm(ratio, 2)}× sooner than {table[other].label}")
        verdict = "holds" if min(speedups) >= 2 else "fails" if max(speedups) <= 1 else "partly"
        number = (f"R-AdaZO reaches validation loss {level:.4f} {', '.join(cells)} (forwards "
                  + ", ".join(f"{table[k].label} {pm(reach[k])}" for k in R6_RULES) + ")")
        moved = Moved({testbed.upper(): (start, [c[-1][2] for c in curves["zo_rmsprop"]])},
                      min(len(curves[k]) for k in R6_RULES))
        return Result(verdict, number, moved=moved)

    return read


R6 = Claim("R6", "R-AdaZO reaches the same SST-2 loss sooner than ZO-RMSProp and ZO-AdaMM",
           "4.29× (OPT-1.3B), 3.75× (OPT-13B) sooner (Fig. 3)",
           "steps to the lowest validation loss every run reaches, R-AdaZO vs each baseline (per seed): holds when "
           "both speed-ups are ≥ 2, fails when both are ≤ 1, partly otherwise; on the testbeds (T1, T2) the same "
           "rule in forwards, the level the highest of the seed runs' lowest validation losses",
           (Part("minilm", minilm.SETTINGS, minilm.JOBS, read_r6, hours=2.5, tolerance=R6_POWER),
            *testbeds.parts(lambda t: Part(t, testbeds.SETTINGS[t], (testbeds.job(t, R6_RULES),), read_r6_testbed(t),
                                           tolerance=R6_TESTBED_POWER)),
            gpu(["llm/sst2_opt1.3b_radazo.yaml", "llm/sst2_opt1.3b_zo_rmsprop.yaml", "llm/sst2_opt1.3b_zo_adamm.yaml"],
                "OPT-1.3B full fine-tuning, 20,000 steps, fp16")))

CLAIMS = (R1, R2, R3, R4, R5, R6)
