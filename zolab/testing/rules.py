"""The rule registry of the tests: every rule's class, test arguments, state, capabilities and dense reference.

``REGISTRY`` drives the table-driven tests of ``tests/rules/`` (in the manner of torch's ``OptimizerInfo``): a
rule is its file in ``zolab/rules/`` plus one ``RuleInfo`` entry here, and every generic test (float64
transcription, fused program against the eager update, lr = 0, resume, state_dict, bad input, a short
convergence check) runs on it. ``reference`` is a direct transcription of the rule's update on dense float64
vectors (docs/algorithms.md §3), written apart from the rule's own ``update``: the tests build ĝ, the blocks
and the weight decay themselves (§1, §2) and call it with a ``Dense`` context. The runtime map of rules by
short name is ``zolab.rules.RULES``; it does not import this module.

A rule that is not element-wise states what the generic tests must know in its entry's capability fields
(``direction``, ``estimate``, ``scalars``, ``state_shapes``, ``decays``, ``unbatched``; each documented in
``RuleInfo``), so that every generic test runs on it, or is skipped with the reason it gives.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from zolab.rules import (
    MEAZO,
    ZOSGD,
    MeZOBCD,
    RAdaZO,
    ZOAdaMM,
    ZOAdaMU,
    ZOOptimizer,
    ZORMSProp,
    ZOSGDMomentum,
    ZOSignSGD,
)
from zolab.rules.adamm import denominator


@dataclass
class Dense:
    """What a reference update sees at one step, on the concatenated θ ∈ R^d (float64)."""

    g: torch.Tensor  # ĝ, zero outside the active block (λθ included for coupled decay)
    ps: list[float]  # projected gradients p_k
    us: list[torch.Tensor]  # directions u_k
    h: dict  # hyper-parameters at this step (betas as beta1, beta2; schedules resolved)
    mask: torch.Tensor  # the active block
    count: torch.Tensor  # per element: updates so far, this one included
    options: dict  # the rule's constructor options
    scope: str = "global"  # MEAZO's scope key of this block
    state: dict = field(default_factory=dict)  # the reference's own state, kept across steps
    t: int = 0  # the step (1, 2, ...)
    seed: int = 0  # the optimizer's seed
    shapes: tuple = ()  # the tensors' shapes, laid out one after another in θ (tensor i: slices(d)[i])
    block: int = 0  # the index of the block being updated (a reference's state per block: SVRG's anchors)

    def zeros(self) -> torch.Tensor:
        return torch.zeros_like(self.g)

    def get(self, name: str) -> torch.Tensor:
        return self.state.get(name, self.zeros())

    def slices(self) -> list[slice]:
        """Each tensor's elements in θ, in order (``shapes``)."""
        out, start = [], 0
        for shape in self.shapes:
            n = math.prod(shape)
            out.append(slice(start, start + n))
            start += n
        return out


@dataclass(frozen=True)
class RuleInfo:
    """One rule as the generic tests see it."""

    cls: type[ZOOptimizer]
    reference: Callable[[Dense], torch.Tensor]  # returns U; keeps its state in ``Dense.state``
    kwargs: dict = field(default_factory=dict)  # constructor arguments every test passes (beside lr, mu)
    variants: tuple[dict, ...] = ()  # rule options the transcription test covers besides the defaults
    state: tuple[str, ...] = ()  # d-sized state tensors per trainable tensor
    fixed: tuple[str, ...] = ()  # common options the rule does not take (its maths fixes them)
    bad: tuple[tuple[dict, str], ...] = ()  # (arguments, error regex) the constructor must refuse
    lr: float = 1e-2  # a step size for the convergence check on the test problem
    # Capabilities of rules that are not element-wise (structured directions, eager updates, own schemes); the
    # generic tests read them, so every test runs on every rule or is skipped with the stated reason.
    # direction(kw, sampler, query seed, tensor index, shape, t) -> u (float64): the rule's directions written
    # out on one tensor, when they are not the sampler's draw z (low-rank U Vᵀ: LOZO, SubZero).
    direction: Callable | None = None
    # estimate(d, f, θ, seeds, draw) -> (coefs, us): the rule's difference scheme written out, when its points
    # are not θ ± μu_k of the step's queries (an anchor θ̄, a full batch: MeZO-SVRG); ĝ = Σ coefs_k us_k (c/K
    # included), seeds are the step's query seeds, draw(seed) the direction of a query seed on the block; it
    # may set d.h["lr"] (the step's η) and keep its state in d.state.
    estimate: Callable | None = None
    # scalars(opt, ref) -> dict: the per-step scalars the rule's ``prepare`` gave ``update`` (as h) at the last
    # step, for the eager comparison (a branch flag, a first-update factor).
    scalars: Callable | None = None
    # state_shapes(opt, param) -> {name: shape}: the state a tensor gets, when it is not ``state`` in the
    # parameter's shape (a factor-space momentum m × r on matrices).
    state_shapes: Callable | None = None
    # decays(name, shape, kw) -> bool: the tensors decoupled decay touches when no group sets weight_decay, when
    # not those of two or more dimensions (docs/algorithms.md §2): MeZO's name test.
    decays: Callable | None = None
    unbatched: str = ""  # why the rule takes no batched objective (the batched test is skipped with it)

    @property
    def name(self) -> str:
        return self.cls.__name__

    @property
    def own_directions(self) -> bool:
        return type.__getattribute__(self.cls, "own_direction") is not ZOOptimizer.own_direction

    def make(self, params, **kwargs) -> ZOOptimizer:
        return self.cls(params, **{**self.kwargs, **kwargs})


