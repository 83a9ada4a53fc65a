"""ZO-AdaMM as compared in R-AdaZO: Adam's moments on the ZO estimate (docs/algorithms.md §3.4)."""

from zolab.engine.checks import check_betas
from zolab.engine.ops import maximum, sqrt
from zolab.rules.base import ZOOptimizer


def denominator(v, eps, eps_inside_sqrt: bool):
    """√v + ζ (default, the public code) or √(v + ζ) (``eps_inside_sqrt``, **[open]**)."""
    return sqrt(v + eps) if eps_inside_sqrt else sqrt(v) + eps


class ZOAdaMM(ZOOptimizer):
    """ZO-AdaMM (Chen et al., NeurIPS 2019), as R-AdaZO compares it (Shu et al., ICML 2025, eq. 3).

    Update::

        m_t = β1 m_{t−1} + (1 − β1) ĝ_t
        v_t = β2 v_{t−1} + (1 − β2) ĝ_t²
        θ_t = θ_{t−1} − η m_t / (√v_t + ζ)

    No bias correction, max or projection by default. Options: ``amsgrad`` (v̂_t = max(v̂_{t−1}, v_t) in the
    denominator, the original ZO-AdaMM), ``bias_correction`` (m_t/(1 − β1^n), v_t/(1 − β2^n) with n this
    tensor's update count: ZO-Bench's ZO-Adam), ``eps_inside_sqrt`` (√(v + ζ), **[open]**, default off as in
    the public code). Defaults: sphere directions, forward estimator, β = (0.9, 0.99).

    Args: lr (1e-3), mu (1e-3), betas ((0.9, 0.99)), eps ζ (1e-8), weight_decay (0), amsgrad (False),
    bias_correction (False), eps_inside_sqrt (False).
    """

    label = "ZO-AdaMM"  # the name tables and figures print

    squared_state = ("v", "v_max")  # second moments: not in float16 (zolab.engine.storage)
    static_options = ("amsgrad", "bias_correction", "eps_inside_sqrt")

    def __init__(self, params, lr=1e-3, mu=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, bias_correction=False, eps_inside_sqrt=False,
                 estimator="forward", directions="sphere", **options):
        check_betas({"betas": betas})
        defaults = dict(lr=lr, mu=mu, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, estimator=estimator, directions=directions, **options)
        self.amsgrad, self.bias_correction, self.eps_inside_sqrt = amsgrad, bias_correction, eps_inside_sqrt

    def prepare(self, ref, state, est):
        state["updates"] = state.get("updates", 0) + 1
        if self.bias_correction:
            beta1, beta2 = ref.group["betas"]
            return {"bc1": 1 - beta1 ** state["updates"], "bc2": 1 - beta2 ** state["updates"]}
        return None

    def update(self, e, h):
        m = h.beta1 * e.m + (1 - h.beta1) * e.g
        v = h.beta2 * e.v + (1 - h.beta2) * (e.g * e.g)
        new = {"m": m, "v": v}
        if self.amsgrad:
            v = new["v_max"] = maximum(e.v_max, v)
        if self.bias_correction:
            m, v = m / h.bc1, v / h.bc2
        return m / denominator(v, h.eps, self.eps_inside_sqrt), new
