"""The estimator: K queries along the directions, forward or central differences, ĝ = (c/K) Σ_k p_k u_k.

For query k with direction u_k (regenerated from its seed, tensor by tensor; docs/algorithms.md §1):

- ``forward``: δ_k = f(θ + μu_k) − f(θ), cost K + 1 forwards;
- ``central``: δ_k = (f(θ + μu_k) − f(θ − μu_k))/2, cost 2K forwards;

and ĝ = (c/K) Σ_k (δ_k/μ) u_k, with c = d for ``sphere`` (``scale="dimension"``) and 1 otherwise. With a
per-group μ_g the perturbation is μ_g u on group g and ĝ_g uses δ_k/μ_g, which reduces to the formula above
when all μ are equal.

The estimator knows nothing of how a point is evaluated: the optimizer passes ``evaluate(query, sign)``
(exact restore: a perturbed point is built in a fresh tensor that ``.data`` points at for the call, then
pointed back, also when the closure raises; or built inside each module's forward, ``zolab.engine.perturb``). A
problem whose parameter is one tensor may pass a batched objective instead: its K directions are drawn once
into a (K, n) tensor that makes every point of the step (one call) and then ĝ. ``parallel`` decides which
points this process evaluates and combines the losses of all processes (one collective a step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from zolab.engine.checks import check_choice, check_int
from zolab.engine.groups import ParamRef, compute_type
from zolab.engine.seeds import mix_each

ESTIMATORS = ("forward", "central")
SCALES = ("dimension", "none")


@dataclass
class Query:
    seed: int
    inv_norm: torch.Tensor | None = None  # 1/||z|| over the perturbed set (sphere)


@dataclass
class BlockEstimate:
    """What one estimation over a set of tensors produced; enough to regenerate ĝ exactly."""

    block: str
    refs: list[ParamRef]
    queries: list[Query]
    diffs: torch.Tensor  # (K,) δ_k, a device tensor (no host sync)
    losses: torch.Tensor  # every point's loss, in the estimator's point order
    loss: torch.Tensor  # f(θ) for forward, mean of the ± losses for central
    scale: float  # c
    drawn: torch.Tensor | None = None  # (K, n) unit directions of a batched step (a scratch tensor, reused)

    @property
    def seeds(self) -> list[int]:
        return [q.seed for q in self.queries]

    @property
    def projected_grads(self) -> torch.Tensor:
        """p_k = δ_k/μ (the μ of the block's first tensor; per-group μ: see ``coefficients``)."""
        return self.diffs / self.refs[0].group["mu"]

    def coefficients(self, ref: ParamRef) -> torch.Tensor:
        """(c/K) δ_k/μ_g for each k: ĝ on ``ref`` is Σ_k coef_k u_k."""
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
    """ĝ from ``num_queries`` queries along ``directions`` with ``difference`` (forward | central) and scale
    c (``dimension`` | ``none``). Args as in docs/algorithms.md §1; the optimizer owns one."""

    def __init__(self, directions, difference: str = "central", num_queries: int = 1, scale: str = "none"):
        check_int("num_queries", num_queries, 1)
        check_choice("estimator", difference, ESTIMATORS)
        check_choice("scale", scale, SCALES)
        self.directions, self.difference, self.num_queries, self.scale = directions, difference, num_queries, scale
        self.parallel = Local()
        self.shard_sum = None  # for sharded tensors: sums a tensor over the processes holding the shards

    def queries(self, seed: int, t: int, position: int) -> list[Query]:
        """Query k of block position ``position`` at step t owns the seed mix(seed, t, position, k)."""
        return [Query(s) for s in mix_each((seed, t, position), range(self.num_queries))]

    def scale_of(self, refs: list[ParamRef]) -> float:
        return float(sum(r.numel for r in refs)) if self.scale == "dimension" else 1.0

    def points(self, queries: list[Query]) -> list[tuple[Query | None, float]]:
        """The step's points in their loss order: (None, 0) is θ itself."""
        if self.difference == "forward":
            return [(None, 0.0), *((q, 1.0) for q in queries)]
        return [(q, s) for q in queries for s in (1.0, -1.0)]

    def estimate(self, block: str, refs: list[ParamRef], queries: list[Query], evaluate, batched=None,
                 scratch=None) -> BlockEstimate:
        """Evaluate the block's points (``evaluate(query, sign)``, or one call of ``batched``) and difference
        them. ``scratch(key, shape, dtype, device)`` gives reusable tensors (the batched path's rows)."""
        if batched is not None:
            if len(refs) != 1:
                raise ValueError(f"a batched objective needs a block of one tensor; block {block!r} has {len(refs)}")
            return self._batched(block, refs[0], queries, batched, scratch)
        self.directions.prepare(refs, queries, None if scratch is None else lambda r: scratch(
            (r.index, "u"), r.param.shape, r.param.dtype, r.param.device), self.shard_sum)
        points = self.points(queries)
        owned = self.parallel.owned(len(points))
        losses = [as_loss(evaluate(*points[i])) for i in owned]
        if not losses:  # nothing to evaluate here (an empty data shard): the others' losses come from combine
            losses = [refs[0].param.new_zeros((), dtype=torch.float64)]
        losses = torch.stack([x.to(losses[0].dtype) for x in losses])
        if len(owned) != len(points):
            full = losses.new_zeros(len(points))
            full[list(owned)] = losses
            losses = full
        return self._finish(block, refs, queries, self.parallel.combine(losses, owned))

    def _finish(self, block, refs, queries, losses, drawn=None) -> BlockEstimate:
        if self.difference == "forward":
            diffs, loss = losses[1:] - losses[0], losses[0]
        else:
            diffs, loss = (losses[0::2] - losses[1::2]) / 2, losses.mean()
        return BlockEstimate(block, refs, queries, diffs, losses, loss, self.scale_of(refs), drawn)

    def _batched(self, block, ref: ParamRef, queries: list[Query], batched, scratch) -> BlockEstimate:
        """The K directions drawn once into a (K, n) tensor that makes all points (one call) and later ĝ."""
        p, mu = ref.param, ref.group["mu"]
        ct, (K, n) = compute_type(p), (len(queries), p.numel())

        def buffer(key, shape):  # reused across steps: a fresh allocation this size can cost as much as the draw
            return scratch((ref.index, key), shape, ct, p.device) if scratch else torch.empty(shape, dtype=ct,
                                                                                             device=p.device)

        u = self.directions.rows(ref, queries, buffer("U", (K, n)))
        theta = p.detach().reshape(-1).to(ct)
        if self.difference == "forward":
            points = buffer("points", (K + 1, n))
            points[0] = theta
            torch.add(theta, u, alpha=mu, out=points[1:])
        else:
            points = buffer("points", (K, 2, n))
            torch.add(theta, u, alpha=mu, out=points[:, 0])
            torch.add(theta, u, alpha=-mu, out=points[:, 1])
            points = points.view(-1, n)
        owned = self.parallel.owned(len(points))
        rows = points if len(owned) == len(points) else points[list(owned)]
        values = batched(rows.to(p.dtype).view(-1, *p.shape)) if len(rows) else points.new_zeros(0)
        if not isinstance(values, torch.Tensor) or values.shape != (len(rows),):
            got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise TypeError(f"the batched objective must return one loss per point, shape ({len(rows)},); got {got}")
        losses = values.detach()
        if len(owned) != len(points):
            losses = losses.new_zeros(len(points)).index_copy_(0, torch.tensor(list(owned), dtype=torch.long), losses)
        return self._finish(block, [ref], queries, self.parallel.combine(losses, owned), drawn=u)
