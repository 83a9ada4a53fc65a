"""ZO-Adam (ZO-Bench): ZO-AdaMM preset to torch Adam on the Gaussian central estimate (docs/algorithms.md §3.11)."""

from zolab.rules.adamm import ZOAdaMM


class ZOAdam(ZOAdaMM):
    """ZO-Adam as ZO-Bench benchmarks it (Zhang et al., "Revisiting Zeroth-Order Optimization for Memory-Efficient
    LLM Fine-Tuning: A Benchmark", ICML 2024, arXiv 2402.11592): ``torch.optim.Adam`` (Kingma & Ba, ICLR 2015,
    Algorithm 1; no weight decay, no AMSGrad) fed with the ZO estimate ĝ of Gaussian central differences.

    Update, per tensor with n its update count (this one included)::

        m_n = β1 m_{n−1} + (1 − β1) ĝ,    v_n = β2 v_{n−1} + (1 − β2) ĝ²
        θ_n = θ_{n−1} − η (m_n / (1 − β1^n)) / (√(v_n / (1 − β2^n)) + ζ)

    with ĝ = (1/K) Σ_k p_k u_k, p_k = (f(θ + μu_k) − f(θ − μu_k))/(2μ), u_k ~ N(0, I), c = 1. This is ZO-AdaMM
    (§3.4) with ``bias_correction=True`` and other defaults: no new maths, only a preset (its options, e.g.
    ``amsgrad``, ``eps_inside_sqrt``, pass through). ZO-Bench's paper equations were not available; the
    update is its code's (torch Adam after each ĝ, one query by default; K > 1 averages K queries first).
    **[open]** defaults: weight decay λ = 0 (the benchmark's Adam ignores its weight-decay flag; λ > 0 is
    zolab's decoupled decay, §2); ZO-Bench's grid winners are not known (its sweeps: η ∈ {1e-4 … 1e-8},
    μ ∈ {1e-3, 1e-4, 1e-5} for full fine-tuning of OPT-1.3B on SST-2); the moments are kept in float32
    (float64 for float64 tensors), where the benchmark keeps them in the parameters' dtype (in float16,
    ζ = 1e-8 underflows). State: m and v, 2d numbers.

    Args: lr (1e-3), mu (1e-3), betas ((0.9, 0.999)), eps ζ (1e-8), weight_decay (0), amsgrad (False),
    bias_correction (True), eps_inside_sqrt (False), estimator ("central"), directions ("gaussian").
    """

    label = "ZO-Adam"  # the name tables and figures print

    def __init__(self, params, lr=1e-3, mu=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, bias_correction=True, eps_inside_sqrt=False,
                 estimator="central", directions="gaussian", **options):
        super().__init__(params, lr=lr, mu=mu, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         bias_correction=bias_correction, eps_inside_sqrt=eps_inside_sqrt, estimator=estimator,
                         directions=directions, **options)
