"""``zolab claims``: the twelve claims of docs/algorithms.md §5, read from the runs on disk, with their verdicts.

    zolab claims                      # the scoreboard from the runs under runs/ (every row "not run" without runs)
    zolab claims R1 Z1 --root /data/runs
    zolab claims --run [IDS]          # run the missing CPU-feasible measurements (resumable), then the scoreboard
    zolab claims --run Z1.quadratics --dry-run      # what would run
    zolab claims --write docs/claims.md             # the scoreboard as Markdown, figures in docs/figures/claims/

The registry (``CLAIMS``) holds, for each claim, its statement and the paper's number, the parts that measure
it (each: the sweeps or commands that make its runs, CPU-feasible or GPU-only, its settings), how each number
is read from the event files (``read_*``), and the verdict rule with its thresholds, written before any run
(the git history of this file is the evidence). A part's reader returns ``None`` when its runs are not on
disk. A claim's verdict combines its measured parts: all hold -> holds, all fail -> fails, otherwise partly;
no part measured -> not run. Parts not measured are named beside the verdict.
Runs are found by their ``hparams.yaml`` (rule, lr, seed, task arguments), under ROOT/<sweep name>/.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
VERDICTS = ("holds", "partly", "fails", "not run")
TIMES_FILE = "claims_jobs.yaml"  # seconds each job took, under the runs root


# ---------------------------------------------------------------------------------------------- reading runs
class Run:
    """One run directory: its ``hparams.yaml`` and its scalars (read once, all tags)."""

    def __init__(self, path: Path):
        self.path = path
        self.hp = yaml.safe_load((path / "hparams.yaml").read_text()) or {}

    @cached_property
    def scalars(self) -> dict[str, tuple[list[int], list[float]]]:
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

        points: dict[str, dict[int, float]] = {}
        for f in sorted(self.path.glob("events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime, p.name)):
            for event in EventFileLoader(str(f)).Load():
                for v in event.summary.value:
                    if v.metadata.plugin_data.plugin_name == "scalars" and v.tensor.float_val:
                        points.setdefault(v.tag, {})[event.step] = float(v.tensor.float_val[0])
        return {tag: (sorted(p), [p[s] for s in sorted(p)]) for tag, p in points.items()}

    def series(self, tag: str) -> tuple[list[int], list[float]]:
        """(steps, values) of a tag, ([], []) when not logged."""
        return self.scalars.get(tag, ([], []))

    def last(self, tag: str) -> float:
        values = self.series(tag)[1]
        return values[-1] if values else math.nan


def runs_of(root: Path, sweep: str) -> list[Run]:
    """Every run under ROOT/<sweep> that has an ``hparams.yaml`` and an event file, sorted by path."""
    folder = Path(root) / sweep
    if not folder.is_dir():
        return []
    return [Run(p.parent) for p in sorted(folder.rglob("hparams.yaml")) if any(p.parent.glob("events.out.tfevents.*"))]


# ---------------------------------------------------------------------------------------------- small statistics
def mean_std(xs) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value; nan for none)."""
    xs = [float(x) for x in xs]
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0)


def pm(xs, digits: int = 3) -> str:
    """'mean ± std' of several values (the spread over seeds), the value alone for one."""
    xs = list(xs)
    m, s = mean_std(xs)
    return _g(m, digits) if len(xs) < 2 else f"{_g(m, digits)} ± {_g(s, 2)}"


def _g(x: float, digits: int = 3) -> str:
    """``digits`` significant digits, whole numbers without an exponent below 10⁷."""
    if x != x or abs(x) == math.inf:
        return "nan" if x != x else ("inf" if x > 0 else "-inf")
    return f"{x:.0f}" if 10**digits <= abs(x) < 1e7 else f"{x:.{digits}g}"


def spearman(x, y) -> float:
    """Spearman's rank correlation (average ranks for ties); nan for fewer than 3 points."""
    import numpy as np

    if len(x) < 3:
        return math.nan

    def ranks(v):
        v = np.asarray(v, dtype=float)
        order = v.argsort(kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):  # ties: their mean rank
            r[v == value] = r[v == value].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    return float(np.corrcoef(rx, ry)[0, 1])


def combine(verdicts: list[str]) -> str:
    """A claim's verdict from its measured parts' verdicts."""
    if not verdicts:
        return "not run"
    if all(v == "holds" for v in verdicts):
        return "holds"
    if all(v == "fails" for v in verdicts):
        return "fails"
    return "partly"


def two_rule(a: bool, b: bool) -> str:
    """holds when both sub-rules hold, fails when neither does, partly otherwise."""
    return "holds" if a and b else "fails" if not (a or b) else "partly"


# ---------------------------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Job:
    """What makes a part's runs: a sweep file (run as ``zolab sweep FILE --root ROOT --resume``) or a command
    (``argv`` with ``{root}``, ``{data}`` placeholders) that is done when ``output`` (under ROOT) exists."""

    sweep: str = ""  # path relative to the repository
    argv: tuple[str, ...] = ()
    output: str = ""
    in_repo: bool = False  # output is relative to the repository, not to ROOT

    @property
    def key(self) -> str:
        return self.sweep or self.output

    def command(self, root: str, data: str) -> list[str]:
        if self.sweep:
            return ["zolab", "sweep", self.sweep, f"--root={root}", "--resume"]
        return [a.format(root=root, data=data) for a in self.argv]

    def done(self, root: Path) -> bool:
        if not self.sweep:
            return ((REPO if self.in_repo else root) / self.output).exists()
        from zolab.lab import sweep

        try:
            _, runs = sweep.load(REPO / self.sweep, root=str(root))
        except ValueError:  # a file it needs is made by an earlier job (the best lr of a grid)
            return False
        return all(_status(r.run_dir) == "done" for r in runs)


def finished(root: Path, part: Part) -> bool:
    """No run of the part's sweeps is running, failed or interrupted (``sweep_run.yaml``; a run without one,
    made by ``zolab fit``, counts as done): a reading is never taken from a sweep still under way."""
    for name in {sweep_name(job.sweep) for job in part.jobs if job.sweep}:
        folder = Path(root) / name
        if folder.is_dir() and any(_status(p.parent) not in (None, "done") for p in folder.glob("*/sweep_run.yaml")):
            return False
    return True


def _status(run_dir: Path) -> str | None:
    path = run_dir / "sweep_run.yaml"
    return (yaml.safe_load(path.read_text()) or {}).get("status") if path.exists() else None


@dataclass
class Result:
    """A part's reading: its verdict, zolab's number (with its spread), a line of detail, and a figure."""

    verdict: str
    number: str
    detail: str = ""
    plot: Callable | None = None  # plot(ax): draws the part's figure on a matplotlib Axes


@dataclass(frozen=True)
class Part:
    name: str
    settings: str
    jobs: tuple[Job, ...]
    read: Callable[[Path], Result | None] | None  # None: not readable here (GPU-only)
    cpu: bool = True
    hours: float = 0.0  # planned CPU-hours on the 2-core machine


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    paper: str
    rule: str  # the verdict rule, thresholds included (written before the runs)
    parts: tuple[Part, ...]
    prediction: str = ""  # the prediction written before the runs (Z1, B2)
    figure_note: str = ""


def sweep_job(path: str) -> Job:
    return Job(sweep=path)


CONTRACT = {"grid": "minilm_grid", "grid_sgd": "minilm_grid", "seeds": "minilm_seeds", "seeds_b": "minilm_seeds",
            "seeds_zo_sgd_hessian": "minilm_seeds", "cost": "minilm_cost"}  # experiments/minilm/<file>.yaml


