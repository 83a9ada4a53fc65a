"""Difference schemes: the points each names in loss order, and its δ_k, logged loss and extras against closed forms
(three-point Δ on a quadratic, FZOO's normalisation, the JVP's exact slope); points beyond θ ± μu (several
queries, callable radii, a state base) evaluated in copy mode, module mode and the batched path alike."""

import pytest
import torch
from torch import nn

import zolab
from zolab.engine.directions import SamplerDirections
from zolab.engine.estimator import Estimator, Query
from zolab.engine.groups import ParamRef
from zolab.engine.perturb import evaluate_copy
from zolab.engine.samplers import Gaussian, Rademacher
from zolab.engine.schemes import (
    JVP,
    THETA,
    Central,
    Differences,
    DifferenceScheme,
    Forward,
    NormalisedOneSided,
    Point,
    ThreePoint,
    as_point,
    make_scheme,
)

MU = 1e-3


def setup(scheme, K=3, sampler=None, d=20):
    gen = torch.Generator().manual_seed(1)
    ref = ParamRef(0, torch.randn(d, generator=gen, dtype=torch.float64), "x", {"mu": MU})
    est = Estimator(SamplerDirections(sampler or Gaussian()), scheme, K)
    return est, ref, est.queries(5, 1, 0)


def evaluator(f, ref, est):
    """evaluate(point, sign) in copy mode on one plain tensor."""
    holder = nn.Parameter(ref.param)
    ref.param = holder
    return lambda q, s: evaluate_copy([ref], q, s, est.directions, lambda: f(holder.detach()))


def test_each_scheme_names_its_points_in_loss_order():
    q = [Query(1), Query(2)]
    plus, minus = (lambda k: Point(((q[k], 1.0),))), (lambda k: Point(((q[k], -1.0),)))
    assert Forward().points(q) == [THETA, plus(0), plus(1)]
    assert Central().points(q) == [plus(0), minus(0), plus(1), minus(1)]
    assert ThreePoint().points(q) == [THETA, plus(0), minus(0), plus(1), minus(1)]
    assert NormalisedOneSided().points(q) == [plus(0), plus(1), THETA]  # ℓ₀ after the probes, as FZOO's code
    assert [s.forwards(4) for s in (Forward(), Central(), ThreePoint(), NormalisedOneSided(), JVP())] == [5, 8, 9, 5, 4]


def test_a_point_is_a_query_with_a_sign_and_radii_scale_with_each_groups_mu():
    q = Query(3)
    assert as_point(None, 0.0) == THETA and THETA.is_theta and as_point(q, -1.0) == Point(((q, -1.0),))
    ref = ParamRef(0, torch.zeros(2), "x", {"mu": 0.5})
    point = Point(((q, 2.0), (Query(4), lambda r: -0.25)))
    assert point.radii(ref) == [1.0, -0.25] and not point.simple and Point(((q, 2.0),)).simple
    assert as_point(point, -1.0).radii(ref) == [-1.0, 0.25]


@pytest.mark.parametrize("scheme", ["forward", "central", "three_point"])
def test_differences_are_exact_on_a_linear_function(scheme):
    """f = a·θ + b: δ_k = μ a·u_k for every two-sided or one-sided scheme."""
    est, ref, queries = setup(scheme)
    a = torch.linspace(-1, 1, 20, dtype=torch.float64)
    us = [est.directions.point(ref, q, 1.0) for q in queries]
    out = est.estimate("all", [ref], queries, evaluator(lambda x: a @ x + 0.5, ref, est))
    torch.testing.assert_close(out.diffs, torch.stack([MU * (a @ u) for u in us]), rtol=1e-9, atol=0)
    assert out.forwards == len(out.losses) == make_scheme(scheme).forwards(3)


def test_three_point_delta_is_the_curvature_along_u_on_a_quadratic():
    """f = ½ θᵀAθ: Δ_k = ℓ₊ + ℓ₋ − 2ℓ₀ = μ² uᵀAu exactly; δ_k = μ uᵀAθ; the logged loss is ℓ₀ = f(θ)."""
    A = torch.diag(torch.linspace(1, 10, 20, dtype=torch.float64))

    def f(x):
        return 0.5 * x @ A @ x

    est, ref, queries = setup("three_point")
    out = est.estimate("all", [ref], queries, evaluator(f, ref, est))
    us = [est.directions.point(ref, q, 1.0) for q in queries]
    torch.testing.assert_close(out.extras["delta"], torch.stack([MU**2 * (u @ A @ u) for u in us]), rtol=1e-6, atol=0)
    torch.testing.assert_close(out.diffs, torch.stack([MU * (u @ A @ ref.param) for u in us]), rtol=1e-8, atol=0)
    assert float(out.loss) == float(f(ref.param.detach())) == float(out.losses[0])


