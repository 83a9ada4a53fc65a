"""Second-moment relative error probe (R-AdaZO Fig. 2b, claim R3; docs/algorithms.md §4).

Along the run's own trajectory it keeps, per trainable tensor,

.. math::
    v^*_t = β_2 v^*_{t-1} + (1-β_2)(∇F_t)^2, \\qquad v^{conv}_t = β_2 v^{conv}_{t-1} + (1-β_2)\\hat g_t^2

(v* from the true gradient ∇F_t = ∇f(θ_{t−1}; ξ_t); v^conv is the conventional second moment of
ZO-AdaMM/ZO-RMSProp, R-AdaZO eq. 5, fed with the same ĝ_t stream the rule saw), and logs

- ``rel_error_rule``: ‖v_t − v*_t‖₂/‖v*_t‖₂ for the rule's own v (R-AdaZO's refined v from m², eq. 6);
- ``rel_error_conventional``: the same for v^conv.

R3 says the refined v has the lower error and that its error falls as β2 grows.

Cost and schedule: v* and v^conv are exponential averages over every step, so this probe needs ∇F_t and ĝ_t
at **every** step; ``every_n_steps`` only sets how often it logs. ĝ_t (regenerated from the record) feeds
v^conv at once. ∇F_t is computed in windows: each step stores θ_{t−1} (and keeps its batch), and at a
logging step, when ``window`` points are stored, at a checkpoint and at the end of training, the stored
points' gradients come from one batched call (``gradients.gradients_at``: the task's ``batched_loss`` for the
synthetic functions, ``torch.func.vmap`` otherwise) and v* takes them in order, as a backward at each step
would give it. A loss vmap cannot batch (``.item()``, data-dependent control flow, batches of unequal
shapes) falls back, with a warning, to one backward a step. The window assumes the loss at a stored θ and
batch does not change before the window ends (the task's buffers are read at that time; running
statistics are read only in eval mode, where forwards do not update them). Both averages start at 0 like
the rule's v, use the rule's β2 of each step (``betas[1]``, or ``beta`` for ZO-RMSProp; a fixed ``beta2``
for rules without one) and, for block-wise rules, are updated on the active block only, as the rule's own
state. Its state is saved in checkpoints (``state_dict``, after taking the stored points in).
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_warn

from diagnostics.gradients import gradient_at, gradients_at, trainable
from diagnostics.probe import Probe, step_gradient
from diagnostics.reductions import sq_norm


def rule_beta2(group: dict) -> float | None:
    """The rule's β2 (``betas[1]``, or ``beta`` for ZO-RMSProp), None for a rule without one."""
    if "betas" in group:
        return group["betas"][1]
    return group.get("beta")


def relative_error(v: dict[str, torch.Tensor], v_star: dict[str, torch.Tensor]) -> float:
    """‖v − v*‖₂/‖v*‖₂ over all tensors of v* (nan when v* = 0), tensor by tensor."""
    denom = float(sq_norm(v_star).sqrt())
    diff = sq_norm({n: v[n].double() - v_star[n].double() for n in v_star})
    return float(diff.sqrt()) / denom if denom > 0 else float("nan")


