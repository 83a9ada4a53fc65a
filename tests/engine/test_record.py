"""The step record: what a step did, enough for a probe to regenerate ĝ exactly."""

import torch

import zolab
from zolab.engine.seeds import mix

from ..rules._problem import TinyProblem


def test_record_regenerates_the_estimate():
    """grad_estimate() equals (c/K) Σ p_k u_k built by hand from the record's seeds and p_k."""
    p = TinyProblem()
    opt = zolab.ZOSGD(list(p.named_parameters()), lr=0.0, num_queries=3, directions="rademacher")
    opt.step(p.loss)
    rec = opt.record
    assert rec.step == 1 and rec.num_queries == 3 and len(rec.seeds) == 3 and rec.names == ["W", "b"]
    sampler = zolab.Rademacher()
    for i, (name, param) in enumerate(p.named_parameters()):
        manual = sum(pk * sampler.sample(mix(s, i), param) for s, pk in zip(rec.seeds, rec.projected_grads)) / 3
        torch.testing.assert_close(opt.grad_estimate()[name], manual)
    assert rec.forwards == 6


def test_a_record_of_several_blocks_concatenates_them_in_step_order():
    p = TinyProblem()
    opt = zolab.ZOSGD(list(p.named_parameters()), mu=0.01, num_queries=2, blocks="tensor", blocks_per_step="all")
    opt.step(p.loss)
    rec = opt.record
    assert rec.active_blocks == ["W", "b"] and rec.names == ["W", "b"] and rec.shapes == [(4, 6), (6,)]
    assert rec.seeds == [mix(0, 1, pos, k) for pos in (0, 1) for k in (0, 1)]
    assert torch.equal(rec.projected_grads, torch.cat([b.diffs / 0.01 for b in rec.blocks]))
    assert rec.mu == 0.01 and rec.scale == 1.0 and rec.directions == "gaussian" and rec.estimator == "central"
    assert not rec.skipped and rec.forwards == 8 and set(rec.moments) == {"W", "b"}
