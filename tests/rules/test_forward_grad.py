"""Forward-Grad (docs/algorithms.md §3.19) through attention: the JVP runs where the fused attention kernels have no
forward-mode derivative (CPU's flash attention), and its estimate s v has s² = ĝ·∇f > 0, as an exact slope must."""

import torch
from torch import nn

from zolab import ForwardGrad


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.qkv = nn.Linear(8, 24)
        self.register_buffer("x", torch.randn(2, 5, 8))

    def loss(self):
        q, k, v = self.qkv(self.x).unflatten(-1, (3, 2, 4)).transpose(1, 3).unbind(2)  # (batch, heads, seq, 4)
        return nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).square().mean()


def test_a_step_through_scaled_dot_product_attention():
    net = Attention()
    opt = ForwardGrad(list(net.named_parameters()), lr=1e-2).bind(net)
    before = [p.detach().clone() for p in net.parameters()]
    grads = torch.autograd.grad(net.loss(), list(net.parameters()))
    loss = opt.step(net.loss)
    assert torch.isfinite(loss) and all(not torch.equal(a, p) for a, p in zip(before, net.parameters()))
    ghat = opt.grad_estimate()
    inner = sum(float((ghat[n] * g).sum()) for (n, _), g in zip(net.named_parameters(), grads))
    assert inner > 0  # ĝ·∇f = s (v·∇f) = s²
