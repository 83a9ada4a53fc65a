"""The base of every probe: a Lightning callback, its schedule and logging, and the step's shared ∇F.

A probe is a Lightning ``Callback`` on a ``zolab.lab.module.ZOModule``. Step t of the optimizer estimates
ĝ_t at θ_{t−1} on batch ξ_t, so the probe measures before the update, in ``on_train_batch_start``
(callbacks run before the module's own hook), and reads the optimizer's step record in
``on_train_batch_end``. Its measurements must never change the run: extra work runs under
``diagnostics.guards`` (forked RNG, the ZO forwards' mode, buffers and parameters restored bitwise), gradients
come from ``diagnostics.gradients`` (autograd; ``p.grad`` is never written) and sums from
``diagnostics.reductions`` (float64).

The true gradient ∇F_t = ∇f(θ_{t−1}; ξ_t) is computed once per step and shared by the probes of that
step: the first probe that asks for it computes it, each probe that asked releases it after its
``collect``, and the last release frees it, so no probe depends on the others' order or presence (alone,
in any order, or bundled in a ``diagnostics.presets.ProbeSet``). The shared data of a module's probes lives
in a context keyed weakly by the module (``context``). Metrics go to every logger of the trainer
(``logger.log_metrics``) under ``diagnostics/<probe>/<name>``, at x = t − 1, the x at which Lightning logs
the same step's ``train/loss`` (the point θ_{t−1} the step and the probe measure). A probe runs at step 1
and at every step t with t % ``every_n_steps`` == 0.
"""

from __future__ import annotations

import time
import weakref
from contextlib import contextmanager

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from diagnostics.gradients import gradient
from diagnostics.reductions import sq_sum


def _check_every(every_n_steps) -> int:
    if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
        raise ValueError(f"invalid every_n_steps: {every_n_steps!r}; allowed: an integer >= 1")
    return every_n_steps


class _StepContext:
    """Per-module scratch shared by the probes of one step: the true gradient, the probes holding it, and
    the probes' own time so far."""

    def __init__(self):
        self.step = -1
        self.gradient: dict[str, torch.Tensor] | None = None
        self.gradient_sq: dict[str, float] | None = None  # ‖∇_n F‖² per tensor name, computed on first use
        self.holders: set[int] = set()  # ids of the probes that asked for this step's gradient
        self.probe_seconds = 0.0

    def reset(self) -> None:
        self.step, self.gradient, self.gradient_sq, self.holders = -1, None, None, set()

    def release(self, holder) -> None:
        """``holder`` is done with the step's gradient; the last one frees it (d numbers) until the next step."""
        self.holders.discard(id(holder))
        if not self.holders:
            self.gradient = self.gradient_sq = None


_CONTEXTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def context(pl_module) -> _StepContext:
    ctx = _CONTEXTS.get(pl_module)
    if ctx is None:
        ctx = _CONTEXTS[pl_module] = _StepContext()
    return ctx


def true_gradient(pl_module, batch, step: int, holder=None) -> dict[str, torch.Tensor]:
    """∇f(θ_{t−1}; ξ_t) per trainable tensor name, by autograd on the same batch, computed once per step;
    ``holder`` (the asking probe) keeps it until it calls ``context(pl_module).release(holder)``."""
    ctx = context(pl_module)
    if holder is not None:
        if ctx.step != step:
            ctx.holders = set()  # holders of an earlier step that never released it (a skipped batch)
        ctx.holders.add(id(holder))
    if ctx.step != step or ctx.gradient is None:
        ctx.gradient = gradient(pl_module, batch)
        ctx.step, ctx.gradient_sq = step, None
    return ctx.gradient


def step_gradient(pl_module, step: int) -> dict[str, torch.Tensor]:
    """The ∇F of ``step`` computed by ``true_gradient`` before the update (after it, θ has moved)."""
    ctx = context(pl_module)
    if ctx.step != step or ctx.gradient is None:
        raise RuntimeError(f"no true gradient was computed before step {step}: call true_gradient in measure()")
    return ctx.gradient


