"""LOZO and LOZO-M beyond the generic tests: on a refresh step the probed and the applied direction share U and V
(the authors' code redraws V before U in the probe only), the factor-space momentum's projection, tensors of more
than two dimensions, MeZO's name test for weight decay."""

import math

import pytest
import torch
from torch import nn

import zolab
from zolab.engine.lowrank import V_STREAM
from zolab.engine.samplers import make_sampler
from zolab.engine.seeds import mix


def gauss(key, shape):
    return make_sampler("gaussian", "counter").sample(key, torch.empty(shape, dtype=torch.float64))


class Probed(nn.Module):
    """One 5 × 4 matrix and a bias; records the W of every closure call."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.W = nn.Parameter(torch.randn(5, 4, generator=gen, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(5, generator=gen, dtype=torch.float64))
        self.seen = []

    def loss(self):
        self.seen.append(self.W.detach().clone())
        return (self.W.sum(1) + self.b).square().sum() + self.W.pow(4).sum()


@pytest.mark.parametrize("cls", [zolab.LOZO, zolab.LOZOM])
def test_probe_and_update_share_u_and_v_on_every_step_the_refresh_steps_included(cls):
    """u = U Vᵀ with U from the query's seed and V from (seed, V stream, tensor 0, ⌊(t − 1)/ν⌋): the probe is
    θ ± μ U Vᵀ and the update moves W by −η p U Vᵀ (LOZO) or −η M Vᵀ (LOZO-M, M = β1 M V_oldᵀV/n + (1 − β1) p U on a
    refresh step) with the same U and V, at t = 1..7 with ν = 3 (refreshes at t = 4 and 7)."""
    model, nu, r, lr, mu = Probed(), 3, 2, 1e-2, 1e-3
    opt = cls(list(model.named_parameters()), lr=lr, mu=mu, rank=r, nu=nu, seed=5)
    M = None
    for t in range(1, 8):
        model.seen.clear()
        before = model.W.detach().clone()
        opt.step(model.loss)
        q = opt.record.blocks[0].queries[0]
        U, V = gauss(mix(q.seed, 0), (5, r)), gauss(mix(5, V_STREAM, 0, (t - 1) // nu), (4, r))
        torch.testing.assert_close((model.seen[0] - before) / mu, U @ V.t(), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close((model.seen[1] - before) / -mu, U @ V.t(), rtol=1e-9, atol=1e-9)
        p = float(opt.record.blocks[0].diffs[0]) / mu
        if cls is zolab.LOZO:
            step = p * U @ V.t()
        else:
            if M is None:
                M = p * U
            else:
                if (t - 1) % nu == 0:
                    V_old = gauss(mix(5, V_STREAM, 0, (t - 2) // nu), (4, r))
                    M = M @ (V_old.t() @ V) / 4
                M = 0.9 * M + 0.1 * p * U
            torch.testing.assert_close(opt.state[model.W]["M"], M, rtol=1e-12, atol=1e-14)
            step = M @ V.t()
        torch.testing.assert_close(model.W.detach(), before - lr * step, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(opt.grad_estimate()["W"], p * U @ V.t(), rtol=1e-12, atol=1e-14)


def test_unbiased_scale_divides_the_matrices_step_by_r_only():
    runs = {}
    for scale in ("code", "unbiased"):
        model = Probed()
        opt = zolab.LOZO(list(model.named_parameters()), lr=1e-2, rank=4, seed=1, lozo_scale=scale)
        W, b = model.W.detach().clone(), model.b.detach().clone()
        opt.step(model.loss)
        runs[scale] = (model.W.detach() - W, model.b.detach() - b)
    torch.testing.assert_close(runs["unbiased"][0], runs["code"][0] / 4, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(runs["unbiased"][1], runs["code"][1], rtol=0, atol=0)


@pytest.mark.parametrize("reshape_nd, rank_of_step", [("flatten_trailing", 1), ("dense", 6)])
def test_a_tensor_of_three_dimensions_is_a_matrix_or_gets_a_dense_draw(reshape_nd, rank_of_step):
    """(6, 2, 5) is the 6 × 10 matrix (a rank-1 step for r = 1) or gets a dense Gaussian (a full-rank step)."""
    x = nn.Parameter(torch.randn(6, 2, 5, dtype=torch.float64))
    opt = zolab.LOZO([("x", x)], lr=1e-2, rank=1, reshape_nd=reshape_nd)
    before = x.detach().clone()
    opt.step(lambda: x.pow(4).sum())
    assert int(torch.linalg.matrix_rank((x.detach() - before).view(6, 10))) == rank_of_step


def test_mezo_name_test_decays_every_tensor_not_named_bias_or_layernorm():
    """λ = 0.5, a zero loss: every change is decay; "name" (default) spares bias/layer_norm/layernorm by name (a
    LayerNorm called "norm" decays, as in MeZO's code), "ndim" spares the 1-D tensors."""
    net = nn.ModuleDict({"lin": nn.Linear(3, 2), "norm": nn.LayerNorm(2), "layer_norm": nn.LayerNorm(2)})
    for test, decayed in (("name", {"lin.weight", "norm.weight"}), ("ndim", {"lin.weight"})):
        before = {n: p.detach().clone() for n, p in net.named_parameters()}
        opt = zolab.LOZO(list(net.named_parameters()), lr=0.1, weight_decay=0.5, decay_test=test)
        opt.step(lambda: torch.zeros(()))
        for n, p in net.named_parameters():
            factor = 1 - 0.1 * 0.5 if n in decayed else 1.0
            torch.testing.assert_close(p.detach(), before[n] * factor, rtol=0, atol=0)


def test_lozo_m_state_is_small_and_resumes_its_window():
    """M is m × r in the compute type (float32 under bfloat16 weights), the vectors' momentum dense; a state_dict
    round trip continues bitwise across a refresh."""
    def run(steps, ckpt=None):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(6, 4), nn.LayerNorm(4)).to(torch.bfloat16)
        x = torch.randn(3, 6).to(torch.bfloat16)
        opt = zolab.LOZOM(list(net.named_parameters()), lr=1e-2, rank=2, nu=2)
        if ckpt:
            net.load_state_dict(ckpt[0])
            opt.load_state_dict(ckpt[1])
        for _ in range(steps):
            opt.step(lambda: net(x).float().square().mean())
        return net, opt

    net, opt = run(3)
    assert opt.state[net[0].weight]["M"].shape == (4, 2) and opt.state[net[0].weight]["M"].dtype == torch.float32
    assert opt.state[net[0].bias]["momentum"].shape == (4,)
    straight, _ = run(6)
    resumed, _ = run(3, (net.state_dict(), opt.state_dict()))
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert math.isfinite(float(opt.record.loss))
