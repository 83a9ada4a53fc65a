"""ZO-signSGD (Liu et al., ICLR 2019, arXiv 1810.10122, Algorithm 1; ALGORITHMS.md §3.3).

.. math:: θ_t = θ_{t-1} - η\\, \\mathrm{sign}(\\hat g_t)

``sign_of="vector"`` (default) takes the element-wise sign of ĝ. ``sign_of="scalar"`` (ZO-Bench's variant)
steps along ``(1/K) Σ_k sign(p_k) u_k``: no d-sized state, seed replay. Defaults follow Liu et al.: directions
uniform on the sphere, forward differences.
"""

from zolab.rules.base import ZOOptimizer

SIGN_OF = ("vector", "scalar")


class ZOSignSGD(ZOOptimizer):
    """Args: lr (1e-3), mu (1e-3), weight_decay (0), sign_of ("vector" | "scalar")."""

    static_options = ("sign_of",)

    def __init__(self, params, lr=1e-3, mu=1e-3, weight_decay=0.0, sign_of="vector",
                 estimator="forward", directions="sphere", **options):
        if sign_of not in SIGN_OF:
            raise ValueError(f"unknown sign_of {sign_of!r}; allowed: {list(SIGN_OF)}")
        defaults = dict(lr=lr, mu=mu, weight_decay=weight_decay)
        super().__init__(params, defaults, estimator=estimator, directions=directions, **options)
        self.sign_of = sign_of
        self.elementwise_linear = sign_of == "scalar"

    def _coefs(self, ref, est):
        if self.sign_of == "scalar":
            return est.diffs.sign() / len(est.queries)
        return super()._coefs(ref, est)

    def _update(self, ref, g, state):
        return g.sign_()
