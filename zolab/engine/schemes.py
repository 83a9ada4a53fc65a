"""Difference schemes: which points a step evaluates and how their losses become the projected gradients δ_k.

A scheme is one object (``DifferenceScheme``): ``points(queries)`` names the points in loss order,
``differences(losses, queries, refs)`` turns their losses into δ_k (K,), the logged loss and extras for the
record, ``forwards(K)`` is its cost in forward passes. ``estimate(ctx, queries)`` runs them: the default
evaluates the points (``ctx.evaluate_all``) and differences them; a scheme with several phases or without
points (JVP) overrides it. The estimator keeps the rest (seeds, the parallel split, the batched path, c).

A point (``Point``) is base + Σ_j r_j·u_{q_j} on every perturbed tensor: base θ (None), a state tensor of the
rule (its name) or any ``ref -> tensor``; r_j = coef_j·μ_g (μ of the tensor's group) for a number, or
``coef_j(ref)`` for a callable (an absolute radius, e.g. −η_g·a_k for a candidate θ − ηĝ). θ is ``Point()``.

Built-ins (``SCHEMES``): ``forward`` (ℓ₀ then ℓ(θ + μu_k), K + 1), ``central`` (ℓ±, 2K), ``three_point`` (ℓ₀
then ℓ±, 2K + 1: HiZOO's Δ_k = ℓ₊ + ℓ₋ − 2ℓ₀), ``fzoo`` (``NormalisedOneSided``: N one-sided probes then ℓ₀,
δ_i from the probes' spread) and ``jvp`` (no differences: s_k = ∇f·u_k from one forward-mode pass).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from zolab.engine.checks import check_choice, check_range


@dataclass(frozen=True)
class Point:
    """base + Σ_j r_j u_{q_j} (see the module doc); ``terms``: ((query, coef), ...)."""

    terms: tuple = ()
    base: str | Callable | None = None

    @property
    def queries(self) -> list:
        return [q for q, _ in self.terms]

    @property
    def is_theta(self) -> bool:
        return not self.terms and self.base is None

    @property
    def simple(self) -> bool:
        """θ + coef·μ_g·u of one query: the points module mode builds row by row or in chunks."""
        return self.base is None and len(self.terms) == 1 and not callable(self.terms[0][1])

    def radii(self, ref) -> list:
        """r_j on one tensor: coef_j·μ_g, or coef_j(ref) for a callable coefficient."""
        return [c(ref) if callable(c) else c * ref.group["mu"] for _, c in self.terms]


THETA = Point()


def base_of(point: Point, ref, state=None) -> torch.Tensor | None:
    """A point's base on one tensor: None for θ, a callable base's value, or the rule's state tensor of that
    name (``state(ref, name)``)."""
    if point.base is None:
        return None
    if callable(point.base):
        return point.base(ref)
    if state is None:
        raise ValueError(f"a point based on state {point.base!r} needs the rule's state; this evaluation has none")
    return state(ref, point.base)


def as_point(where, sign: float = 1.0) -> Point:
    """A ``Point`` from what an evaluator is called with: a Point (its coefficients times ``sign``), a query
    (θ + sign·μ·u) or None (θ)."""
    if where is None:
        return THETA
    if isinstance(where, Point):
        if sign == 1.0:
            return where
        return Point(tuple((q, (lambda r, c=c: sign * c(r)) if callable(c) else sign * c) for q, c in where.terms),
                     where.base)
    return Point(((where, sign),))


@dataclass
class Differences:
    """What a scheme makes of a block's losses."""

    diffs: torch.Tensor  # (K,) δ_k: ĝ = (c/K) Σ_k (δ_k/μ_g) u_k, or (c/K) Σ_k δ_k u_k when mu_free
    losses: torch.Tensor  # every evaluated loss, in evaluation order (the record; the non-finite check)
    loss: torch.Tensor  # the logged loss of the step
    extras: dict = field(default_factory=dict)  # scheme-specific values for the record (Δ, σ, ...)
    mu_free: bool = False  # δ_k is already a projected gradient (JVP, FZOO's code form): no division by μ
    queries: list | None = None  # the queries ĝ is made of, when not the step's (e.g. an anchor's kept seed)


class DifferenceScheme:
    """The protocol. A subclass sets ``name`` and writes ``points`` and ``differences`` (and ``forwards``), or
    overrides ``estimate``. ``evaluators``: names of extra evaluation contexts the scheme reads
    (``step(closure, **evaluators)``, ``ctx.evaluate_all(points, using=name)``); ``batched``: whether a
    batched objective can evaluate its points. ``check(K)`` refuses a number of queries it cannot use."""

    name = ""
    evaluators: tuple[str, ...] = ()
    batched = True

    def check(self, num_queries: int) -> None:
        """Raise ValueError naming ``num_queries`` when this scheme cannot use it."""

    def points(self, queries: list) -> list[Point]:
        """The points to evaluate, in loss order."""
        raise NotImplementedError(f"{type(self).__name__} must define points() or override estimate()")

    def differences(self, losses: torch.Tensor, queries: list, refs: list) -> Differences:
        """δ_k (K,), the logged loss and extras from the points' losses (in ``points``' order)."""
        raise NotImplementedError(f"{type(self).__name__} must define differences() or override estimate()")

    def forwards(self, num_queries: int) -> int:
        """Forward passes a step of one block costs (equal-budget accounting, docs/algorithms.md §5)."""
        return len(self.points([None] * num_queries))

    def estimate(self, ctx, queries: list) -> Differences:
        """Evaluate ``points`` with ``ctx`` (``zolab.engine.estimator.Context``), then ``differences``."""
        return self.differences(ctx.evaluate_all(self.points(queries)), queries, ctx.refs)

    def config(self) -> str:
        """What the saved state records of this scheme (its name, and its options when it has any)."""
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _plus_minus(queries) -> list[Point]:
    return [Point(((q, s),)) for q in queries for s in (1.0, -1.0)]


