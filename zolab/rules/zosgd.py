"""ZO-SGD / MeZO (Malladi et al., NeurIPS 2023, arXiv 2305.17333; ALGORITHMS.md §3.1).

.. math:: θ_t = θ_{t-1} - η \\hat g_t

with the Gaussian central (SPSA) estimator and K = 1 by default. Keeps no state the size of the model:
the update regenerates u from the step's seeds and adds it in one pass (seed replay).

Example::

    opt = ZOSGD(model.parameters(), lr=1e-3, mu=1e-3)
    loss = opt.step(lambda: loss_fn(model(x), y))
"""

from zolab.rules.base import ZOOptimizer


class ZOSGD(ZOOptimizer):
    """Args: lr (η, default 1e-3), mu (μ, 1e-3), weight_decay (λ, 0); options of ``ZOOptimizer``."""

    elementwise_linear = True

    def __init__(self, params, lr=1e-3, mu=1e-3, weight_decay=0.0, **options):
        options.setdefault("estimator", "central")
        options.setdefault("directions", "gaussian")
        super().__init__(params, dict(lr=lr, mu=mu, weight_decay=weight_decay), **options)

    def _update(self, ref, g, state):
        return g
