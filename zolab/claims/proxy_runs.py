"""Reading runs of the CPU proxies (P-lr, P-mlp) for the claims of LOZO, SubZero and MeZO-SVRG: a run's grid values,
its final loss, each rule's best step size on a shared grid, seed pairing, a curve against forwards."""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from zolab.claims.events import Run
from zolab.claims.stats import mean_std


def grid_value(run: Run, key: str, default=None):
    """The value the run's sweep gave ``key`` (its ``sweep_run.yaml``), e.g. a rule file or a rank."""
    path = Path(run.path) / "sweep_run.yaml"
    values = (yaml.safe_load(path.read_text()) or {}).get("values", {}) if path.is_file() else {}
    return values.get(key, default)


def rule_file(run: Run) -> str:
    """The stem of the rule file the run's grid chose (``proxy_rules/lozo.yaml`` -> ``lozo``), else its rule class."""
    spec = grid_value(run, "model.optimizer")
    return Path(str(spec)).stem if spec else str(run.hp.get("rule"))


def group(runs: list[Run], key) -> dict:
    out: dict = {}
    for r in runs:
        out.setdefault(key(r), []).append(r)
    return out


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
