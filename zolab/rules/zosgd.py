"""ZO-SGD / MeZO: plain gradient descent on the ZO estimate (docs/algorithms.md §3.1)."""

from zolab.rules.base import ZOOptimizer


class ZOSGD(ZOOptimizer):
    """ZO-SGD / MeZO (Malladi et al., NeurIPS 2023, arXiv 2305.17333, Algorithm 1).

    Update::

        θ_t = θ_{t−1} − η ĝ_t

    with the Gaussian central (SPSA) estimator and K = 1 by default. No state the size of the model: the
    update redraws u from the step's seeds in the same pass that writes θ (MeZO's seed replay, exact here).

    Args: lr (η, 1e-3), mu (μ, 1e-3), weight_decay (λ, 0), and the options of ``ZOOptimizer``.

    Example::

        opt = ZOSGD(model.parameters(), lr=1e-3, mu=1e-3)
        loss = opt.step(lambda: loss_fn(model(x), y))
    """

    label = "ZO-SGD"  # the name tables and figures print

    def __init__(self, params, lr=1e-3, mu=1e-3, weight_decay=0.0, **options):
        options.setdefault("estimator", "central")
        options.setdefault("directions", "gaussian")
        super().__init__(params, dict(lr=lr, mu=mu, weight_decay=weight_decay), **options)

    def update(self, e, h):
        return e.g
