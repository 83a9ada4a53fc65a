"""The step record: what a ZO step did, for probes (docs/algorithms.md §2).

After each step ``optimizer.record`` holds the step t, the estimator's settings, each estimated block's
queries (seeds, step, position, sphere norms), differences, losses, scale c and the difference scheme's
extras (HiZOO's Δ, FZOO's σ, ...), the schedule values and references to the moment buffers; from it a probe
regenerates ĝ exactly (``optimizer.grad_estimate()``) without the optimizer storing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from zolab.engine.estimator import BlockEstimate


@dataclass
class StepRecord:
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

    @classmethod
    def of(cls, opt, t: int, estimates: list[BlockEstimate], skipped: bool) -> StepRecord:
        """The record of step t of ``opt`` (its loss: the estimate's, or the mean over several blocks)."""
        loss = estimates[0].loss if len(estimates) == 1 else torch.stack(
            [e.loss.to(estimates[0].loss.dtype) for e in estimates]).mean()
        return cls(step=t, estimator=opt.grad_estimator.difference, directions=opt.grad_estimator.directions.name,
                   num_queries=opt.num_queries, blocks=estimates, schedule=opt.schedule_values(), loss=loss,
                   skipped=skipped, forwards=opt.zo["forwards"],
                   moments={r.name: opt.state[r.param] for e in estimates for r in e.refs})

    @property
    def extras(self) -> dict:
        """The difference scheme's values of each block (Δ, σ, ...), by block name."""
        return {b.block: b.extras for b in self.blocks}

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
