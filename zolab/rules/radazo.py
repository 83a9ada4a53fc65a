"""R-AdaZO: Adam-type ZO with the second moment refined from the first (docs/algorithms.md §3.6)."""

from zolab.engine.checks import check_betas, check_int
from zolab.engine.ops import where
from zolab.rules.adamm import denominator
from zolab.rules.base import ZOOptimizer


class RAdaZO(ZOOptimizer):
    """R-AdaZO (Shu et al., "Refining Adaptive Zeroth-Order Optimization at Ease", ICML 2025, arXiv 2502.01014,
    eqs. 4, 6, 7).

    Update::

        m_t = β1 m_{t−1} + (1 − β1) ĝ_t
        v_t = β2 v_{t−1} + (1 − β2) m_t²          (the refined second moment, eq. 6: m first, then v from it)
        θ_t = θ_{t−1} − η m_t / (√v_t + ζ)

    No bias correction, on purpose (it would undo the variance reduction). At t = 1, |m_1|/√v_1 = 1/√(1 − β2),
    so early steps are large; ``v_warmup_steps`` = N holds v ≡ 1 for this tensor's first N updates (the EMA
    continues from 1), as the same group's LLM code does (default 0). ``eps_inside_sqrt`` **[open]** as in
    ZO-AdaMM. ``granularity="tensor"`` reproduces the public code's tensor-by-tensor estimate-then-update,
    with independent directions per tensor and f(θ) evaluated once per tensor (K + 1 forwards per tensor).
    Defaults: sphere directions with scale c = d, forward estimator, β = (0.9, 0.99), ζ = 1e-8.

    Args: lr (1e-3), mu (1e-3), betas ((0.9, 0.99)), eps (1e-8), weight_decay (0), v_warmup_steps (0),
    eps_inside_sqrt (False).

    Example::

        x = torch.nn.Parameter(torch.randn(100))
        opt = RAdaZO([x], lr=1e-2, mu=0.05, num_queries=10)
        for _ in range(500):
            opt.step(lambda: 0.5 * x.square().sum())
    """

    label = "R-AdaZO"  # the name tables and figures print

    squared_state = ("v",)  # second moments: not in float16 (zolab.engine.storage)
    static_options = ("v_warmup_steps", "eps_inside_sqrt")

    def __init__(self, params, lr=1e-3, mu=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0,
                 v_warmup_steps=0, eps_inside_sqrt=False, estimator="forward", directions="sphere", **options):
        check_int("v_warmup_steps", v_warmup_steps, 0)
        check_betas({"betas": betas})
        defaults = dict(lr=lr, mu=mu, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, estimator=estimator, directions=directions, **options)
        self.v_warmup_steps, self.eps_inside_sqrt = v_warmup_steps, eps_inside_sqrt

    def prepare(self, ref, state, est):
        state["updates"] = state.get("updates", 0) + 1
        return {"v_fill": float(state["updates"] <= self.v_warmup_steps)}

    def update(self, e, h):
        m = h.beta1 * e.m + (1 - h.beta1) * e.g
        v = h.beta2 * e.v + (1 - h.beta2) * (m * m)
        if self.v_warmup_steps:
            v = where(h.v_fill, 1.0, v)
        return m / denominator(v, h.eps, self.eps_inside_sqrt), {"m": m, "v": v}
