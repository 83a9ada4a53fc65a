"""ZO-SGD with momentum, ZO-Bench's ZO-SGD-MMT (docs/algorithms.md §3.2)."""

from zolab.engine.checks import check_range
from zolab.rules.base import ZOOptimizer


class ZOSGDMomentum(ZOOptimizer):
    """ZO-SGD-MMT (Zhang et al., ZO-Bench, ICML 2024), in ``torch.optim.SGD``'s momentum form.

    Update::

        b_t = γ b_{t−1} + ĝ_t,    θ_t = θ_{t−1} − η b_t        (b_0 = 0)

    One d-sized buffer (``momentum_buffer``) per trainable tensor.

    Args: lr (1e-3), mu (1e-3), momentum γ (0.9), weight_decay (0); Gaussian central estimator.
    """

    label = "ZO-SGD-MMT"  # the name tables and figures print

    def __init__(self, params, lr=1e-3, mu=1e-3, momentum=0.9, weight_decay=0.0, **options):
        options.setdefault("estimator", "central")
        options.setdefault("directions", "gaussian")
        super().__init__(params, dict(lr=lr, mu=mu, momentum=momentum, weight_decay=weight_decay), **options)

    def _check_group(self, g):
        super()._check_group(g)
        check_range("momentum", g["momentum"], 0.0, 1.0)

    def update(self, e, h):
        b = h.momentum * e.momentum_buffer + e.g
        return b, {"momentum_buffer": b}
