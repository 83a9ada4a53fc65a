"""Forward-Grad: SGD on the forward gradient (∇f·v) v, the exact directional derivative from one JVP (docs/algorithms.md
§3.19)."""

from zolab.engine.groups import NO_DECAY
from zolab.rules.base import ZOOptimizer


class ForwardGrad(ZOOptimizer):
    """Forward gradient descent (Baydin et al., "Gradients without Backpropagation", arXiv 2202.08587, Algorithm 1),
    as ZO-Bench (Zhang et al., ICML 2024, arXiv 2402.11592) runs it (``forward_grad_step``).

    With v ~ N(0, I) drawn from the step's seed::

        (ℓ, s) = jvp(f, θ_t, v),   s = ∇f(θ_t)·v exactly (no μ, no finite difference),   ĝ = s v
        θ_{t+1} = θ_t − η (s v + λθ_t)   for names without "bias", "layer_norm", "layernorm";   θ_t − η s v otherwise

    ``torch.func.jvp`` over ``functional_call`` of the bound model (``opt.bind(model)``: a clear error at the first
    step otherwise), the tangent v materialised (d numbers: every tangent is an input of the one call) plus
    forward-mode dual activations; no backward graph. The update redraws v from the seed in the fused pass. The
    model runs in eval mode during the step (forced here, each module's mode put back after). Logged loss ℓ = f(θ_t),
    from the JVP's primal output. K **[open]** (default 1, the code asserts it): K sequential JVPs, ĝ = (1/K) Σ s_k v_k.
    μ is not used (kept for the common interface). ``num_queries`` counts one forward pass per JVP; its cost in
    forward equivalents is r_jvp = time(JVP)/time(forward), measured per model and device (docs/algorithms.md §3.19).

    Args: lr (1e-3), mu (unused, 1e-3), weight_decay (0), the directions (Gaussian); estimator "jvp" (fixed).
    """

    label = "Forward-Grad"  # the name tables and figures print

    def __init__(self, params, lr=1e-3, mu=1e-3, weight_decay=0.0, estimator="jvp", **options):
        if estimator != "jvp":
            raise ValueError(f"ForwardGrad: estimator={estimator!r}; allowed: 'jvp' (forward gradients)")
        super().__init__(params, dict(lr=lr, mu=mu, weight_decay=weight_decay), estimator=estimator, **options)

    def decay_of(self, ref):
        return 0.0 if any(s in ref.name for s in NO_DECAY) else ref.group.get("weight_decay", 0.0)

    def update(self, e, h):
        return e.g

    def step(self, closure=None, batched=None, **evaluators):
        model = self.perturber.model
        training = [] if model is None else [m for m in model.modules() if m.training]
        for m in training:
            m.training = False
        try:
            return super().step(closure, batched, **evaluators)
        finally:
            for m in training:
                m.training = True