def _masked(d: Dense, name: str, new: torch.Tensor) -> torch.Tensor:
    """State ``name`` updated on the active block only (inactive blocks keep theirs frozen)."""
    d.state[name] = torch.where(d.mask, new, d.get(name))
    return d.state[name]


def _den(v, h, options):
    return denominator(v, h["eps"], bool(options.get("eps_inside_sqrt")))


def ref_sgd(d: Dense) -> torch.Tensor:
    return d.g


def ref_momentum(d: Dense) -> torch.Tensor:
    return _masked(d, "b", d.h["momentum"] * d.get("b") + d.g)


def ref_sign(d: Dense) -> torch.Tensor:
    if d.options.get("sign_of") == "scalar":
        return sum(math.copysign(1.0, p) * u if p else 0 * u for p, u in zip(d.ps, d.us)) / len(d.us)
    return torch.sign(d.g)


def ref_adamm(d: Dense) -> torch.Tensor:
    b1, b2 = d.h["beta1"], d.h["beta2"]
    m = _masked(d, "m", b1 * d.get("m") + (1 - b1) * d.g)
    v = _masked(d, "v", b2 * d.get("v") + (1 - b2) * d.g**2)
    if d.options.get("amsgrad"):
        v = _masked(d, "vmax", torch.maximum(d.get("vmax"), v))
    if d.options.get("bias_correction"):
        n = d.count.clamp(min=1)
        m, v = m / (1 - b1**n), v / (1 - b2**n)
    return m / _den(v, d.h, d.options)


def ref_rmsprop(d: Dense) -> torch.Tensor:
    v = _masked(d, "v", d.h["beta"] * d.get("v") + (1 - d.h["beta"]) * d.g**2)
    return d.g / _den(v, d.h, d.options)


def ref_radazo(d: Dense) -> torch.Tensor:
    b1, b2 = d.h["beta1"], d.h["beta2"]
    m = _masked(d, "m", b1 * d.get("m") + (1 - b1) * d.g)
    v_new = b2 * d.get("v") + (1 - b2) * m**2
    v_new = torch.where(d.count <= d.options.get("v_warmup_steps", 0), torch.ones_like(v_new), v_new)
    return m / _den(_masked(d, "v", v_new), d.h, d.options)


def ref_meazo(d: Dense) -> torch.Tensor:
    beta, K = d.h["beta"], len(d.ps)
    pbar = sum(d.ps) / K
    s = pbar**2 if d.options.get("v_stat", "sq_mean") == "sq_mean" else sum(p**2 for p in d.ps) / K
    v = beta * d.state.get(("v", d.scope), 0.0) + (1 - beta) * s
    n = d.state.get(("n", d.scope), 0) + 1
    d.state[("v", d.scope)], d.state[("n", d.scope)] = v, n
    return d.g / (math.sqrt(v / (1 - beta**n)) + d.h["eps"])


