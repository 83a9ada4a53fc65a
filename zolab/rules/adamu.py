"""ZO-AdaMU: directions adapted by a momentum of past directions, with annealed weights (docs/algorithms.md §3.7)."""

from zolab.checks import check_betas, check_range
from zolab.directions import Gaussian
from zolab.ops import sqrt
from zolab.rules.base import ZOOptimizer
from zolab.schedules import adamu_schedules


class AdaMUNoise(Gaussian):
    """The standard normal noise ZO-AdaMU's directions are made of (named so that probes can tell)."""

    name = "adamu"


class ZOAdaMU(ZOOptimizer):
    """ZO-AdaMU (Jiang et al., "Adapting Perturbation by the Momentum and Uncertainty in Zeroth-order
    Optimization", AAAI 2024, arXiv 2312.15184, eqs. 4–7 and Algorithm 1).

    With schedule values (α_t, β1_t, β2_t) and ε₁, ε₂ ~ N(0, I) (the query's ``noise(1)`` and ``noise(0)``)::

        ż = √α_t ε₁,    z̈ = m_{t−1} + √(1 − α_t) ε₂,    u_t = β1_t ż + (1 − β1_t) z̈
        p = (f(θ + μu_t) − f(θ − μu_t)) / (2μ)
        v = β2_t ż² + (1 − β2_t) z̈²                     (instantaneous, not an average)
        θ_t = θ_{t−1} − η p u_t / (√v + ζ),    m_t = u_t

    zolab implements the paper, not the public code: the probed direction is the applied one, the momentum
    stores u_t (not sign(p)·u_t), and the schedules are functions of t alone. ε₂ is drawn before ε₁ from the
    query's key, as the code does. One d-sized buffer (m) per trainable tensor. K = 1 (Algorithm 1).

    By default α, β1, β2 follow the three-phase annealing of eq. 7 (``zolab.schedules.adamu_schedules``) over
    ``total_steps`` T, with T1 = 1024, T2 = ⌊0.8T⌋ and ``final="hold"``: the last phase-2 values, about
    (α, β1, β2) = (0.0101, 0.131, 0.0100) at T = 20,000 (``python -c "from zolab.schedules import adamu_schedules;
    print([s(20000) for s in adamu_schedules(20000)])"``). Pass floats or other schedules to ablate them.

    Args: lr (1e-3), mu (1e-3), alpha, betas (schedules or floats; default three-phase over ``total_steps``),
    eps (1e-8), weight_decay (0), total_steps, t1 (1024), t2 (⌊0.8T⌋), final ("hold").
    """

    static_options = ("total_steps",)
    directions_name = "adamu"

    def __init__(self, params, lr=1e-3, mu=1e-3, alpha=None, betas=None, eps=1e-8, weight_decay=0.0,
                 total_steps=None, t1=1024, t2=None, final="hold", **options):
        if alpha is None or betas is None:
            if total_steps is None:
                raise ValueError("ZOAdaMU needs total_steps (T) for its default annealing schedules, "
                                 "or explicit alpha and betas")
            s_alpha, s_beta1, s_beta2 = adamu_schedules(total_steps, t1, t2, final)
            alpha = s_alpha if alpha is None else alpha
            betas = (s_beta1, s_beta2) if betas is None else betas
        if options.setdefault("num_queries", 1) != 1:
            raise ValueError(f"ZOAdaMU: num_queries={options['num_queries']!r}; allowed: 1 (Algorithm 1)")
        if options.setdefault("estimator", "central") != "central":
            raise ValueError(f"ZOAdaMU: estimator={options['estimator']!r}; allowed: 'central' (eq. 5)")
        if "directions" in options:
            raise ValueError("ZOAdaMU draws its own directions (eq. 4); 'directions' is not an option")
        check_betas({"betas": betas}, hi_open=False)
        defaults = dict(lr=lr, mu=mu, alpha=alpha, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        noise = AdaMUNoise(options.pop("rng", "counter"))
        super().__init__(params, defaults, directions=noise, **options)
        self.total_steps = total_steps

    def _check_group(self, g):
        check_betas(g, hi_open=False)
        check_range("alpha", g["alpha"], 0.0, 1.0, hi_open=False)
        super()._check_group({k: v for k, v in g.items() if k != "betas"})

    def _parts(self, e, h):
        """(ż, z̈) from the query's noise and m_{t−1}."""
        return sqrt(h.alpha) * e.noise(1), e.m + sqrt(1 - h.alpha) * e.noise(0)

    def own_direction(self, e, h):
        zdot, zddot = self._parts(e, h)
        return h.beta1 * zdot + (1 - h.beta1) * zddot

    def update(self, e, h):
        zdot, zddot = self._parts(e, h)
        u = h.beta1 * zdot + (1 - h.beta1) * zddot
        v = h.beta2 * (zdot * zdot) + (1 - h.beta2) * (zddot * zddot)
        return e.g / (sqrt(v) + h.eps), {"m": u}

    def grad_estimate(self):
        """ĝ = (c/K) p u_t; after the step u_t is the momentum m_t."""
        if self.record is None:
            raise RuntimeError("no step taken yet")
        return {r.name: self.state[r.param]["m"] * b.coefficients(r)[0] for b in self.record.blocks for r in b.refs}