def sweep_name(path: str) -> str:
    """The name a sweep file gives its runs (its ``name:``, else its stem; the MiniLM study's names are fixed
    by contract, so they are known before its files are)."""
    file = REPO / path
    data = yaml.safe_load(file.read_text()) if file.exists() else {}
    contract = CONTRACT.get(file.stem) if path.startswith("experiments/minilm/") else None
    return str((data or {}).get("name") or contract or file.stem)


# ------------------------------------------------------------------ R1, R4: R-AdaZO Figure 1
FIG1 = "experiments/radazo/fig1.yaml"
FIG1_SEEDS = "experiments/claims/fig1_seeds.yaml"
LABELS = {"ZOSGD": "ZO-SGD", "ZOSignSGD": "ZO-signSGD", "ZOAdaMM": "ZO-AdaMM", "ZORMSProp": "ZO-RMSProp",
          "RAdaZO": "R-AdaZO", "ZOAdaMU": "ZO-AdaMU", "MEAZO": "MEAZO", "MeZOBCD": "MeZO-BCD"}
FUNCTIONS = ("Quadratic", "Cubic", "Levy", "Rosenbrock")
DIVERGED = 1e3  # a final loss above 1e3 × the function's initial loss (or not finite) counts as diverged (inf)


def fig1_finals(root: Path, sweep: str) -> dict[str, dict[str, dict[int, float]]] | None:
    """{function: {rule: {seed: final train/loss}}}, diverged runs as inf; None without runs."""
    runs = runs_of(root, sweep)
    if not runs:
        return None
    out: dict = {}
    first: dict[str, float] = {}
    for r in runs:
        task = r.hp.get("task")
        values = r.series("train/loss")[1]
        if not values:
            continue
        out.setdefault(task, {}).setdefault(r.hp.get("rule"), {})[int(r.hp.get("seed", 0))] = values[-1]
        if math.isfinite(values[0]):
            first[task] = min(first.get(task, math.inf), values[0])
    for task, rules in out.items():
        for finals in rules.values():
            for s, v in finals.items():
                if not math.isfinite(v) or v > DIVERGED * first.get(task, math.inf):
                    finals[s] = math.inf
    return out


def _bars(ax, groups: dict[str, dict[str, list[float]]], ylabel: str, log: bool = True, title: str = ""):
    """Grouped bars: one group per key, one bar per series (mean, error bar = std over seeds)."""
    import numpy as np

    series = list(dict.fromkeys(k for g in groups.values() for k in g))
    width = 0.8 / max(1, len(series))
    for i, name in enumerate(series):
        xs, ms, ss = [], [], []
        for j, g in enumerate(groups.values()):
            vals = [v for v in g.get(name, []) if math.isfinite(v)]
            if vals:
                m, s = mean_std(vals)
                xs.append(j + (i - (len(series) - 1) / 2) * width)
                ms.append(m)
                ss.append(s)
        ax.bar(xs, ms, width, yerr=ss, capsize=2, label=LABELS.get(name, name))
    ax.set_xticks(np.arange(len(groups)), list(groups))
    if log:
        ax.set_yscale("log")
    ax.set(ylabel=ylabel, title=title)
    ax.legend(fontsize=7)


def read_r1(sweep: str) -> Callable[[Path], Result | None]:
    def read(root: Path) -> Result | None:
        finals = fig1_finals(root, sweep_name(sweep))
        if finals is None:
            return None
        wins, ratios = [], []
        for task in [f for f in FUNCTIONS if f in finals] + sorted(set(finals) - set(FUNCTIONS)):
            rules = finals[task]
            means = {rule: mean_std(v.values())[0] for rule, v in rules.items()}
            best = min(means, key=lambda k: means[k])
            if best == "RAdaZO":
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
            _bars(ax, {t: {r: list(v.values()) for r, v in rules.items()} for t, rules in finals.items()},
                  "final training loss", title="final loss per function (diverged runs left out)")

        return Result(verdict, number, plot=plot)

    return read


def read_r4_fig1(sweep: str) -> Callable[[Path], Result | None]:
    def read(root: Path) -> Result | None:
        finals = fig1_finals(root, sweep_name(sweep))
        if finals is None:
            return None
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
        return Result(verdict, f"final loss ZO-AdaMM / ZO-RMSProp: {'; '.join(cells)}")

    return read


# ------------------------------------------------------------------ R2, R3: R-AdaZO Figure 2
FIG2A_SEEDS = "experiments/claims/fig2a_seeds.yaml"
FIG2B_SEEDS = "experiments/claims/fig2b_seeds.yaml"


def second_half(run: Run, tag: str) -> float:
    values = run.series(tag)[1]
    tail = values[len(values) // 2:]
    return sum(tail) / len(tail) if tail else math.nan


def beta_table(root: Path, sweep: str, tags: tuple[str, str], index: int) -> dict[float, list[list[float]]] | None:
    """{β: [[second-half mean of tags[0] per seed], [of tags[1] per seed]]}, sorted by β."""
    runs = runs_of(root, sweep)
    if not runs:
        return None
    table: dict[float, list[list[float]]] = {}
    for r in runs:
        beta = float(r.hp[f"beta{index + 1}"])
        row = table.setdefault(beta, [[], []])
        for i, tag in enumerate(tags):
            row[i].append(second_half(r, tag))
    return dict(sorted(table.items()))


def _beta_plot(table, labels, xlabel, ylabel, log=False):
    def plot(ax):
        betas = list(table)
        for i, label in enumerate(labels):
            stats = [mean_std(table[b][i]) for b in betas]
            ax.errorbar(range(len(betas)), [m for m, _ in stats], yerr=[s for _, s in stats], marker="o",
                        capsize=3, label=label)
        ax.set_xticks(range(len(betas)), [f"{b:g}" for b in betas])
        ax.set(xlabel=xlabel, ylabel=ylabel, title="second-half means ± std over seeds")
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=8)

    return plot


def read_r2(root: Path) -> Result | None:
    table = beta_table(root, sweep_name(FIG2A_SEEDS), ("diagnostics/alignment/cos_g", "diagnostics/alignment/cos_m"), 0)
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
    return Result(verdict, number, detail, _beta_plot(table, ("cos(ĝ, ∇F)", "cos(m, ∇F)"), "β1",
                                                      "cosine with the true gradient"))


def read_r3(root: Path) -> Result | None:
    tags = ("diagnostics/second_moment/rel_error_conventional", "diagnostics/second_moment/rel_error_rule")
    table = beta_table(root, sweep_name(FIG2B_SEEDS), tags, 1)
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
                  _beta_plot(table, ("conventional v (ĝ²)", "R-AdaZO's v (m²)"), "β2", "‖v − v*‖ / ‖v*‖", log=True))


# ------------------------------------------------------------------ R5 (and R4): the black-box attack
ATTACK_RULES = ("ZO-RMSProp", "ZO-AdaMM", "R-AdaZO")
CNN = Job(argv=("python", "-m", "zolab.tasks.mnist", "--config", "experiments/mnist/train_cnn.yaml",
                "--data.data_dir={data}/mnist", "--model.save_to={root}/mnist/cnn.pt",
                "--trainer.default_root_dir={root}/mnist", "--trainer.logger.init_args.save_dir={root}/mnist"),
          output="mnist/cnn.pt")


def attack_job(rule: str) -> Job:
    out = f"attack/table1_2k_{rule}.json"
    return Job(argv=("python", "-m", "zolab.lab.attack_runner", "--checkpoint={root}/mnist/cnn.pt",
                     "--data-dir={data}/mnist", "--victims=10", "--seeds=3", "--max-iters=2000", "--lr=0.01",
                     "--num-queries=5", "--rules", rule, f"--out={{root}}/{out}"), output=out)


ATTACK_JOBS = (CNN, *(attack_job(r) for r in ATTACK_RULES))


def attack_results(root: Path) -> dict | None:
    """{rule: {"runs": [iterations or None per (victim, seed)], "seeds": S}} from the runner's JSON files."""
    out = {}
    for rule in ATTACK_RULES:
        path = Path(root) / f"attack/table1_2k_{rule}.json"
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


