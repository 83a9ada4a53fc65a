"""Reading runs of the CPU proxies (P-lr, P-mlp, P-hq; docs/algorithms.md §6) for the claims: a run's grid values and
rule options, arms, its final loss, each rule's best step size on a shared grid, seed pairing, seed-mean curves
against forwards or steps, steps to a target.

An arm is a rule with its own options (HiZOO at one α, Sparse-MeZO at one sparsity); each arm runs at several
learning rates and seeds. A rule option that ``hparams.yaml`` does not record (a rule's static options) is read
from the run's ``config.yaml`` (``model.optimizer.init_args``).
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from zolab.claims.events import Run, read_config
from zolab.claims.stats import mean, mean_std


def grid_value(run: Run, key: str, default=None):
    """The value the run's sweep gave ``key`` (its ``sweep_run.yaml``), e.g. a rule file or a rank."""
    path = Path(run.path) / "sweep_run.yaml"
    values = (yaml.safe_load(path.read_text()) or {}).get("values", {}) if path.is_file() else {}
    return values.get(key, default)


def rule_file(run: Run) -> str:
    """The stem of the rule file the run's grid chose (``proxy_rules/lozo.yaml`` -> ``lozo``), else its rule class."""
    spec = grid_value(run, "model.optimizer")
    return Path(str(spec)).stem if spec else str(run.hp.get("rule"))


def option(run: Run, key: str, default=None):
    """A rule option of ``run``: hparams.yaml's value, else config.yaml's init_args, else ``default``."""
    if key in run.hp:
        return run.hp[key]
    init = ((read_config(run.path).get("model") or {}).get("optimizer") or {}).get("init_args") or {}
    return init.get(key, default)


def group(runs: list[Run], key) -> dict:
    out: dict = {}
    for r in runs:
        out.setdefault(key(r), []).append(r)
    return out


def by_arm(runs: list[Run], arm=lambda r: r.hp.get("rule")) -> dict[str, dict[float, list[Run]]]:
    """{arm(run) (default: its rule class): {lr: [runs, one per seed]}}; runs whose ``arm`` is None are left out."""
    arms = group([r for r in runs if arm(r) is not None], arm)
    return {a: group(rs, lambda r: float(r.hp["lr"])) for a, rs in arms.items()}


def seed_of(run: Run) -> int:
    return int(run.hp.get("seed", 0))


def tail_mean(run: Run, tag: str, n: int = 1) -> float:
    """The mean of the last ``n`` logged values of ``tag`` (nan when none)."""
    values = run.series(tag)[1][-n:]
    return sum(values) / len(values) if values else math.nan


def best_lr(runs: list[Run], score, lower: bool = True) -> tuple[float, list[Run]]:
    """(η, its runs): the η of the grid whose mean ``score(run)`` over seeds is best; an η with a non-finite score in
    any seed (a diverged run) is never chosen. (nan, []) when none is finite."""
    cells = {}
    for lr, rs in group(runs, lambda r: float(r.hp["lr"])).items():
        scores = [score(r) for r in rs]
        if all(math.isfinite(s) for s in scores):
            cells[lr] = (mean_std(scores)[0], rs)
    if not cells:
        return math.nan, []
    lr = (min if lower else max)(cells, key=lambda k: cells[k][0])
    return lr, sorted(cells[lr][1], key=seed_of)


def paired(a: list[Run], b: list[Run], score) -> list[tuple[float, float]]:
    """(score of a, score of b) for each seed both hold."""
    sa, sb = {seed_of(r): score(r) for r in a}, {seed_of(r): score(r) for r in b}
    return [(sa[s], sb[s]) for s in sorted(sa) if s in sb]


def not_worse(a: list[float], b: list[float], higher_is_better: bool, floor: float = 0.0) -> tuple[bool, float, float]:
    """(mean a is no worse than mean b within the tolerance, the difference a − b, the tolerance max(floor, the larger
    seed std))."""
    diff, tol = mean_std(a)[0] - mean_std(b)[0], max(floor, mean_std(a)[1], mean_std(b)[1])
    return (diff >= -tol if higher_is_better else diff <= tol), diff, tol


