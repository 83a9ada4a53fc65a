"""Schedules for lr, β and α: pure functions of the step t = 1, 2, ... (docs/algorithms.md §3.8).

Any hyper-parameter of any rule (``lr``, each entry of ``betas``, ZO-AdaMU's ``alpha``) takes a float or a
``Schedule``, so ablations swap them from a config (``class_path: zolab.engine.schedules.Cosine``). A schedule
has no mutable counter: the optimizer asks for ``schedule(t)``, so every tensor and model sees the same
value and a resumed run continues exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class Schedule:
    def __call__(self, t: int) -> float:
        raise NotImplementedError


def value_at(x: float | Schedule, t: int) -> float:
    """``x(t)`` for a schedule, ``x`` itself for a constant."""
    return float(x(t)) if isinstance(x, Schedule) else x


def is_scheduled(v) -> bool:
    """A hyper-parameter value that holds a schedule (``lr=Cosine(...)``, ``betas=(Linear(...), 0.99)``)."""
    return isinstance(v, Schedule) or (isinstance(v, tuple) and any(isinstance(x, Schedule) for x in v))


def resolve(v, t: int):
    """A hyper-parameter's value at step t (each entry of a tuple such as ``betas``)."""
    return tuple(value_at(x, t) for x in v) if isinstance(v, tuple) else value_at(v, t)


def current_values(names, group: dict) -> dict[str, float]:
    """The scheduled hyper-parameters ``names`` as ``group`` holds them now, flat (``betas`` as betas1, betas2)."""
    out = {}
    for k in names:
        values = group[k]
        if isinstance(values, tuple):
            out.update({f"{k}{i + 1}" if k == "betas" else f"{k}{i}": x for i, x in enumerate(values)})
        else:
            out[k] = values
    return out


@dataclass(frozen=True)
class Constant(Schedule):
    value: float

    def __call__(self, t: int) -> float:
        return self.value


@dataclass(frozen=True)
class Linear(Schedule):
    """From ``start`` at t = 1 to ``end`` at t = ``steps``, then held."""

    start: float
    end: float
    steps: int

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"Linear: steps must be >= 1, got {self.steps}")

    def __call__(self, t: int) -> float:
        frac = min(1.0, max(0.0, (t - 1) / max(1, self.steps - 1)))
        return self.start + (self.end - self.start) * frac


@dataclass(frozen=True)
class Cosine(Schedule):
    """Half-cosine from ``start`` at t = 1 to ``end`` at t = ``steps`` (after ``warmup`` linear steps)."""

    start: float
    end: float
    steps: int
    warmup: int = 0

    def __post_init__(self):
        if self.steps < 1 or not 0 <= self.warmup < self.steps:
            raise ValueError(f"Cosine: need steps >= 1 and 0 <= warmup < steps, got {self.steps}, {self.warmup}")

    def __call__(self, t: int) -> float:
        if t <= self.warmup:
            return self.start * t / self.warmup
        frac = min(1.0, max(0.0, (t - 1 - self.warmup) / max(1, self.steps - 1 - self.warmup)))
        return self.end + 0.5 * (self.start - self.end) * (1 + math.cos(math.pi * frac))


@dataclass(frozen=True)
class ThreePhase(Schedule):
    """ZO-AdaMU's annealing (Jiang et al., AAAI 2024, eq. 7; docs/algorithms.md §3.8).

    - t < t1: 1 (warm-up);
    - t1 <= t < t2: 0.5 + 0.5 cos(π min(1, (t - t1)/L_t)), L_t = T - φ (T - t2)(t - t1)/(t2 - t1) **[open]**
      (the paper lost the numerator; this reading matches the authors' decrement), the argument clamped to
      [0, π], the value kept >= ``floor``;
    - t >= t2: ``final="hold"`` (default, the code's behaviour) keeps the last phase-2 value;
      ``final="paper_prose"`` uses ``final_value`` (the paper's prose: α 0.5, β1 0.9, β2 0.01).

    ``t2`` defaults to ⌊0.8 T⌋. Raises unless t2 > t1 and L_t > 0 throughout phase 2.
    """

    total_steps: int
    phi: float = 1.0
    t1: int = 1024
    t2: int | None = None
    floor: float = 0.0
    final: str = "hold"
    final_value: float | None = None

    def __post_init__(self):
        if self.total_steps < 1:
            raise ValueError(f"ThreePhase: total_steps must be >= 1, got {self.total_steps}")
        t2 = self.end_of_phase2
        if not t2 > self.t1:
            raise ValueError(f"ThreePhase: need t2 > t1, got t1={self.t1}, t2={t2} (T={self.total_steps})")
        if self.total_steps - self.phi * (self.total_steps - t2) <= 0:
            raise ValueError(
                f"ThreePhase: L_t reaches {self.total_steps - self.phi * (self.total_steps - t2)} <= 0 with "
                f"T={self.total_steps}, t2={t2}, phi={self.phi}; allowed: T - phi (T - t2) > 0"
            )
        if self.final not in ("hold", "paper_prose"):
            raise ValueError(f"ThreePhase: unknown final {self.final!r}; allowed: 'hold', 'paper_prose'")
        if self.final == "paper_prose" and self.final_value is None:
            raise ValueError("ThreePhase: final='paper_prose' needs final_value")

    @property
    def end_of_phase2(self) -> int:
        return self.t2 if self.t2 is not None else int(0.8 * self.total_steps)

    def _phase2(self, t: int) -> float:
        T, t1, t2 = self.total_steps, self.t1, self.end_of_phase2
        length = T - self.phi * (T - t2) * (t - t1) / (t2 - t1)
        angle = math.pi * min(1.0, (t - t1) / length)
        return max(self.floor, 0.5 + 0.5 * math.cos(angle))

    def __call__(self, t: int) -> float:
        if t < self.t1:
            return 1.0
        t2 = self.end_of_phase2
        if t < t2:
            return self._phase2(t)
        return self._phase2(t2 - 1) if self.final == "hold" else float(self.final_value)


ADAMU_RATES = {"alpha": 1.0, "beta1": 0.1, "beta2": 1.5}
ADAMU_FLOORS = {"alpha": 0.0, "beta1": 0.0, "beta2": 0.01}
ADAMU_PROSE_FINALS = {"alpha": 0.5, "beta1": 0.9, "beta2": 0.01}


def adamu_schedules(total_steps: int, t1: int = 1024, t2: int | None = None, final: str = "hold"):
    """(α, β1, β2) three-phase schedules with the paper's rates φ = (1.0, 0.1, 1.5) and floors (0, 0, 0.01)."""
    return tuple(
        ThreePhase(total_steps, ADAMU_RATES[k], t1, t2, ADAMU_FLOORS[k], final, ADAMU_PROSE_FINALS[k])
        for k in ("alpha", "beta1", "beta2")
    )
