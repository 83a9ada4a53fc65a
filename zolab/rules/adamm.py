"""ZO-AdaMM as compared in R-AdaZO (Chen et al., NeurIPS 2019; Shu et al., ICML 2025 eq. 3; ALGORITHMS.md §3.4).

.. math::
    m_t = β_1 m_{t-1} + (1-β_1) \\hat g_t,\\quad v_t = β_2 v_{t-1} + (1-β_2) \\hat g_t^2,\\quad
    θ_t = θ_{t-1} - η\\, m_t/(\\sqrt{v_t} + ζ)

No bias correction, max or projection by default. Options: ``amsgrad`` (v̂_t = max(v̂_{t-1}, v_t), the
original ZO-AdaMM), ``bias_correction`` (ZO-Bench's ZO-Adam; t counts this tensor's updates), and
``eps_inside_sqrt`` (√(v + ζ) instead of √v + ζ, **[open]**, default off as in the public code).
Defaults: sphere directions, forward estimator, β = (0.9, 0.99).
"""

import torch

from zolab.rules.base import ZOOptimizer


def denominator(v: torch.Tensor, eps: float, eps_inside_sqrt: bool) -> torch.Tensor:
    return v.add(eps).sqrt_() if eps_inside_sqrt else v.sqrt().add_(eps)


class ZOAdaMM(ZOOptimizer):
    """Args: lr (1e-3), mu (1e-3), betas ((0.9, 0.99)), eps ζ (1e-8), weight_decay (0), amsgrad (False),
    bias_correction (False), eps_inside_sqrt (False)."""

    static_options = ("amsgrad", "bias_correction", "eps_inside_sqrt")

    def __init__(self, params, lr=1e-3, mu=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, bias_correction=False, eps_inside_sqrt=False,
                 estimator="forward", directions="sphere", **options):
        defaults = dict(lr=lr, mu=mu, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, estimator=estimator, directions=directions, **options)
        self.amsgrad, self.bias_correction, self.eps_inside_sqrt = amsgrad, bias_correction, eps_inside_sqrt

    def _moment_state(self, ref, state):
        if not state:
            state["m"], state["v"], state["updates"] = self._moment_zeros(ref), self._moment_zeros(ref), 0
            if self.amsgrad:
                state["v_max"] = self._moment_zeros(ref)
        state["updates"] += 1

    def _fused_moments(self, ref, state):
        if self.amsgrad or self.bias_correction:
            return None
        self._moment_state(ref, state)
        beta1, beta2 = ref.group["betas"]
        return dict(m=state["m"], v=state["v"], mode="adamm", beta1=beta1, beta2=beta2, eps=ref.group["eps"],
                    eps_inside_sqrt=self.eps_inside_sqrt, v_fill=False)

    def _update(self, ref, g, state):
        beta1, beta2 = ref.group["betas"]
        self._moment_state(ref, state)
        m, v = state["m"], state["v"]
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        if self.amsgrad:
            v = torch.maximum(state["v_max"], v, out=state["v_max"])
        m_hat = m
        if self.bias_correction:
            n = state["updates"]
            m_hat, v = m / (1 - beta1**n), v / (1 - beta2**n)
        return m_hat / denominator(v, ref.group["eps"], self.eps_inside_sqrt)