def _iters(runs: list) -> str:
    ok = [x for x in runs if x is not None]
    return f"{pm(ok)} iterations ({len(runs) - len(ok)}/{len(runs)} failed)"


def read_r5(root: Path) -> Result | None:
    res = attack_results(root)
    if res is None:
        return None
    rad, rms, seeds = res["R-AdaZO"]["runs"], res["ZO-RMSProp"]["runs"], res["R-AdaZO"]["seeds"]
    speedup, both = _paired(rad, rms, seeds)  # ZO-RMSProp's iterations / R-AdaZO's, per seed
    fails = [sum(x is None for x in runs) for runs in (rad, rms)]
    s = mean_std(speedup)[0] if speedup else math.nan
    more_failures = fails[0] > fails[1] + len(rad) // 10
    verdict = "holds" if s >= 2.7 and fails[0] <= fails[1] else "fails" if not s > 1 or more_failures else "partly"
    cnn = [r.last("test/acc") for r in runs_of(root, "mnist/train_cnn") if r.series("test/acc")[1]]
    number = (f"speed-up over ZO-RMSProp {pm(speedup, 2)}× on the {both} runs both broke (per seed); "
              f"R-AdaZO {_iters(rad)}, ZO-RMSProp {_iters(rms)}, ZO-AdaMM {_iters(res['ZO-AdaMM']['runs'])}"
              + (f"; the CNN's test accuracy {100 * cnn[-1]:.2f}%" if cnn else ""))

    def plot(ax):
        for i, rule in enumerate(ATTACK_RULES):
            runs = res[rule]["runs"]
            ok = [x for x in runs if x is not None]
            ax.bar(i, mean_std(ok)[0] if ok else 0, yerr=mean_std(ok)[1] if ok else 0, capsize=4, alpha=0.6)
            ax.scatter([i + (j / max(len(runs) - 1, 1) - 0.5) * 0.5 for j in range(len(runs))],
                       [2000 if x is None else x for x in runs], s=5, color="black")
        ax.set_xticks(range(len(ATTACK_RULES)), ATTACK_RULES)
        ax.set(ylabel="iterations to success (failures at 2,000)", title="targeted attack, 10 victims × 3 seeds")

    return Result(verdict, number, plot=plot)


def read_r4_attack(root: Path) -> Result | None:
    res = attack_results(root)
    if res is None:
        return None
    adamm, rms, seeds = res["ZO-AdaMM"]["runs"], res["ZO-RMSProp"]["runs"], res["ZO-AdaMM"]["seeds"]
    ratio, both = _paired(rms, adamm, seeds)  # ZO-AdaMM's iterations / ZO-RMSProp's
    m = mean_std(ratio)[0] if ratio else math.nan
    gap = abs(sum(x is None for x in adamm) - sum(x is None for x in rms))
    verdict = ("holds" if 0.8 <= m <= 1.25 and gap <= 3 else "fails" if not 0.5 <= m <= 2 else "partly")
    return Result(verdict, f"attack iterations ZO-AdaMM / ZO-RMSProp {pm(ratio, 2)} on the {both} runs both broke; "
                           f"failures differ by {gap}")


# ------------------------------------------------------------------ A2: ZO-AdaMU's schedules
ADAMU = "experiments/ablations/adamu_schedules.yaml"


def read_a2(root: Path) -> Result | None:
    runs = runs_of(root, sweep_name(ADAMU))
    if not runs:
        return None
    arms: dict[str, list[float]] = {}
    for r in runs:
        arms.setdefault(r.path.name.split("-seed=")[0], []).append(r.last("train/loss"))
    if "hold" not in arms or "all_off" not in arms:
        return None
    hold, off = mean_std(arms["hold"]), mean_std(arms["all_off"])
    spread = max(max(arms["hold"]) - min(arms["hold"]), max(arms["all_off"]) - min(arms["all_off"]))
    beats = off[0] - hold[0] > spread
    singles = {a: arms[a] for a in ("alpha_off", "beta1_off", "beta2_off") if a in arms}
    each = all(mean_std(v)[0] > hold[0] for v in singles.values())
    verdict = "fails" if not beats else "holds" if each else "partly"
    number = (f"final loss annealed (default) {pm(arms['hold'])} vs no annealing {pm(arms['all_off'])}; "
              + ", ".join(f"{a.replace('_', ' ')} {pm(v)}" for a, v in singles.items())
              + f" ({len(arms['hold'])} seeds)")

    def plot(ax):
        _bars(ax, {"final loss": arms}, "final training loss", log=True, title="ZO-AdaMU schedule arms")

    return Result(verdict, number, plot=plot)


# ------------------------------------------------------------------ the MiniLM study (R6, A1, B1, M1, Z1)
# The study's sweeps (its sweep names are the contract): the lr grid, the best lr of each rule written by its
# table script, 3 seeds at the best (seed 0 is the rule's grid run: same settings), and the full fine-tuning
# cost runs (time per step, memory).
GRID, SEEDS, COST = "experiments/minilm/grid.yaml", "experiments/minilm/seeds.yaml", "experiments/minilm/cost.yaml"
BEST = Job(argv=("python", "paper_figures/minilm_table.py", "grid", "--write-best", "experiments/minilm/best"),
           output="experiments/minilm/best/radazo.yaml", in_repo=True)
MINILM_JOBS = (sweep_job(GRID), sweep_job("experiments/minilm/grid_sgd.yaml"), BEST, sweep_job(SEEDS),
               sweep_job("experiments/minilm/seeds_b.yaml"),
               sweep_job("experiments/minilm/seeds_zo_sgd_hessian.yaml"), sweep_job(COST))
MINILM_SETTINGS = ("MiniLM-L6 + linear head on SST-2, the encoder adapted by LoRA (the study's choice; memory and "
                   "time per step from full fine-tuning runs) (MeZO's protocol: 1,000 train, 500 dev, "
                   "test = the 872 validation sentences), each rule at its best lr of the grid, 3 seeds, 200 steps")


def by_rule(root: Path, sweep: str) -> dict[str, list[Run]] | None:
    runs = runs_of(root, sweep)
    if not runs:
        return None
    out: dict[str, list[Run]] = {}
    for r in runs:
        out.setdefault(r.hp.get("rule"), []).append(r)
    return out


def seed_runs(root: Path) -> dict[str, list[Run]] | None:
    """Each rule's seed runs: the seeds sweep's, plus its grid run (same lr and length) as the seed the seeds
    sweep lacks (experiments/minilm/seeds.yaml: seed 0 is the grid run)."""
    rules = by_rule(root, sweep_name(SEEDS))
    if rules is None:
        return None
    for r in runs_of(root, sweep_name(GRID)):
        mine = rules.get(r.hp.get("rule"), [])
        same = mine and all(r.hp.get(k) == mine[0].hp.get(k) for k in ("max_steps", "mu", "num_queries"))
        if same and r.hp.get("seed") not in {m.hp.get("seed") for m in mine} and float(r.hp["lr"]) == float(
                mine[0].hp["lr"]):
            mine.append(r)
    return rules


def steps_to(run: Run, tag: str, level: float) -> float:
    steps, values = run.series(tag)
    return next((s for s, v in zip(steps, values) if v <= level), math.inf)


def _curves_plot(rules: dict[str, list[Run]], tag: str, names, ylabel: str):
    def plot(ax):
        for name in names:
            for i, r in enumerate(rules.get(name, [])):
                steps, values = r.series(tag)
                ax.plot(steps, values, color=f"C{list(names).index(name)}", lw=1,
                        label=LABELS.get(name, name) if i == 0 else None)
        ax.set(xlabel="step", ylabel=ylabel)
        ax.legend(fontsize=8)

    return plot


