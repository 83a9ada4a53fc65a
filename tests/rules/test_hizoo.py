"""HiZOO (docs/algorithms.md §3.12): H stays positive and finite, the record holds Δ, |Δ|/(2μ²) and H's range, the
applied step is p z/√H (new or old H) as ``grad_estimate`` rebuilds it, three forwards and ℓ₀ logged, decay on every
tensor, module mode as copy mode."""

import pytest
import torch
from torch import nn

from zolab import HiZOO


class Curved(nn.Module):
    """A small net whose loss has curvature spread over tensors (an embedding, a Linear, a LayerNorm)."""

    def __init__(self, dtype=torch.float64):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(20, 6).to(dtype)
        self.lin = nn.Linear(6, 5).to(dtype)
        self.norm = nn.LayerNorm(5).to(dtype)
        self.register_buffer("ids", torch.randint(0, 20, (12,)))

    def loss(self):
        h = self.norm(torch.tanh(self.lin(self.emb(self.ids))))
        return (h**4).mean() + (self.lin(self.emb(self.ids)) ** 2).mean()  # every tensor read in its module


@pytest.mark.parametrize("estimator", ["code", "paper"])
@pytest.mark.parametrize("alpha", [1e-8, 0.1, 0.99])
def test_h_stays_positive_and_finite(estimator, alpha):
    net = Curved()
    opt = HiZOO(list(net.named_parameters()), lr=1e-3, mu=1e-2, alpha=alpha, hessian_estimator=estimator)
    for _ in range(30):
        opt.step(net.loss)
        for p in net.parameters():
            H = opt.state[p]["H"]
            assert H.dtype == torch.float64 and bool((H > 0).all()) and bool(torch.isfinite(H).all())
    assert all(not torch.equal(opt.state[p]["H"], torch.ones_like(p)) for p in net.parameters())


def test_h_starts_at_one_in_float32_for_half_tensors():
    x = nn.Parameter(torch.randn(7, dtype=torch.bfloat16))
    opt = HiZOO([x], alpha=0.5)
    opt.step(lambda: x.float().square().sum())
    H = opt.state[x]["H"]
    assert H.dtype == torch.float32 and H.shape == x.shape and bool((H != 1).any())


def test_the_record_holds_delta_curvature_and_the_range_of_h():
    net = Curved()
    opt = HiZOO(list(net.named_parameters()), mu=1e-2, alpha=0.2)
    before = net.loss().item()
    for _ in range(3):
        loss = opt.step(net.loss)
    extras = opt.record.extras["all"]
    (l0, lp, lm) = opt.record.blocks[0].losses.tolist()
    assert extras["delta"].tolist() == pytest.approx([lp + lm - 2 * l0], abs=1e-15)
    assert extras["curvature"].item() == pytest.approx(abs(lp + lm - 2 * l0) / (2 * 1e-2**2), rel=1e-12)
    assert loss.item() == l0 and opt.zo["forwards"] == 9  # ℓ₀ logged, three forwards a step
    for name, p in net.named_parameters():
        H = opt.state[p]["H"].flatten()
        assert extras["hessian"][name] == (H.min().item(), H.median().item(), H.max().item())
    assert set(extras["hessian"]) == {n for n, _ in net.named_parameters()}
    assert before != net.loss().item()


@pytest.mark.parametrize("precondition", ["new", "old"])
@pytest.mark.parametrize("estimator", ["code", "paper"])
def test_the_step_is_p_z_over_the_root_of_h(precondition, estimator):
    """θ_{t+1} − θ_t = −η p z/√H (H_{t+1} or H_t) and H_{t+1} = (1 − α) H_t + α |Δ|/(2μ²) H_t w(z), written out from
    the draw z (a direction at H = 1) and the record's losses; ``grad_estimate`` gives the same step."""
    net, lr, alpha, mu = Curved(), 1e-2, 0.3, 1e-2
    opt = HiZOO(list(net.named_parameters()), lr=lr, mu=mu, alpha=alpha, hessian_estimator=estimator,
                precondition_with=precondition)
    for _ in range(3):
        opt.step(net.loss)
    old_H = {n: opt.state[p]["H"].clone() for n, p in net.named_parameters()}
    theta = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt.step(net.loss)
    b = opt.record.blocks[0]
    l0, lp, lm = b.losses.tolist()
    p, rate = (lp - lm) / (2 * mu), alpha * abs(lp + lm - 2 * l0) / (2 * mu * mu)
    ghat = opt.grad_estimate()
    for r in b.refs:
        z = opt.direction(r, b.queries[0]) * opt.state[r.param]["H"].sqrt()  # u = z/√H_{t+1} after the step
        w = z**2 if estimator == "code" else (z**2 - 1).abs()
        H = (1 - alpha) * old_H[r.name] + rate * old_H[r.name] * w
        torch.testing.assert_close(opt.state[r.param]["H"], H, rtol=1e-12, atol=0)
        step = p * z / (H if precondition == "new" else old_H[r.name]).sqrt()
        torch.testing.assert_close(r.param.detach(), theta[r.name] - lr * step, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(ghat[r.name], step, rtol=1e-10, atol=1e-15)


def test_weight_decay_reaches_every_tensor():
    net = Curved()
    opt = HiZOO(list(net.named_parameters()), lr=0.1, weight_decay=0.5)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt.step(lambda: torch.zeros((), dtype=torch.float64))  # zero loss: every change is weight decay
    for n, p in net.named_parameters():
        torch.testing.assert_close(p.detach(), before[n] * (1 - 0.1 * 0.5), rtol=1e-15, atol=0, msg=n)


def test_module_mode_steps_as_copy_mode():
    """Embedding rows and Linear row chunks of z/√H (direction_slices) give copy mode's run (to rounding)."""
    runs = []
    for perturb in ("copy", "module"):
        net = Curved()
        opt = HiZOO(list(net.named_parameters()), lr=1e-2, mu=1e-2, alpha=0.3, perturb=perturb, chunk_numel=8)
        opt.bind(net)
        for _ in range(5):
            opt.step(net.loss)
        assert opt.perturb_mode == perturb
        runs.append(([p.detach().clone() for p in net.parameters()],
                     [opt.state[p]["H"].clone() for p in net.parameters()]))
    for a, b in zip(runs[0][0] + runs[0][1], runs[1][0] + runs[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)  # chunked products may round differently
