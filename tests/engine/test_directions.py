"""Directions: u_k on each tensor from the sampler's draw keyed mix(query seed, tensor index); sphere's norm over
the perturbed set; shards draw their slice of the whole; a rule's own directions run its function of the noise,
θ and per-tensor scalars; every builder follows the protocol; rows and chunks of a point are the whole point's."""

import math

import pytest
import torch

from zolab.engine.directions import REQUIRED, RuleDirections, SamplerDirections
from zolab.engine.estimator import Query
from zolab.engine.groups import ParamRef, compute_type
from zolab.engine.lowrank import LowRank, Subspace
from zolab.engine.ops import abs, where  # noqa: A004
from zolab.engine.samplers import Gaussian, Rademacher, Sphere
from zolab.engine.seeds import mix
from zolab.rules import ZOSGD, ZOAdaMU

MU = {"mu": 1e-2}


def refs(*shapes, dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    return [ParamRef(i, torch.randn(s, generator=gen, dtype=dtype), f"t{i}", MU) for i, s in enumerate(shapes)]


@pytest.mark.parametrize("rng", ["counter", "torch"])
@pytest.mark.parametrize("sampler", [Gaussian, Rademacher])
def test_point_is_base_plus_radius_times_the_tensors_draw(sampler, rng):
    dirs = SamplerDirections(sampler(rng))
    for r in refs((4, 5), (7,)):
        z = sampler(rng).sample(mix(123, r.index), r.param)
        torch.testing.assert_close(dirs.point(r, Query(123), 0.5, base=r.param), r.param + 0.5 * z,
                                   rtol=1e-15, atol=1e-15)
        torch.testing.assert_close(dirs.point(r, Query(123), -2.0), -2.0 * z, rtol=0, atol=0)


@pytest.mark.parametrize("rng", ["counter", "torch"])
def test_combine_is_the_weighted_sum_of_the_queries_draws(rng):
    dirs, (r,) = SamplerDirections(Gaussian(rng)), refs((30,))
    queries, coefs = [Query(s) for s in (5, 6, 7)], [0.5, -1.5, 2.0]
    expected = sum(c * Gaussian(rng).sample(mix(q.seed, 0), r.param) for q, c in zip(queries, coefs))
    torch.testing.assert_close(dirs.combine(r, queries, coefs), expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("rng", ["counter", "torch"])
def test_sphere_directions_are_unit_over_the_perturbed_set(rng):
    dirs, rs = SamplerDirections(Sphere(rng)), refs((4, 5), (7,))
    queries = [Query(1), Query(2)]
    dirs.prepare(rs, queries, scratch=lambda r: torch.empty_like(r.param))
    for q in queries:
        z = torch.cat([Gaussian(rng).sample(mix(q.seed, r.index), r.param).flatten() for r in rs])
        assert float(q.inv_norm) == pytest.approx(1 / float(z.norm()), rel=1e-12)
        u = torch.cat([dirs.point(r, q, 1.0).flatten() for r in rs])
        assert float(u.norm()) == pytest.approx(1.0, rel=1e-12)  # unit over both tensors, not each
    plain = [Query(1)]
    SamplerDirections(Gaussian(rng)).prepare(rs, plain)
    assert plain[0].inv_norm is None  # only sphere normalises


def test_a_shard_draws_its_slice_of_the_whole_tensors_direction():
    whole = ParamRef(3, torch.zeros(10, dtype=torch.float64), "w", MU)
    shard = ParamRef(3, torch.zeros(4, dtype=torch.float64), "w", MU, offset=6, full_numel=10)
    dirs = SamplerDirections(Gaussian())
    assert torch.equal(dirs.point(shard, Query(9), 1.0), dirs.point(whole, Query(9), 1.0)[6:])
    assert torch.equal(dirs.combine(shard, [Query(9), Query(8)], [1.0, 2.0]),
                       dirs.combine(whole, [Query(9), Query(8)], [1.0, 2.0])[6:])


@pytest.mark.parametrize("sampler", [Gaussian(), Sphere(), Gaussian("torch")])
def test_rows_are_the_draws_unit_for_sphere(sampler):
    dirs, (r,) = SamplerDirections(sampler), refs((12,))
    queries = [Query(s) for s in (3, 4, 5)]
    rows = dirs.rows(r, queries, torch.empty(3, 12, dtype=torch.float64))
    for k, q in enumerate(queries):
        z = sampler.sample(mix(q.seed, 0), r.param)
        expected = z / z.norm() if sampler.normalize else z
        torch.testing.assert_close(rows[k], expected, rtol=1e-14, atol=1e-14)


def test_a_rules_own_directions_take_standard_normal_noise_only():
    opt = ZOAdaMU([torch.nn.Parameter(torch.zeros(3))], total_steps=10, t1=2)
    with pytest.raises(ValueError, match="standard normal noise.*Sphere"):
        RuleDirections(opt, Sphere())
    with pytest.raises(ValueError, match="standard normal noise.*Rademacher"):
        RuleDirections(opt, Rademacher())


def test_a_rules_own_direction_is_its_function_of_the_noise():
    """ZO-AdaMU with zero momentum: u = s·w, s = √((β1√α)² + ((1 − β1)√(1 − α))²), w the query's first draw."""
    x = torch.nn.Parameter(torch.zeros(40, dtype=torch.float64))
    alpha, beta1 = 0.6, 0.7
    opt = ZOAdaMU([x], alpha=alpha, betas=(beta1, 0.4))
    dirs, ref = opt.grad_estimator.directions, opt.partition()[0][1][0]
    s = math.hypot(beta1 * math.sqrt(alpha), (1 - beta1) * math.sqrt(1 - alpha))
    w = Gaussian().sample(mix(77, 0), x.detach())
    torch.testing.assert_close(dirs.point(ref, Query(77), 0.5), 0.5 * s * w, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(dirs.combine(ref, [Query(77), Query(78)], [1.0, -1.0]),
                               s * (w - Gaussian().sample(mix(78, 0), x.detach())), rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ the protocol, and parts of a point
class Masked(ZOSGD):
    """Sparse-MeZO's shape: u = z where |θ| <= h_i, 0 elsewhere, h_i a 0-dim state of each tensor (its
    median |θ₀|) that ``hyper`` hands to the direction program; rows and chunks allowed in module mode."""

    direction_slices = True

    def __init__(self, params, **kw):
        super().__init__(params, **kw)
        for r in self.partition()[0][1]:
            self.state_tensor(r, "h").copy_(r.param.detach().abs().flatten().median())

    def state_spec(self, ref, name):
        return ((), compute_type(ref.param)) if name == "h" else super().state_spec(ref, name)

    def hyper(self, ref, extra=None):
        return {**super().hyper(ref, extra), "h": self.state_tensor(ref, "h")}

    def own_direction(self, e, h):
        return where(abs(e.theta) > h.h, 0.0, e.noise(0))


def test_every_builder_follows_the_directions_protocol():
    x = torch.nn.Parameter(torch.zeros(3))
    builders = [SamplerDirections(Gaussian()), ZOAdaMU([x], total_steps=10, t1=2).grad_estimator.directions,
                Masked([x]).grad_estimator.directions, LowRank(), Subspace()]
    assert all(hasattr(b, m) for b in builders for m in REQUIRED)
    with pytest.raises(ValueError, match=r"is not a directions object \(missing \['name', 'sampler', 'variant'"):
        ZOSGD([x], directions=object())


def test_a_rules_own_direction_reads_theta_and_its_per_tensor_scalars():
    """u = z on the elements with |θ| <= h (the median of |θ|), 0 elsewhere: about half the elements move."""
    w = torch.nn.Parameter(torch.randn(6, 5, dtype=torch.float64))
    opt = Masked([("w", w)])
    ref, dirs = opt.partition()[0][1][0], opt.grad_estimator.directions
    z = Gaussian().sample(mix(31, 0), w.detach())
    mask = w.detach().abs() <= w.detach().abs().flatten().median()
    torch.testing.assert_close(dirs.point(ref, Query(31), 0.5, base=w.detach()), w.detach() + 0.5 * z * mask,
                               rtol=0, atol=0)
    torch.testing.assert_close(dirs.combine(ref, [Query(31)], [2.0]), 2.0 * z * mask, rtol=0, atol=0)
    assert int(mask.sum()) == 15


@pytest.mark.parametrize("make", [lambda p: SamplerDirections(Gaussian()), lambda p: SamplerDirections(Rademacher()),
                                  lambda p: Masked([p]).grad_estimator.directions])
def test_rows_and_row_chunks_of_a_point_are_the_whole_points_bit_for_bit(make):
    """What module mode builds for an embedding (rows θ[ids] + r·u[ids]) and a large Linear (rows r0..r1) is
    exactly the corresponding part of the whole point."""
    table = torch.nn.Parameter(torch.randn(9, 4))
    dirs = make(table)
    ref = ParamRef(0, table, "table", MU)
    assert dirs.slices(ref)
    whole = dirs.point(ref, Query(5), -0.3, base=table.detach())
    ids = torch.tensor([[3, 0], [8, 3]])
    rows = dirs.embedding_rows(ref, Query(5), -0.3, table.detach()[ids], ids, 4)
    assert torch.equal(rows, whole[ids])
    out = torch.empty(3, 4)
    assert torch.equal(dirs.point_rows(ref, Query(5), -0.3, 2, 5, out, table.detach()[2:5]), whole[2:5])


def test_a_rules_own_directions_are_built_whole_unless_it_allows_slices():
    x = torch.nn.Parameter(torch.zeros(4, 3))
    ref = ParamRef(0, x, "x", MU)
    assert not ZOAdaMU([x], total_steps=10, t1=2).grad_estimator.directions.slices(ref)
    assert not SamplerDirections(Gaussian("torch")).slices(ref)


@pytest.mark.parametrize("rng", ["counter", "torch"])
def test_combine_adds_onto_a_base_in_place(rng):
    dirs, (r,) = SamplerDirections(Gaussian(rng)), refs((10,))
    queries, coefs = [Query(5), Query(6)], [0.5, -1.5]
    base = r.param.clone()
    expected = base + dirs.combine(r, queries, coefs)
    out = dirs.combine(r, queries, coefs, out=base, base=base)
    assert out is base
    torch.testing.assert_close(out, expected, rtol=1e-14, atol=1e-14)
