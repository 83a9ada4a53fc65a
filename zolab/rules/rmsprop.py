"""ZO-RMSProp, R-AdaZO's baseline: RMSProp on the ZO estimate (docs/algorithms.md §3.5)."""

from zolab.engine.checks import check_range
from zolab.rules.adamm import denominator
from zolab.rules.base import ZOOptimizer


class ZORMSProp(ZOOptimizer):
    """ZO-RMSProp (the baseline of Shu et al., ICML 2025).

    Update::

        v_t = β v_{t−1} + (1 − β) ĝ_t²,    θ_t = θ_{t−1} − η ĝ_t / (√v_t + ζ)

    Defaults: sphere directions, forward estimator, β = 0.99, ζ = 1e-8; ``eps_inside_sqrt`` as in ZO-AdaMM.

    Args: lr (1e-3), mu (1e-3), beta (0.99), eps (1e-8), weight_decay (0), eps_inside_sqrt (False).
    """

    label = "ZO-RMSProp"  # the name tables and figures print

    squared_state = ("v",)  # second moments: not in float16 (zolab.engine.storage)
    static_options = ("eps_inside_sqrt",)

    def __init__(self, params, lr=1e-3, mu=1e-3, beta=0.99, eps=1e-8, weight_decay=0.0,
                 eps_inside_sqrt=False, estimator="forward", directions="sphere", **options):
        defaults = dict(lr=lr, mu=mu, beta=beta, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, estimator=estimator, directions=directions, **options)
        self.eps_inside_sqrt = eps_inside_sqrt

    def _check_group(self, g):
        super()._check_group(g)
        check_range("beta", g["beta"], 0.0, 1.0)

    def update(self, e, h):
        v = h.beta * e.v + (1 - h.beta) * (e.g * e.g)
        return e.g / denominator(v, h.eps, self.eps_inside_sqrt), {"v": v}
