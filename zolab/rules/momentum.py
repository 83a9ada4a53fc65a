"""ZO-SGD with momentum, ZO-Bench's "ZO-SGD-MMT" (Zhang et al., ICML 2024; ALGORITHMS.md §3.2).

.. math:: b_t = γ b_{t-1} + \\hat g_t, \\qquad θ_t = θ_{t-1} - η b_t

(the ``torch.optim.SGD`` momentum form). One d-sized buffer per trainable tensor.
"""

from zolab.rules.base import ZOOptimizer, _check_range


class ZOSGDMomentum(ZOOptimizer):
    """Args: lr (1e-3), mu (1e-3), momentum γ (0.9), weight_decay (0); Gaussian central estimator."""

    def __init__(self, params, lr=1e-3, mu=1e-3, momentum=0.9, weight_decay=0.0, **options):
        options.setdefault("estimator", "central")
        options.setdefault("directions", "gaussian")
        super().__init__(params, dict(lr=lr, mu=mu, momentum=momentum, weight_decay=weight_decay), **options)

    def _check_group(self, g):
        super()._check_group(g)
        _check_range("momentum", g["momentum"], 0.0, 1.0)

    def _update(self, ref, g, state):
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = g.clone()  # γ·0 + g
        else:
            state["momentum_buffer"].mul_(ref.group["momentum"]).add_(g)
        return state["momentum_buffer"]
