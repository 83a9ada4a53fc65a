"""The estimator: points in loss order, forward and central differences against closed forms, ĝ's coefficients,
the loss it returns, and the batched path."""

import pytest
import torch

import zolab
from zolab.engine.directions import SamplerDirections
from zolab.engine.estimator import Estimator, Query, as_loss
from zolab.engine.groups import ParamRef
from zolab.engine.perturb import build
from zolab.engine.samplers import Gaussian, Sphere
from zolab.engine.schemes import THETA, Point, as_point
from zolab.engine.seeds import mix

from ..rules._problem import TinyProblem

MU = 1e-3


def setup(difference, K=3, sampler=None, scale="none", d=20):
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(d, generator=gen, dtype=torch.float64)
    ref = ParamRef(0, theta, "x", {"mu": MU})
    est = Estimator(SamplerDirections(sampler or Gaussian()), difference, K, scale)
    return est, ref, est.queries(5, 1, 0)


def evaluator(f, ref, est):
    """evaluate(point, sign): f at the point (θ ± μu, θ itself), u as the estimator's directions."""
    return lambda pt, s: f(build(est.directions, ref, as_point(pt, s), None, ref.param))


def test_queries_own_the_seeds_mixed_from_seed_step_and_position():
    est = Estimator(SamplerDirections(Gaussian()), "central", 4)
    assert [q.seed for q in est.queries(9, 3, 1)] == [mix(9, 3, 1, k) for k in range(4)]


def test_queries_know_their_step_position_and_index():
    est = Estimator(SamplerDirections(Gaussian()), "central", 3)
    assert [(q.t, q.position, q.k) for q in est.queries(9, 4, 2)] == [(4, 2, 0), (4, 2, 1), (4, 2, 2)]


def test_points_come_in_loss_order():
    q = [Query(1), Query(2)]
    assert Estimator(None, "forward", 2).points(q) == [THETA, Point(((q[0], 1.0),)), Point(((q[1], 1.0),))]
    assert Estimator(None, "central", 2).points(q) == [Point(((q[0], s),)) for s in (1.0, -1.0)] + [
        Point(((q[1], s),)) for s in (1.0, -1.0)]


@pytest.mark.parametrize("difference", ["forward", "central"])
def test_differences_are_exact_on_a_linear_function(difference):
    """f = a·θ + b: δ_k = μ a·u_k for both schemes, and ĝ's coefficients are (c/K) δ_k/μ = a·u_k/K."""
    est, ref, queries = setup(difference)
    a = torch.linspace(-1, 1, 20, dtype=torch.float64)
    out = est.estimate("all", [ref], queries, evaluator(lambda x: a @ x + 0.5, ref, est))
    us = [est.directions.point(ref, q, 1.0) for q in queries]
    torch.testing.assert_close(out.diffs, torch.stack([MU * (a @ u) for u in us]), rtol=1e-9, atol=0)
    torch.testing.assert_close(out.coefficients(ref), torch.stack([a @ u / 3 for u in us]), rtol=1e-9, atol=0)
    torch.testing.assert_close(out.projected_grads, torch.stack([a @ u for u in us]), rtol=1e-9, atol=0)
    assert len(out.losses) == (4 if difference == "forward" else 6) and out.scale == 1.0


def test_central_is_exact_and_forward_biased_by_the_curvature_on_a_quadratic():
    """f = ½ θᵀAθ: central δ = μ uᵀAθ; forward δ = μ uᵀAθ + ½ μ² uᵀAu."""
    A = torch.diag(torch.linspace(1, 10, 20, dtype=torch.float64))

    def f(x):
        return 0.5 * x @ A @ x

    for difference in ("forward", "central"):
        est, ref, queries = setup(difference)
        out = est.estimate("all", [ref], queries, evaluator(f, ref, est))
        for k, q in enumerate(queries):
            u = est.directions.point(ref, q, 1.0)
            expected = MU * (u @ A @ ref.param) + (0.5 * MU**2 * (u @ A @ u) if difference == "forward" else 0.0)
            assert float(out.diffs[k]) == pytest.approx(float(expected), rel=1e-8)


def test_the_loss_is_f_theta_or_the_mean_of_the_pm_losses():
    a = torch.linspace(-1, 1, 20, dtype=torch.float64)
    est, ref, queries = setup("forward")
    out = est.estimate("all", [ref], queries, evaluator(lambda x: (a @ x) ** 2, ref, est))
    assert float(out.loss) == float((a @ ref.param) ** 2) == float(out.losses[0])
    est, ref, queries = setup("central")
    out = est.estimate("all", [ref], queries, evaluator(lambda x: (a @ x) ** 2, ref, est))
    assert float(out.loss) == float(out.losses.mean())


