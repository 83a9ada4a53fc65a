"""ZO-RMSProp, the R-AdaZO baseline (Shu et al., ICML 2025; ALGORITHMS.md §3.5).

.. math:: v_t = β v_{t-1} + (1-β) \\hat g_t^2,\\qquad θ_t = θ_{t-1} - η\\, \\hat g_t/(\\sqrt{v_t} + ζ)

Defaults: sphere directions, forward estimator, β = 0.99, ζ = 1e-8; ``eps_inside_sqrt`` as in ZO-AdaMM.
"""

import torch

from zolab.rules.adamm import denominator
from zolab.rules.base import ZOOptimizer, _check_range


class ZORMSProp(ZOOptimizer):
    """Args: lr (1e-3), mu (1e-3), beta (0.99), eps (1e-8), weight_decay (0), eps_inside_sqrt (False)."""

    static_options = ("eps_inside_sqrt",)

    def __init__(self, params, lr=1e-3, mu=1e-3, beta=0.99, eps=1e-8, weight_decay=0.0,
                 eps_inside_sqrt=False, estimator="forward", directions="sphere", **options):
        defaults = dict(lr=lr, mu=mu, beta=beta, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, estimator=estimator, directions=directions, **options)
        self.eps_inside_sqrt = eps_inside_sqrt

    def _check_group(self, g):
        super()._check_group(g)
        _check_range("beta", g["beta"], 0.0, 1.0)

    def _fused_moments(self, ref, state):
        if not state:
            state["v"] = self._moment_zeros(ref)
        return dict(m=None, v=state["v"], mode="rmsprop", beta1=0.0, beta2=ref.group["beta"],
                    eps=ref.group["eps"], eps_inside_sqrt=self.eps_inside_sqrt, v_fill=False)

    def _update(self, ref, g, state):
        beta = ref.group["beta"]
        if not state:
            state["v"] = torch.zeros_like(g)
        state["v"].mul_(beta).addcmul_(g, g, value=1 - beta)
        return g.div_(denominator(state["v"], ref.group["eps"], self.eps_inside_sqrt))
