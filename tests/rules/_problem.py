"""A tiny smooth problem with two tensors (a matrix that decays and a bias that does not), d = 30."""

import torch
from torch import nn


class TinyProblem(nn.Module):
    def __init__(self, dtype=torch.float64, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(4, 6, generator=gen, dtype=dtype) * 0.5)
        self.b = nn.Parameter(torch.randn(6, generator=gen, dtype=dtype) * 0.5)
        self.register_buffer("X", torch.randn(5, 4, generator=gen, dtype=dtype))
        self.register_buffer("Y", torch.randn(5, 6, generator=gen, dtype=dtype))

    def shapes(self):
        return [self.W.shape, self.b.shape]

    def f(self, W, b):
        r = self.X @ W + b - self.Y
        return (torch.nn.functional.softplus(2 * r) - r).sum() / 5  # log-cosh-like, smooth, non-quadratic

    def loss(self):
        return self.f(self.W, self.b)

    def f_dense(self, theta):
        return self.f(theta[:24].reshape(4, 6), theta[24:])

    def dense(self):
        return torch.cat([self.W.detach().flatten(), self.b.detach()])