@pytest.mark.parametrize("std, correction", [("population", 0), ("sample", 1)])
def test_fzoo_normalises_the_probe_differences_by_their_spread(std, correction):
    """δ_i = (ℓ_i − ℓ₀)/(σ + ζ), σ the std of the N probe losses only; the code form's coefficient is
    (ℓ_i − ℓ₀)/(Nσ) whatever μ (μ-free), the paper form's (ℓ_i − ℓ₀)/(μNσ)."""
    a = torch.linspace(-1, 2, 20, dtype=torch.float64)
    for form in ("code", "paper"):
        est, ref, queries = setup(NormalisedOneSided(form=form, std=std), K=4, sampler=Rademacher())
        out = est.estimate("all", [ref], queries, evaluator(lambda x: (a @ x) ** 2, ref, est))
        probes, l0 = out.losses[:4], out.losses[4]
        sigma = ((probes - probes.mean()) ** 2).sum() / (4 - correction)
        expected = (probes - l0) / (sigma.sqrt() + 1e-12) / 4
        torch.testing.assert_close(out.extras["sigma"], sigma.sqrt(), rtol=1e-12, atol=0)
        torch.testing.assert_close(out.coefficients(ref), expected if form == "code" else expected / MU,
                                   rtol=1e-12, atol=0)
        assert float(out.loss) == float(l0) == float((a @ ref.param.detach()) ** 2)


def test_fzoo_with_equal_probe_losses_gives_no_nan_and_needs_two_probes():
    est, ref, queries = setup("fzoo", K=3, sampler=Rademacher())
    out = est.estimate("all", [ref], queries, evaluator(lambda x: torch.tensor(1.0, dtype=torch.float64), ref, est))
    assert float(out.extras["sigma"]) == 0.0 and torch.equal(out.diffs, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"num_queries: 1 for estimator 'fzoo'; allowed: N >= 2"):
        Estimator(SamplerDirections(Rademacher()), "fzoo", 1)
    with pytest.raises(ValueError, match=r"unknown std 'biased'; allowed: \['population', 'sample'\]"):
        NormalisedOneSided(std="biased")


def test_unknown_estimator_names_every_scheme():
    with pytest.raises(ValueError, match=r"unknown estimator 'backward'; allowed: \['forward', 'central', "
                                         r"'three_point', 'fzoo', 'jvp'\] or a DifferenceScheme"):
        make_scheme("backward")


class Candidates(DifferenceScheme):
    """A two-phase scheme (ZO-SGD-Cons' shape): central differences, then the candidates θ ∓ ηĝ, whose radii
    are callables of the tensor reading the first phase's coefficients."""

    name = "candidates"

    def estimate(self, ctx, queries):
        first = Central().differences(ctx.evaluate_all(Central().points(queries)), queries, ctx.refs)
        K = len(queries)

        def radius(k, sign):
            return lambda ref: sign * 0.1 * first.diffs[k] / (K * ref.group["mu"])

        cands = [Point(tuple((q, radius(k, s)) for k, q in enumerate(queries))) for s in (-1.0, 1.0)]
        extra = ctx.evaluate_all(cands)
        return Differences(first.diffs, torch.cat([first.losses, extra]), first.loss, {"candidates": extra})