def read_r6(root: Path) -> Result | None:
    rules = seed_runs(root)
    names = ("RAdaZO", "ZORMSProp", "ZOAdaMM")
    if rules is None or any(n not in rules for n in names):
        return None
    tag = "val/loss"
    level = max(min(r.series(tag)[1] or [math.inf]) for n in names for r in rules[n])  # every run reaches it
    steps = {n: {int(r.hp.get("seed", 0)): steps_to(r, tag, level) for r in rules[n]} for n in names}
    cells, speedups = [], []
    for other in names[1:]:
        ratio = [steps[other][s] / steps["RAdaZO"][s] for s in steps["RAdaZO"] if s in steps[other]]
        speedups.append(mean_std(ratio)[0])
        cells.append(f"{pm(ratio, 2)}× sooner than {LABELS[other]}")
    verdict = "holds" if min(speedups) >= 2 else "fails" if max(speedups) <= 1 else "partly"
    number = (f"R-AdaZO reaches validation loss {level:.4f} {', '.join(cells)} "
              f"(steps {', '.join(f'{LABELS[n]} {pm(steps[n].values())}' for n in names)})")
    return Result(verdict, number, plot=_curves_plot(rules, tag, names, "validation loss (500 sentences)"))


def _accuracy(rules, name) -> list[float]:
    return [100 * r.last("test/acc") for r in rules.get(name, [])]


def _cost(root: Path) -> dict[str, list[Run]]:
    return by_rule(root, sweep_name(COST)) or {}


def _peak_mib(rules, name) -> float:
    return max((max(r.series("diagnostics/step_cost/peak_rss_mib")[1] or [math.nan]) for r in rules.get(name, [])),
               default=math.nan)


def _similar(a: list[float], b: list[float]) -> tuple[float, float]:
    """(mean difference a − b in points, the tolerance max(1 point, the larger seed std))."""
    return mean_std(a)[0] - mean_std(b)[0], max(1.0, mean_std(a)[1], mean_std(b)[1])


def read_a1(root: Path) -> Result | None:
    rules, cost = seed_runs(root), _cost(root)
    if rules is None or "ZOAdaMU" not in rules or "ZOSGD" not in rules or not cost:
        return None
    a, b = _accuracy(rules, "ZOAdaMU"), _accuracy(rules, "ZOSGD")
    diff, tol = _similar(a, b)
    memory = _peak_mib(cost, "ZOAdaMU") / _peak_mib(cost, "ZOSGD")
    better = diff > tol
    verdict = "fails" if diff < -tol else "holds" if better and memory <= 1.1 else "partly"
    number = (f"test accuracy ZO-AdaMU {pm(a)}% vs MeZO {pm(b)}% ({diff:+.1f} points, tolerance {tol:.1f}); "
              f"peak memory ratio {memory:.2f}")
    return Result(verdict, number, plot=_curves_plot(rules, "val/acc", ("ZOAdaMU", "ZOSGD"), "validation accuracy"))


def read_b1(root: Path) -> Result | None:
    rules, cost = seed_runs(root), _cost(root)
    if rules is None or "MeZOBCD" not in rules or "ZOSGD" not in rules or not cost:
        return None
    a, b = _accuracy(rules, "MeZOBCD"), _accuracy(rules, "ZOSGD")
    diff, tol = _similar(a, b)

    def wall(name):
        import numpy as np

        values = [v for r in cost.get(name, []) for v in r.series("diagnostics/step_cost/wall_ms")[1]]
        return float(np.median(values)) if values else math.nan

    speed = wall("ZOSGD") / wall("MeZOBCD")
    verdict = two_rule(diff >= -tol, speed >= 1.5)
    number = (f"test accuracy MeZO-BCD {pm(a)}% vs MeZO {pm(b)}% ({diff:+.1f} points, tolerance {tol:.1f}); "
              f"time per step MeZO / MeZO-BCD {speed:.2f}× (full fine-tuning, StepCost medians, shared machine)")
    return Result(verdict, number, plot=_curves_plot(rules, "val/loss", ("MeZOBCD", "ZOSGD"), "validation loss"))


def read_m1(root: Path) -> Result | None:
    rules, grid, cost = seed_runs(root), by_rule(root, sweep_name(GRID)), _cost(root)
    if rules is None or grid is None or not cost or any(n not in rules for n in ("MEAZO", "ZOAdaMM", "ZOSGD")):
        return None
    a, b = _accuracy(rules, "MEAZO"), _accuracy(rules, "ZOAdaMM")
    diff, tol = _similar(a, b)
    memory = _peak_mib(cost, "MEAZO") / _peak_mib(cost, "ZOSGD")
    finals = {n: {float(r.hp["lr"]): r.last("val/loss") for r in runs} for n, runs in grid.items()}
    start = max(r.series("val/loss")[1][0] for runs in grid.values() for r in runs if r.series("val/loss")[1])
    best = min(v for f in finals.values() for v in f.values() if math.isfinite(v))
    good_level = best + 0.25 * (start - best)  # 75% of the grid's best improvement
    good = {n: sum(v <= good_level for v in f.values()) for n, f in finals.items()}
    robust = good.get("MEAZO", 0) >= max(good.get("ZOAdaMM", 0), good.get("ZOSGD", 0))
    checks = [abs(diff) <= tol, memory <= 1.05, robust]
    verdict = "holds" if all(checks) else "fails" if not any(checks) else "partly"
    number = (f"test accuracy MEAZO {pm(a)}% vs ZO-AdaMM {pm(b)}% ({diff:+.1f} points); peak memory MEAZO / "
              f"MeZO {memory:.2f}; lrs of the grid within 75% of the best improvement: "
              + ", ".join(f"{LABELS.get(n, n)} {good.get(n, 0)}/{len(finals.get(n, {}))}"
                          for n in ("MEAZO", "ZOAdaMM", "ZOSGD")))

    def plot(ax):
        for n in ("MEAZO", "ZOAdaMM", "ZOSGD"):
            lrs = sorted(finals.get(n, {}))
            ax.plot(lrs, [finals[n][lr] for lr in lrs], marker="o", label=LABELS[n])
        ax.axhline(good_level, color="black", lw=0.5, ls="--")
        ax.set(xscale="log", xlabel="lr", ylabel="final validation loss", title="lr grid")
        ax.legend(fontsize=8)

    return Result(verdict, number, plot=plot)


# ------------------------------------------------------------------ Z1: effective rank, not d
Z1_DIM, Z1_RANK = "experiments/claims/z1_dim.yaml", "experiments/claims/z1_rank.yaml"
Z1_TARGET = 0.01  # steps to 1% of f(x₀)
# Expected steps to 1% of f(x₀) at the best η of the grid, from the exact recursion of E[x_i²] for Gaussian
# ZO-SGD with K = 1 on ½ Σ λ_i x_i² from the runs' x₀ (computed before the runs; keyed by (d, r)):
# E x_i'² = x_i²(1 − 2ηλ_i + 2η²λ_i²) + η² Σ_j λ_j² x_j².
Z1_THEORY = {(256, 16): 1432, (1024, 16): 1432, (4096, 16): 1432, (16384, 16): 1432,
             (4096, 4): 276, (4096, 64): 6382, (4096, 256): 26299}


