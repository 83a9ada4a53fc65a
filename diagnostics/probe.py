"""What every probe shares (docs/algorithms.md §4): scheduling, the true gradient, side-effect guards, logging.

A probe is a Lightning ``Callback`` on a ``zolab.lab.module.ZOModule``. Step t of the optimizer estimates
ĝ_t at θ_{t−1} on batch ξ_t, so the probe measures before the update, in ``on_train_batch_start``
(callbacks run before the module's own hook), and reads the optimizer's step record in
``on_train_batch_end``. Its measurements must never change the run; ``untouched`` guarantees that for
extra forwards and backwards:

- the CPU RNG and the CUDA RNG of the parameters' devices are forked and restored (``torch.random.fork_rng``);
- the task is put in the train/eval mode the ZO forwards use (``pl_module.zo_dropout``) and every
  submodule's mode is restored afterwards; buffers (BatchNorm statistics) are restored when it ran in
  train mode;
- gradients come from ``torch.autograd.grad`` (``p.grad`` is never written); perturbed points are made by
  pointing ``p.data`` at a new tensor and back (bitwise restore).

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
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten
from typing_extensions import override


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


def trainable(opt) -> list:
    """The optimizer's trainable tensors as ``ParamRef`` s, in its order (names match ``grad_estimate``)."""
    return [r for _, refs in opt.partition() for r in refs]


@contextmanager
def untouched(pl_module) -> Iterator[None]:
    """Run extra forwards/backwards on ``pl_module.task`` with no effect on the run (see module doc)."""
    task = pl_module.task
    modes = [(m, m.training) for m in task.modules()]
    zo_mode = bool(getattr(pl_module, "zo_dropout", False))
    buffers = [(b, b.detach().clone()) for b in task.buffers()] if zo_mode else []
    devices = sorted({p.device.index or 0 for p in task.parameters() if p.device.type == "cuda"})
    try:
        task.train(zo_mode)
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for m, mode in modes:
            m.training = mode


def true_gradient(pl_module, batch, step: int, holder=None) -> dict[str, torch.Tensor]:
    """∇f(θ_{t−1}; ξ_t) per trainable tensor name, by autograd on the same batch, computed once per step;
    ``holder`` (the asking probe) keeps it until it calls ``context(pl_module).release(holder)``."""
    ctx = context(pl_module)
    if holder is not None:
        if ctx.step != step:
            ctx.holders = set()  # holders of an earlier step that never released it (a skipped batch)
        ctx.holders.add(id(holder))
    if ctx.step != step or ctx.gradient is None:
        refs = trainable(pl_module.zo_optimizer)
        with untouched(pl_module), torch.enable_grad():
            loss = pl_module.compute_loss(batch)
            grads = torch.autograd.grad(loss, [r.param for r in refs], allow_unused=True)
        ctx.step, ctx.gradient_sq = step, None
        ctx.gradient = {
            r.name: (torch.zeros_like(r.param) if g is None else g.detach()) for r, g in zip(refs, grads)
        }
    return ctx.gradient


class _LossOf(nn.Module):
    """``task.loss`` as a forward, for ``torch.func.functional_call``."""

    def __init__(self, task):
        super().__init__()
        self.task = task

    def forward(self, batch):
        return self.task.loss(batch)


def _stack_batches(batches: list):
    """(stacked batch, vmap in_dim): (None, None) when no batch carries a tensor; ValueError when the
    batches differ in structure or shape (the last, smaller batch of an epoch, say)."""
    flat = [tree_flatten(b) for b in batches]
    leaves, spec = flat[0]
    if not any(isinstance(x, torch.Tensor) for x in leaves):
        return None, None
    if any(s != spec for _, s in flat) or not all(isinstance(x, torch.Tensor) for x in leaves):
        raise ValueError("batches of different structure, or with non-tensor leaves")
    if any(x.shape != y.shape for other, _ in flat for x, y in zip(other, leaves)):
        raise ValueError("batches of different shapes")
    return tree_unflatten([torch.stack(col) for col in zip(*(f for f, _ in flat))], spec), 0


