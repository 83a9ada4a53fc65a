"""ZO-AdaMU (Jiang et al., "Adapting Perturbation by the Momentum and Uncertainty in Zeroth-order
Optimization", AAAI 2024, arXiv 2312.15184, eqs. 4-7 and Algorithm 1; ALGORITHMS.md §3.7).

With schedule values (α_t, β1_t, β2_t) and ε₁, ε₂ ~ N(0, I):

.. math::
    \\dot z = \\sqrt{α_t} ε_1,\\quad \\ddot z = m_{t-1} + \\sqrt{1-α_t} ε_2,\\quad
    u_t = β_{1,t} \\dot z + (1-β_{1,t}) \\ddot z,\\quad p = \\frac{f(θ+μu_t) - f(θ-μu_t)}{2μ},

    v = β_{2,t} \\dot z^2 + (1-β_{2,t}) \\ddot z^2,\\quad θ_t = θ_{t-1} - η\\, p\\, u_t/(\\sqrt v + ζ),\\quad m_t = u_t.

zolab implements the paper, not the public code: the probed direction is the applied one, the momentum
stores u_t (not sign(p)·u_t), and the schedules are functions of t alone. ε₂ is drawn before ε₁ from one
generator per tensor, as the code does. One d-sized buffer (m) per trainable tensor. K = 1 (Algorithm 1).

By default α, β1, β2 follow the three-phase annealing of eq. 7 (``zolab.schedules.adamu_schedules``) over
``total_steps`` T, with T1 = 1024, T2 = ⌊0.8T⌋ and ``final="hold"``: the last phase-2 values, about
(α, β1, β2) = (0.0101, 0.131, 0.0100) at T = 20,000 (``python -c "from zolab.schedules import adamu_schedules;
print([s(20000) for s in adamu_schedules(20000)])"``). Pass floats or other schedules to ablate them.
"""

import math

import torch

from zolab.directions import Gaussian, mix
from zolab.rules.base import ZOOptimizer, _check_range, _wide
from zolab.schedules import adamu_schedules


class AdaMUNoise(Gaussian):
    name = "adamu"


class ZOAdaMU(ZOOptimizer):
    """Args: lr (1e-3), mu (1e-3), alpha, betas (schedules or floats; default three-phase over
    ``total_steps``), eps (1e-8), weight_decay (0), total_steps, t1 (1024), t2 (⌊0.8T⌋), final ("hold")."""

    static_options = ("total_steps",)

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
        defaults = dict(lr=lr, mu=mu, alpha=alpha, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, directions=AdaMUNoise(), **options)
        self.total_steps = total_steps

    def _check_group(self, g):
        self._check_betas(g, hi_open=False)
        _check_range("alpha", g["alpha"], 0.0, 1.0, hi_open=False)
        super()._check_group({k: v for k, v in g.items() if k != "betas"})

    def _parts(self, ref, query):
        """(ż, z̈) for this tensor, from m_{t-1} and the query's seed."""
        p, group = ref.param, ref.group
        gen = self.sampler.generator(mix(query.seed, ref.index), p.device)
        eps2 = self.sampler.draw(gen, p)  # z̈'s noise first, as the authors' code
        eps1 = self.sampler.draw(gen, p)
        # float32 for half-precision tensors: v = β2 ż² + (1−β2) z̈² underflows in float16
        zdot = _wide(eps1).mul_(math.sqrt(group["alpha"]))
        zddot = _wide(eps2).mul_(math.sqrt(1 - group["alpha"]))
        if "m" in self.state[p]:
            zddot.add_(self.state[p]["m"])
        return zdot, zddot

    def _direction(self, ref, query, alpha, out=None, base=None):
        beta1 = ref.group["betas"][0]
        zdot, zddot = self._parts(ref, query)
        u = zdot.mul_(beta1).add_(zddot, alpha=1 - beta1).mul_(alpha)
        return u if base is None else torch.add(base, u.to(base.dtype), out=out)

    def _apply(self, ref, est):
        p, group = ref.param, ref.group
        beta1, beta2 = group["betas"]
        lr, wd = group["lr"], self._decays(ref)
        zdot, zddot = self._parts(ref, est.queries[0])
        v = zdot.square().mul_(beta2).addcmul_(zddot, zddot, value=1 - beta2)
        u = zdot.mul_(beta1).add_(zddot, alpha=1 - beta1)
        g = u * est.coefficients(ref)[0]
        if wd and self.weight_decay_mode == "coupled":
            g.add_(p, alpha=wd)
        update = g.div_(v.sqrt_().add_(group["eps"]))
        if wd and self.weight_decay_mode == "decoupled":
            p.mul_(1 - lr * wd)
        p.add_(update, alpha=-lr)
        state = self.state[p]
        if "m" in state:
            state["m"].copy_(u)
        else:
            state["m"] = u

    def grad_estimate(self):
        """ĝ = (c/K) p u_t; after the step u_t is the momentum m_t."""
        if self.record is None:
            raise RuntimeError("no step taken yet")
        return {r.name: self.state[r.param]["m"] * b.coefficients(r)[0] for b in self.record.blocks for r in b.refs}
