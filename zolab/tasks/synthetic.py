"""R-AdaZO's synthetic benchmarks (App. B.1; docs/algorithms.md §6): x ∈ R^d, every minimum 0.

Quadratic ½‖x‖², Cubic Σ|x_i|³ **[open]**, Levy, Rosenbrock. The initial point is x₀ ~ N(0, I) from
``init_seed`` (same seed, same point, for every rule). A batch carries nothing: the objective is exact, so
``loss`` is also the true objective and autograd gives the exact gradient.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from zolab.tasks.base import Task, check_seed


class SyntheticFunction(Task):
    """Args: dim d (>= 1, >= 2 for Rosenbrock), init_seed (x₀ ~ N(0, I)), init_scale (x₀'s std, 1.0),
    dtype ("float32" | "float64")."""

    def __init__(self, dim: int = 10_000, init_seed: int = 0, init_scale: float = 1.0, dtype: str = "float32"):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < self.min_dim:
            raise ValueError(f"{type(self).__name__}: dim={dim!r}; allowed: an integer >= {self.min_dim}")
        check_seed("init_seed", init_seed)
        if dtype not in ("float32", "float64"):
            raise ValueError(f"{type(self).__name__}: dtype={dtype!r}; allowed: 'float32', 'float64'")
        gen = torch.Generator().manual_seed(init_seed)
        x0 = torch.randn(dim, generator=gen, dtype=getattr(torch, dtype)) * init_scale
        self.x = nn.Parameter(x0)

    min_dim = 1
    supports_batched = True
    batch_free = True

    def loss(self, batch=None) -> torch.Tensor:
        return self.objective(self.x)

    def batched_loss(self, points: torch.Tensor, batch=None) -> torch.Tensor:
        """f at stacked points (n, d) -> (n,): a ZO step's K (+1) points in one call."""
        return self.objective(points)

    @staticmethod
    def objective(x: torch.Tensor) -> torch.Tensor:
        """f(x) for x of shape (d,) or a batch (n, d) -> (n,)."""
        raise NotImplementedError


class Quadratic(SyntheticFunction):
    """f(x) = ½‖x‖²."""

    @staticmethod
    def objective(x):
        return 0.5 * x.square().sum(-1)


class Cubic(SyntheticFunction):
    """f(x) = Σ|x_i|³ **[open]** (the paper's form was lost; this one has its minimum 0 at 0)."""

    @staticmethod
    def objective(x):
        return x.abs().pow(3).sum(-1)


class Levy(SyntheticFunction):
    """Levy: w = 1 + (x − 1)/4; sin²(πw₁) + Σ_{i<d}(w_i − 1)²[1 + 10 sin²(πw_i + 1)] + (w_d − 1)²[1 + sin²(2πw_d)]."""

    @staticmethod
    def objective(x):
        w = 1 + (x - 1) / 4
        head = torch.sin(math.pi * w[..., 0]).square()
        body = ((w[..., :-1] - 1).square() * (1 + 10 * torch.sin(math.pi * w[..., :-1] + 1).square())).sum(-1)
        tail = (w[..., -1] - 1).square() * (1 + torch.sin(2 * math.pi * w[..., -1]).square())
        return head + body + tail


class Rosenbrock(SyntheticFunction):
    """f(x) = Σ_{i<d} 100(x_{i+1} − x_i²)² + (1 − x_i)²."""

    min_dim = 2

    @staticmethod
    def objective(x):
        return (100 * (x[..., 1:] - x[..., :-1].square()).square() + (1 - x[..., :-1]).square()).sum(-1)


class _Steps(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


def _identity(batch):
    return batch[0]


class _StepIndices:
    """The training batches of an exact objective: the step indices 0, ..., n − 1, which no forward reads. A
    plain iterable (Lightning takes any): no DataLoader fetch, collate and profiler record at every batch, a cost
    that millisecond steps notice. Every batch is alike, so a mid-epoch checkpoint has no position to
    restore: the empty ``state_dict`` tells Lightning the batches resume (no reshuffle, no warning)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(range(self.n))

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        pass


class SyntheticDataModule(L.LightningDataModule):
    """Batches for an exact objective: step indices only. One epoch = ``steps_per_epoch`` ZO steps (in
    batches of the module's ``steps_per_batch``, rounded up); the trainer's ``max_steps`` sets the run
    length; validation evaluates the exact objective once."""

    def __init__(self, steps_per_epoch: int = 1000):
        super().__init__()
        if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch={steps_per_epoch!r}; allowed: an integer >= 1")
        self.steps_per_epoch = steps_per_epoch

    def train_dataloader(self):
        module = self.trainer.lightning_module if self.trainer is not None else None
        per_batch = getattr(module, "steps_per_batch", 1)  # ZOModule(steps_per_batch=N): N steps a batch
        batches = math.ceil(self.steps_per_epoch / per_batch)
        return _StepIndices(batches)

    def full_batches(self) -> list:
        """The whole "training set" of an exact objective: one batch (MeZO-SVRG's anchor steps, one forward)."""
        return [0]

    def val_dataloader(self):
        return DataLoader(_Steps(1), batch_size=1, collate_fn=_identity)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # a step index (a Python int): nothing to move, and no walk through it every batch
