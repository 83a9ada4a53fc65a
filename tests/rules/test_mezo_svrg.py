"""MeZO-SVRG beyond the generic tests: the anchor estimate is taken at θ̄ (not at θ_t, unlike the authors' aliased
copy), the update is θ_t − η₂(p₁z₁ − p₂z₂ + p̄z̄) with the anchor's kept seed, forwards are counted as docs/algorithms.md
§3.18 says (anchor 2n/b, other steps 4), a missing full batch is an error, the plateau annealing."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import zolab
from zolab.engine.samplers import make_sampler
from zolab.engine.seeds import mix


def gauss(key, shape):
    return make_sampler("gaussian", "counter").sample(key, torch.empty(shape, dtype=torch.float64))


class Recorded(nn.Module):
    """One tensor; every closure call records the point it saw."""

    def __init__(self):
        super().__init__()
        self.x = nn.Parameter(torch.linspace(-1, 1, 7, dtype=torch.float64))
        self.seen = []

    def loss(self):
        self.seen.append(self.x.detach().clone())
        return (self.x - 0.3).pow(4).sum() + self.x.square().sum()


class Chunks:
    """A full-batch objective of ``forwards`` chunks (what zolab fit's FullBatch reports)."""

    def __init__(self, f, forwards):
        self.f, self.forwards = f, forwards

    def __call__(self):
        return self.f()


@pytest.mark.parametrize("shared_z", [False, True])
def test_the_anchor_estimate_is_taken_at_the_kept_anchor_and_the_update_is_variance_reduced(shared_z):
    """q = 3: step 1 is an anchor step (θ̄ = θ_1, ĝ = p̄z̄ with η₁); at steps 2 and 3 the last two points are
    θ̄ ± μz₂, away from θ_t (which moved), z₂ the query mix(s₁, 1) (or z₁ with shared_z), and θ moves by
    −η₂(p₁z₁ − p₂z₂ + p̄z̄) with z̄ regenerated from the anchor step's seed."""
    model, mu, lr, anchor_lr = Recorded(), 1e-3, 1e-2, 5e-2
    opt = zolab.MeZOSVRG([("x", model.x)], lr=lr, anchor_lr=anchor_lr, mu=mu, q=3, shared_z=shared_z, seed=2)
    anchor = model.x.detach().clone()
    opt.step(model.loss, full=model.loss)
    s_bar = opt.record.blocks[0].queries[0].seed
    z_bar = gauss(mix(s_bar, 0), (7,))
    p_bar = float(opt.record.blocks[0].diffs[0]) / mu
    torch.testing.assert_close(model.x.detach(), anchor - anchor_lr * p_bar * z_bar, rtol=1e-13, atol=1e-15)
    for t in (2, 3):  # mini-batch steps
        model.seen.clear()
        before = model.x.detach().clone()
        opt.step(model.loss)
        b = opt.record.blocks[0]
        s1 = b.queries[0].seed
        z1 = gauss(mix(s1, 0), (7,))
        z2 = z1 if shared_z else gauss(mix(mix(s1, 1), 0), (7,))
        assert len(model.seen) == 4 and b.forwards == 4 and b.queries[0].t == t
        torch.testing.assert_close(model.seen[0], before + mu * z1, rtol=0, atol=1e-15)
        torch.testing.assert_close(model.seen[2], anchor + mu * z2, rtol=0, atol=1e-15)
        torch.testing.assert_close(model.seen[3], anchor - mu * z2, rtol=0, atol=1e-15)
        assert float((before - anchor).abs().max()) > 1e-4  # θ_t is not θ̄: the estimate at θ̄ is not at θ_t
        losses = b.losses.tolist()
        p1, p2 = (losses[0] - losses[1]) / (2 * mu), (losses[2] - losses[3]) / (2 * mu)
        ghat = p1 * z1 - p2 * z2 + p_bar * z_bar
        torch.testing.assert_close(model.x.detach(), before - lr * ghat, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(opt.grad_estimate()["x"], ghat, rtol=1e-12, atol=1e-14)
        assert torch.equal(opt.state[model.x]["anchor"], anchor)


def test_forwards_are_2n_over_b_at_anchor_steps_and_4_otherwise():
    """n/b = 8 chunks: anchor steps cost 16 forwards, the others 4 ((2n/b + 4(q − 1))/q = 10 a step for q = 2)."""
    model = Recorded()
    opt = zolab.MeZOSVRG([("x", model.x)], lr=1e-3, q=2)
    full = Chunks(model.loss, forwards=8)
    counts = []
    for _ in range(6):
        opt.step(model.loss, full=full)  # zolab fit passes full= on anchor steps only; extra ones are ignored
        counts.append(opt.zo["forwards"])
    assert counts == [16, 20, 36, 40, 56, 60]
    assert opt.evaluators_at(7) == ("full",) and opt.evaluators_at(8) == ()


def test_an_anchor_step_without_the_full_batch_is_an_error_and_changes_nothing():
    model = Recorded()
    opt = zolab.MeZOSVRG([("x", model.x)], lr=1e-2)
    before = model.x.detach().clone()
    with pytest.raises(ValueError, match=r"evaluates with 'full', which this step was not given; pass step\(closure, "
                                         r"full=\.\.\.\)"):
        opt.step(model.loss)
    assert torch.equal(model.x.detach(), before) and opt.zo["step"] == 0 and not opt.zo["anchors"]
    opt.step(model.loss, full=model.loss)
    opt.step(model.loss)  # a mini-batch step needs none
    assert opt.zo["step"] == 2


def test_plateau_annealing_divides_both_step_sizes_when_the_loss_rises():
    """w = 4: at even steps, once 8 mini-batch losses exist (step 10: steps 3..10), mean(last 2) > 1.05 · mean(those
    6..4 ago) divides η₁ and η₂ by the factor (again at step 12), never below the code's floors 1e-5, 1e-6."""
    calls = {"n": 0}
    x = nn.Parameter(torch.zeros(3, dtype=torch.float64))

    def rising():
        calls["n"] += 1
        return x.sum() * 0 + 1.0 + 0.1 * calls["n"]  # the logged loss rises step after step

    opt = zolab.MeZOSVRG([("x", x)], lr=1e-3, anchor_lr=1e-2, q=1000, plateau_anneal=2.0, plateau_window=4)
    opt.step(rising, full=rising)
    anneal = []
    for _ in range(12):  # steps 2..13
        opt.step(rising)
        anneal.append(opt.zo["anneal"])
    assert anneal == [1.0] * 8 + [0.5, 0.5, 0.25, 0.25]
    ref = opt.partition()[0][1][0]
    assert opt.scalars_of(ref, opt.record.blocks[0])["lr"] == 1e-3 * 0.25
    low = zolab.MeZOSVRG([("x", x)], lr=1.5e-6, anchor_lr=2e-5, plateau_anneal=2.0, plateau_window=4)
    low.zo["anneal"] = 0.25
    ref = low.partition()[0][1][0]
    assert low.scalars_of(ref, SimpleNamespace(extras={"anchor": False}))["lr"] == 1e-6
    assert low.scalars_of(ref, SimpleNamespace(extras={"anchor": True}))["lr"] == 1e-5