class SecondMomentError(Probe):
    """Relative errors of the rule's v and of the conventional ĝ²-based v against v* (see module doc).

    Cost class: expensive at any interval. ∇F at **every** step (batched over windows, or one backward a
    step above a million parameters) and one ĝ regeneration a step; ``every_n_steps`` only thins the logging.

    Args:
        every_n_steps: log at step 1 and every n-th step (it tracks every step regardless).
        beta2: the β2 of v* and v^conv; None: the rule's β2 of each step (an error for rules without one).
        v_key: the state key of the rule's second moment (``v``).
        window: the most points whose ∇F one batched call computes (None: ``every_n_steps``, capped so
            that the stored copies of θ take at most 64 MB, and 1 for a task of more than a million
            parameters but the synthetic functions, where vmap would hold a window's activations at once;
            1: one backward at each step, shared with the other probes of that step).

    Example (YAML, under ``trainer:``)::

        callbacks:
          - class_path: diagnostics.SecondMomentError
            init_args: {every_n_steps: 10}
    """

    name = "second_moment"
    every_step = True
    window_bytes = 64 * 2**20  # stored θ copies, at most (window=None)
    window_max_params = 10**6  # larger tasks: one backward a step by default (window=None)

    def __init__(self, every_n_steps: int = 100, beta2: float | None = None, v_key: str = "v",
                 window: int | None = None):
        super().__init__(every_n_steps)
        if beta2 is not None and (isinstance(beta2, bool) or not isinstance(beta2, (int, float)) or not 0 <= beta2 < 1):
            raise ValueError(f"invalid beta2: {beta2!r}; allowed: a number in [0, 1) or None (the rule's)")
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise ValueError(f"invalid window: {window!r}; allowed: an integer >= 1 or None")
        self.beta2, self.v_key, self.window = beta2, v_key, window
        self.v_star: dict[str, torch.Tensor] = {}
        self.v_conv: dict[str, torch.Tensor] = {}
        self._size = 1  # the window in use (set at on_train_start)
        self._points: dict[str, torch.Tensor] = {}  # (window, *shape) copies of θ_{t−1}
        self._stored: list[tuple[object, list[tuple[str, float]]]] = []  # (batch, [(name, β2)]) per point
        self._batch = None
        self._module = None

    def check(self, trainer, pl_module):
        group = pl_module.zo_optimizer.param_groups[0]
        if self.beta2 is None and rule_beta2(group) is None:
            raise ValueError(
                f"SecondMomentError: {type(pl_module.zo_optimizer).__name__} has no β2 "
                "(no 'betas' or 'beta'); pass beta2=... to compare against v* anyway"
            )
        if type(pl_module.zo_optimizer).__name__ == "ZOAdaMU":
            rank_zero_warn("SecondMomentError: ZO-AdaMU's v is instantaneous (no state); only the "
                           "conventional v is compared")
        refs = trainable(pl_module.zo_optimizer)
        size = self.window or max(1, min(self.every_n_steps, self.window_bytes // max(
            1, sum(r.param.numel() * r.param.element_size() for r in refs))))
        task = pl_module.task
        big = sum(p.numel() for p in task.parameters()) > self.window_max_params
        if self.window is None and big and not (task.supports_batched and task.batch_free):
            size = 1
        self._module, self._stored, self._size = pl_module, [], size
        self._points = {} if size == 1 else {r.name: r.param.new_empty((size, *r.param.shape)) for r in refs}

    def measure(self, trainer, pl_module, batch, t):
        if self._size == 1:
            self.true_gradient(pl_module, batch, t)
            return
        i = len(self._stored)
        refs = trainable(pl_module.zo_optimizer)
        torch._foreach_copy_([self._points[r.name][i] for r in refs], [r.param.detach() for r in refs])
        self._batch = batch

    def collect(self, trainer, pl_module, batch, t):
        opt = pl_module.zo_optimizer
        record = opt.record
        if not record.skipped:
            active = [(r.name, self.beta2 if self.beta2 is not None else rule_beta2(r.group))
                      for block in record.blocks for r in block.refs]
            _average(self.v_conv, opt.grad_estimate(), active)
            if self._size == 1:
                _average(self.v_star, step_gradient(pl_module, t), active)
            else:
                self._stored.append((self._batch, active))
        self._batch = None
        if self._stored and (len(self._stored) == self._size or self.is_probe_step(t)):
            self._take_in()
        if not self.is_probe_step(t) or not self.v_star:
            return None
        refs = [r for r in trainable(opt) if r.name in self.v_star]
        metrics = {"rel_error_conventional": relative_error(self.v_conv, self.v_star)}
        rule_v = {r.name: opt.state[r.param][self.v_key] for r in refs if self.v_key in opt.state.get(r.param, {})}
        if len(rule_v) == len(refs):
            metrics["rel_error_rule"] = relative_error(rule_v, self.v_star)
        return metrics

    def _take_in(self) -> None:
        """v* through the stored points' gradients, in step order; the store emptied."""
        n, module = len(self._stored), self._module
        points = {name: rows[:n] for name, rows in self._points.items()}
        batches = [b for b, _ in self._stored]
        try:
            grads = gradients_at(module, points, batches)
            rows = [{name: g[i] for name, g in grads.items()} for i in range(n)]
        except Exception as err:  # noqa: BLE001 - any loss vmap cannot batch: fall back, say why
            rank_zero_warn(f"SecondMomentError: cannot batch ∇F over stored points ({type(err).__name__}: "
                           f"{err}); computing it by one backward at each step from now on")
            rows = [gradient_at(module, {name: p[i] for name, p in points.items()}, b) for i, b in enumerate(batches)]
            self._size, self._points = 1, {}
        for grad, (_, active) in zip(rows, self._stored):
            _average(self.v_star, grad, active)
        self._stored = []

    def on_train_end(self, trainer, pl_module):
        if self._stored:
            self._take_in()
        self._points = {}  # the window's θ copies, until the next fit (check() makes them again)

    def state_dict(self):
        if self._stored:  # a checkpoint mid-window: the original run and the resumed one both take in here
            self._take_in()
        return {"v_star": {k: v.cpu() for k, v in self.v_star.items()},
                "v_conv": {k: v.cpu() for k, v in self.v_conv.items()}}

    def load_state_dict(self, state_dict):
        self.v_star = {k: v.clone() for k, v in state_dict["v_star"].items()}
        self.v_conv = {k: v.clone() for k, v in state_dict["v_conv"].items()}
        self._stored = []


def _average(store: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], active: list[tuple[str, float]]) -> None:
    """store[n] ← β2·store[n] + (1−β2)·(g_n·g_n) from 0 for each (n, β2) of ``active``, rounded as
    zolab.kernels.moments rounds it; one foreach call per operation and β2 (tensors of one step share it)."""
    by_beta: dict[float, list[str]] = {}
    for name, beta2 in active:
        by_beta.setdefault(beta2, []).append(name)
        g, v = grads[name], store.get(name)
        if v is None:
            store[name] = torch.zeros_like(g)
        elif v.device != g.device:
            store[name] = v.to(g.device)
    for beta2, names in by_beta.items():
        vs, gs = [store[n] for n in names], [grads[n] for n in names]
        squares = torch._foreach_mul(gs, gs)
        torch._foreach_mul_(squares, 1 - beta2)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_add_(vs, squares)
