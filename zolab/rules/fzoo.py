"""FZOO: N one-sided Rademacher probes normalised by the spread of their losses (docs/algorithms.md §3.16)."""

from zolab.engine.schemes import NormalisedOneSided
from zolab.rules.base import ZOOptimizer


class FZOO(ZOOptimizer):
    """FZOO (Dang et al., "FZOO: Fast Zeroth-Order Optimizer for Fine-Tuning Large Language Models towards
    Adam-Scale Speed", ICLR 2026, arXiv 2506.09034; the paper's text was not available, only renderings of it:
    the normalised estimate and its Prop. 3.2, σ² ≈ μ²‖∇f‖²(N − 1)/N).

    One step, u_i ∈ {±1}^d Rademacher (i = 1..N, one seed each), N + 1 forwards::

        ℓ_i = f(θ + μu_i)  (i = 1..N),  then  ℓ₀ = f(θ)
        σ   = std(ℓ_1, …, ℓ_N)                        ℓ₀ excluded
        θ  ← θ − η Σ_i c_i u_i,   c_i = (ℓ_i − ℓ₀) / (N (σ + ζ))          form="code" (the authors' code)
                                   c_i = (ℓ_i − ℓ₀) / (N μ (σ + ζ))        form="paper" (g/σ, g = Σ (ℓ_i − ℓ₀) u_i/(Nμ))

    i.e. ZO-SGD on the ``NormalisedOneSided`` scheme (``zolab.engine.schemes``): the code's form is the paper's
    times μ (and, with ``std="sample"``, the paper's 1/(N − 1) variance). ĝ is (c/K) Σ δ_i u_i with c = 1. The
    logged loss is ℓ₀. No state: inference memory, and one fused pass regenerates the N sign streams.
    **[open]** defaults: ``form="code"`` (the published step sizes, e.g. η = 5e-5 at μ = 1e-4 for OPT-13B,
    are for it), ``std="population"`` (1/N, the code's ``torch.std(unbiased=False)``; ``"sample"``: 1/(N − 1)),
    ζ = 1e-12 (σ = 0 when every probe loss is equal gives δ = 0 when they equal ℓ₀, not NaN), N = 8.
    N >= 2. Not implemented: FZOO-R (σ from half the previous batch's losses: absent from the public code) and the
    paper's batched-probe forward (the N probes of a layer in one batched matrix product): probes run one
    after another, as every published run did. A one-tensor problem can pass ``step(batched=f)`` to evaluate
    all N + 1 points in one call. Weight decay: zolab's decoupled λ (default 0), §2.

    Args: lr (1e-3), mu (1e-3), num_queries N (8), weight_decay (0), form ("code"), std ("population"),
    zeta (1e-12), directions ("rademacher").
    """

    label = "FZOO"  # the name tables and figures print

    def __init__(self, params, lr=1e-3, mu=1e-3, num_queries=8, weight_decay=0.0, form="code", std="population",
                 zeta=1e-12, directions="rademacher", **options):
        if "estimator" in options:
            raise ValueError(f"FZOO: estimator={options['estimator']!r}; FZOO's estimator is its own normalised "
                             "one-sided scheme (options form, std, zeta); 'estimator' is not an option")
        super().__init__(params, dict(lr=lr, mu=mu, weight_decay=weight_decay), num_queries=num_queries,
                         estimator=NormalisedOneSided(form, std, zeta), directions=directions, **options)

    def update(self, e, h):
        return e.g
