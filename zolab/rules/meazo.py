"""MEAZO (Dbouk et al., "On Adaptivity in Zeroth-Order Optimization", 2026, arXiv 2605.03869; only the
abstract is public; ALGORITHMS.md §3.10).

One scalar of adaptivity per scope, with p̄_t = (1/K) Σ_k p_k:

.. math::
    v_t = β v_{t-1} + (1-β) s_t,\\quad \\hat v_t = v_t/(1-β^t),\\quad
    θ_t = θ_{t-1} - η\\, \\hat g_t/(\\sqrt{\\hat v_t} + ζ)

with s_t = p̄_t² (``v_stat="sq_mean"``, default) or (1/K) Σ p_k² (``"mean_sq"``); t counts the updates of the
scope. ``scope`` **[open]**: ``"global"`` (default), ``"group"`` (per param group) or ``"block"`` (per block,
with ``blocks=...``). ZO-SGD memory: the state is one 0-dim tensor per scope. With K = 1 the first step
is η·sign(p)·u (up to ζ).
"""

import torch

from zolab.rules.base import ZOOptimizer, _check_range

SCOPES = ("global", "group", "block")
V_STATS = ("sq_mean", "mean_sq")


class MEAZO(ZOOptimizer):
    """Args: lr (1e-3), mu (1e-3), beta (0.99), eps (1e-8), weight_decay (0), scope ("global"),
    v_stat ("sq_mean"); Gaussian central estimator."""

    elementwise_linear = True
    static_options = ("scope", "v_stat")

    def __init__(self, params, lr=1e-3, mu=1e-3, beta=0.99, eps=1e-8, weight_decay=0.0, scope="global",
                 v_stat="sq_mean", **options):
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; allowed: {list(SCOPES)}")
        if v_stat not in V_STATS:
            raise ValueError(f"unknown v_stat {v_stat!r}; allowed: {list(V_STATS)}")
        options.setdefault("estimator", "central")
        options.setdefault("directions", "gaussian")
        super().__init__(params, dict(lr=lr, mu=mu, beta=beta, eps=eps, weight_decay=weight_decay), **options)
        self.scope, self.v_stat = scope, v_stat
        self._factors: dict[str, torch.Tensor] = {}

    def _check_group(self, g):
        super()._check_group(g)
        _check_range("beta", g["beta"], 0.0, 1.0)

    def _scope_key(self, ref, block: str) -> str:
        if self.scope == "global":
            return "global"
        if self.scope == "group":
            return f"group{next(i for i, g in enumerate(self.param_groups) if g is ref.group)}"
        return f"block:{block}"

    def _begin_update(self, block, est):
        self._factors = {}
        scopes = self.zo.setdefault("scopes", {})
        for ref in est.refs:
            key = self._scope_key(ref, block)
            if key not in self._factors:
                p = est.diffs / ref.group["mu"]
                s = p.mean().square() if self.v_stat == "sq_mean" else p.square().mean()
                st = scopes.setdefault(key, {"v": torch.zeros_like(s), "updates": 0})
                beta, eps = ref.group["beta"], ref.group["eps"]
                st["v"] = st["v"] * beta + s * (1 - beta)
                st["updates"] += 1
                v_hat = st["v"] / (1 - beta ** st["updates"])
                self._factors[key] = 1.0 / (v_hat.sqrt() + eps)
            self._factors[ref.name] = self._factors[key]

    def _update_scale(self, ref, state):
        return self._factors[ref.name]

    def _update(self, ref, g, state):
        return g.mul_(self._factors[ref.name])
