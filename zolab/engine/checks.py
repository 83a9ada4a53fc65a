"""Argument checks shared by the optimizer and the rules: each error names the value and what is allowed."""

from __future__ import annotations

import math

from zolab.engine.schedules import Schedule


def check_range(name: str, value, lo: float, hi: float, hi_open: bool = True, lo_open: bool = False) -> None:
    """A number in [lo, hi) (or the given open/closed ends); a ``Schedule`` passes (checked when it runs)."""
    if isinstance(value, Schedule):
        return
    bad = not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value)
    bad = bad or value < lo or (lo_open and value == lo) or value > hi or (hi_open and value == hi)
    if bad:
        lo_s = "(" if lo_open else "["
        hi_s = ")" if hi_open else "]"
        raise ValueError(f"invalid {name}: {value!r}; allowed: a number in {lo_s}{lo}, {hi}{hi_s}")


def check_int(name: str, value, lo: int, hi: int | None = None) -> None:
    """An integer (not a bool) >= lo (and < hi)."""
    bad = isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value >= hi)
    if bad:
        top = "2**64" if hi == 2**64 else hi
        allowed = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {top})"
        raise ValueError(f"invalid {name}: {value!r}; allowed: {allowed}")


def check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {list(allowed)}")


def check_betas(group: dict, hi_open: bool = True) -> None:
    """``betas``, when the group has them: two numbers in [0, 1) (or [0, 1])."""
    if "betas" not in group:
        return
    betas = group["betas"]
    if not isinstance(betas, tuple | list) or len(betas) != 2:
        raise ValueError(f"invalid betas: {betas!r}; allowed: two numbers (beta1, beta2)")
    for i, b in enumerate(betas):
        check_range(f"betas[{i}]", b, 0.0, 1.0, hi_open=hi_open)


def check_step(rule: str, closure, batched, evaluators: dict, scheme) -> None:
    """A step's arguments: callables, a closure unless a batched objective is given, and only evaluators the
    difference scheme reads (``scheme.evaluators``)."""
    if batched is not None and not callable(batched):
        raise TypeError(f"batched must be a function of the stacked points, got {batched!r}")
    if batched is None and (closure is None or not callable(closure)):
        raise TypeError(f"{rule}.step needs a closure that returns the loss, got {closure!r}")
    unknown = sorted(set(evaluators) - set(scheme.evaluators))
    if unknown:
        raise TypeError(f"{rule}.step got evaluators {unknown} that estimator {scheme.name!r} does not read; "
                        f"allowed: {list(scheme.evaluators)}")
    bad = [k for k, f in evaluators.items() if not callable(f)]
    if bad:
        raise TypeError(f"{rule}.step: evaluators {bad} must be functions like the closure (or batched objective)")
