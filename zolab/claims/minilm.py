"""The MiniLM-L6 study on SST-2 (EXPERIMENTS.md): its sweeps, its registered start, and the runs that claims
R6, A1, B1, M1, Z1 and paper_figures/minilm_table.py read.

Every run starts from the zero-shot head, whose scores the runs do not log (they validate at steps 100 and 200):

    zolab validate --config experiments/minilm/base.yaml   # val/loss 0.5388 on the 500 dev sentences
    zolab test --config experiments/minilm/base.yaml       # test/acc 0.7122 on the 872 test sentences

so the power rule measures the reference's movement from these registered values.
"""

from __future__ import annotations

import math

from zolab.claims.events import Run, label
from zolab.claims.stats import mean_std
from zolab.claims.types import Job, Moved, Tolerance

START_VAL_LOSS, START_TEST_ACC = 0.5388, 0.7122
GRID, GRID_SGD, EDGES = "minilm/grid.yaml", "minilm/grid_sgd.yaml", "minilm/edges/grid_edges.yaml"
SEEDS, SEEDS_B, HESSIAN = "minilm/seeds.yaml", "minilm/seeds_b.yaml", "minilm/seeds_zo_sgd_hessian.yaml"
COST = "minilm/cost.yaml"
GRIDS, SEED_SWEEPS = (GRID, GRID_SGD, EDGES), (SEEDS, SEEDS_B, HESSIAN)
# The lr grid (with its one extension beyond a best lr at an end), the best lr of each rule chosen from it by
# paper_figures/minilm_table.py (committed in experiments/minilm/best/), 2 more seeds at the best (seed 0 is the
# rule's grid run: same settings; ZO-SGD's again with the Hessian probe), and the full fine-tuning cost runs.
BEST = Job(argv=("python", "paper_figures/minilm_table.py", "grid", "--runs={root}", "--write-best",
                 "{experiments}/minilm/best", "--rules-dir={experiments}/minilm/rules"),
           output="minilm/best/radazo.yaml", in_experiments=True, prerequisite=True)
JOBS = (Job(sweep=GRID, workers=2), Job(sweep=GRID_SGD, workers=2), Job(sweep=EDGES, workers=2), BEST,
        *(Job(sweep=s, workers=2) for s in SEED_SWEEPS), Job(sweep=COST))  # the cost runs time steps: alone
SETTINGS = ("MiniLM-L6 + linear head on SST-2, the encoder adapted by LoRA (the study's choice; memory and time per "
            "step from full fine-tuning runs) (MeZO's protocol: 1,000 train, 500 dev, test = the 872 validation "
            "sentences), each rule at its best lr of the grid, 3 seeds, 200 steps")
START_ACC_TEXT = f"{100 * START_TEST_ACC:.2f}%, the zero-shot head's"


def accuracy_tolerance(reference: str, name: str) -> Tolerance:
    """The accuracy claims' power rule: the reference's test accuracy must rise from the zero-shot start by more
    than 1 point (the claims' own tolerance for a difference)."""
    return Tolerance(reference, name, "test accuracy", 1.0, " points", higher_is_better=True, start=START_ACC_TEXT)


def by_rule(runs: list[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in runs:
        out.setdefault(r.hp.get("rule"), []).append(r)
    return out


def seed_runs(runs) -> dict[str, list[Run]]:
    """Each rule's seed runs: the seed sweeps', plus its grid run of the same lr, length and estimator as the
    seed they lack (experiments/minilm/seeds.yaml: seed 0 is the grid run)."""
    rules = by_rule(runs.of(*SEED_SWEEPS))
    for r in runs.of(*GRIDS):
        mine = rules.get(r.hp.get("rule"), [])
        same = mine and all(r.hp.get(k) == mine[0].hp.get(k) for k in ("max_steps", "mu", "num_queries"))
        if same and r.hp.get("seed") not in {m.hp.get("seed") for m in mine} and float(r.hp["lr"]) == float(
                mine[0].hp["lr"]):
            mine.append(r)
    return rules


def steps_to(steps, values, level: float, start: float | None = None) -> float:
    """The first step at which a curve is at or below ``level`` (inf: never). With ``start``, the curve begins
    at (0, start) and the crossing is interpolated linearly between logged points (nan: never)."""
    if start is None:
        return next((s for s, v in zip(steps, values) if v <= level), math.inf)
    xs, ys = [0.0, *map(float, steps)], [start, *map(float, values)]
    if ys[0] <= level:
        return 0.0
    for i in range(1, len(xs)):
        if ys[i] <= level:
            return xs[i - 1] + (xs[i] - xs[i - 1]) * (ys[i - 1] - level) / (ys[i - 1] - ys[i])
    return math.nan


def accuracy(rules: dict[str, list[Run]], name: str) -> list[float]:
    """Test accuracy in % per seed run."""
    return [100 * r.last("test/acc") for r in rules.get(name, [])]


def peak_mib(cost: dict[str, list[Run]], name: str) -> float:
    return max((max(r.series("diagnostics/step_cost/peak_rss_mib")[1] or [math.nan]) for r in cost.get(name, [])),
               default=math.nan)


def similar(a: list[float], b: list[float]) -> tuple[float, float]:
    """(mean difference a − b in points, the tolerance max(1 point, the larger seed std))."""
    return mean_std(a)[0] - mean_std(b)[0], max(1.0, mean_std(a)[1], mean_std(b)[1])


def accuracy_moved(rules: dict[str, list[Run]], reference: str, *compared: str) -> Moved:
    """The reference's test accuracy against the zero-shot start, and the fewest seeds of the compared rules."""
    return Moved({"SST-2": (100 * START_TEST_ACC, accuracy(rules, reference))},
                 min(len(rules.get(n, [])) for n in (reference, *compared)))


def curves_plot(rules: dict[str, list[Run]], tag: str, names, ylabel: str):
    def plot(ax):
        for name in names:
            for i, r in enumerate(rules.get(name, [])):
                steps, values = r.series(tag)
                ax.plot(steps, values, color=f"C{list(names).index(name)}", lw=1, label=label(name) if i == 0 else None)
        ax.set(xlabel="step", ylabel=ylabel)
        ax.legend(fontsize=8)

    return plot
