"""The rule registry of the tests: every rule's class, test arguments, state, capabilities and dense reference.

``REGISTRY`` drives the table-driven tests of ``tests/rules/`` (in the manner of torch's ``OptimizerInfo``): a
rule is its file in ``zolab/rules/`` plus one ``RuleInfo`` entry here, and every generic test (float64
transcription, fused program against the eager update, lr = 0, resume, state_dict, bad input, a short
convergence check) runs on it. ``reference`` is a direct transcription of the rule's update on dense float64
vectors (docs/algorithms.md §3), written apart from the rule's own ``update``: the tests build ĝ, the blocks
and the weight decay themselves (§1, §2) and call it with a ``Dense`` context. The runtime map of rules by
short name is ``zolab.rules.RULES``; it does not import this module.

A rule that is not element-wise states what the generic tests must know in its entry's capability fields
(``direction``, ``own_direction``, ``estimate``, ``scalars``, ``state_shapes``, ``decays``, ``unbatched``,
``needs_model``, ``converge``, ``joint``, ``all_blocks``, ``transcription_lr``; each documented in
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
    theta: torch.Tensor | None = None  # θ before this update (Sparse-MeZO's mask, ZO-SGD-Cons' candidates)
    f: Callable | None = None  # the loss on R^d (for an update that evaluates points: ZO-SGD-Cons' candidates)
    ghat: torch.Tensor | None = None  # ĝ alone (``g`` less the coupled decay λθ)

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
    # estimate(d, f, θ, seeds, draw) -> (ps, us): the rule's difference scheme written out, when its points are
    # not θ ± μu_k of the step's queries (an anchor θ̄, a full batch: MeZO-SVRG; N one-sided probes over their
    # spread: FZOO); ĝ = (c/K) Σ p_k u_k, seeds are the step's query seeds, draw(seed) the direction of a query
    # seed on the block; it may set d.h["lr"] (the step's η) and keep its state in d.state.
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
    # own_direction(d, noise) -> u (float64, on θ): the reference of a rule's ``own_direction`` (ZO-AdaMU's, HiZOO's,
    # Sparse-MeZO's), from the step's standard normal fields ``noise`` (also in ``d.state["noise"]``).
    own_direction: Callable | None = None
    # needs_model: the rule steps only bound to its model (Forward-Grad: the JVP differentiates through it); the
    # tests bind it; it refuses a batched objective and shards of tensors.
    needs_model: bool = False
    # converge: rule options of the convergence check (Sparse-MeZO: thresholds fixed at θ₀ freeze every entry that
    # outgrows them, so at s = 0.8 the tiny problem stalls near 0.94 of its start: s = 0.5, refreshed every 10 steps).
    converge: dict = field(default_factory=dict)
    # joint(t, block names, options) -> the indices of the blocks step t perturbs and updates together, for a rule
    # that estimates several blocks jointly (uniform_subset: LeZO); None: one block a step, or all with
    # blocks_per_step="all".
    joint: Callable | None = None
    # all_blocks: the arguments that make every block active in one step (the atomic-step test): a rule whose step
    # is always one joint estimate (LeZO) reaches all blocks through its own option instead.
    all_blocks: dict = field(default_factory=lambda: {"blocks_per_step": "all"})
    # transcription_lr: the transcription's step size when the test's 0.05 is too large for the rule (None: 0.05).
    # FZOO's step is normalised (about η·√(d/N) whatever the gradient): at 0.05 with sphere directions (c = d) it
    # moves θ by ~3.6 in 6 steps, and σ, the spread of two probe losses, amplifies float rounding past 1e-10.
    transcription_lr: float | None = None

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
        ZOAdaMU, ref_adamu, kwargs={"total_steps": 40, "t1": 5}, state=("m",), own_direction=ref_adamu_direction,
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
# (or in a file of its own beside this one that zolab/testing/__init__.py imports, as rules_structured.py)