def z1_best(root: Path, sweep: str) -> dict[tuple[int, float], tuple[float, list[float]]] | None:
    """{(d, r): (best lr, steps to 1% per seed at it)}: the lr whose every seed reached the target in the
    fewest mean steps."""
    runs = runs_of(root, sweep)
    if not runs:
        return None
    from zolab.tasks.toy import SpectrumQuadratic

    cells: dict[tuple, dict[float, list[float]]] = {}
    initial: dict[tuple, float] = {}
    for r in runs:
        d, rank = int(r.hp.get("task.dim", 4096)), float(r.hp.get("task.effective_rank", 16))
        key = (d, rank, int(r.hp.get("task.init_seed", 0)))
        if key not in initial:
            initial[key] = SpectrumQuadratic(d, rank, key[2]).initial_loss
        steps, values = r.series("train/loss")
        reached = next((s + 1 for s, v in zip(steps, values) if v <= Z1_TARGET * initial[key]), math.inf)
        cells.setdefault((d, rank), {}).setdefault(float(r.hp["lr"]), []).append(reached)
    best = {}
    for cell, by_lr in cells.items():
        ok = {lr: s for lr, s in by_lr.items() if all(math.isfinite(x) for x in s)}
        if ok:
            lr = min(ok, key=lambda k: mean_std(ok[k])[0])
            best[cell] = (lr, ok[lr])
        else:
            best[cell] = (math.nan, [math.inf])
    return best


def _slope(xs, ys) -> float:
    import numpy as np

    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def read_z1(root: Path) -> Result | None:
    dim, rank = z1_best(root, sweep_name(Z1_DIM)), z1_best(root, sweep_name(Z1_RANK))
    if dim is None and rank is None:
        return None
    parts, verdicts = [], []
    if dim:
        means = {d: mean_std(s)[0] for (d, _), (_, s) in sorted(dim.items())}
        spread = max(means.values()) / min(means.values())
        verdicts.append(spread <= 1.25)
        parts.append(f"(a) r = 16, d = {min(means)}…{max(means)}: steps "
                     + ", ".join(f"{pm(s)} (d = {d})" for (d, _), (_, s) in sorted(dim.items()))
                     + f"; max/min {spread:.2f} (theory 1.00)")
    if rank:
        cells = sorted(rank.items(), key=lambda kv: kv[0][1])
        slope = _slope([r for (_, r), _ in cells], [mean_std(s)[0] for _, (_, s) in cells])
        verdicts.append(0.75 <= slope <= 1.25)
        parts.append(f"(b) d = 4,096, r = {cells[0][0][1]:g}…{cells[-1][0][1]:g}: steps "
                     + ", ".join(f"{pm(s)} (r = {r:g}, theory {Z1_THEORY.get((d, int(r)), '?')})"
                                 for (d, r), (_, s) in cells)
                     + f"; log-log slope against r {slope:.2f} (theory 1.10)")
    verdict = two_rule(*verdicts) if len(verdicts) == 2 else ("holds" if verdicts[0] else "fails")
    detail = ("(a)'s runs share x₀'s first 256 entries and, through the counter generator, the directions' first "
              "entries for every d: they differ only where λ < 10⁻⁷, hence equal steps seed by seed" if dim else "")

    def plot(ax):
        for label, table, x_of, marker in (("(a) r = 16, d varied (x = d/256)", dim, lambda d, r: d / 256, "o"),
                                           ("(b) d = 4,096, r varied (x = r/4)", rank, lambda d, r: r / 4, "s")):
            if table:
                cells = sorted(table.items(), key=lambda kv: x_of(*kv[0]))
                xs = [x_of(*c) for c, _ in cells]
                stats = [mean_std(s) for _, (_, s) in cells]
                ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], marker=marker, capsize=3,
                            label=label)
                ax.plot(xs, [Z1_THEORY.get((int(d), int(r)), math.nan) for (d, r), _ in cells], ls=":",
                        color="gray")
        ax.set(xscale="log", yscale="log", xlabel="d or r relative to its smallest value (1× to 64×)",
               ylabel="steps to 1% of f(x0), best lr", title="ZO-SGD on quadratics (dotted: theory)")
        ax.legend(fontsize=8)

    return Result(verdict, "; ".join(parts), detail, plot=plot)


def read_z1_minilm(root: Path) -> Result | None:
    runs = [r for r in runs_of(root, sweep_name(SEEDS)) if r.series("diagnostics/hessian/effective_rank")[1]]
    if not runs:
        return None
    import numpy as np

    run = runs[0]
    _, ranks = run.series("diagnostics/hessian/effective_rank")
    d = run.last("diagnostics/hessian/dim") or float(run.hp.get("task_params", math.nan))
    median = float(np.median(ranks))
    verdict = "holds" if 0 < median <= 1e-2 * d else "fails"
    number = (f"Hessian effective rank tr H/‖H‖ along the {LABELS.get(run.hp.get('rule'), '')} run: median "
              f"{median:.3g} (range {min(ranks):.3g} to {max(ranks):.3g}, {len(ranks)} probe steps), d = {d:.3g}, "
              f"r/d = {median / d:.2g}")
    return Result(verdict, number)


# ------------------------------------------------------------------ B2: overlap, stable rank and variance
B2 = "experiments/claims/b2_blocks.yaml"


def b2_points(root: Path) -> dict[str, list[dict]] | None:
    """{block partition: [one dict per probe step: seed, n, rho, nu (= measured/‖∇F‖²), measured, theory]}."""
    runs = runs_of(root, sweep_name(B2))
    if not runs:
        return None
    out: dict[str, list[dict]] = {}
    for r in runs:
        tags = {k: dict(zip(*r.series(f"diagnostics/{k}")))
                for k in ("variance/measured", "variance/theory", "variance/grad_norm_sq",
                          "block_overlap/grad_overlap", "block_overlap/block_size")}
        for step, measured in tags["variance/measured"].items():
            if all(step in t for t in tags.values()):
                out.setdefault(str(r.hp.get("blocks")), []).append({
                    "seed": int(r.hp.get("seed", 0)), "n": tags["block_overlap/block_size"][step],
                    "rho": tags["block_overlap/grad_overlap"][step], "measured": measured,
                    "theory": tags["variance/theory"][step],
                    "nu": measured / tags["variance/grad_norm_sq"][step]})
    return out


def partition_label(key: str) -> str:
    """'one block' for None, 'per module', 'per tensor', 'N by name' for a list of regexes."""
    import ast

    if key.startswith("["):
        return f"{len(ast.literal_eval(key))} by name"
    return {"None": "one block"}.get(key, f"per {key}")


def read_b2(root: Path) -> Result | None:
    points = b2_points(root)
    if not points:
        return None
    points = {partition_label(k): v for k, v in points.items()}
    order = sorted(points, key=lambda k: -mean_std([p["n"] for p in points[k]])[0])  # largest blocks first
    seeds = sorted({p["seed"] for ps in points.values() for p in ps})
    nu = {k: [mean_std([p["nu"] for p in points[k] if p["seed"] == s])[0] for s in seeds] for k in order}
    falls = all(mean_std(nu[a])[0] > mean_std(nu[b])[0] for a, b in zip(order, order[1:]))
    relation = {k: sum(p["measured"] for p in points[k]) / sum(p["theory"] for p in points[k]) for k in order}
    rho_nu = []  # Spearman(ρ, ν) per seed over the equal-size blocks of the module partition
    if "per module" in points:
        sizes = [p["n"] for p in points["per module"]]
        size = max(set(sizes), key=sizes.count)
        for s in seeds:
            pts = [p for p in points["per module"] if p["seed"] == s and p["n"] == size]
            rho_nu.append(spearman([p["rho"] for p in pts], [p["nu"] for p in pts]))
    rs = mean_std(rho_nu)[0] if rho_nu else math.nan
    overlap_lowers = rs <= -0.3
    verdict = two_rule(falls, overlap_lowers)
    number = ("E‖ĝ − ∇F‖²/‖∇F‖² by partition (mean block size): "
              + ", ".join(f"{k} ({mean_std([p['n'] for p in points[k]])[0]:.0f}) {pm(nu[k])}" for k in order)
              + f"; Spearman(overlap, variance) at equal block size {pm(rho_nu, 2)}")
    detail = (f"falls with the stable rank: {falls}; lower at higher overlap (≤ −0.3): {overlap_lowers}; "
              "measured/theory of docs/algorithms.md §4: "
              + ", ".join(f"{k} {v:.2f}" for k, v in relation.items()))

    def plot(ax):
        for i, k in enumerate(order):
            ax.scatter([p["rho"] for p in points[k]], [p["nu"] for p in points[k]], s=6, color=f"C{i}", label=k)
        ax.set(yscale="log", xlabel="gradient overlap ‖P_B∇F‖²/‖∇F‖²", ylabel="E‖ĝ − ∇F‖² / ‖∇F‖²",
               title="MeZO-BCD on the digits MLP: every probe step")
        ax.legend(fontsize=8)

    return Result(verdict, number, detail, plot)


