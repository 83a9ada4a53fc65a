"""Finite-difference estimators: perturb, evaluate, restore exactly (ALGORITHMS.md §1, §2).

For query k with direction u_k (regenerated from its seed, tensor by tensor):

- ``forward``: δ_k = f(θ + μu_k) − f(θ), cost K + 1 forwards;
- ``central``: δ_k = (f(θ + μu_k) − f(θ − μu_k))/2, cost 2K forwards;

and ĝ = (c/K) Σ_k (δ_k/μ) u_k, with c = d for ``sphere`` (``scale="dimension"``) and 1 otherwise. With a
per-group μ_g the perturbation is μ_g u on group g and ĝ_g uses δ_k/μ_g, which reduces to the formula above
when all μ are equal.

Exact restore: a perturbed point is never written into the parameters. Each perturbed tensor's ``.data``
is pointed at a fresh tensor θ + μu for the closure call and pointed back at the untouched original
afterwards (also when the closure raises), so θ is bitwise unchanged whatever the dtype. This costs one
copy of the perturbed tensors (cheap for a block) and no restore pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

ESTIMATORS = ("forward", "central")
SCALES = ("dimension", "none")


@dataclass
class ParamRef:
    """One trainable tensor as the optimizer sees it."""

    index: int  # position in the optimizer's flattened parameter list: keys its directions
    param: torch.Tensor
    name: str
    group: dict


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
    losses: torch.Tensor  # every loss the closure returned, in call order
    loss: torch.Tensor  # f(θ) for forward, mean of the ± losses for central
    scale: float  # c
    # (K, n) unit directions when the step drew them once (batched); a scratch tensor the next step reuses
    directions: torch.Tensor | None = None

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


@dataclass
class StepRecord:
    """The per-step record probes read (ALGORITHMS.md §2)."""

    step: int
    estimator: str
    directions: str
    num_queries: int
    blocks: list[BlockEstimate]
    schedule: dict[str, float]
    loss: torch.Tensor
    skipped: bool
    forwards: int  # forward passes used so far
    moments: dict[str, dict] = field(default_factory=dict)  # name -> that tensor's optimizer state

    @property
    def seeds(self) -> list[int]:
        return [s for b in self.blocks for s in b.seeds]

    @property
    def projected_grads(self) -> torch.Tensor:
        return torch.cat([b.projected_grads for b in self.blocks])

    @property
    def names(self) -> list[str]:
        return [r.name for b in self.blocks for r in b.refs]

    @property
    def shapes(self) -> list[torch.Size]:
        return [r.param.shape for b in self.blocks for r in b.refs]

    @property
    def active_blocks(self) -> list[str]:
        return [b.block for b in self.blocks]

    @property
    def mu(self) -> float:
        return self.blocks[0].refs[0].group["mu"]

    @property
    def scale(self) -> float:
        return self.blocks[0].scale


def as_loss(value) -> torch.Tensor:
    """The closure's return value as a 0-dim tensor; anything else is a TypeError."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.float64)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"the closure must return the loss as a scalar tensor or float, got {type(value).__name__}")
    if value.numel() != 1:
        raise TypeError(f"the closure must return a scalar loss, got a tensor of shape {tuple(value.shape)}")
    return value.detach().reshape(())


DirectionFn = Callable[..., torch.Tensor]  # (ref, query, alpha, out=None, base=None) -> base + alpha·u


def evaluate_at(refs: list[ParamRef], query: Query, sign: float, direction: DirectionFn, closure,
                buffer=None) -> torch.Tensor:
    """f(θ + sign·μ·u) for the query's u, with θ bitwise restored afterwards, also if the closure raises.

    ``buffer(ref)`` (optional) gives a reusable tensor to write the perturbed point into."""
    originals = []
    try:
        for r in refs:
            p = r.param
            out = buffer(r) if buffer is not None else None
            point = direction(r, query, sign * r.group["mu"], out=out, base=p.data)
            originals.append((p, p.data))
            p.data = point
        return as_loss(closure())
    finally:
        for p, data in originals:
            p.data = data


def _batched_losses(ref: ParamRef, queries: list[Query], kind: str, direction: DirectionFn, batched):
    """Every point of the step stacked along a new first axis and evaluated in one call of ``batched``."""
    theta = ref.param.detach()
    mu = ref.group["mu"]
    points = [theta] if kind == "forward" else []
    for q in queries:
        points.append(direction(ref, q, mu, base=theta))
        if kind == "central":
            points.append(direction(ref, q, -mu, base=theta))
    values = batched(torch.stack(points))
    if not isinstance(values, torch.Tensor) or values.shape != (len(points),):
        got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise TypeError(f"the batched objective must return one loss per point, shape ({len(points)},); got {got}")
    return values.detach()


def estimate(
    refs: list[ParamRef],
    block: str,
    queries: list[Query],
    kind: str,
    scale: float,
    direction: DirectionFn,
    closure,
    batched=None,
    buffer=None,
    evaluate=None,
) -> BlockEstimate:
    """Run the K queries of one block (all on the same mini-batch: the closure's).

    ``batched`` (optional, for a block of one tensor): a function of the stacked points (n, *shape) that
    returns their n losses in one call; the closure is then not called. ``evaluate(query, sign, closure)``
    (optional) replaces ``evaluate_at`` (``zolab.perturb`` builds perturbed tensors inside modules).
    """
    if evaluate is None:
        def evaluate(q, sign, fn):
            return evaluate_at(refs, q, sign, direction, fn, buffer)

    if batched is not None:
        if len(refs) != 1:
            raise ValueError(f"a batched objective needs a block of one tensor; block {block!r} has {len(refs)}")
        losses_t = _batched_losses(refs[0], queries, kind, direction, batched)
        if kind == "forward":
            diffs, loss = losses_t[1:] - losses_t[0], losses_t[0]
        else:
            diffs, loss = (losses_t[0::2] - losses_t[1::2]) / 2, losses_t.mean()
        return BlockEstimate(block, refs, queries, diffs, losses_t, loss, scale)
    losses, diffs = [], []
    if kind == "forward":
        f0 = as_loss(closure())
        losses.append(f0)
        for q in queries:
            fp = evaluate(q, 1.0, closure)
            losses.append(fp)
            diffs.append(fp - f0)
        loss = f0
    else:
        for q in queries:
            fp = evaluate(q, 1.0, closure)
            fm = evaluate(q, -1.0, closure)
            losses += [fp, fm]
            diffs.append((fp - fm) / 2)
        loss = None
    losses_t = torch.stack([x.to(losses[0].dtype) for x in losses])
    if loss is None:
        loss = losses_t.mean()
    return BlockEstimate(block, refs, queries, torch.stack(diffs), losses_t, loss, scale)