def test_returned_loss_is_the_same_quantity_for_every_rule():
    """forward: f(θ); central: mean of the ± losses (§2), never ℓ₊ alone."""
    problem = TinyProblem()
    f0 = float(problem.loss().detach())
    fwd = zolab.ZOSGD(problem.parameters(), lr=0.0, estimator="forward", num_queries=3)
    assert float(fwd.step(problem.loss)) == f0
    cen = zolab.ZOSGD(problem.parameters(), lr=0.0, num_queries=2)
    loss = cen.step(problem.loss)
    torch.testing.assert_close(loss, cen.record.blocks[0].losses.mean())
    assert len(cen.record.blocks[0].losses) == 4


def test_dimension_scale_counts_every_element_of_the_whole_tensors():
    est = Estimator(SamplerDirections(Sphere()), "forward", 1, "dimension")
    shard = ParamRef(1, torch.zeros(4), "s", {"mu": MU}, offset=4, full_numel=12)
    assert est.scale_of([ParamRef(0, torch.zeros(3, 5), "w", {"mu": MU}), shard]) == 27.0
    assert Estimator(None, "forward", 1, "none").scale_of([shard]) == 1.0


@pytest.mark.parametrize("difference", ["forward", "central"])
def test_a_batched_objective_gives_the_pointwise_estimate(difference):
    """The (K, n) rows drawn once make every point in one call: the same differences, and ĝ from the rows."""
    a = torch.linspace(-1, 1, 20, dtype=torch.float64)
    est, ref, queries = setup(difference, sampler=Sphere(), scale="dimension")
    pointwise = est.estimate("all", [ref], queries, evaluator(lambda x: (a @ x) ** 2, ref, est))
    queries = est.queries(5, 1, 0)
    batched = est.estimate("all", [ref], queries, None, batched=lambda X: (X @ a) ** 2)
    torch.testing.assert_close(batched.diffs, pointwise.diffs, rtol=1e-9, atol=1e-15)
    assert batched.drawn.shape == (3, 20) and pointwise.drawn is None
    torch.testing.assert_close(batched.grad(est.directions)["x"], pointwise.grad(est.directions)["x"],
                               rtol=1e-9, atol=1e-15)


def test_grad_is_the_coefficient_weighted_sum_of_the_directions():
    est, ref, queries = setup("central")
    out = est.estimate("all", [ref], queries, evaluator(lambda x: x.square().sum(), ref, est))
    coefs = out.coefficients(ref)
    expected = sum(c * est.directions.point(ref, q, 1.0) for c, q in zip(coefs, queries))
    torch.testing.assert_close(out.grad(est.directions)["x"], expected, rtol=1e-12, atol=1e-15)


def test_as_loss_takes_scalars_and_refuses_the_rest():
    assert as_loss(2).dtype == torch.float64 and float(as_loss(2)) == 2.0
    assert as_loss(torch.ones(1, 1)).shape == ()
    with pytest.raises(TypeError, match=r"scalar loss, got a tensor of shape \(3,\)"):
        as_loss(torch.ones(3))
    with pytest.raises(TypeError, match="got str"):
        as_loss("1.0")
    with pytest.raises(TypeError, match="got bool"):
        as_loss(True)


@pytest.mark.parametrize("kw, match", [
    (dict(difference="backward"), r"unknown estimator 'backward'; allowed: \['forward', 'central', 'three_point'"),
    (dict(scale="half"), r"unknown scale 'half'; allowed: \['dimension', 'none'\]"),
    (dict(num_queries=0), r"invalid num_queries: 0; allowed: an integer >= 1"),
])
def test_bad_estimator_options_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        Estimator(SamplerDirections(Gaussian()), **kw)


def test_a_batched_objective_needs_a_block_of_one_tensor_and_one_loss_per_point():
    est, ref, queries = setup("forward")
    other = ParamRef(1, torch.zeros(3, dtype=torch.float64), "y", {"mu": MU})
    with pytest.raises(ValueError, match="block 'all' has 2"):
        est.estimate("all", [ref, other], queries, None, batched=lambda X: X.sum(-1))
    with pytest.raises(TypeError, match=r"one loss per point, shape \(4,\); got \(\)"):
        est.estimate("all", [ref], queries, None, batched=lambda X: X.sum())