# ------------------------------------------------------------------ the twelve claims
def gpu(configs: list[str], note: str) -> Part:
    return Part("GPU", note, tuple(Job(argv=("zolab", "fit", "--config", c)) for c in configs), None, cpu=False)


CLAIMS: tuple[Claim, ...] = (
    Claim("R1", "R-AdaZO converges faster than ZO-SGD, ZO-signSGD, ZO-AdaMM and ZO-RMSProp on most of Quadratic, "
                "Cubic, Levy and Rosenbrock", "faster on most functions (R-AdaZO Fig. 1; its numbers were lost)",
          "per function, the rule with the lowest final training loss (mean over seeds; diverged = inf): holds when "
          "R-AdaZO is lowest on most functions (≥ 3 of 4), partly on half (2), fails on fewer",
          (Part("proxy", "d = 10,000, K = 10, 20,000 iterations, η = 1e-3, μ = 0.05, sphere directions, forward "
                         "differences, one seed (docs/algorithms.md §6)", (sweep_job(FIG1),), read_r1(FIG1), hours=0.6),
           Part("seeds", "the same at d = 1,000, K = 1, 4,000 iterations (as `make demo`), 3 direction seeds",
                (sweep_job(FIG1_SEEDS),), read_r1(FIG1_SEEDS), hours=0.1))),
    Claim("R2", "cos(m, ∇F) > cos(ĝ, ∇F); it rises with β1, with a small drop at very high β1",
          "Fig. 2a (curves; numbers lost)",
          "second-half means over seeds: fails unless cos(m) > cos(ĝ) at every β1 > 0; holds when cos(m) also rises "
          "up to β1 = 0.99 and drops at 0.999 by more than the seed spread; partly otherwise",
          (Part("quadratic", "R-AdaZO on Quadratic, d = 1,000, K = 10, 1,000 steps, β1 ∈ {0, …, 0.999}, 3 seeds",
                (sweep_job(FIG2A_SEEDS),), read_r2, hours=0.05),)),
    Claim("R3", "R-AdaZO's refined v (from m²) has a lower relative error to v* than the conventional v (from ĝ²); "
                "the error falls as β2 grows", "Fig. 2b (curves; numbers lost)",
          "second-half means over seeds: fails unless the refined error is below the conventional one at every β2; "
          "holds when it also falls strictly with β2; partly otherwise",
          (Part("quadratic", "R-AdaZO on Quadratic, d = 1,000, K = 10, 1,000 steps, β2 ∈ {0.5, …, 0.999}, 3 seeds",
                (sweep_job(FIG2B_SEEDS),), read_r3, hours=0.05),)),
    Claim("R4", "ZO-AdaMM ≈ ZO-RMSProp everywhere: the first moment adds little", "same curves (Fig. 1, Tab. 1)",
          "Figure 1: holds when ZO-AdaMM's final loss is within 10% of ZO-RMSProp's on every function, fails when "
          "outside [0.5, 2]× on most; attack: holds when iterations (runs both broke) are within [0.8, 1.25]× and "
          "failures differ by ≤ 3 of 30, fails outside [0.5, 2]×; partly otherwise",
          (Part("proxy", "Figure 1 at the proxy settings, one seed", (sweep_job(FIG1),), read_r4_fig1(FIG1), hours=0),
           Part("seeds", "Figure 1 reduced, 3 seeds", (sweep_job(FIG1_SEEDS),), read_r4_fig1(FIG1_SEEDS), hours=0),
           Part("attack", "the R5 attack runs", ATTACK_JOBS, read_r4_attack, hours=0))),
    Claim("R5", "black-box targeted attack on MNIST: R-AdaZO needs 5.4× fewer iterations than ZO-RMSProp",
          "ZO-RMSProp 15.6k ± 3.2k, ZO-AdaMM 15.5k ± 4.1k, R-AdaZO 2.9k ± 0.8k iterations (Tab. 1)",
          "speed-up = ZO-RMSProp's / R-AdaZO's mean iterations on the runs both broke, per seed: holds when ≥ 2.7 "
          "(half the paper's) and R-AdaZO fails no more often; fails when ≤ 1 or R-AdaZO fails on 10% more runs; "
          "partly otherwise",
          (Part("attack", "the project's CNN (experiments/mnist/train_cnn.yaml), 10 victims × 3 seeds, ≤ 2,000 "
                          "iterations, η = 0.01, "
                          "μ = 0.005, K = 5, sphere, forward, β = (0.9, 0.99), ε = 0.2", ATTACK_JOBS, read_r5,
                hours=1.3),)),
    Claim("R6", "R-AdaZO reaches the same SST-2 loss sooner than ZO-RMSProp and ZO-AdaMM",
          "4.29× (OPT-1.3B), 3.75× (OPT-13B) sooner (Fig. 3)",
          "steps to the lowest validation loss every run reaches, R-AdaZO vs each baseline (per seed): holds when "
          "both speed-ups are ≥ 2, fails when both are ≤ 1, partly otherwise",
          (Part("minilm", MINILM_SETTINGS, MINILM_JOBS, read_r6, hours=2.5),
           gpu(["experiments/llm/sst2_opt1.3b_radazo.yaml", "experiments/llm/sst2_opt1.3b_zo_rmsprop.yaml",
                "experiments/llm/sst2_opt1.3b_zo_adamm.yaml"], "OPT-1.3B full fine-tuning, 20,000 steps, fp16"))),
    Claim("A1", "ZO-AdaMU beats MeZO in accuracy at similar memory",
          "SST-2 92.1 vs 91.4, COPA 89.0 vs 88.0 (OPT-13B; ZO-AdaMU Tab. 1)",
          "test accuracy, mean over seeds: holds when ZO-AdaMU is higher by more than max(1 point, seed std) at "
          "≤ 1.1× MeZO's peak memory (full fine-tuning); fails when lower by more than that; partly otherwise",
          (Part("minilm", MINILM_SETTINGS, MINILM_JOBS, read_a1, hours=0),
           gpu(["experiments/llm/sst2_opt1.3b_mezo.yaml", "experiments/llm/sst2_opt1.3b_zo_adamu.yaml",
                "experiments/llm/copa_opt1.3b_mezo.yaml", "experiments/llm/copa_opt1.3b_zo_adamu.yaml"],
               "OPT-1.3B full fine-tuning, SST-2 and COPA"))),
    Claim("A2", "annealing matters: ZO-AdaMU's α, β1, β2 schedules each help",
          "ablations of the schedules (ZO-AdaMU, OPT-13B)",
          "final training loss, mean over seeds: fails unless the annealed default beats no annealing by more than "
          "the seed spread; holds when also switching off any one schedule is worse; partly otherwise",
          (Part("mlp", "2,110-parameter MLP on 256 digits, full batch, 2,000 steps, T1 = 100, η = 1e-2, μ = 1e-3, "
                       "7 arms × 2 seeds", (sweep_job(ADAMU),), read_a2, hours=0.4),)),
    Claim("B1", "MeZO-BCD: MeZO's accuracy, faster per iteration", "up to 2.09× (v2: 2.77×) faster per iteration",
          "holds when MeZO-BCD's test accuracy is ≥ MeZO's − max(1 point, seed std) and its step is ≥ 1.5× faster "
          "(StepCost medians); fails when neither; partly otherwise",
          (Part("minilm", MINILM_SETTINGS, MINILM_JOBS, read_b1, hours=0),)),
    Claim("B2", "lower perturbation stable rank / higher overlap -> lower estimator variance",
          "MeZO-BCD v1 theory (no number)",
          "holds when E‖ĝ − ∇F‖²/‖∇F‖² (a) falls strictly with the partition's mean block size (= the perturbation's "
          "stable rank) and (b) falls with the gradient overlap at equal block size (Spearman ≤ −0.3, mean over "
          "seeds); fails when neither; partly when one",
          (Part("mlp", "MeZO-BCD on a 5,578-parameter tanh MLP (64-32-32-32-32-10) on 256 digits, 400 steps, "
                       "η = 1e-3, μ = 1e-3, K = 1; blocks: one, 2, per module, per tensor; 3 seeds; variance from 32 "
                       "extra estimates every 4 steps", (sweep_job(B2),), read_b2, hours=0.15),),
          prediction="(a) holds: by docs/algorithms.md §4, E‖ĝ − ∇F‖² = (1 − ρ)‖∇F‖² + (n + 1)ρ‖∇F‖²/K for a "
                     "Gaussian block of size n with gradient overlap ρ, which shrinks with n; measured/theory within "
                     "[0.8, 1.25]. (b) fails: at fixed n the same formula grows with ρ (slope (n + 1)/K − 1 > 0), so "
                     "we expect a positive Spearman correlation (about +0.5). Expected verdict: partly."),
    Claim("M1", "MEAZO matches ZO-Adam at ZO-SGD memory and is robust to the step size",
          "abstract only (no number)",
          "three checks: test accuracy within max(1 point, seed std) of ZO-AdaMM; peak memory ≤ 1.05× MeZO's "
          "(full fine-tuning); at "
          "least as many grid lrs as ZO-AdaMM and MeZO reach 75% of the grid's best validation-loss improvement: "
          "holds when all three pass, fails when none does, partly otherwise",
          (Part("minilm", MINILM_SETTINGS, MINILM_JOBS, read_m1, hours=0),)),
    Claim("Z1", "ZO convergence depends on the Hessian's effective rank, not on d", "MeZO's theory (no number)",
          "quadratics: holds when (a) at r = 16 the best-lr steps to 1% of f(x₀) vary by ≤ 1.25× over d = 256…16,384 "
          "and (b) at d = 4,096 their log-log slope against r = 4…256 is in [0.75, 1.25]; fails when neither, partly "
          "when one. MiniLM: holds when the Hessian probe's median tr H/‖H‖ along the ZO-SGD run is positive and "
          "≤ 10⁻² d (d: the probed trainable numbers)",
          (Part("quadratics", "ZO-SGD (Gaussian, central, K = 1, μ = 1e-3) on ½ Σ λ_i x_i², λ_i = (1 − 1/r)^(i−1), "
                              "x₀ ~ N(0, I); η ∈ {2^-1, …, 2^-9}, 3 direction seeds; (a) r = 16, d = 256…16,384; "
                              "(b) d = 4,096, r = 4…256", (sweep_job(Z1_DIM), sweep_job(Z1_RANK)), read_z1, hours=0.7),
           Part("minilm", "HessianSpectrum (stochastic) along the MiniLM ZO-SGD run of the study", (sweep_job(SEEDS),),
                read_z1_minilm, hours=0)),
          prediction="(a) the steps do not change with d: theory 1,432 steps at η = 2^-4 for every d (x₀ shares its "
                     "first 256 entries); (b) they grow about like r: theory 276, 1,432, 6,382, 26,299 steps at r = "
                     "4, 16, 64, 256 (slope 1.10). MiniLM: a small effective rank, r/d ≤ 10⁻² "
                     "(MeZO's premise; the threshold was 10⁻³ of full fine-tuning's 22.7M parameters until the "
                     "study chose LoRA, 74,498 trainable numbers, before any MiniLM run)."),
)


