"""Curvature tracking probe (HiZOO claim HZ2; docs/algorithms.md §3.12): does a rule's diagonal Hessian estimate
follow the task's exact diag ∇²f?

At probe steps (after the update) it logs

- ``spearman``: Spearman's rank correlation between the rule's state ``H`` (HiZOO's estimate of diag ∇²f,
  every trainable tensor flattened and joined) and the task's exact ``hessian_diagonal()``, same order;
- ``h_min``, ``h_median``, ``h_max``: the range of H.

It reads state and a constant of the task, nothing else: no forward, no RNG, the run unchanged.
"""

from __future__ import annotations

import torch

from diagnostics.gradients import trainable
from diagnostics.probe import Probe


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n−1 (ties in order: the joined float64 values of H and of diag ∇²f hardly ever tie)."""
    out = torch.empty_like(x)
    out[x.argsort()] = torch.arange(len(x), dtype=x.dtype)
    return out


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    rx, ry = _ranks(x.double()), _ranks(y.double())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / (rx.norm() * ry.norm()))


class HessianTracking(Probe):
    """Spearman(H, exact diag ∇²f) and H's range (see module doc).

    Cost class: free (one sort of d numbers a probe step). Needs a rule with a state ``H`` per trainable
    tensor (``zolab.HiZOO``) and a task with ``hessian_diagonal()`` (``zolab.tasks.proxies.HeteroCurvature``).

    Example (YAML, under ``trainer:``)::

        callbacks:
          - class_path: diagnostics.curvature.HessianTracking
            init_args: {every_n_steps: 500}
    """

    name = "hessian_tracking"

    def check(self, trainer, pl_module):
        if not callable(getattr(pl_module.task, "hessian_diagonal", None)):
            raise TypeError(f"HessianTracking needs a task with hessian_diagonal(); {type(pl_module.task).__name__} "
                            "has none (e.g. zolab.tasks.proxies.HeteroCurvature has)")
        opt = pl_module.zo_optimizer
        self._exact = {n: d.detach().flatten() for n, d in pl_module.task.hessian_diagonal().items()}
        missing = [r.name for r in trainable(opt) if r.name not in self._exact]
        if missing:
            raise ValueError(f"HessianTracking: hessian_diagonal() has no entry for {missing}; it has "
                             f"{sorted(self._exact)}")

    def collect(self, trainer, pl_module, batch, t):
        opt = pl_module.zo_optimizer
        refs = trainable(opt)
        if any("H" not in opt.state[r.param] for r in refs):
            raise TypeError(f"HessianTracking needs a rule with a state 'H'; {type(opt).__name__} keeps none")
        h = torch.cat([opt.state[r.param]["H"].detach().flatten().double().cpu() for r in refs])
        exact = torch.cat([self._exact[r.name].double().cpu() for r in refs])
        return {"spearman": spearman(h, exact), "h_min": float(h.min()), "h_median": float(h.median()),
                "h_max": float(h.max())}
