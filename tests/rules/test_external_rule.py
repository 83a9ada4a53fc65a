"""A rule written outside the package brings its own difference scheme and its own directions object, without
editing zolab's files: it steps (copy and module mode), resumes from a state_dict bitwise, and probes read ĝ."""

import io

import pytest
import torch
from torch import nn

from zolab.engine.directions import REQUIRED, SamplerDirections
from zolab.engine.samplers import Gaussian
from zolab.engine.schemes import Differences, DifferenceScheme, Point
from zolab.rules.base import ZOOptimizer


class FourPoint(DifferenceScheme):
    """Fourth-order central differences: f(θ ± μu), f(θ ± 2μu); δ = (8(ℓ₊₁ − ℓ₋₁) − (ℓ₊₂ − ℓ₋₂))/12, exact for
    polynomials of degree up to 4 along u. The logged loss is the mean of the ±μ pair; extras: ℓ₊₂ − ℓ₋₂."""

    name = "four_point"

    def points(self, queries):
        return [Point(((q, s),)) for q in queries for s in (1.0, -1.0, 2.0, -2.0)]

    def differences(self, losses, queries, refs):
        p1, m1, p2, m2 = (losses[i::4] for i in range(4))
        return Differences((8 * (p1 - m1) - (p2 - m2)) / 12, losses, (p1 + m1).mean() / 2, {"wide": p2 - m2})


class Scaled:
    """u = z/√(1 + s), z the Gaussian draw of the query and s the rule's state ``scale`` (HiZOO's shape), in plain
    torch: the protocol's methods, nothing inherited."""

    name = "scaled"
    law = None

    def __init__(self):
        self.inner = SamplerDirections(Gaussian())
        self.sampler = self.inner.sampler

    def bind(self, rule):
        self.rule = rule

    def variant(self, ref):
        return "scaled"

    def prepare(self, refs, queries, scratch=None, shard_sum=None):
        pass

    def _u(self, ref, query):
        s = self.rule.state_tensor(ref, "scale")
        return (self.inner.point(ref, query, 1.0).to(s.dtype) / (1 + s).sqrt()).to(ref.param.dtype)

    def point(self, ref, query, radius, out=None, base=None):
        value = radius * self._u(ref, query) + (0 if base is None else base)
        return value if out is None else out.copy_(value)

    def combine(self, ref, queries, coefs, out=None, base=None):
        value = sum(c * self._u(ref, q) for c, q in zip(coefs, queries)) + (0 if base is None else base)
        return value if out is None else out.copy_(value)

    def rows(self, ref, queries, out):
        for k, q in enumerate(queries):
            out[k].copy_(self._u(ref, q).reshape(-1))
        return out

    def slices(self, ref):
        return False

    def embedding_rows(self, ref, query, radius, rows, ids, dim):
        raise NotImplementedError

    point_rows = embedding_rows

    def element(self, views, g):
        return views.element(g=g)

    def trace_g(self, views, num_queries, ref):
        return views.tracer.input("g")

    def g_inputs(self, program, ref, queries, coefs, scratch=None):
        g = self.combine(ref, queries, coefs, out=scratch(ref) if scratch else None)
        return {}, {"g": g}, {}

    def noise_inputs(self, program, ref, queries):
        return {}, {}


class Outside(ZOOptimizer):
    """Momentum SGD along Scaled directions estimated by FourPoint; ``scale`` = θ₀² is set once, at construction
    (as Sparse-MeZO fixes its thresholds from the pre-trained weights)."""

    def __init__(self, params, lr=1e-2, mu=1e-2, **options):
        super().__init__(params, dict(lr=lr, mu=mu), estimator=FourPoint(), directions=Scaled(), **options)
        for _, refs in self.partition():
            for r in refs:
                self.state_tensor(r, "scale").copy_(r.param.detach().square())

    def update(self, e, h):
        m = 0.9 * e.m + e.g
        return m, {"m": m}


class Cubic(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 2).double()
        self.register_buffer("x", torch.randn(4, 3, dtype=torch.float64))

    def forward(self):
        y = self.lin(self.x)
        return (y**3).sum() / 10 + y.square().sum()


def test_the_directions_object_has_every_method_of_the_protocol():
    assert all(hasattr(Scaled(), m) for m in REQUIRED)


@pytest.mark.parametrize("perturb", ["copy", "module"])
def test_an_outside_rule_steps_with_its_own_scheme_and_directions(perturb):
    """δ is the four-point difference of the losses at θ ± μu, θ ± 2μu with u = z/√(1 + s), exact on a cubic
    (= μ ∇f·u); ĝ = Σ (δ_k/(Kμ)) u_k is what grad_estimate() regenerates, and θ moves by −η m, m = 0.9 m + ĝ."""
    model = Cubic()
    opt = Outside(model.named_parameters(), lr=1e-2, mu=1e-2, num_queries=2, perturb=perturb).bind(model)
    refs = opt.partition()[0][1]
    scale = [r.param.detach().square() for r in refs]
    momentum = [torch.zeros_like(s) for s in scale]
    for _ in range(3):
        before = [r.param.detach().clone() for r in refs]
        opt.step(model)
        b = opt.record.blocks[0]
        assert opt.perturb_mode == perturb and b.forwards == 8 and b.extras["wide"].shape == (2,)
        us = [[opt.direction(r, q) for r in refs] for q in b.queries]
        with torch.enable_grad():
            m = Cubic()
            m.load_state_dict({"lin.weight": before[0], "lin.bias": before[1], "x": model.x})
            grads = torch.autograd.grad(m(), [m.lin.weight, m.lin.bias])
        for k, q in enumerate(b.queries):
            slope = sum((g * u).sum() for g, u in zip(grads, us[k]))
            assert float(b.diffs[k]) == pytest.approx(1e-2 * float(slope), rel=1e-9)
            for r, u, s in zip(refs, us[k], scale):
                z = SamplerDirections(Gaussian()).point(r, q, 1.0)
                torch.testing.assert_close(u, z / (1 + s).sqrt(), rtol=1e-14, atol=0)
        ghat = opt.grad_estimate()
        for i, (r, theta) in enumerate(zip(refs, before)):
            expected = b.diffs[0] / 2e-2 * us[0][i] + b.diffs[1] / 2e-2 * us[1][i]
            torch.testing.assert_close(ghat[r.name], expected, rtol=1e-12, atol=1e-15)
            momentum[i] = 0.9 * momentum[i] + expected
            torch.testing.assert_close(r.param.detach(), theta - 1e-2 * momentum[i], rtol=1e-12, atol=1e-15)


def test_an_outside_rule_resumes_bitwise_from_its_state_dict():
    straight, first = Cubic(), Cubic()
    opt = Outside(straight.named_parameters(), num_queries=2, seed=3)
    for _ in range(6):
        opt.step(straight)
    opt1 = Outside(first.named_parameters(), num_queries=2, seed=3)
    for _ in range(3):
        opt1.step(first)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt1.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    resumed = Cubic()
    resumed.load_state_dict(ckpt["model"])
    opt2 = Outside(resumed.named_parameters(), num_queries=2, seed=3)
    opt2.load_state_dict(ckpt["opt"])
    assert ckpt["opt"]["zo"]["config"]["estimator"] == "four_point"
    assert ckpt["opt"]["zo"]["config"]["directions"] == "gaussian"
    for _ in range(3):
        opt2.step(resumed)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(opt.state[p]["scale"], opt2.state[q]["scale"])
        assert torch.equal(opt.state[p]["m"], opt2.state[q]["m"])
    assert opt2.zo == opt.zo and opt2.record.estimator == "four_point" and opt2.record.directions == "scaled"
