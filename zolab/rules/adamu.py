"""ZO-AdaMU: directions adapted by a momentum of past directions, with annealed weights (docs/algorithms.md §3.7)."""

from zolab.engine.checks import check_betas, check_range
from zolab.engine.groups import compute_type
from zolab.engine.ops import sqrt
from zolab.engine.samplers import Gaussian
from zolab.engine.schedules import adamu_schedules
from zolab.rules.base import ZOOptimizer

ROTATION_OFFSET = 1e-150  # keeps the rotation defined at a = b = 0 (see ZOAdaMU)


class AdaMUNoise(Gaussian):
    """The standard normal noise ZO-AdaMU's directions are made of (named so that probes can tell)."""

    name = "adamu"


class ZOAdaMU(ZOOptimizer):
    """ZO-AdaMU (Jiang et al., "Adapting Perturbation by the Momentum and Uncertainty in Zeroth-order
    Optimization", AAAI 2024, arXiv 2312.15184, eqs. 4–7 and Algorithm 1).

    With schedule values (α_t, β1_t, β2_t) and ε₁, ε₂ ~ N(0, I) (drawn as the [design] note below says)::

        ż = √α_t ε₁,    z̈ = m_{t−1} + √(1 − α_t) ε₂,    u_t = β1_t ż + (1 − β1_t) z̈
        p = (f(θ + μu_t) − f(θ − μu_t)) / (2μ)
        v = β2_t ż² + (1 − β2_t) z̈²                     (instantaneous, not an average)
        θ_t = θ_{t−1} − η p u_t / (√v + ζ),    m_t = u_t

    zolab implements the paper, not the public code: the probed direction is the applied one, the momentum
    stores u_t (not sign(p)·u_t), and the schedules are functions of t alone. One d-sized buffer (m) per
    trainable tensor. K = 1 (Algorithm 1).

    [design] ε₁ and ε₂ are a rotation of the query's two standard normal fields w = ``noise(0)`` and
    ξ = ``noise(1)``, chosen so that the direction needs w alone. With a = β1_t √α_t, b = (1 − β1_t) √(1 − α_t)
    and s = √(a² + b²)::

        ε₁ = (a w + b ξ) / s,    ε₂ = (b w − a ξ) / s,    so    u_t = (1 − β1_t) m_{t−1} + s w

    An orthogonal map of iid N(0, 1) numbers gives iid N(0, 1) numbers, so (ε₁, ε₂) are distributed as in the
    paper, while the ± points draw one field each (the update draws both): 4 fields a step instead of 6.
    (a is offset by 1e-150 in the rotation so that a = b = 0 gives ε₁ = w, ε₂ = −ξ; for any other a, b the
    offset is below float64 rounding.)

    By default α, β1, β2 follow the three-phase annealing of eq. 7 (``zolab.engine.schedules.adamu_schedules``) over
    ``total_steps`` T, with T1 = 1024, T2 = ⌊0.8T⌋ and ``final="hold"``: the last phase-2 values, about
    (α, β1, β2) = (0.0101, 0.131, 0.0100) at T = 20,000 (``python -c "from zolab import adamu_schedules;
    print([s(20000) for s in adamu_schedules(20000)])"``). Pass floats or other schedules to ablate them.

    Args: lr (1e-3), mu (1e-3), alpha, betas (schedules or floats; default three-phase over ``total_steps``),
    eps (1e-8), weight_decay (0), total_steps, t1 (1024), t2 (⌊0.8T⌋), final ("hold").
    """

    label = "ZO-AdaMU"  # the name tables and figures print

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

    @staticmethod
    def _weights(h):
        """(a, b, s): the weights of ε₁ and ε₂ in u_t, and s = √(a² + b²), the weight of w."""
        a, b = h.beta1 * sqrt(h.alpha), (1 - h.beta1) * sqrt(1 - h.alpha)
        return a, b, sqrt(a * a + b * b)

    def own_direction(self, e, h):
        """u_t = (1 − β1) m_{t−1} + s w: the ± points draw one field."""
        return (1 - h.beta1) * e.m + self._weights(h)[2] * e.noise(0)

    def update(self, e, h):
        a, b, _ = self._weights(h)
        a = a + ROTATION_OFFSET
        r = sqrt(a * a + b * b)
        w, xi = e.noise(0), e.noise(1)
        eps1, eps2 = (a / r) * w + (b / r) * xi, (b / r) * w - (a / r) * xi
        zdot, zddot = sqrt(h.alpha) * eps1, e.m + sqrt(1 - h.alpha) * eps2
        v = h.beta2 * (zdot * zdot) + (1 - h.beta2) * (zddot * zddot)
        return e.g / (sqrt(v) + h.eps), {"m": self.own_direction(e, h)}

    def grad_estimate(self):
        """ĝ = (c/K) p u_t; after the step u_t is the momentum m_t."""
        if self.record is None:
            raise RuntimeError("no step taken yet")
        return {r.name: self.state[r.param]["m"].to(compute_type(r.param)) * b.coefficients(r)[0]
                for b in self.record.blocks for r in b.refs}
