"""Tasks whose diagnostics have closed forms, to check the probes (and to time them).

- ``QuadraticForm``: f(x) = ½ xᵀ H x with H = Q diag(λ) Qᵀ for a chosen spectrum λ and a seeded random
  orthogonal Q (``rotate=False``: Q = I): every Hessian quantity of ALGORITHMS.md §4 is a function of λ.
- ``Linear``: f(x) = aᵀx, where finite differences are exact, so the estimator variance equals its
  Gaussian/sphere/Rademacher theory.
- ``DigitsMLP``: a 64–h–10 tanh MLP with cross-entropy on a fixed slice of scikit-learn's bundled digits
  (no download; needs ``scikit-learn``), about 2,000 parameters for h = 28.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zolab.tasks.base import Task


class QuadraticForm(Task):
    """f(x) = ½ xᵀ H x, H = Q diag(eigenvalues) Qᵀ. Args: eigenvalues, rotate (True: random orthogonal Q
    from ``seed``), seed (also x₀ ~ N(0, I)), dtype."""

    def __init__(self, eigenvalues: Sequence[float], rotate: bool = True, seed: int = 0, dtype: str = "float64"):
        super().__init__()
        if len(eigenvalues) < 1:
            raise ValueError("QuadraticForm needs at least one eigenvalue")
        dt = getattr(torch, dtype)
        gen = torch.Generator().manual_seed(seed)
        lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
        q = torch.linalg.qr(torch.randn(len(lam), len(lam), generator=gen, dtype=torch.float64))[0]
        q = q if rotate else torch.eye(len(lam), dtype=torch.float64)
        self.register_buffer("eigenvalues", lam.to(dt))
        self.register_buffer("hessian", ((q * lam) @ q.T).to(dt))
        self.x = nn.Parameter(torch.randn(len(lam), generator=gen, dtype=torch.float64).to(dt))

    def loss(self, batch=None):
        return 0.5 * self.x @ (self.hessian @ self.x)

    def gradient(self) -> torch.Tensor:
        return self.hessian @ self.x.detach()


class Linear(Task):
    """f(x) = aᵀx with a, x₀ ~ N(0, I) from ``seed``."""

    def __init__(self, dim: int = 50, seed: int = 0, dtype: str = "float64"):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        dt = getattr(torch, dtype)
        self.register_buffer("a", torch.randn(dim, generator=gen, dtype=torch.float64).to(dt))
        self.x = nn.Parameter(torch.randn(dim, generator=gen, dtype=torch.float64).to(dt))

    def loss(self, batch=None):
        return self.a @ self.x


class DigitsMLP(Task):
    """Cross-entropy of a 64–``hidden``–10 tanh MLP on the first ``num_examples`` digits (pixels / 16)."""

    def __init__(self, hidden: int = 28, num_examples: int = 256, seed: int = 0, dtype: str = "float64"):
        super().__init__()
        from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

        images, labels = load_digits(return_X_y=True)
        dt = getattr(torch, dtype)
        self.register_buffer("inputs", torch.tensor(images[:num_examples] / 16.0, dtype=dt))
        self.register_buffer("labels", torch.tensor(labels[:num_examples]))
        gen = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 10)).to(dt)
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=dt) / p.shape[-1] ** 0.5)

    def loss(self, batch=None):
        return nn.functional.cross_entropy(self.net(self.inputs), self.labels)
