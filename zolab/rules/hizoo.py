"""HiZOO: ZO-SGD along directions scaled by a diagonal Hessian estimate, H^{-1/2} (docs/algorithms.md §3.12)."""

from collections.abc import Mapping

import torch

from zolab.engine.checks import check_choice, check_range
from zolab.engine.ops import abs, sqrt  # noqa: A004
from zolab.rules.base import ZOOptimizer

HESSIAN_ESTIMATORS = ("code", "paper")
PRECONDITION_WITH = ("new", "old")


class HessianRange(Mapping):
    """min, median and max of H per tensor name, computed when read (H changes in place at the next step)."""

    def __init__(self, opt, refs):
        self._h = {r.name: (opt, r.param) for r in refs}

    def __getitem__(self, name):
        opt, p = self._h[name]
        h = opt.state[p]["H"]
        return float(h.min()), float(h.flatten().median()), float(h.max())

    def __iter__(self):
        return iter(self._h)

    def __len__(self):
        return len(self._h)

    def __repr__(self):
        return repr(dict(self))


class HiZOO(ZOOptimizer):
    """HiZOO (Zhao et al., "Second-Order Fine-Tuning without Pain for LLMs: A Hessian Informed Zeroth-Order
    Optimizer", ICLR 2025, arXiv 2402.15173 v4, Algorithm 1, Eqs. (8)–(9)).

    H = Σ^{-1} is a diagonal Hessian estimate, state ``H`` per element (float32 for half tensors), H₀ = 1. With
    z ~ N(0, I) and the direction u = z ⊙ H_t^{-1/2} (= Σ_t^{1/2} z), three forwards a step::

        ℓ₀ = f(θ_t),   ℓ± = f(θ_t ± μu),   p = (ℓ₊ − ℓ₋)/(2μ),   Δ = ℓ₊ + ℓ₋ − 2ℓ₀
        H_{t+1} = (1 − α) H_t + α |Δ|/(2μ²) · H_t ⊙ z²          hessian_estimator="code" (default)
        H_{t+1} = (1 − α) H_t + α |Δ/(2μ²) · H_t ⊙ (z² − 1)|    "paper" (Eq. 8's diag Σ'_t in Eq. 9)
        θ_{t+1} = θ_t − η (p z ⊙ H_{t+1}^{-1/2} + λ θ_t)         precondition_with="new" (default; "old": H_t)

    The same z serves the probes, the H update and the step, all in one fused pass after the forwards (H and θ
    together). **[open]** defaults: ``hessian_estimator="code"`` (the published runs; the code's z² makes H grow
    by ½tr(Σ^{1/2}∇²fΣ^{1/2}) almost uniformly, the paper's z² − 1 is unbiased before |·|),
    ``precondition_with="new"`` (code and Algorithm 1), K = 1 (the code's; ``num_queries`` > 1 is refused, the
    [D] form of shared ℓ₀ with averaged increments is not implemented). α (``alpha``, a float or a schedule,
    in [0, 1): H stays > 0) defaults to 1e-8, the OPT scripts' ``constant1e-8``. Weight decay λ applies to every
    tensor, biases and norms too (as the code; the decoupled form above). The logged loss is ℓ₀ (no fourth
    forward at θ_{t+1}, which the code runs for its log). The record's extras per block: ``delta`` (Δ),
    ``curvature`` (|Δ|/(2μ²)) and ``hessian``, min/median/max of H per tensor, computed when read.

    Args: lr (1e-3), mu (1e-3), alpha (1e-8), weight_decay (0), hessian_estimator ("code"),
    precondition_with ("new"); the three-point estimator with its own Gaussian directions (fixed).
    """

    label = "HiZOO"  # the name tables and figures print

    static_options = ("hessian_estimator", "precondition_with")
    directions_name = "hizoo"
    direction_slices = True  # module mode builds embedding rows and Linear row chunks of z/√H

    def __init__(self, params, lr=1e-3, mu=1e-3, alpha=1e-8, weight_decay=0.0, hessian_estimator="code",
                 precondition_with="new", estimator="three_point", **options):
        check_choice("hessian_estimator", hessian_estimator, HESSIAN_ESTIMATORS)
        check_choice("precondition_with", precondition_with, PRECONDITION_WITH)
        for name, value, allowed in (("estimator", estimator, "three_point"),
                                     ("num_queries", options.get("num_queries", 1), 1),
                                     ("weight_decay_mode", options.get("weight_decay_mode", "decoupled"), "decoupled")):
            if value != allowed:
                raise ValueError(f"HiZOO: {name}={value!r}; allowed: {allowed!r} (the authors' code)")
        directions = options.pop("directions", "gaussian")  # a base config's Gaussian law is accepted
        if directions != "gaussian":
            raise ValueError(f"HiZOO: directions={directions!r}; allowed: 'gaussian' (z, scaled by 1/√H)")
        super().__init__(params, dict(lr=lr, mu=mu, alpha=alpha, weight_decay=weight_decay), estimator=estimator,
                         directions="gaussian", **options)
        self.hessian_estimator, self.precondition_with = hessian_estimator, precondition_with

    def _check_group(self, g):
        super()._check_group(g)
        check_range("alpha", g["alpha"], 0.0, 1.0)

    def state_tensor(self, ref, name, shape=None, dtype=None):
        """As the base's, but H starts at ones."""
        new = name not in self.state[ref.param]
        t = super().state_tensor(ref, name, shape, dtype)
        return t.fill_(1.0) if new and name == "H" else t

    def decay_of(self, ref):
        return ref.group.get("weight_decay", 0.0)

    def own_direction(self, e, h):
        return e.noise(0) / sqrt(e.H)

    def prepare(self, ref, state, est):
        """p (with c/K) and the H increment's weight α|Δ|/(2μ²), as device scalars (no host sync)."""
        mu = ref.group["mu"]
        curvature = est.extras["delta"].abs() / (2 * mu * mu)
        est.extras.setdefault("curvature", curvature)
        est.extras.setdefault("hessian", HessianRange(self, est.refs))
        return {"p": est.coefficients(ref)[0], "rate": curvature[0].to(torch.float64) * ref.group["alpha"]}

    def update(self, e, h):
        z = e.noise(0)
        w = z * z if self.hessian_estimator == "code" else abs(z * z - 1)
        H = (1 - h.alpha) * e.H + h.rate * (e.H * w)
        U = e.g if self.precondition_with == "old" else h.p * (z / sqrt(H))
        return U, {"H": H}

    def grad_estimate(self):
        """The applied ĝ = p z ⊙ H^{-1/2} (H of ``precondition_with``), rebuilt from the record and the new H
        (for "old", H_t = H_{t+1}/((1 − α) + α|Δ|/(2μ²) w(z)): to rounding)."""
        if self.record is None:
            raise RuntimeError("no step taken yet")
        out = {}
        for b in self.record.blocks:
            for r in b.refs:
                u, p = self.direction(r, b.queries[0]), b.coefficients(r)[0]
                if self.precondition_with == "old":
                    z = u * sqrt(self.state[r.param]["H"])
                    w = z * z if self.hessian_estimator == "code" else (z * z - 1).abs()
                    alpha = r.group["alpha"]
                    u = u * ((1 - alpha) + b.extras["curvature"][0] * alpha * w).sqrt()
                out[r.name] = u * p.to(u.dtype)
        return out