class Forward(DifferenceScheme):
    """ℓ₀ = f(θ), then ℓ_k = f(θ + μu_k): δ_k = ℓ_k − ℓ₀, logged loss ℓ₀; K + 1 forwards."""

    name = "forward"

    def points(self, queries):
        return [THETA, *(Point(((q, 1.0),)) for q in queries)]

    def differences(self, losses, queries, refs):
        return Differences(losses[1:] - losses[0], losses, losses[0])


class Central(DifferenceScheme):
    """ℓ±_k = f(θ ± μu_k): δ_k = (ℓ₊ − ℓ₋)/2, logged loss the mean of the ± losses; 2K forwards."""

    name = "central"

    def points(self, queries):
        return _plus_minus(queries)

    def differences(self, losses, queries, refs):
        return Differences((losses[0::2] - losses[1::2]) / 2, losses, losses.mean())


class ThreePoint(DifferenceScheme):
    """ℓ₀, then ℓ±_k: δ_k = (ℓ₊ − ℓ₋)/2, logged loss ℓ₀, extras ``delta`` Δ_k = ℓ₊ + ℓ₋ − 2ℓ₀ (HiZOO's
    curvature along u_k); 2K + 1 forwards."""

    name = "three_point"

    def points(self, queries):
        return [THETA, *_plus_minus(queries)]

    def differences(self, losses, queries, refs):
        plus, minus = losses[1::2], losses[2::2]
        return Differences((plus - minus) / 2, losses, losses[0], {"delta": plus + minus - 2 * losses[0]})


STDS = ("population", "sample")
FORMS = ("code", "paper")


class NormalisedOneSided(DifferenceScheme):
    """FZOO (Dang et al., arXiv 2506.09034): ℓ_i = f(θ + μu_i), i = 1..N, then ℓ₀ = f(θ) after the probes;
    σ = std of the N probe losses only (``std="population"``: 1/N, the code; ``"sample"``: 1/(N − 1));
    δ_i = (ℓ_i − ℓ₀)/(σ + ζ). ``form="code"``: δ_i is μ-free, so ĝ's coefficient (c/K)δ_i is the code's
    (ℓ_i − ℓ₀)/(Nσ); ``form="paper"``: (c/K)δ_i/μ, the paper's g/σ. ζ (1e-12) keeps σ = 0 (all probe losses
    equal) finite. Logged loss ℓ₀; extras ``sigma``; N + 1 forwards; N >= 2."""

    name = "fzoo"

    def __init__(self, form: str = "code", std: str = "population", zeta: float = 1e-12):
        check_choice("form", form, FORMS)
        check_choice("std", std, STDS)
        check_range("zeta", zeta, 0.0, float("inf"))
        self.form, self.std, self.zeta = form, std, zeta

    def check(self, num_queries):
        if num_queries < 2:
            raise ValueError(f"invalid num_queries: {num_queries} for estimator 'fzoo'; allowed: N >= 2 (σ "
                             "needs two probes)")

    def points(self, queries):
        return [*(Point(((q, 1.0),)) for q in queries), THETA]

    def differences(self, losses, queries, refs):
        probes, l0 = losses[:-1], losses[-1]
        sigma = probes.std(correction=0 if self.std == "population" else 1)
        diffs = (probes - l0) / (sigma + self.zeta)
        return Differences(diffs, losses, l0, {"sigma": sigma}, mu_free=self.form == "code")

    def config(self):
        return f"fzoo(form={self.form!r}, std={self.std!r}, zeta={self.zeta!r})"

    def __repr__(self):
        return f"NormalisedOneSided(form={self.form!r}, std={self.std!r}, zeta={self.zeta!r})"


class JVP(DifferenceScheme):
    """Forward gradients (Baydin et al., arXiv 2202.08587): (ℓ, s_k) = (f(θ), ∇f(θ)·u_k) from one forward-mode
    pass per query (``ctx.jvp_all``), exact, no μ: δ_k = s_k is μ-free, so ĝ = (c/K) Σ_k s_k u_k. Logged loss
    ℓ; K passes. Needs the bound model (``optimizer.bind(model)``); no batched objective."""

    name = "jvp"
    batched = False

    def forwards(self, num_queries):
        return num_queries

    def estimate(self, ctx, queries):
        losses, s = ctx.jvp_all(queries)
        return Differences(s, losses, losses[0], mu_free=True)


SCHEMES: dict[str, type[DifferenceScheme]] = {c.name: c for c in (Forward, Central, ThreePoint,
                                                                   NormalisedOneSided, JVP)}


def make_scheme(estimator) -> DifferenceScheme:
    """The scheme named ``estimator`` (one of ``SCHEMES``, default options) or a ``DifferenceScheme`` as it is."""
    if isinstance(estimator, DifferenceScheme):
        return estimator
    if estimator not in SCHEMES:
        raise ValueError(f"unknown estimator {estimator!r}; allowed: {list(SCHEMES)} or a DifferenceScheme")
    return SCHEMES[estimator]()
