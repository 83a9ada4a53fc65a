"""Registry entries of HiZOO and Sparse-MeZO (own directions that read the rule's state or θ: z/√H, a magnitude
mask) and Forward-Grad (a forward-mode JVP, not differences).

Each entry uses ``RuleInfo``'s capability fields (``zolab.testing.rules``) so that every generic test of
``tests/rules/`` runs on it; importing ``zolab.testing`` (or any module of it) registers them.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch

from zolab.engine.groups import NO_DECAY
from zolab.rules.forward_grad import ForwardGrad
from zolab.rules.hizoo import HiZOO
from zolab.rules.sparse_mezo import SparseMeZO
from zolab.testing.rules import REGISTRY, Dense, RuleInfo, _masked, ref_sgd

# ------------------------------------------------------------------ HiZOO


def _hessian(d: Dense) -> torch.Tensor:
    return d.state.setdefault("H", torch.ones_like(d.g))


def ref_hizoo_direction(d: Dense, noise: list[torch.Tensor]) -> torch.Tensor:
    """u = z/√H (H before the step)."""
    return noise[0] / _hessian(d).sqrt()


def ref_hizoo(d: Dense) -> torch.Tensor:
    """§3.12: H' = (1 − α) H + α |Δ|/(2μ²) H w(z), w = z² ("code") or |z² − 1| ("paper"); U = p z/√H' (or √H)."""
    z, H, alpha = d.state["noise"][0], _hessian(d), d.h["alpha"]
    w = z**2 if d.options.get("hessian_estimator", "code") == "code" else (z**2 - 1).abs()
    new = _masked(d, "H", (1 - alpha) * H + alpha * abs(d.state["delta"][0]) / (2 * d.h["mu"] ** 2) * H * w)
    return d.ps[0] * z / (H if d.options.get("precondition_with") == "old" else new).sqrt()


# ------------------------------------------------------------------ Sparse-MeZO


def _sparse_thresholds(d: Dense) -> torch.Tensor:
    """h per element: per tensor, the k-th smallest |θ| (or θ) at the thresholds' step, k = ⌈(1 − s)·numel⌉."""
    refresh, s = d.options.get("threshold_refresh"), d.options.get("sparsity", 0.8)
    if "h" in d.state and not (refresh and d.t > 1 and (d.t - 1) % refresh == 0 and d.state["h_at"] != d.t):
        return d.state["h"]
    on, h = d.options.get("mask_on", "abs"), torch.empty_like(d.theta)
    for part, shape in zip(d.slices(), d.shapes):
        x = d.theta[part]
        if len(shape) < 2 and d.options.get("mask_1d", "same") != "same":
            h[part] = math.inf if d.options["mask_1d"] == "dense" else -math.inf
        elif on == "random":
            h[part] = NormalDist().inv_cdf(1 - s / 2) if s else math.inf
        else:
            h[part] = (x.abs() if on == "abs" else x).kthvalue(math.ceil(round((1 - s) * x.numel(), 6))).values
    d.state["h"], d.state["h_at"] = h, d.t
    return h


def ref_sparse_direction(d: Dense, noise: list[torch.Tensor]) -> torch.Tensor:
    """§3.15: ẑ = z where |θ| ≤ h (θ ≤ h for "signed", |z'| ≤ h for "random"), else 0."""
    on = d.options.get("mask_on", "abs")
    x = noise[1].abs() if on == "random" else d.theta if on == "signed" else d.theta.abs()
    return torch.where(x <= _sparse_thresholds(d), noise[0], torch.zeros_like(x))


REGISTRY.update(
    hizoo=RuleInfo(
        HiZOO, ref_hizoo, state=("H",), fixed=("num_queries", "estimator", "directions", "weight_decay_mode"),
        own_direction=ref_hizoo_direction, decays=lambda name, shape, kw: True,  # λ on every tensor
        scalars=lambda opt, ref: opt.prepare(ref, {}, opt.record.blocks[0]),
        variants=({"hessian_estimator": "paper", "alpha": 0.3}, {"precondition_with": "old", "alpha": 0.1},
                  {"alpha": 0.05, "weight_decay": 0.1, "blocks": ["W", "b"], "block_selection": "cyclic"}),
        bad=(({"alpha": 1.0}, r"alpha.*1.0.*\[0.0, 1.0\)"), ({"hessian_estimator": "exact"}, "hessian_estimator"),
             ({"precondition_with": "both"}, "precondition_with 'both'"), ({"num_queries": 2}, "num_queries=2"),
             ({"estimator": "central"}, "estimator='central'"),
             ({"directions": "sphere"}, r"directions='sphere'; allowed: 'gaussian'"),
             ({"weight_decay_mode": "coupled"}, "weight_decay_mode"))),
    sparse_mezo=RuleInfo(
        SparseMeZO, ref_sgd, fixed=("directions",), own_direction=ref_sparse_direction, lr=0.3,
        state_shapes=lambda opt, p: {"h": ()},  # one 0-dim threshold per tensor
        converge={"sparsity": 0.5, "threshold_refresh": 10},
        variants=({"sparsity": 0.5, "mask_on": "signed"}, {"mask_on": "random", "num_queries": 2},
                  {"sparsity": 0.3, "mask_1d": "dense", "threshold_refresh": 2},
                  {"sparsity": 0.0, "mask_1d": "frozen", "mask_scope": "module"}),
        bad=(({"sparsity": 1.0}, r"sparsity.*1.0.*\[0.0, 1.0\)"), ({"mask_on": "magnitude"}, "mask_on 'magnitude'"),
             ({"mask_scope": "block"}, "mask_scope 'block'"), ({"mask_1d": "skip"}, "mask_1d 'skip'"),
             ({"threshold_refresh": 0}, "threshold_refresh"),
             ({"directions": "rademacher"}, r"directions='rademacher'; allowed: 'gaussian'"))),
    forward_grad=RuleInfo(
        ForwardGrad, ref_sgd, fixed=("estimator",), needs_model=True,
        decays=lambda name, shape, kw: not any(k in name for k in NO_DECAY),  # MeZO's name test
        variants=({"num_queries": 3, "weight_decay": 0.1},), bad=(({"estimator": "central"}, "estimator='central'"),)),
)
