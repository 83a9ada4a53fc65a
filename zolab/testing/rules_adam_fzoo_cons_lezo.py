"""Registry entries of ZO-Adam (ZO-AdaMM as torch Adam), FZOO (its own scheme: N one-sided probes over their loss
spread), ZO-SGD-Cons (an update that evaluates its candidates) and LeZO (k blocks a step, estimated jointly).

Each entry uses ``RuleInfo``'s capability fields (``zolab.testing.rules``) so that every generic test of
``tests/rules/`` runs on it; importing ``zolab.testing`` (or any module of it) registers them.
"""

from __future__ import annotations

import torch

from zolab.engine.blocks import subset
from zolab.rules.fzoo import FZOO
from zolab.rules.lezo import LeZO
from zolab.rules.zo_adam import ZOAdam
from zolab.rules.zo_sgd_cons import ZOSGDCons
from zolab.testing.rules import _ADAPTIVE_BAD, REGISTRY, Dense, RuleInfo, ref_adamm, ref_sgd


def est_fzoo(d: Dense, f, theta, seeds, draw) -> tuple[list[float], list[torch.Tensor]]:
    """FZOO's scheme: ℓ_i = f(θ + μu_i), then ℓ₀ = f(θ); σ = std of the ℓ_i (1/N or 1/(N − 1));
    p_i = (ℓ_i − ℓ₀)/(σ + ζ), divided by μ for the paper's form."""
    us, mu, options = [draw(s) for s in seeds], d.h["mu"], d.options
    probes = torch.stack([f(theta + mu * u) for u in us])
    l0 = f(theta)
    sigma = probes.std(correction=1 if options.get("std") == "sample" else 0)
    deltas = (probes - l0) / (sigma + options.get("zeta", 1e-12))
    return [float(x) / (mu if options.get("form") == "paper" else 1.0) for x in deltas], us


def adam_bias_correction(opt, ref) -> dict:
    """ZO-Adam's prepared scalars: the bias corrections at this tensor's update count."""
    beta1, beta2 = ref.group["betas"]
    n = opt.state[ref.param]["updates"]
    return {"bc1": 1 - beta1**n, "bc2": 1 - beta2**n}


def ref_cons(d: Dense) -> torch.Tensor:
    """θ − s·ηĝ: s = 0 when both candidates θ ∓ ηĝ have a higher loss than ℓ₀, +1 when θ − ηĝ is no worse than
    ℓ₀ and strictly better than θ + ηĝ, −1 otherwise (decay applied whatever s)."""
    eta = d.h["lr"]
    l0, c_minus, c_plus = (float(d.f(x)) for x in (d.theta, d.theta - eta * d.ghat, d.theta + eta * d.ghat))
    s = 0.0 if c_minus > l0 and c_plus > l0 else 1.0 if c_minus <= l0 and c_minus < c_plus else -1.0
    return s * d.ghat + (d.g - d.ghat)


def lezo_blocks(t: int, names: list[str], options: dict) -> list[int]:
    """S_t: k = max(1, round((1 − ρ)·n)) of the n blocks not always active, drawn by the public uniform subset,
    plus the always-active ones."""
    fixed = [i for i, n in enumerate(names) if n in options.get("always_active", ())]
    free = [i for i in range(len(names)) if i not in fixed]
    k = max(1, round((1 - options.get("rho", 0.75)) * len(free)))
    return sorted({free[i] for i in subset(t, len(free), k, options.get("seed", 0))} | set(fixed))


def ref_lezo(d: Dense) -> torch.Tensor:
    return d.g / (1 - d.h["rho"]) if d.options.get("rescale") else d.g


REGISTRY.update({
    "zo_adam": RuleInfo(
        ZOAdam, ref_adamm, state=("m", "v"), bad=_ADAPTIVE_BAD, lr=3e-2, scalars=adam_bias_correction,
        variants=({"betas": (0.8, 0.95), "eps": 1e-3, "num_queries": 2}, {"bias_correction": False})),
    "fzoo": RuleInfo(
        FZOO, ref_sgd, estimate=est_fzoo, fixed=("estimator",), transcription_lr=1e-2,
        variants=({"form": "paper", "std": "sample", "num_queries": 3, "lr": 1e-5}, {"num_queries": 2},
                  {"directions": "gaussian", "zeta": 1e-3}),
        bad=(({"num_queries": 1}, r"num_queries: 1 .*N >= 2"), ({"form": "published"}, "form 'published'"),
             ({"std": "biased"}, "std 'biased'"), ({"estimator": "central"}, "not an option"))),
    "zo_sgd_cons": RuleInfo(
        ZOSGDCons, ref_cons, fixed=("estimator",),
        variants=({"mu": 1.0}, {"num_queries": 3, "lr": 0.2}),  # the first keeps θ, then moves by −ηĝ and +ηĝ
        bad=(({"base": "adamw_code"}, "adamw_code.*not implemented"), ({"base": "adam"}, "base 'adam'"),
             ({"estimator": "forward"}, "not an option"))),
    "lezo": RuleInfo(
        LeZO, ref_lezo, joint=lezo_blocks, fixed=("block_selection", "blocks_per_step"), all_blocks={"rho": 0.0},
        variants=({"rho": 0.25}, {"rho": 0.5, "rescale": True}, {"always_active": ["b"], "seed": 3},
                  {"blocks": None}),
        bad=(({"rho": 1.0}, r"rho: 1.0.*\[0.0, 1.0\)"), ({"always_active": ["nope"]}, r"unknown: \['nope'\]"),
             ({"block_selection": "cyclic"}, "not an option"), ({"always_active": "b"}, "list of block names"))),
})