@pytest.mark.parametrize("mode", ["copy", "module", "batched"])
def test_a_multi_phase_scheme_evaluates_candidate_points_in_every_mode(mode):
    """c∓ = f(θ ∓ ηĝ) with ĝ = (1/K) Σ (δ_k/μ) u_k: the scheme's candidates equal f at the closed-form points, in
    copy mode, module mode and the batched path; θ is bitwise unchanged."""
    torch.manual_seed(0)
    lin = nn.Linear(6, 1, bias=False).double()
    x = torch.randn(10, 6, dtype=torch.float64)

    def f(w):
        return (x @ w.reshape(-1)).square().mean()

    opt = zolab.ZOSGD([("weight", lin.weight)], lr=0.0, mu=1e-2, num_queries=2, estimator=Candidates(),
                      perturb="copy" if mode != "module" else "module").bind(lin)
    before = lin.weight.detach().clone()
    if mode == "batched":
        opt.step(batched=lambda X: (X.reshape(len(X), -1) @ x.t()).square().mean(-1))
    else:
        opt.step(lambda: lin(x).square().mean())
    assert torch.equal(lin.weight.detach(), before)
    b = opt.record.blocks[0]
    ref = b.refs[0]
    g = sum(c * opt.direction(ref, q) for c, q in zip(b.coefficients(ref), b.queries))
    expected = torch.stack([f(before - 0.1 * g), f(before + 0.1 * g)])
    torch.testing.assert_close(b.extras["candidates"], expected, rtol=1e-12, atol=1e-15)
    assert b.forwards == 6 and opt.zo["forwards"] == 6


class Anchored(DifferenceScheme):
    """Central differences at the anchor θ̄ (a state tensor of the rule), MeZO-SVRG's second estimate."""

    name = "anchored"

    def points(self, queries):
        return [Point(((q, s),), base="anchor") for q in queries for s in (1.0, -1.0)]

    def differences(self, losses, queries, refs):
        return Central().differences(losses, queries, refs)


@pytest.mark.parametrize("perturb", ["copy", "module"])
def test_a_point_based_on_a_state_tensor_is_evaluated_there(perturb):
    """f(θ̄ ± μu) for the rule's state ``anchor`` = θ̄ ≠ θ: δ_k = μ uᵀAθ̄ on a quadratic, θ untouched."""
    torch.manual_seed(0)
    lin = nn.Linear(5, 1, bias=False).double()
    A = torch.diag(torch.linspace(1, 3, 5, dtype=torch.float64))
    opt = zolab.ZOSGD([("weight", lin.weight)], lr=0.0, mu=1e-3, num_queries=2, estimator=Anchored(),
                      perturb=perturb).bind(lin)
    ref = opt.partition()[0][1][0]
    anchor = opt.state_tensor(ref, "anchor")
    anchor.copy_(torch.arange(5, dtype=torch.float64).view(1, 5))
    before = lin.weight.detach().clone()
    def closure():
        w = lin(torch.eye(5, dtype=torch.float64)).reshape(-1)  # the weight, read through the module's forward
        return 0.5 * w @ A @ w

    opt.step(closure)
    assert torch.equal(lin.weight.detach(), before)
    b = opt.record.blocks[0]
    for k, q in enumerate(b.queries):
        u = opt.direction(ref, q).reshape(-1)
        assert float(b.diffs[k]) == pytest.approx(float(1e-3 * u @ A @ anchor.reshape(-1)), rel=1e-7)


class UsesFull(DifferenceScheme):
    """Forward differences whose ℓ₀ comes from the step's extra evaluator ``full`` (MeZO-SVRG's seam)."""

    name = "uses_full"
    evaluators = ("full",)

    def estimate(self, ctx, queries):
        l0 = ctx.evaluate_all([THETA], using="full")
        probes = ctx.evaluate_all([Point(((q, 1.0),)) for q in queries])
        losses = torch.cat([l0, probes])
        return Forward().differences(losses, queries, ctx.refs)


def test_a_scheme_reads_the_steps_extra_evaluators_by_name():
    x = nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = zolab.ZOSGD([x], lr=0.0, mu=1e-2, num_queries=2, estimator=UsesFull())
    opt.step(lambda: x.sum() + 1.0, full=lambda: torch.tensor(7.0, dtype=torch.float64))
    assert float(opt.record.loss) == 7.0 and opt.zo["forwards"] == 3
    with pytest.raises(ValueError, match=r"evaluates with 'full', which this step was not given"):
        opt.step(lambda: x.sum())
    with pytest.raises(TypeError, match=r"evaluators \['other'\] that estimator 'central' does not read; "
                                        r"allowed: \[\]"):
        zolab.ZOSGD([x]).step(lambda: x.sum(), other=lambda: 0.0)


