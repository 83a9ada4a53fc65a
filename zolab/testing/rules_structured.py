"""Registry entries of the rules that are not element-wise given ĝ: LOZO, LOZO-M and SubZero (structured
low-rank directions, eager matrix steps), MeZO-SVRG (its own difference scheme: a kept anchor, a full batch).

Each entry uses ``RuleInfo``'s capability fields (``zolab.testing.rules``) so that every generic test of
``tests/rules/`` runs on it; importing ``zolab.testing`` (or any module of it) registers them.
"""

from __future__ import annotations

import math

import torch

from zolab.engine.groups import NO_DECAY
from zolab.engine.lowrank import BASIS_STREAM, V_STREAM
from zolab.engine.samplers import make_sampler
from zolab.engine.seeds import mix
from zolab.rules.lozo import LOZO, LOZOM
from zolab.rules.mezo_svrg import MeZOSVRG
from zolab.rules.subzero import SubZero
from zolab.testing.rules import REGISTRY, Dense, RuleInfo, _masked, ref_sgd

# ------------------------------------------------------------------ LOZO, LOZO-M


def _draw(sampler, key: int, shape) -> torch.Tensor:
    """``shape`` float64 numbers of ``sampler``'s law for ``key`` (the engine's draw of that key and shape)."""
    return sampler.sample(key, torch.empty(shape, dtype=torch.float64))


def _lozo_matrix(shape, options) -> bool:
    """LOZO perturbs a tensor by U Vᵀ when it has 2 dimensions, or more with reshape_nd="flatten_trailing"."""
    return len(shape) == 2 or (len(shape) > 2 and options.get("reshape_nd", "flatten_trailing") == "flatten_trailing")


