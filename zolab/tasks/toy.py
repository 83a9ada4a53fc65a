"""Tasks whose diagnostics have closed forms, to check the probes (and to time them).

- ``QuadraticForm``: f(x) = ½ xᵀ H x with H = Q diag(λ) Qᵀ for a chosen spectrum λ and a seeded random
  orthogonal Q (``rotate=False``: Q = I): every Hessian quantity of docs/algorithms.md §4 is a function of λ.
- ``Linear``: f(x) = aᵀx, where finite differences are exact, so the estimator variance equals its
  Gaussian/sphere/Rademacher theory.
- ``DigitsMLP``: a 64–h–…–h–10 tanh MLP with cross-entropy on a fixed slice of scikit-learn's bundled
  digits (no download; needs ``scikit-learn``), 2,110 parameters for one hidden layer of h = 28.
- ``SpectrumQuadratic``: f(x) = ½ Σ λ_i x_i² with a chosen effective rank, for any d (O(d) memory, a
  batched objective), the task of claim Z1 (docs/algorithms.md §5).
"""

from __future__ import annotations

import math
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
    """Cross-entropy of a tanh MLP, 64 inputs, ``depth`` hidden layers of width ``hidden``, 10 outputs, on
    the first ``num_examples`` digits (pixels / 16). Its modules ``net.0``, ``net.2``, … are MeZO-BCD's
    blocks (``blocks="module"``); with ``depth`` ≥ 3 the middle ones have equal sizes (h² + h)."""

    def __init__(self, hidden: int = 28, num_examples: int = 256, seed: int = 0, dtype: str = "float64",
                 depth: int = 1):
        super().__init__()
        from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"DigitsMLP: depth={depth!r}; allowed: an integer >= 1 (hidden layers)")
        images, labels = load_digits(return_X_y=True)
        dt = getattr(torch, dtype)
        self.register_buffer("inputs", torch.tensor(images[:num_examples] / 16.0, dtype=dt))
        self.register_buffer("labels", torch.tensor(labels[:num_examples]))
        gen = torch.Generator().manual_seed(seed)
        widths = [64] + [hidden] * depth
        layers = [m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), nn.Tanh())]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, 10)).to(dt)
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=dt) / p.shape[-1] ** 0.5)

    def loss(self, batch=None):
        return nn.functional.cross_entropy(self.net(self.inputs), self.labels)


class SpectrumQuadratic(Task):
    """f(x) = ½ Σ_i λ_i x_i² with λ_i = q^(i−1), q = 1 − 1/r: λ_max = 1 and effective rank
    tr H/‖H‖ = r(1 − q^d), which is r to 1e-7 once d ≥ 16.5 r. So d and the effective rank can be varied
    one at a time (claim Z1). The Hessian is diagonal: ZO directions from an isotropic law see any rotation
    of it alike, so this stands for every quadratic with this spectrum. x₀ ~ N(0, I) from ``init_seed``, the
    same first entries for every d (where the curvature is).

    A batch carries nothing (use ``zolab.tasks.synthetic.SyntheticDataModule``). ``done()`` ends the run
    once f ≤ ``stop_below`` · f(x₀) (None: never), or once f is not finite or above ``stop_above`` · f(x₀)
    (a diverged step size), so a step-size grid spends its steps where they tell something.

    Args: dim (d), effective_rank (r ≥ 1), init_seed, stop_below, stop_above (1e6), dtype.
    """

    supports_batched = True
    batch_free = True

    def __init__(self, dim: int = 4096, effective_rank: float = 16.0, init_seed: int = 0,
                 stop_below: float | None = None, stop_above: float = 1e6, dtype: str = "float64"):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"SpectrumQuadratic: dim={dim!r}; allowed: an integer >= 1")
        if isinstance(effective_rank, bool) or not isinstance(effective_rank, (int, float)) or not (
                1 <= effective_rank <= dim):
            raise ValueError(f"SpectrumQuadratic: effective_rank={effective_rank!r}; allowed: a number in [1, dim]")
        if stop_below is not None and not 0 < stop_below < 1:
            raise ValueError(f"SpectrumQuadratic: stop_below={stop_below!r}; allowed: None or a number in (0, 1)")
        if not stop_above > 1:
            raise ValueError(f"SpectrumQuadratic: stop_above={stop_above!r}; allowed: a number > 1")
        dt = getattr(torch, dtype)
        q = 1.0 - 1.0 / effective_rank
        self.register_buffer("eigenvalues", (q ** torch.arange(dim, dtype=torch.float64)).to(dt))
        gen = torch.Generator().manual_seed(init_seed)  # drawn 256 at a time: every d shares x₀'s first entries
        x0 = torch.cat([torch.randn(256, generator=gen, dtype=torch.float64) for _ in range(-(-dim // 256))])
        self.x = nn.Parameter(x0[:dim].to(dt))
        self.initial_loss = float(self.objective(self.x.detach()))
        self.stop_below, self.stop_above = stop_below, stop_above

    @property
    def effective_rank(self) -> float:
        """tr H/‖H‖_op of this spectrum (exactly, not the requested r)."""
        return float(self.eigenvalues.double().sum() / self.eigenvalues.double().max())

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.eigenvalues * x.square()).sum(-1)

    def loss(self, batch=None):
        return self.objective(self.x)

    def batched_loss(self, points: torch.Tensor, batch=None) -> torch.Tensor:
        return self.objective(points)

    def done(self) -> bool:
        with torch.no_grad():
            f = float(self.objective(self.x)) / self.initial_loss
        return not math.isfinite(f) or f > self.stop_above or (self.stop_below is not None and f <= self.stop_below)