def claim_by_id(ident: str) -> Claim:
    for c in CLAIMS:
        if c.id == ident.upper():
            return c
    raise ValueError(f"unknown claim {ident!r}; allowed: {[c.id for c in CLAIMS]} (or ID.part)")


def select(tokens: list[str]) -> list[tuple[Claim, list[Part]]]:
    """Claims and parts named by ``ID`` (all its parts) or ``ID.part``; every claim when none."""
    if not tokens:
        return [(c, list(c.parts)) for c in CLAIMS]
    out: dict[str, tuple[Claim, list[Part]]] = {}
    for token in tokens:
        ident, _, part = token.partition(".")
        claim = claim_by_id(ident)
        parts = [p for p in claim.parts if not part or p.name == part]
        if not parts:
            raise ValueError(f"{claim.id} has no part {part!r}; its parts: {[p.name for p in claim.parts]}")
        entry = out.setdefault(claim.id, (claim, []))
        entry[1].extend(p for p in parts if p not in entry[1])
    return list(out.values())


# ---------------------------------------------------------------------------------------------- the scoreboard
@dataclass
class Row:
    claim: Claim
    results: dict[str, Result | None] = field(default_factory=dict)  # part name -> reading (None: no runs)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return combine([r.verdict for r in self.results.values() if r is not None])

    @property
    def missing(self) -> list[Part]:
        """The selected parts without a reading."""
        return [p for p in self.claim.parts if p.name in self.results and self.results[p.name] is None]


def score(root: Path, selection=None) -> list[Row]:
    rows = []
    for claim, parts in selection or select([]):
        row = Row(claim)
        for part in parts:
            if part.read is None:
                row.results[part.name] = None
                continue
            if not finished(Path(root), part):
                row.results[part.name] = None
                row.errors.pop(part.name, None)
                continue
            try:
                row.results[part.name] = part.read(Path(root))
            except Exception as err:  # noqa: BLE001 - a malformed run must not hide the other claims
                row.results[part.name] = None
                row.errors[part.name] = f"{type(err).__name__}: {err}"
        rows.append(row)
    return rows


def rerun(claim: Claim, part: Part, root: str, data: str) -> str:
    if not part.cpu:
        return "; ".join(shlex.join(j.command(root, data)) for j in part.jobs) + "  (GPU)"
    return f"zolab claims --run {claim.id}.{part.name} --root {root}"


def _missing_text(row: Row, root: str, data: str) -> str:
    out = []
    for p in row.missing:
        why = row.errors.get(p.name)
        out.append(f"{p.name}: {'unreadable (' + why + ')' if why else 'not run'} -> {rerun(row.claim, p, root, data)}")
    return "; ".join(out)


def print_board(rows: list[Row], root: str, data: str, out=None) -> None:
    out = out or sys.stdout
    counts = {v: sum(r.verdict == v for r in rows) for v in VERDICTS}
    print(f"zolab claims: {len(rows)} claims from the runs under {root}: "
          + ", ".join(f"{n} {v}" for v, n in counts.items() if n), file=out)
    for row in rows:
        c = row.claim
        print(f"\n{c.id:<4} {row.verdict.upper():<8} {c.statement}", file=out)
        print(f"     paper     {c.paper}", file=out)
        for name, res in row.results.items():
            part = next(p for p in c.parts if p.name == name)
            if res is not None:
                print(f"     zolab     [{name}] {res.verdict}: {res.number}", file=out)
                if res.detail:
                    print(f"               {res.detail}", file=out)
                print(f"     settings  [{name}] {part.settings}", file=out)
        if row.missing:
            print(f"     missing   {_missing_text(row, root, data)}", file=out)
        print(f"     rule      {c.rule}", file=out)
        print(f"     re-run    zolab claims --run {c.id} --root {root}", file=out)


