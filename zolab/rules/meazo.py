"""MEAZO: ZO-SGD scaled by one adaptive scalar per scope (docs/algorithms.md §3.10)."""

import torch

from zolab.engine.checks import check_choice, check_range
from zolab.rules.base import ZOOptimizer

SCOPES = ("global", "group", "block")
V_STATS = ("sq_mean", "mean_sq")


class MEAZO(ZOOptimizer):
    """MEAZO (Dbouk et al., "On Adaptivity in Zeroth-Order Optimization", 2026, arXiv 2605.03869; only the
    abstract is public, so this is the reading documented in docs/algorithms.md §3.10).

    Update, with p̄_t = (1/K) Σ_k p_k and t the scope's update count::

        v_t = β v_{t−1} + (1 − β) s_t,    v̂_t = v_t / (1 − β^t),    θ_t = θ_{t−1} − η ĝ_t / (√v̂_t + ζ)

    with s_t = p̄_t² (``v_stat="sq_mean"``, default) or (1/K) Σ_k p_k² (``"mean_sq"``). ``scope`` **[open]**:
    ``"global"`` (default), ``"group"`` (per param group) or ``"block"`` (per block, with ``blocks=...``).
    ZO-SGD's memory: the state is one 0-dim tensor per scope (under ``state_dict()["zo"]["scopes"]``). With
    K = 1 the first step is η·sign(p)·u (up to ζ).

    Args: lr (1e-3), mu (1e-3), beta (0.99), eps (1e-8), weight_decay (0), scope ("global"),
    v_stat ("sq_mean"); Gaussian central estimator.
    """

    label = "MEAZO"  # the name tables and figures print

    static_options = ("scope", "v_stat")

    def __init__(self, params, lr=1e-3, mu=1e-3, beta=0.99, eps=1e-8, weight_decay=0.0, scope="global",
                 v_stat="sq_mean", **options):
        check_choice("scope", scope, SCOPES)
        check_choice("v_stat", v_stat, V_STATS)
        options.setdefault("estimator", "central")
        options.setdefault("directions", "gaussian")
        super().__init__(params, dict(lr=lr, mu=mu, beta=beta, eps=eps, weight_decay=weight_decay), **options)
        self.scope, self.v_stat = scope, v_stat
        self._factors: tuple[object, dict] = (None, {})  # (block estimate, scope -> 1/(√v̂ + ζ)) of this step

    def _check_group(self, g):
        super()._check_group(g)
        check_range("beta", g["beta"], 0.0, 1.0)

    def _scope_key(self, ref, block: str) -> str:
        if self.scope == "global":
            return "global"
        if self.scope == "group":
            return f"group{next(i for i, g in enumerate(self.param_groups) if g is ref.group)}"
        return f"block:{block}"

    def prepare(self, ref, state, est):
        """The scope's scalar v is updated once per block estimate (new dicts: a step can be undone)."""
        if self._factors[0] is not est:
            self._factors = (est, {})
        factors, key = self._factors[1], self._scope_key(ref, est.block)
        if key not in factors:
            p = est.diffs / ref.group["mu"]
            s = p.mean().square() if self.v_stat == "sq_mean" else p.square().mean()
            scopes = dict(self.zo.get("scopes", {}))
            old = scopes.get(key, {"v": torch.zeros_like(s), "updates": 0})
            beta, eps = ref.group["beta"], ref.group["eps"]
            scopes[key] = {"v": old["v"] * beta + s * (1 - beta), "updates": old["updates"] + 1}
            self.zo["scopes"] = scopes
            v_hat = scopes[key]["v"] / (1 - beta ** scopes[key]["updates"])
            factors[key] = 1.0 / (v_hat.sqrt() + eps)
        return {"factor": factors[key]}

    def update(self, e, h):
        return e.g * h.factor