def test_jvp_gives_the_exact_slope_and_the_loss():
    """s_k = ∇f(θ)·u_k (autograd's), the loss f(θ), and ĝ = (1/K) Σ s_k u_k (no μ)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)

    def closure():
        return nn.functional.mse_loss(model(x), y)

    opt = zolab.ZOSGD(model.named_parameters(), lr=0.0, mu=0.5, num_queries=2, estimator="jvp").bind(model)
    loss = opt.step(closure)
    with torch.enable_grad():
        grads = torch.autograd.grad(closure(), list(model.parameters()))
    b = opt.record.blocks[0]
    for k, q in enumerate(b.queries):
        s = sum((g * opt.direction(r, q)).sum() for g, r in zip(grads, b.refs))
        assert float(b.diffs[k]) == pytest.approx(float(s), rel=1e-12)
    assert float(loss) == pytest.approx(float(closure().detach()), rel=1e-15) and b.mu_free and opt.zo["forwards"] == 2
    for g_name, g in opt.grad_estimate().items():
        r = next(r for r in b.refs if r.name == g_name)
        torch.testing.assert_close(g, sum(b.diffs[k] / 2 * opt.direction(r, q) for k, q in enumerate(b.queries)))


def test_jvp_matches_central_differences_as_mu_shrinks():
    """Forward-Grad's claim FG1(a): |s − p| <= 1e-3 |s| at μ = 1e-4 in float64."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double()
    x = torch.randn(8, 3, dtype=torch.float64)
    s_opt = zolab.ZOSGD(model.parameters(), lr=0.0, estimator="jvp", seed=3).bind(model)
    p_opt = zolab.ZOSGD(model.parameters(), lr=0.0, mu=1e-4, seed=3)
    s_opt.step(lambda: model(x).square().mean())
    p_opt.step(lambda: model(x).square().mean())
    s, p = float(s_opt.record.projected_grads[0]), float(p_opt.record.projected_grads[0])
    assert abs(s - p) <= 1e-3 * abs(s)


def test_jvp_needs_the_bound_model_and_no_batched_objective():
    x = nn.Parameter(torch.zeros(3))
    opt = zolab.ZOSGD([x], estimator="jvp")
    with pytest.raises(ValueError, match=r"call optimizer.bind\(model\) first"):
        opt.step(lambda: x.sum())
    with pytest.raises(ValueError, match="estimator 'jvp' cannot use a batched objective"):
        opt.step(batched=lambda X: X.sum(-1))
    with pytest.raises(ValueError, match=r"not parameters of the bound model"):
        opt.bind(nn.Linear(2, 2)).step(lambda: x.sum())


@pytest.mark.parametrize("scheme", ["three_point", "fzoo"])
def test_a_batched_objective_gives_the_pointwise_estimate_for_other_schemes(scheme):
    a = torch.linspace(-1, 1, 20, dtype=torch.float64)
    est, ref, queries = setup(scheme)
    pointwise = est.estimate("all", [ref], queries, evaluator(lambda x: (a @ x) ** 2, ref, est))
    batched = est.estimate("all", [ref], est.queries(5, 1, 0), None, batched=lambda X: (X @ a) ** 2)
    torch.testing.assert_close(batched.losses, pointwise.losses, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(batched.diffs, pointwise.diffs, rtol=1e-9, atol=1e-12)


class WithKept(DifferenceScheme):
    """Central differences plus a kept direction (MeZO-SVRG's anchor term): ĝ gets one more query, an earlier
    step's seed with a kept projected gradient."""

    name = "with_kept"

    def estimate(self, ctx, queries):
        d = Central().differences(ctx.evaluate_all(Central().points(queries)), queries, ctx.refs)
        kept = Query(999, t=1)
        return Differences(torch.cat([d.diffs, d.diffs.new_tensor([0.5])]), d.losses, d.loss, queries=[*queries, kept])


def test_a_scheme_may_make_g_of_queries_beyond_the_steps():
    x = nn.Parameter(torch.zeros(6, dtype=torch.float64))
    opt = zolab.ZOSGD([x], lr=0.1, mu=1e-2, estimator=WithKept())
    opt.step(lambda: (x - 1).square().sum())
    b = opt.record.blocks[0]
    assert [q.seed for q in b.queries][1:] == [999] and b.forwards == 2
    ref = b.refs[0]
    expected = sum(c * opt.direction(ref, q) for c, q in zip(b.coefficients(ref), b.queries))
    torch.testing.assert_close(opt.grad_estimate()[ref.name], expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(x.detach(), -0.1 * expected, rtol=1e-12, atol=0)
