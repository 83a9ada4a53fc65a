"""SubZero beyond the generic tests (tests/engine/test_lowrank.py checks its directions object): through the rule,
orthonormal bases and the dense Gaussian's expected square norm, the squeezed-shape rule, regenerated bases equal
kept ones, and momentum as torch's SGD."""

import pytest
import torch
from torch import nn

import zolab
from zolab.engine.estimator import Query


def test_bases_are_orthonormal_kept_for_t0_steps_and_the_directions_norm_aligned():
    """‖UᵀU − I‖ < 1e-5 and ‖VᵀV − I‖ < 1e-5 (float32), the same U, V for T₀ steps, then new ones; over 10⁴
    draws E‖√(mn)/r · U Z Vᵀ‖²_F = mn within 2%."""
    W = nn.Parameter(torch.randn(30, 20))
    opt = zolab.SubZero([("W", W)], rank=4, t0=5, seed=3)
    dirs, ref = opt.grad_estimator.directions, opt.partition()[0][1][0]
    U, V = dirs.basis(ref, 0)
    for Q in (U, V):
        assert Q.shape[1] == 4 and float((Q.t() @ Q - torch.eye(4)).norm()) < 1e-5
    for t in range(1, 6):
        opt.step(lambda: W.square().sum())
        assert torch.equal(dirs.basis(ref, dirs.window(t))[0], U)
    assert not torch.equal(dirs.basis(ref, dirs.window(6))[0], U)
    small = nn.Parameter(torch.zeros(12, 10, dtype=torch.float64))
    opt = zolab.SubZero([("W", small)], rank=3, t0=250)
    ref = opt.partition()[0][1][0]
    norms = torch.stack([opt.direction(ref, Query(s, t=1 + s)).square().sum() for s in range(10_000)])
    assert float(norms.mean()) == pytest.approx(120.0, rel=0.02)
    assert opt.scale_of(ref) == pytest.approx(120**0.5 / 3)


@pytest.mark.parametrize("shape, rank_of_step", [((1, 6, 5), 2), ((6, 2, 5), 6), ((6, 5), 2)])
def test_tensors_whose_squeezed_shape_is_a_matrix_get_low_rank_steps(shape, rank_of_step):
    x = nn.Parameter(torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    opt = zolab.SubZero([("x", x)], rank=2)
    before = x.detach().clone()
    opt.step(lambda: x.pow(4).sum())
    step = (x.detach() - before).reshape(6, -1)
    # θ + Δ − θ carries rounding of order eps·|θ| ≈ 1e-16, far below 1e-8 of Δ's largest singular value (~1e-3)
    assert int(torch.linalg.matrix_rank(step, rtol=1e-8)) == rank_of_step


def test_regenerated_bases_give_the_kept_bases_steps():
    runs = []
    for store in (True, False):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
        x = torch.randn(8, 5)
        opt = zolab.SubZero(list(net.named_parameters()), lr=1e-2, rank=2, t0=3, momentum=0.9,
                            store_subspace=store)
        for _ in range(7):
            opt.step(lambda net=net, x=x: net(x).square().mean())
        runs.append([p.detach().clone() for p in net.parameters()])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_momentum_is_torch_sgds_on_the_estimate():
    """torch.optim.SGD(momentum=γ, weight_decay=0) fed ĝ (the step record's) as the gradient takes the same
    steps (first buffer = ĝ, then γ b + ĝ), on matrices (eager) and vectors (fused)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    twin = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    twin.load_state_dict(net.state_dict())
    x = torch.randn(8, 5, dtype=torch.float64)
    opt = zolab.SubZero(list(net.named_parameters()), lr=1e-2, rank=2, t0=2, momentum=0.8)
    sgd = torch.optim.SGD(twin.parameters(), lr=1e-2, momentum=0.8)
    for _ in range(5):
        opt.step(lambda: net(x).square().mean())
        ghat = opt.grad_estimate()
        for (name, _), p in zip(net.named_parameters(), twin.parameters()):
            p.grad = ghat[name].clone()
        sgd.step()
        for a, b in zip(net.parameters(), twin.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
