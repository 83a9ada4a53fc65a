"""The estimator: K queries along the directions, a difference scheme, ĝ = (c/K) Σ_k p_k u_k.

For query k with direction u_k (regenerated from its seed, tensor by tensor; docs/algorithms.md §1) a
difference scheme (``zolab.engine.schemes``) names the points to evaluate and turns their losses into δ_k:

- ``forward``: δ_k = f(θ + μu_k) − f(θ), cost K + 1 forwards;
- ``central``: δ_k = (f(θ + μu_k) − f(θ − μu_k))/2, cost 2K forwards;
- ``three_point``, ``fzoo``, ``jvp`` or any ``DifferenceScheme`` (docs/algorithms.md §1.1);

and ĝ = (c/K) Σ_k (δ_k/μ) u_k (δ_k itself for a μ-free scheme), with c = d for ``sphere``
(``scale="dimension"``) and 1 otherwise. With a per-group μ_g the perturbation is μ_g u on group g and ĝ_g
uses δ_k/μ_g, which reduces to the formula above when all μ are equal.

The estimator knows nothing of how a point is evaluated: the optimizer passes ``evaluate(point, sign)``
(exact restore: a perturbed point is built in a fresh tensor that ``.data`` points at for the call, then
pointed back, also when the closure raises; or built inside each module's forward, ``zolab.engine.perturb``). A
problem whose parameter is one tensor may pass a batched objective instead: its K directions are drawn once
into a (K, n) tensor that makes every point of the step (rows, one call) and then ĝ. ``parallel`` decides which
points this process evaluates and combines the losses of all processes (one collective per evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from zolab.engine.checks import check_choice, check_int
from zolab.engine.groups import ParamRef, compute_type
from zolab.engine.schemes import DifferenceScheme, Point, base_of, make_scheme
from zolab.engine.seeds import mix_each

SCALES = ("dimension", "none")


@dataclass
class Query:
    """Query k of block position ``position`` at step t, with its seed (its direction is regenerated from it)."""

    seed: int
    t: int = 0  # the step (structured directions keep factors across steps by it)
    position: int = 0  # the block position within the step
    k: int = 0  # the query index
    inv_norm: torch.Tensor | None = None  # 1/||z|| over the perturbed set (sphere)


@dataclass
class BlockEstimate:
    """What one estimation over a set of tensors produced; enough to regenerate ĝ exactly."""

    block: str
    refs: list[ParamRef]
    queries: list[Query]
    diffs: torch.Tensor  # (K,) δ_k, a device tensor (no host sync)
    losses: torch.Tensor  # every point's loss, in the scheme's evaluation order
    loss: torch.Tensor  # the scheme's logged loss: f(θ) for forward, mean of the ± losses for central
    scale: float  # c
    drawn: torch.Tensor | None = None  # (K, n) unit directions of a batched step (a scratch tensor, reused)
    extras: dict = field(default_factory=dict)  # the scheme's values for probes (Δ, σ, ...)
    mu_free: bool = False  # δ_k is a projected gradient already (JVP): coefficients are (c/K) δ_k
    forwards: int | None = None  # forward passes (points or JVPs) this estimate cost; None: len(losses)

    @property
    def seeds(self) -> list[int]:
        return [q.seed for q in self.queries]

    @property
    def projected_grads(self) -> torch.Tensor:
        """p_k = δ_k/μ (the μ of the block's first tensor; per-group μ: see ``coefficients``); δ_k if μ-free."""
        return self.diffs if self.mu_free else self.diffs / self.refs[0].group["mu"]

    def coefficients(self, ref: ParamRef) -> torch.Tensor:
        """(c/K) δ_k/μ_g for each k (μ-free: (c/K) δ_k): ĝ on ``ref`` is Σ_k coef_k u_k."""
        if self.mu_free:
            return self.diffs * (self.scale / len(self.queries))
        return self.diffs * (self.scale / (len(self.queries) * ref.group["mu"]))

    def grad(self, directions) -> dict[str, torch.Tensor]:
        """ĝ on each tensor of the block, by name, regenerated along ``directions`` (the batched step's
        ``drawn`` rows when it kept them: one product, no redraw)."""
        out = {}
        for r in self.refs:
            coefs = self.coefficients(r)
            if self.drawn is not None:
                out[r.name] = (coefs.to(self.drawn.dtype) @ self.drawn).view(r.param.shape)
            else:
                out[r.name] = directions.combine(r, self.queries, coefs)
        return out


def as_loss(value) -> torch.Tensor:
    """The closure's return value as a 0-dim tensor; anything else is a TypeError."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.float64)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"the closure must return the loss as a scalar tensor or float, got {type(value).__name__}")
    if value.numel() != 1:
        raise TypeError(f"the closure must return a scalar loss, got a tensor of shape {tuple(value.shape)}")
    return value.detach().reshape(())


class Local:
    """One process: every point is evaluated here and its loss is final."""

    def owned(self, num_points: int) -> range:
        return range(num_points)

    def combine(self, losses: torch.Tensor, owned) -> torch.Tensor:
        return losses


class Estimator:
    """ĝ from ``num_queries`` queries along ``directions`` with a difference scheme (``difference``: a name of
    ``zolab.engine.schemes.SCHEMES`` or a ``DifferenceScheme``) and scale c (``dimension`` | ``none``). Args as
    in docs/algorithms.md §1; the optimizer owns one."""

    def __init__(self, directions, difference: str | DifferenceScheme = "central", num_queries: int = 1,
                 scale: str = "none"):
        check_int("num_queries", num_queries, 1)
        self.scheme = make_scheme(difference)
        self.scheme.check(num_queries)
        check_choice("scale", scale, SCALES)
        self.directions, self.num_queries, self.scale = directions, num_queries, scale
        self.parallel = Local()
        self.shard_sum = None  # for sharded tensors: sums a tensor over the processes holding the shards

    @property
    def difference(self) -> str:
        """The scheme's name (``"forward"``, ``"central"``, ...): the record's ``estimator``."""
        return self.scheme.name

    def queries(self, seed: int, t: int, position: int) -> list[Query]:
        """Query k of block position ``position`` at step t owns the seed mix(seed, t, position, k)."""
        seeds = mix_each((seed, t, position), range(self.num_queries))
        return [Query(s, t, position, k) for k, s in enumerate(seeds)]

    def scale_of(self, refs: list[ParamRef]) -> float:
        return float(sum(r.numel for r in refs)) if self.scale == "dimension" else 1.0

    def points(self, queries: list[Query]) -> list[Point]:
        """The step's points in their loss order (the scheme's)."""
        return self.scheme.points(queries)

    def estimate(self, block: str, refs: list[ParamRef], queries: list[Query], evaluate, batched=None,
                 scratch=None, jvp=None, evaluators=None, state=None) -> BlockEstimate:
        """Run the scheme on one block: its points evaluated by ``evaluate(point, sign)`` (or by the one-tensor
        objective ``batched``), ``jvp(query) -> (loss, s)`` for a forward-mode scheme, ``evaluators``: the
        scheme's extra evaluation contexts by name, ``state(ref, name)``: the rule's state tensors (the bases
        of points such as an anchor θ̄). ``scratch(key, shape, dtype, device)`` gives reusable tensors (the
        batched path's rows)."""
        if batched is not None:
            if len(refs) != 1:
                raise ValueError(f"a batched objective needs a block of one tensor; block {block!r} has {len(refs)}")
            if not self.scheme.batched:
                raise ValueError(f"estimator {self.scheme.name!r} cannot use a batched objective; pass a closure")
        else:
            self.directions.prepare(refs, queries, None if scratch is None else lambda r: scratch(
                (r.index, "u"), r.param.shape, r.param.dtype, r.param.device), self.shard_sum)
        ctx = Context(self, block, refs, queries, evaluate, batched, scratch, jvp, evaluators or {}, state)
        d = self.scheme.estimate(ctx, queries)
        if d.queries is not None and (ctx.drawn is not None or len(d.queries) != len(d.diffs)):
            raise ValueError(f"estimator {self.scheme.name!r} made ĝ of {len(d.queries)} queries and {len(d.diffs)} "
                             "differences; allowed: one difference per query, and no batched objective")
        return BlockEstimate(block, refs, queries if d.queries is None else d.queries, d.diffs, d.losses, d.loss,
                             self.scale_of(refs), ctx.drawn, d.extras, d.mu_free, ctx.forwards)


class Context:
    """What a scheme's ``estimate`` works with for one block: ``refs``, ``queries``, ``directions``,
    ``evaluate_all(points, using=None)`` (losses of points, split over processes by ``parallel``; ``using``
    names one of the step's extra evaluators), ``jvp_all(queries)`` and ``forwards`` (passes so far)."""

    def __init__(self, estimator: Estimator, block, refs, queries, evaluate, batched, scratch, jvp, evaluators,
                 state=None):
        self.estimator, self.block, self.refs, self.queries = estimator, block, refs, queries
        self.directions, self.parallel = estimator.directions, estimator.parallel
        self._evaluate, self._batched, self._scratch, self._jvp = evaluate, batched, scratch, jvp
        self.evaluators, self.state = evaluators, state
        self.forwards = 0
        self.drawn: torch.Tensor | None = None  # the batched path's (K, n) directions, drawn once

    def _source(self, using):
        if using is None:
            return self._batched if self._batched is not None else self._evaluate
        if using not in self.evaluators:
            raise ValueError(f"estimator {self.estimator.scheme.name!r} evaluates with {using!r}, which this step "
                             f"was not given; pass step(closure, {using}=...) (given: {sorted(self.evaluators)})")
        return self.evaluators[using]

    def evaluate_all(self, points: list[Point], using: str | None = None) -> torch.Tensor:
        """Every point's loss (P,), the same on every process; this process evaluates its share."""
        source = self._source(using)
        owned = self.parallel.owned(len(points))
        self.forwards += len(points)
        if self._batched is not None:
            return self._batched_losses(points, owned, source)
        losses = [as_loss(source(points[i], 1.0)) for i in owned]
        if not losses:  # nothing to evaluate here (an empty data shard): the others' losses come from combine
            losses = [self.refs[0].param.new_zeros((), dtype=torch.float64)]
        losses = torch.stack([x.to(losses[0].dtype) for x in losses])
        if len(owned) != len(points):
            full = losses.new_zeros(len(points))
            full[list(owned)] = losses
            losses = full
        return self.parallel.combine(losses, owned)

    def jvp_all(self, queries: list[Query]) -> tuple[torch.Tensor, torch.Tensor]:
        """(losses (K,), s (K,)): f(θ) and ∇f(θ)·u_k of each query, one forward-mode pass each."""
        if self._jvp is None:
            raise ValueError(f"estimator {self.estimator.scheme.name!r} needs forward-mode passes, which this "
                             "evaluation cannot make (a batched objective, or no model)")
        K = len(queries)
        owned = self.parallel.owned(K)
        self.forwards += K
        # float64 on every process, whatever it owns: the all-reduce needs one dtype
        values = torch.zeros(2 * K, dtype=torch.float64, device=self.refs[0].param.device)
        for k in owned:
            loss, s = self._jvp(queries[k])
            values[k], values[K + k] = loss.to(values), s.to(values)
        values = self.parallel.combine(values, [*owned, *(K + k for k in owned)])
        return values[:K], values[K:]

    def _batched_losses(self, points, owned, batched) -> torch.Tensor:
        """The points as rows of one tensor, one call of the batched objective."""
        ref = self.refs[0]
        p = ref.param
        ct, (K, n) = compute_type(p), (len(self.queries), p.numel())
        scratch = self._scratch

        def buffer(key, shape):  # reused across steps: a fresh allocation this size can cost as much as the draw
            return scratch((ref.index, key), shape, ct, p.device) if scratch else torch.empty(shape, dtype=ct,
                                                                                             device=p.device)

        if self.drawn is None:
            self.drawn = self.directions.rows(ref, self.queries, buffer("U", (K, n)))
        rows = point_rows(points, self.drawn, {id(q): k for k, q in enumerate(self.queries)}, ref,
                          p.detach().reshape(-1).to(ct), buffer("points", (len(points), n)), self.state)
        sub = rows if len(owned) == len(points) else rows[list(owned)]
        values = batched(sub.to(p.dtype).view(-1, *p.shape)) if len(sub) else rows.new_zeros(0)
        if not isinstance(values, torch.Tensor) or values.shape != (len(sub),):
            got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise TypeError(f"the batched objective must return one loss per point, shape ({len(sub)},); got {got}")
        losses = values.detach()
        if len(owned) != len(points):
            losses = losses.new_zeros(len(points)).index_copy_(0, torch.tensor(list(owned), dtype=torch.long), losses)
        return self.parallel.combine(losses, owned)


def point_rows(points: list[Point], u: torch.Tensor, index: dict, ref: ParamRef, theta: torch.Tensor,
               out: torch.Tensor, state=None) -> torch.Tensor:
    """Row i of ``out`` = point i on a one-tensor block, from the drawn directions ``u`` (K, n) (``index``: query
    id -> row). The points θ + c·μ·u_k of one coefficient c over all K queries, at rows in arithmetic progression
    (forward's and central's), are one ``torch.add`` each; any other point is built row by row."""
    done, by_coef = set(), {}
    for i, pt in enumerate(points):
        if pt.simple:
            by_coef.setdefault(pt.terms[0][1], []).append(i)
    for c, rows in by_coef.items():
        ks = [index[id(points[i].terms[0][0])] for i in rows]
        step = rows[1] - rows[0] if len(rows) > 1 else 1
        if ks == list(range(len(u))) and rows == list(range(rows[0], rows[0] + step * len(rows), step)):
            torch.add(theta, u, alpha=c * ref.group["mu"], out=out[rows[0]::step][:len(rows)])
            done.update(rows)
    for i, pt in enumerate(points):
        if i in done:
            continue
        base = base_of(pt, ref, state)
        out[i].copy_(theta if base is None else base.reshape(-1))
        for (q, _), r in zip(pt.terms, pt.radii(ref)):
            if isinstance(r, torch.Tensor):
                out[i].add_(u[index[id(q)]] * r)
            else:
                out[i].add_(u[index[id(q)]], alpha=r)
    return out