def gradients_at(pl_module, points: dict[str, torch.Tensor], batches: list) -> dict[str, torch.Tensor]:
    """∇f(θ_i; ξ_i) for n stored points (per trainable tensor name, shape (n, *shape)) and their batches, in
    one batched call: the task's ``batched_loss`` for a one-tensor batch-free task (its rows are
    independent), else ``torch.func.vmap`` over the gradient of ``task.loss`` (dropout masks drawn per row).
    The task's buffers are read as they are now. Raises what vmap raises for a loss it cannot batch."""
    task, refs = pl_module.task, trainable(pl_module.zo_optimizer)
    with untouched(pl_module), torch.enable_grad():
        if task.supports_batched and task.batch_free and len(refs) == 1:
            x = points[refs[0].name].detach().requires_grad_()
            return {refs[0].name: torch.autograd.grad(task.batched_loss(x, batches[0]).sum(), x)[0]}
        names = {id(p): "task." + n for n, p in task.named_parameters()}
        keys = {r.name: names[id(r.param)] for r in refs}
        module = _LossOf(task)

        def loss(params, batch):
            return functional_call(module, {keys[n]: v for n, v in params.items()}, (batch,))

        stacked, in_dim = _stack_batches(batches)
        return vmap(grad(loss), in_dims=(0, in_dim), randomness="different")(
            {r.name: points[r.name] for r in refs}, stacked)


@contextmanager
def parameters_at(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """Each parameter's ``data`` pointed at its given tensor, and back: a bitwise restore, also on error."""
    saved = [(p, p.data) for p, _ in pairs]
    try:
        for p, data in pairs:
            p.data = data
        yield
    finally:
        for p, data in saved:
            p.data = data


def gradient_at(pl_module, point: dict[str, torch.Tensor], batch) -> dict[str, torch.Tensor]:
    """∇f(θ; ξ) at a stored point θ (per trainable tensor name) by one backward."""
    refs = trainable(pl_module.zo_optimizer)
    with parameters_at([(r.param, point[r.name]) for r in refs]), untouched(pl_module), torch.enable_grad():
        grads = torch.autograd.grad(pl_module.compute_loss(batch), [r.param for r in refs], allow_unused=True)
    return {r.name: torch.zeros_like(point[r.name]) if g is None else g.detach() for r, g in zip(refs, grads)}


def step_gradient(pl_module, step: int) -> dict[str, torch.Tensor]:
    """The ∇F of ``step`` computed by ``true_gradient`` before the update (after it, θ has moved)."""
    ctx = context(pl_module)
    if ctx.step != step or ctx.gradient is None:
        raise RuntimeError(f"no true gradient was computed before step {step}: call true_gradient in measure()")
    return ctx.gradient


PIECE = 1 << 16  # float64 copies in cache-sized pieces on a CPU: a whole large tensor's copy is slower


def _pieces(t: torch.Tensor):
    flat = t.reshape(-1)
    return flat.split(PIECE) if flat.device.type == "cpu" else (flat,)


def _zero(t: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), dtype=torch.float64, device=t.device)


def sq_sum(t: torch.Tensor) -> torch.Tensor:
    """‖t‖² in float64 (a 0-dim tensor on t's device)."""
    acc = _zero(t)
    for p in _pieces(t):
        p = p.double()
        acc += torch.dot(p, p)
    return acc


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """⟨a, b⟩ in float64 (a 0-dim tensor on a's device)."""
    acc = _zero(a)
    for x, y in zip(_pieces(a), _pieces(b)):
        acc += torch.dot(x.double(), y.double())
    return acc


def sq_sum_and_dot(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(‖a‖², ⟨a, b⟩) in float64 in one pass over a (each piece of a widened once)."""
    aa, ab = _zero(a), _zero(a)
    for x, y in zip(_pieces(a), _pieces(b)):
        x = x.double()
        aa += torch.dot(x, x)
        ab += torch.dot(x, y.double())
    return aa, ab


def sq_norm(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ ‖t‖² over a dict of tensors, in float64, tensor by tensor (no d-sized concatenation)."""
    return sum((sq_sum(t) for t in tensors.values()), torch.zeros((), dtype=torch.float64))


def inner(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ ⟨a_n, b_n⟩ over the names both hold (a missing tensor counts as zero), in float64."""
    return sum((dot(a[n], b[n]) for n in a if n in b), torch.zeros((), dtype=torch.float64))


def cosine(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], b_sq: float | None = None) -> float:
    """⟨a, b⟩/(‖a‖‖b‖) over all tensors (missing ones are zero), nan when either is zero; ``b_sq``: ‖b‖²
    when the caller has it (``gradient_sq``)."""
    return cosine_from_sums(inner(a, b), sq_norm(a), sq_norm(b) if b_sq is None else b_sq)


def cosine_from_sums(ab, a_sq, b_sq) -> float:
    """⟨a, b⟩/(‖a‖‖b‖) from the three sums, nan when either norm is zero."""
    denom = float(a_sq) * float(b_sq)
    return float(ab) / denom**0.5 if denom > 0 else float("nan")


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
