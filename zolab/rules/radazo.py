"""R-AdaZO (Shu et al., "Refining Adaptive Zeroth-Order Optimization at Ease", ICML 2025, arXiv 2502.01014,
eqs. 4, 6, 7; ALGORITHMS.md §3.6).

.. math::
    m_t = β_1 m_{t-1} + (1-β_1) \\hat g_t,\\quad v_t = β_2 v_{t-1} + (1-β_2) m_t^2,\\quad
    θ_t = θ_{t-1} - η\\, m_t/(\\sqrt{v_t} + ζ)

m is updated first and v uses the new m (the refined second moment, eq. 6). No bias correction, on
purpose (it would undo the variance reduction). At t = 1, |m_1|/√v_1 = 1/√(1-β2), so early steps are large;
``v_warmup_steps`` = N holds v ≡ 1 for this tensor's first N updates (the EMA continues from 1), as the
same group's LLM code does (default 0). ``eps_inside_sqrt`` **[open]** as in ZO-AdaMM.
``granularity="tensor"`` reproduces the public code's tensor-by-tensor estimate-then-update, with
independent directions per tensor and f(θ) evaluated once per tensor (K + 1 forwards per tensor).

Defaults: sphere directions with scale c = d, forward estimator, β = (0.9, 0.99), ζ = 1e-8.

Example::

    opt = RAdaZO([x], lr=1e-3, mu=0.05, num_queries=10)
    for _ in range(100):
        opt.step(lambda: 0.5 * x.square().sum())
"""


from zolab.rules.adamm import denominator
from zolab.rules.base import ZOOptimizer


class RAdaZO(ZOOptimizer):
    """Args: lr (1e-3), mu (1e-3), betas ((0.9, 0.99)), eps (1e-8), weight_decay (0), v_warmup_steps (0),
    eps_inside_sqrt (False)."""

    static_options = ("v_warmup_steps", "eps_inside_sqrt")

    def __init__(self, params, lr=1e-3, mu=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0,
                 v_warmup_steps=0, eps_inside_sqrt=False,
                 estimator="forward", directions="sphere", **options):
        if isinstance(v_warmup_steps, bool) or not isinstance(v_warmup_steps, int) or v_warmup_steps < 0:
            raise ValueError(f"invalid v_warmup_steps: {v_warmup_steps!r}; allowed: an integer >= 0")
        defaults = dict(lr=lr, mu=mu, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, estimator=estimator, directions=directions, **options)
        self.v_warmup_steps, self.eps_inside_sqrt = v_warmup_steps, eps_inside_sqrt

    def _moment_state(self, ref, state):
        if not state:
            state["m"], state["v"], state["updates"] = self._moment_zeros(ref), self._moment_zeros(ref), 0
        state["updates"] += 1

    def _fused_moments(self, ref, state):
        self._moment_state(ref, state)
        beta1, beta2 = ref.group["betas"]
        return dict(m=state["m"], v=state["v"], mode="radazo", beta1=beta1, beta2=beta2, eps=ref.group["eps"],
                    eps_inside_sqrt=self.eps_inside_sqrt, v_fill=state["updates"] <= self.v_warmup_steps)

    def _update(self, ref, g, state):
        beta1, beta2 = ref.group["betas"]
        self._moment_state(ref, state)
        m, v = state["m"], state["v"]
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        if state["updates"] <= self.v_warmup_steps:
            v.fill_(1.0)
        else:
            v.mul_(beta2).addcmul_(m, m, value=1 - beta2)
        return g.copy_(m).div_(denominator(v, ref.group["eps"], self.eps_inside_sqrt))