def gradient_sq(pl_module, step: int) -> dict[str, float]:
    """‖∇_n F‖² per trainable tensor name of ``step``'s true gradient, computed once for the step's probes."""
    grad, ctx = step_gradient(pl_module, step), context(pl_module)
    if ctx.gradient_sq is None:
        ctx.gradient_sq = {n: float(sq_sum(g)) for n, g in grad.items()}
    return ctx.gradient_sq


class Probe(Callback):
    """Base of every probe: subclasses set ``name`` and implement ``measure`` (before the step, at probe
    steps) and/or ``collect`` (after it); ``every_step`` probes see every step and log at probe steps."""

    name = "probe"
    every_step = False  # True: measure/collect run at every step (stateful probes), logging at probe steps

    def __init__(self, every_n_steps: int = 100):
        super().__init__()
        self.every_n_steps = _check_every(every_n_steps)
        self.last_metrics: dict[str, float] = {}
        self._pending: int | None = None  # the step measured in on_train_batch_start
        self._optimizer = None  # the module's zolab optimizer (set at on_train_start)

    def is_probe_step(self, t: int) -> bool:
        return t == 1 or t % self.every_n_steps == 0

    # ------------------------------------------------------------------ validation
    def check(self, trainer: L.Trainer, pl_module) -> None:
        """Probe-specific checks (raise ValueError/TypeError with what is allowed)."""

    @override
    def on_train_start(self, trainer, pl_module):
        for attr in ("zo_optimizer", "compute_loss", "task"):
            if not hasattr(pl_module, attr):
                raise TypeError(
                    f"{type(self).__name__} probes a zolab.lab.module.ZOModule; "
                    f"{type(pl_module).__name__} has no {attr!r}"
                )
        if getattr(pl_module, "steps_per_batch", 1) != 1:
            raise ValueError(f"{type(self).__name__} reads every ZO step's record: it needs steps_per_batch=1, "
                             f"got {pl_module.steps_per_batch}")
        context(pl_module).reset()  # nothing from an earlier fit
        self._optimizer = pl_module.zo_optimizer
        self.check(trainer, pl_module)

    # ------------------------------------------------------------------ hooks
    def measure(self, trainer, pl_module, batch, t: int) -> None:
        """At θ_{t−1}, before step t."""

    def collect(self, trainer, pl_module, batch, t: int) -> dict[str, float] | None:
        """After step t (``pl_module.zo_optimizer.record``); returns the metrics to log at probe steps."""
        return None

    def true_gradient(self, pl_module, batch, t: int) -> dict[str, torch.Tensor]:
        """The step's ∇F (``probe.true_gradient``), held by this probe until its ``collect`` is done."""
        return true_gradient(pl_module, batch, t, holder=self)

    @override
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        t = self._optimizer.zo["step"] + 1
        if not (self.every_step or self.is_probe_step(t)):
            self._pending = None
            return
        with self._timed(pl_module):
            self.measure(trainer, pl_module, batch, t)
        self._pending = t

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        t, self._pending = self._pending, None
        if t is None:
            return
        record = self._optimizer.record
        if record is not None and record.step == t:
            with self._timed(pl_module):
                metrics = self.collect(trainer, pl_module, batch, t)
                if metrics and self.is_probe_step(t):
                    self.log_metrics(trainer, metrics, t)
        context(pl_module).release(self)

    @contextmanager
    def _timed(self, pl_module):
        start = time.perf_counter()
        try:
            yield
        finally:
            context(pl_module).probe_seconds += time.perf_counter() - start

    def log_metrics(self, trainer, metrics: dict[str, float], t: int) -> None:
        """To every logger, under ``diagnostics/<name>/``, at x = t − 1 (Lightning's x for step t)."""
        values = {k: float(v) for k, v in metrics.items()}
        self.last_metrics = values
        prefixed = {f"diagnostics/{self.name}/{k}": v for k, v in values.items()}
        for logger in trainer.loggers:
            logger.log_metrics(prefixed, step=t - 1)
