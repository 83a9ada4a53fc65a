"""Window alignment probe (SubZero's claim SZ1 (a); docs/algorithms.md §4 "Alignment"): how well the estimates of a
window of steps add up to the window's true gradient.

Over consecutive windows W = {kw + 1, …, (k + 1)w} of ``window`` steps (SubZero's T₀ windows when w = T₀) logs

- ``cos``: cos(Σ_{t∈W} ĝ_t, Σ_{t∈W} ∇F_t), the window's summed estimate against its summed true gradient (for a
  rule without momentum at a fixed η, Σ ĝ_t is the window's movement over −η);
- ``cos_step``: the mean over the window of the per-step cos(ĝ_t, ∇F_t) (``GradientAlignment``'s ``cos_g``).

A subspace kept over the window can add up better than fresh directions although each step's cosine is the same in
expectation: the gap between ``cos`` and ``cos_step`` measures that reuse. ∇F_t = ∇f(θ_{t−1}; ξ_t) as in
``GradientAlignment``. A window is logged (at x = its last step − 1) only when all its steps were seen: a run resumed
mid-window logs from the next full window.
"""

from __future__ import annotations

from diagnostics.probe import Probe, _check_every, step_gradient
from diagnostics.reductions import cosine


class WindowAlignment(Probe):
    """cos of a window's summed estimates with its summed true gradients, every ``window`` steps.

    Cost class: every step. One backward per step (∇F_t) and ĝ_t built once per step; memory: two accumulators of
    the trainable tensors' size (float64).

    Args:
        window: the window length w in steps (≥ 2), e.g. SubZero's T₀.

    Example (YAML, under ``trainer:``)::

        callbacks:
          - class_path: diagnostics.window_alignment.WindowAlignment
            init_args: {window: 250}
    """

    name = "window_alignment"
    every_step = True

    def __init__(self, window: int = 100):
        super().__init__(every_n_steps=_check_every(window))
        if window < 2:
            raise ValueError(f"invalid window: {window!r}; allowed: an integer >= 2")
        self.window = window
        self._sums: tuple[dict, dict] | None = None
        self._first = self._steps = 0
        self._cos_steps: list[float] = []

    def is_probe_step(self, t: int) -> bool:
        return t % self.window == 0

    def measure(self, trainer, pl_module, batch, t):
        self.true_gradient(pl_module, batch, t)

    def collect(self, trainer, pl_module, batch, t):
        opt = pl_module.zo_optimizer
        if (t - 1) % self.window == 0:  # a window starts
            self._sums, self._first, self._steps, self._cos_steps = ({}, {}), t, 0, []
        if self._sums is None or opt.record.skipped:
            return None
        grad, g_hat = step_gradient(pl_module, t), opt.grad_estimate()
        sum_hat, sum_grad = self._sums
        for name, g in grad.items():
            h = g_hat[name].double() if name in g_hat else g.new_zeros(g.shape, dtype=g.dtype).double()
            sum_grad[name] = sum_grad[name].add_(g.double()) if name in sum_grad else g.double().clone()
            sum_hat[name] = sum_hat[name].add_(h) if name in sum_hat else h.clone()
        self._cos_steps.append(cosine(g_hat, grad))
        self._steps += 1
        if t % self.window or self._steps != self.window or self._first != t - self.window + 1:
            return None
        metrics = {"cos": cosine(sum_hat, sum_grad), "cos_step": sum(self._cos_steps) / len(self._cos_steps)}
        self._sums = None
        return metrics