def at_forwards(run: Run, tag: str) -> list[tuple[float, float]]:
    """(forwards so far, value) for each logged value of ``tag``: the forwards counter ``train/forwards`` at the same
    x, interpolated linearly between its logged points (it grows by a fixed pattern)."""
    fs, fv = run.series("train/forwards")
    out = []
    for x, v in zip(*run.series(tag)):
        i = next((i for i, s in enumerate(fs) if s >= x), None)
        if i is None:  # after the last logged count
            continue
        if fs[i] == x:
            f = fv[i]
        elif i == 0:  # before the first logged count: in proportion to the steps
            f = fv[0] * (x + 1) / (fs[0] + 1)
        else:
            f = fv[i - 1] + (fv[i] - fv[i - 1]) * (x - fs[i - 1]) / (fs[i] - fs[i - 1])
        out.append((f, v))
    return out


def mean_curve(runs: list[Run], tag: str) -> list[tuple[float, float]]:
    """(forwards, mean value over the runs) at each evaluation the runs share (by position)."""
    curves = [at_forwards(r, tag) for r in runs]
    n = min((len(c) for c in curves), default=0)
    return [(curves[0][i][0], sum(c[i][1] for c in curves) / len(curves)) for i in range(n)]


def step_curve(runs: list[Run], tag: str) -> tuple[list[int], list[float]]:
    """The seed mean of ``tag`` at the steps every run logged (a diverged seed makes its steps nan)."""
    series = [dict(zip(*r.series(tag))) for r in runs]
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    return steps, [mean([s[k] for s in series]) for k in steps]


def best(values: list[float], higher: bool) -> float:
    """The best finite value (nan when none)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan
    return max(finite) if higher else min(finite)


def reaches(v: float, target: float, higher: bool) -> bool:
    """``v`` is finite and at least as good as ``target``."""
    return math.isfinite(v) and (v >= target if higher else v <= target)


def steps_to(steps, values, target: float, higher: bool) -> float:
    """The first logged step at which the curve reaches ``target`` (inf: never)."""
    return next((float(s) for s, v in zip(steps, values) if reaches(v, target, higher)), math.inf)


def best_lr_of(grid: dict[float, list[Run]], score, higher: bool) -> tuple[float, float]:
    """(the lr whose seeds' ``score(runs)`` is best, that score); (nan, nan) when no lr scores a finite value."""
    scored = [(score(rs), lr) for lr, rs in grid.items()]
    scored = [(v, lr) for v, lr in scored if math.isfinite(v)]
    if not scored:
        return math.nan, math.nan
    value, lr = (max if higher else min)(scored)
    return lr, value


def peak_lr(grid: dict[float, list[Run]], tag: str, higher: bool) -> tuple[float, float]:
    """(the lr whose seed-mean step curve reaches the best value, that value); (nan, nan) if none is finite. Unlike
    ``best_lr`` (the best mean of a per-run score), the peak of the mean curve: the target of ``steps_to``."""
    return best_lr_of(grid, lambda rs: best(step_curve(rs, tag)[1], higher), higher)


def fastest(grid: dict[float, list[Run]], tag: str, target: float, higher: bool) -> tuple[float, float]:
    """(the fewest steps any lr's seed-mean curve takes to reach ``target``, that lr)."""
    found = [(steps_to(*step_curve(rs, tag), target, higher), lr) for lr, rs in grid.items()]
    return min(found, default=(math.inf, math.nan))


def seed_bests(runs: list[Run], tag: str, higher: bool) -> list[float]:
    """Each seed run's best value of ``tag`` (nan when it logged nothing finite)."""
    return [best(r.series(tag)[1], higher) for r in runs]


def first_mean(runs: list[Run], tag: str) -> float:
    """The seed mean of the first logged value (the start the power rule measures from)."""
    return mean([r.first(tag) for r in runs])