def _adamu_parts(d: Dense, noise: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ż, z̈) = (√α ε₁, m_{t−1} + √(1 − α) ε₂), with (ε₁, ε₂) the rotation of (w, ξ) = (noise[0], noise[1])
    by a = β1 √α, b = (1 − β1) √(1 − α) that ZOAdaMU documents."""
    alpha, beta1 = d.h["alpha"], d.h["beta1"]
    a, b = beta1 * math.sqrt(alpha) + 1e-150, (1 - beta1) * math.sqrt(1 - alpha)
    r = math.hypot(a, b)
    eps1, eps2 = (a * noise[0] + b * noise[1]) / r, (b * noise[0] - a * noise[1]) / r
    return math.sqrt(alpha) * eps1, d.get("m") + math.sqrt(1 - alpha) * eps2


def ref_adamu_direction(d: Dense, noise: list[torch.Tensor]) -> torch.Tensor:
    """u_t = β1 ż + (1 − β1) z̈ (eq. 4)."""
    zdot, zddot = _adamu_parts(d, noise)
    return d.h["beta1"] * zdot + (1 - d.h["beta1"]) * zddot


def ref_adamu(d: Dense) -> torch.Tensor:
    """eqs. 5–6: v = β2 ż² + (1 − β2) z̈², θ −= η ĝ / (√v + ζ), m = u."""
    noise = d.state["noise"]
    zdot, zddot = _adamu_parts(d, noise)
    u = d.h["beta1"] * zdot + (1 - d.h["beta1"]) * zddot
    v = d.h["beta2"] * zdot**2 + (1 - d.h["beta2"]) * zddot**2
    _masked(d, "m", u)
    return d.g / (torch.sqrt(v) + d.h["eps"])


_ADAPTIVE_BAD = (({"betas": (1.0, 0.99)}, r"betas\[0\].*1.0.*\[0.0, 1.0\)"), ({"betas": (0.9, -0.1)}, r"betas\[1\]"),
                 ({"betas": (0.9, 0.99, 0.5)}, "two numbers"), ({"eps": -1.0}, "eps"))

REGISTRY: dict[str, RuleInfo] = {
    "zo_sgd": RuleInfo(ZOSGD, ref_sgd),
    "zo_sgd_momentum": RuleInfo(
        ZOSGDMomentum, ref_momentum, variants=({"momentum": 0.5},), state=("momentum_buffer",),
        bad=(({"momentum": 1.0}, "momentum"),)),
    "zo_signsgd": RuleInfo(
        ZOSignSGD, ref_sign, variants=({"sign_of": "scalar", "num_queries": 3},),
        bad=(({"sign_of": "both"}, "sign_of 'both'"),), lr=2e-2),
    "zo_adamm": RuleInfo(
        ZOAdaMM, ref_adamm, state=("m", "v"), bad=_ADAPTIVE_BAD, lr=3e-2,
        variants=({"amsgrad": True, "betas": (0.8, 0.9)}, {"bias_correction": True, "eps": 1e-3},
                  {"eps_inside_sqrt": True, "eps": 1e-4})),
    "zo_rmsprop": RuleInfo(
        ZORMSProp, ref_rmsprop, state=("v",), lr=3e-2, bad=(({"beta": 1.5}, "beta"),),
        variants=({"beta": 0.9}, {"eps_inside_sqrt": True, "eps": 1e-3})),
    "radazo": RuleInfo(
        RAdaZO, ref_radazo, state=("m", "v"), lr=3e-2,
        bad=(*_ADAPTIVE_BAD, ({"v_warmup_steps": -1}, "v_warmup_steps")),
        variants=({"v_warmup_steps": 2}, {"betas": (0.5, 0.9), "eps_inside_sqrt": True, "eps": 1e-3})),
    "zo_adamu": RuleInfo(
        ZOAdaMU, ref_adamu, kwargs={"total_steps": 40, "t1": 5}, state=("m",),
        fixed=("num_queries", "estimator", "directions", "scale"),
        variants=({"alpha": 0.6, "betas": (0.7, 0.4)}, {"total_steps": 10, "t1": 2, "final": "paper_prose"}),
        bad=(({"total_steps": None}, "total_steps"), ({"num_queries": 2}, "num_queries"),
             ({"alpha": 1.2, "betas": (0.5, 0.5)}, "alpha"), ({"directions": "sphere"}, "own directions"))),
    "meazo": RuleInfo(
        MEAZO, ref_meazo, bad=(({"beta": 1.0}, "beta"), ({"scope": "layer"}, "scope 'layer'")),
        variants=({"num_queries": 3, "v_stat": "mean_sq"}, {"scope": "block", "blocks": ["W", "b"],
                                                            "block_selection": "cyclic", "num_queries": 2},
                  {"scope": "group", "beta": 0.9})),
    "mezo_bcd": RuleInfo(
        MeZOBCD, ref_sgd, variants=({"block_selection": "cyclic"}, {"block_selection": "uniform"},
                                    {"blocks": 2, "block_selection": "cyclic"}),
        bad=(({"blocks": 9}, "equal blocks"), ({"blocks": ["("]}, "invalid"))),
}

# A new rule: its file in zolab/rules/, then here its reference and one entry, e.g.
#     REGISTRY["zo_lion"] = RuleInfo(ZOLion, ref_lion, state=("m",))      (README: "Adding a rule")


# ------------------------------------------------------------------ issue 25, rules C: LOZO, LOZO-M
from zolab.engine.lowrank import V_STREAM  # noqa: E402
from zolab.engine.samplers import make_sampler  # noqa: E402
from zolab.engine.seeds import mix  # noqa: E402
from zolab.rules.lozo import LOZO, LOZOM, NO_DECAY  # noqa: E402


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


# ------------------------------------------------------------------ issue 25, rules C: SubZero
from zolab.engine.lowrank import BASIS_STREAM  # noqa: E402
from zolab.rules.subzero import SubZero  # noqa: E402


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


# ------------------------------------------------------------------ issue 25, rules C: MeZO-SVRG
from zolab.rules.mezo_svrg import MeZOSVRG  # noqa: E402


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