def _lozo_v(options, index: int, t: int, n: int) -> torch.Tensor:
    """LOZO's V (n × r) of tensor ``index`` at step t: the draw keyed by (seed, V stream, tensor, ⌊(t − 1)/ν⌋)."""
    sampler = make_sampler(options.get("directions", "gaussian"), options.get("rng", "counter"))
    return _draw(sampler, mix(options.get("seed", 0), V_STREAM, index, (t - 1) // options["nu"]), (n, options["rank"]))


def dir_lozo(kw, sampler, qseed, index, shape, t) -> torch.Tensor:
    """u = U Vᵀ on a matrix (U (m × r) the query's draw on the tensor), the sampler's z on vectors."""
    if not _lozo_matrix(shape, kw):
        return _draw(sampler, mix(qseed, index), shape)
    m = shape[0]
    u = _draw(sampler, mix(qseed, index), (m, kw["rank"]))
    return (u @ _lozo_v(kw, index, t, math.prod(shape) // m).t()).reshape(shape)


def _lozo_g(d: Dense) -> torch.Tensor:
    """ĝ with lozo_scale applied: "unbiased" divides the matrices' ĝ by r."""
    g = d.g.clone()
    if d.options.get("lozo_scale") == "unbiased":
        for sl, shape in zip(d.slices(), d.shapes):
            if _lozo_matrix(shape, d.options):
                g[sl] /= d.options["rank"]
    return g


def ref_lozo(d: Dense) -> torch.Tensor:
    return _lozo_g(d)


def ref_lozo_m(d: Dense) -> torch.Tensor:
    """The factor-space momentum written densely, D = M Vᵀ: D = ĝ at a tensor's first update; else
    D ← β1 D + (1 − β1) ĝ, with D first projected as D V Vᵀ/n when V changed since D was written."""
    g, out, beta1 = _lozo_g(d), d.zeros(), d.h["beta1"]
    for i, (sl, shape) in enumerate(zip(d.slices(), d.shapes)):
        if not d.mask[sl].all():
            continue
        D = d.state.get(("D", i))
        if D is None:
            D = g[sl]
        else:
            if _lozo_matrix(shape, d.options) and d.state[("window", i)] != (d.t - 1) // d.options["nu"]:
                n = math.prod(shape) // shape[0]
                v = _lozo_v(d.options, i, d.t, n)
                D = (D.view(shape[0], n) @ v @ v.t() / n).flatten()
            D = beta1 * D + (1 - beta1) * g[sl]
        d.state[("D", i)], d.state[("window", i)] = D, (d.t - 1) // d.options["nu"]
        out[sl] = D
    return out


def _lozo_decays(name, shape, kw) -> bool:
    """decay_test="name": MeZO's test on names; "ndim": tensors of 2+ dimensions."""
    return len(shape) >= 2 if kw.get("decay_test") == "ndim" else not any(k in name for k in NO_DECAY)


_LOZO_VARIANTS = ({"lozo_scale": "unbiased", "rank": 3, "nu": 2}, {"directions": "rademacher", "nu": 3},
                  {"decay_test": "ndim", "weight_decay": 0.1, "nu": 4, "num_queries": 2})
REGISTRY["lozo"] = RuleInfo(
    LOZO, ref_lozo, kwargs={"nu": 3}, direction=dir_lozo, decays=_lozo_decays, lr=3e-2,
    fixed=("directions", "scale"),  # U, V and the vectors' u are Gaussian or Rademacher (a variant); no sphere
    variants=_LOZO_VARIANTS,
    bad=(({"lozo_scale": "paper"}, r"lozo_scale 'paper'.*\['code', 'unbiased'\]"), ({"nu": 0}, r"invalid nu: 0"),
         ({"rank": 0}, r"invalid rank: 0"), ({"reshape_nd": "error"}, r"reshape_nd 'error'"),
         ({"decay_test": "dims"}, r"decay_test 'dims'"), ({"directions": "sphere"}, r"'gaussian' or 'rademacher'")))
REGISTRY["lozo_m"] = RuleInfo(
    LOZOM, ref_lozo_m, kwargs={"nu": 3}, direction=dir_lozo, decays=_lozo_decays, lr=3e-2,
    state_shapes=lambda opt, p: {"M": (p.shape[0], opt.grad_estimator.directions.rank)} if p.dim() >= 2 else {
        "momentum": p.shape},
    scalars=lambda opt, ref: {"keep": ref.group["beta1"], "new": 1 - ref.group["beta1"]},  # after its first update
    fixed=("directions", "scale",  # as LOZO
           "weight_decay_mode"),  # decoupled only: a factor-space momentum cannot hold λθ
    variants=(*_LOZO_VARIANTS, {"beta1": 0.5, "nu": 1}, {"weight_decay": 0.1, "nu": 2, "blocks": ["W", "b"],
                                                         "block_selection": "cyclic"}),
    bad=(({"beta1": 1.0}, r"beta1"), ({"weight_decay_mode": "coupled"}, r"weight_decay_mode 'coupled'|'decoupled'")))


# ------------------------------------------------------------------ SubZero


def dir_subzero(kw, sampler, qseed, index, shape, t) -> torch.Tensor:
    """u = √(mn)/r · U Z Vᵀ on a tensor whose squeezed shape is m × n: U, V the Q factors of the draws keyed by
    (seed, basis stream, tensor, ⌊(t − 1)/T₀⌋, side), Z (r × r) the query's draw, r = min(rank, m, n)."""
    dims = [s for s in shape if s > 1]
    if len(dims) != 2:
        return _draw(sampler, mix(qseed, index), shape)
    (m, n), window = dims, (t - 1) // kw["t0"]
    r = min(kw["rank"], m, n)
    U, V = (torch.linalg.qr(_draw(sampler, mix(kw.get("seed", 0), BASIS_STREAM, index, window, side), (rows, r))).Q
            for side, rows in enumerate((m, n)))
    return (math.sqrt(m * n) / r * U @ _draw(sampler, mix(qseed, index), (r, r)) @ V.t()).reshape(shape)


def ref_subzero(d: Dense) -> torch.Tensor:
    """ĝ, or torch's SGD momentum b ← γ b + ĝ with momentum γ > 0."""
    if not d.options.get("momentum"):
        return d.g
    return _masked(d, "momentum_buffer", d.h["momentum"] * d.get("momentum_buffer") + d.g)


REGISTRY["subzero"] = RuleInfo(
    SubZero, ref_subzero, kwargs={"rank": 2, "t0": 3}, direction=dir_subzero,
    fixed=("directions", "scale"),  # Gaussian or Rademacher (a variant); no sphere
    variants=({"momentum": 0.9}, {"momentum": 0.5, "weight_decay": 0.1, "weight_decay_mode": "coupled"},
              {"momentum": 0.9, "weight_decay": 0.1, "t0": 1, "blocks": ["W", "b"], "blocks_per_step": "all"},
              {"rank": 8, "t0": 2, "store_subspace": False, "num_queries": 2}, {"directions": "rademacher"}),
    bad=(({"rank": 0}, r"invalid rank: 0"), ({"t0": 0}, r"invalid t0: 0"), ({"momentum": 1.0}, r"momentum"),
         ({"store_subspace": "yes"}, r"store_subspace"), ({"directions": "sphere"}, r"'gaussian' or 'rademacher'")))


# ------------------------------------------------------------------ MeZO-SVRG


def est_svrg(d: Dense, f, theta, seeds, draw):
    """MeZO-SVRG's estimate (Algorithm 1), the test problems' closure being the full objective. Anchor step
    (t − 1 ≡ 0 mod q, or the block's first): p̄ at θ along z̄ (the step's query), θ̄ = θ kept on the block, η = η₁;
    ĝ = p̄ z̄. Else p₁ at θ along z₁ (the step's query), p₂ at θ̄ (θ elsewhere) along z₂ (query seed mix(s₁, 1), or
    z₁ with shared_z), η = η₂; ĝ = p₁z₁ − p₂z₂ + p̄z̄."""
    mu, key = d.h["mu"], ("anchor", d.block)
    if (d.t - 1) % d.options.get("q", 2) == 0 or key not in d.state:
        z = draw(seeds[0])
        p = float(f(theta + mu * z) - f(theta - mu * z)) / (2 * mu)
        d.state[key] = (theta.clone(), z, p)
        d.h["lr"] = d.options.get("anchor_lr") or d.h["lr"]
        return [p], [z]
    bar, z_bar, p_bar = d.state[key]
    bar = torch.where(d.mask, bar, theta)
    z1 = draw(seeds[0])
    z2 = z1 if d.options.get("shared_z") else draw(mix(seeds[0], 1))
    p1 = float(f(theta + mu * z1) - f(theta - mu * z1)) / (2 * mu)
    p2 = float(f(bar + mu * z2) - f(bar - mu * z2)) / (2 * mu)
    return [p1, -p2, p_bar], [z1, z2, z_bar]


REGISTRY["mezo_svrg"] = RuleInfo(
    MeZOSVRG, ref_sgd, estimate=est_svrg, state=("anchor",),
    kwargs={"anchor_batch": "closure"},  # the test problems' closures are full-batch objectives
    scalars=lambda opt, ref: opt.scalars_of(ref, opt.record.blocks[0]),
    unbatched="MeZO-SVRG's ĝ holds the kept anchor direction, which a batched objective's drawn rows lack",
    fixed=("num_queries", "estimator", "directions", "scale",  # its own scheme: one query an estimate (no sphere)
           "block_selection"),  # every block each step (blocks_per_step="all"): an anchor step anchors all
    variants=({"q": 3}, {"q": 3, "shared_z": True, "directions": "rademacher"},
              {"q": 2, "anchor_lr": 0.2, "weight_decay": 0.1}, {"q": 1},
              {"q": 3, "anchor_lr": 0.1, "blocks": ["W", "b"], "blocks_per_step": "all", "weight_decay": 0.1,
               "weight_decay_mode": "coupled"}),
    bad=(({"q": 0}, r"invalid q: 0"), ({"anchor_batch": "mini"}, r"anchor_batch 'mini'"),
         ({"anchor_storage": "replay"}, r"anchor_storage 'replay'.*\['copy'\]"), ({"num_queries": 2}, "num_queries"),
         ({"shared_z": 1}, "shared_z"), ({"anchor_lr": -1.0}, "anchor_lr"), ({"plateau_anneal": 0.5}, "plateau_anneal"),
         ({"plateau_anneal": 2.0}, "plateau_window"), ({"directions": "sphere"}, r"directions 'sphere'"),
         ({"blocks": "tensor"}, r"blocks_per_step=1.*allowed: 'all'")))
