"""Reading the CPU proxies' sweeps (P-hq, P-mlp; docs/algorithms.md §6): arms, seed-mean curves, steps to a target.

An arm is a rule with its own options (HiZOO at one α, Sparse-MeZO at one sparsity); each arm runs at several
learning rates and seeds. A rule option that ``hparams.yaml`` does not record (a rule's static options) is read
from the run's ``config.yaml`` (``model.optimizer.init_args``).
"""

from __future__ import annotations

import math

from zolab.claims.events import read_config
from zolab.claims.stats import mean


def option(run, key: str, default=None):
    """A rule option of ``run``: hparams.yaml's value, else config.yaml's init_args, else ``default``."""
    if key in run.hp:
        return run.hp[key]
    init = ((read_config(run.path).get("model") or {}).get("optimizer") or {}).get("init_args") or {}
    return init.get(key, default)


def by_arm(runs, arm) -> dict[str, dict[float, list]]:
    """{arm(run): {lr: [runs, one per seed]}}; runs whose ``arm`` is None are left out."""
    out: dict[str, dict[float, list]] = {}
    for r in runs:
        name = arm(r)
        if name is not None:
            out.setdefault(name, {}).setdefault(float(r.hp["lr"]), []).append(r)
    return out


def mean_curve(runs, tag: str) -> tuple[list[int], list[float]]:
    """The seed mean of ``tag`` at the steps every run logged (a diverged seed makes its steps nan)."""
    series = [dict(zip(*r.series(tag))) for r in runs]
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    return steps, [mean([s[k] for s in series]) for k in steps]


def best(values: list[float], higher: bool) -> float:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan
    return max(finite) if higher else min(finite)


def steps_to(steps, values, target: float, higher: bool) -> float:
    """The first logged step at which the curve reaches ``target`` (inf: never)."""
    for s, v in zip(steps, values):
        if math.isfinite(v) and (v >= target if higher else v <= target):
            return float(s)
    return math.inf


def best_lr(grid: dict[float, list], tag: str, higher: bool) -> tuple[float, float]:
    """(the lr whose seed-mean curve reaches the best value, that value); (nan, nan) if none is finite."""
    scored = [(best(mean_curve(rs, tag)[1], higher), lr) for lr, rs in grid.items()]
    scored = [(v, lr) for v, lr in scored if math.isfinite(v)]
    if not scored:
        return math.nan, math.nan
    value, lr = (max if higher else min)(scored)
    return lr, value


def fastest(grid: dict[float, list], tag: str, target: float, higher: bool) -> tuple[float, float]:
    """(the fewest steps any lr's seed-mean curve takes to reach ``target``, that lr)."""
    found = [(steps_to(*mean_curve(rs, tag), target, higher), lr) for lr, rs in grid.items()]
    return min(found, default=(math.inf, math.nan))


def seed_bests(runs, tag: str, higher: bool) -> list[float]:
    """Each seed run's best value of ``tag`` (nan when it logged nothing finite)."""
    return [best(r.series(tag)[1], higher) for r in runs]


def first_mean(runs, tag: str) -> float:
    """The seed mean of the first logged value (the start the power rule measures from)."""
    return mean([r.first(tag) for r in runs])