# ---------------------------------------------------------------------------------------------- running
def run_missing(selection, root: Path, data: str, dry_run: bool = False, log=print) -> int:
    """Run the jobs of the selected CPU-feasible parts that are not done, one after another (each sweep with
    ``--resume``). Returns the number of jobs that failed."""
    jobs: dict[str, Job] = {}
    for _, parts in selection:
        for part in parts:
            if part.cpu:
                jobs.update({j.key: j for j in part.jobs})
    failed = 0
    times_path = root / TIMES_FILE
    for job in jobs.values():
        if job.sweep and not (REPO / job.sweep).exists():
            log(f"skipped {job.sweep}: no such sweep file in this checkout")
            continue
        if job.done(root):
            log(f"done before: {job.key}")
            continue
        command = job.command(str(root), data)
        log(f"{'would run' if dry_run else 'running'}: {shlex.join(command)}")
        if dry_run:
            continue
        argv = [sys.executable, "-m", f"zolab.{command[1]}", *command[2:]] if command[0] == "zolab" else (
            [sys.executable, *command[1:]] if command[0] == "python" else command)
        start = time.perf_counter()
        status = subprocess.run(argv, cwd=REPO, check=False).returncode
        status = status or (0 if job.done(root) else 1)  # a sweep with failed runs is not done
        seconds = time.perf_counter() - start
        times = (yaml.safe_load(times_path.read_text()) or {}) if times_path.exists() else {}
        times[job.key] = {"seconds": round(seconds, 1) + float(times.get(job.key, {}).get("seconds", 0)),
                          "status": status}
        root.mkdir(parents=True, exist_ok=True)
        times_path.write_text(yaml.safe_dump(times, sort_keys=False))
        log(f"{'finished' if status == 0 else f'failed (exit status {status})'}: {job.key} in {seconds / 60:.1f} min")
        failed += status != 0
    return failed


def job_minutes(job: Job, root: Path) -> float | None:
    """Minutes a job took where it ran: its runs' ``sweep_run.yaml`` seconds, or what ``--run`` recorded."""
    if job.sweep:
        files = list((root / sweep_name(job.sweep)).glob("*/sweep_run.yaml"))
        seconds = [float((yaml.safe_load(f.read_text()) or {}).get("seconds", 0)) for f in files]
        return sum(seconds) / 60 if files else None
    times = (yaml.safe_load((root / TIMES_FILE).read_text()) or {}) if (root / TIMES_FILE).exists() else {}
    return float(times[job.key]["seconds"]) / 60 if job.key in times else None


# ---------------------------------------------------------------------------------------------- docs/claims.md
def write_docs(rows: list[Row], root: str, data: str, out: Path) -> list[Path]:
    """docs/claims.md: the table, then per claim its reading, rule, prediction, figure and commands (written
    with the default runs root and data folder, as a checkout runs them)."""
    shown_root, shown_data = "runs", "../shared/data"
    figures = out.parent / "figures" / "claims"
    written = []
    hours = sum(p.hours for c in CLAIMS for p in c.parts if p.cpu)
    study = sum(p.hours for c in CLAIMS for p in c.parts if p.cpu and p.name == "minilm")
    lines = ["# Claims: what holds here", "",
             "Written by `zolab claims --write docs/claims.md` from the runs on disk (the registry is "
             "`zolab/claims/`; the claims are docs/algorithms.md §5). Each verdict follows a rule written in the "
             "registry before its runs (Z1's and B2's predictions too); a claim that fails here is a result at "
             "these settings, not a refutation of the paper. Numbers are mean ± standard deviation over seeds.", "",
             f"`make claims` (`zolab claims --run --write docs/claims.md`) runs every CPU-feasible measurement "
             f"that is missing, resumably, then writes this page: about {hours:.0f} CPU-hours planned on 2 cores, "
             f"{study:.1f} of them the MiniLM study (measured minutes per part: \"Cost\" below). "
             "`zolab claims --run ID` runs one claim; GPU-only parts print their commands.", "",
             "| claim | paper | zolab | verdict | re-run |", "|---|---|---|---|---|"]
    for row in rows:
        c = row.claim
        measured = [f"[{n}] {r.number}" for n, r in row.results.items() if r is not None]
        lines.append(f"| [{c.id}](#{c.id.lower()}) {c.statement} | {c.paper} | {'<br>'.join(measured) or '—'} | "
                     f"**{row.verdict}** | `zolab claims --run {c.id}` |")
    for row in rows:
        c = row.claim
        lines += ["", f"## {c.id}", "", f"**{c.statement}.** Paper: {c.paper}. Verdict: **{row.verdict}**.", ""]
        if c.prediction:
            lines += [f"Prediction (written before the runs): {c.prediction}", ""]
        lines += [f"Rule: {c.rule}.", ""]
        for part in c.parts:
            res = row.results.get(part.name)
            status = f"**{res.verdict}**: {res.number}" if res else ("GPU-only, not run here" if not part.cpu
                                                                     else "not run")
            lines.append(f"- {part.name} ({part.settings}): {status}")
            if res and res.detail:
                lines.append(f"  ({res.detail})")
            commands = [shlex.join(j.command(shown_root, shown_data)) for j in part.jobs]
            lines.append("  Commands: " + "; ".join(f"`{cmd}`" for cmd in commands))
        for name, res in row.results.items():
            if res is not None and res.plot is not None:
                import matplotlib

                matplotlib.use("Agg")
                import matplotlib.pyplot as plt

                fig, ax = plt.subplots(figsize=(6.4, 3.6))
                res.plot(ax)
                fig.tight_layout()
                path = figures / f"{c.id.lower()}_{name}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                fig.savefig(path, dpi=90)
                plt.close(fig)
                written.append(path)
                lines += ["", f"![{c.id} {name}](figures/claims/{path.name})"]
    lines += ["", "## Cost", "", "CPU minutes each measurement took where it ran (the runs' own clocks, "
              "on the machine and load they ran under), and the plan for 2 cores:", "",
              "| claim part | jobs | minutes | planned CPU-hours |", "|---|---|---|---|"]
    seen: set[str] = set()
    for row in rows:
        for part in row.claim.parts:
            if not part.cpu or all(j.key in seen for j in part.jobs):
                continue
            new = [j for j in part.jobs if j.key not in seen]
            seen.update(j.key for j in new)
            minutes = [job_minutes(j, Path(root)) for j in new]
            took = f"{sum(m for m in minutes if m is not None):.0f}" if any(m is not None for m in minutes) else "—"
            lines.append(f"| {row.claim.id}.{part.name} | {', '.join(j.key for j in new)} | {took} | {part.hours:g} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return [out, *written]


# ---------------------------------------------------------------------------------------------- command line
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="zolab claims", description=__doc__.split("\n\n")[0])
    parser.add_argument("ids", nargs="*", help="claims (R1 … Z1) or parts (Z1.quadratics); default: all")
    parser.add_argument("--root", default="runs", help="the runs root (default runs/)")
    parser.add_argument("--data", default="../shared/data", help="the data folder the attack reads (MNIST)")
    parser.add_argument("--run", action="store_true", help="run the missing CPU-feasible measurements first")
    parser.add_argument("--dry-run", action="store_true", help="with --run: print the commands, run nothing")
    parser.add_argument("--write", metavar="MD", help="write the scoreboard as Markdown (figures beside it)")
    args = parser.parse_args(argv)
    try:
        selection = select(args.ids)
    except ValueError as err:
        parser.error(str(err))
    root = Path(args.root)
    failed = run_missing(selection, root, args.data, args.dry_run) if args.run else 0
    rows = score(root, selection)
    print_board(rows, args.root, args.data)
    if args.write:
        for path in write_docs(rows, args.root, args.data, Path(args.write)):
            print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
