"""ZO-signSGD: the sign of the ZO estimate (docs/algorithms.md §3.3)."""

from zolab.engine.checks import check_choice
from zolab.engine.ops import sign
from zolab.rules.base import ZOOptimizer

SIGN_OF = ("vector", "scalar")


class ZOSignSGD(ZOOptimizer):
    """ZO-signSGD (Liu et al., ICLR 2019, arXiv 1810.10122, Algorithm 1).

    Update::

        θ_t = θ_{t−1} − η sign(ĝ_t)                      (sign_of="vector", default: element-wise sign)
        θ_t = θ_{t−1} − η (1/K) Σ_k sign(p_k) u_k        (sign_of="scalar", ZO-Bench's variant: seed replay)

    Defaults follow Liu et al.: directions uniform on the sphere, forward differences.

    Args: lr (1e-3), mu (1e-3), weight_decay (0), sign_of ("vector" | "scalar").
    """

    label = "ZO-signSGD"  # the name tables and figures print

    static_options = ("sign_of",)

    def __init__(self, params, lr=1e-3, mu=1e-3, weight_decay=0.0, sign_of="vector",
                 estimator="forward", directions="sphere", **options):
        check_choice("sign_of", sign_of, SIGN_OF)
        defaults = dict(lr=lr, mu=mu, weight_decay=weight_decay)
        super().__init__(params, defaults, estimator=estimator, directions=directions, **options)
        self.sign_of = sign_of

    def coefficients(self, ref, est):
        if self.sign_of == "scalar":
            return est.diffs.sign() / len(est.queries)
        return est.coefficients(ref)

    def update(self, e, h):
        return e.g if self.sign_of == "scalar" else sign(e.g)
