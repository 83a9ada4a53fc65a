"""The CPU proxies of the new rules' claims: P-hq, P-lr, P-mlp and their batches (docs/algorithms.md §6).

- ``HeteroCurvature`` (P-hq): least squares whose diagonal Hessian spreads over three decades; exact gradient,
  Hessian, its diagonal and the optimum in closed form.
- ``LowRankLinear`` (P-lr): a two-layer linear net fitting a teacher that differs from the start by a rank-2
  matrix, so the gradient at the start has rank 2; exact gradient in closed form; ``wide=True`` for timing.
- ``DigitsFineTune`` (P-mlp, ``zolab/tasks/proxies_mlp.py``): an MLP pre-trained on digits 0–4, fine-tuned on
  all ten.

Each task owns its problem, drawn from its ``seed`` (data, teacher, start, pre-training), in its ``dtype``
("float32" or "float64"; the draws are made in float64 and rounded, so both dtypes hold the same problem).
The data are non-persistent buffers: checkpoints hold the trainable tensors only. ``ProxyDataModule`` orders
the task's splits into seeded mini-batches that resume exactly; it takes them from the task it trains, so
the data a run sees and the closed forms the probes read can never be of two different problems.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from zolab.tasks.base import ResumableLoader, Task, check_seed, lightning_progress

DTYPES = ("float32", "float64")
SPLITS = ("train", "val", "test")


def check_int(owner: str, name: str, value, low: int) -> int:
    """``value`` if it is an integer >= ``low``, else a ValueError naming it and what is allowed."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{owner}: {name}={value!r}; allowed: an integer >= {low}")
    return value


def check_dtype(owner: str, dtype) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"{owner}: dtype={dtype!r}; allowed: {', '.join(map(repr, DTYPES))}")
    return getattr(torch, dtype)


class ProxyTask(Task):
    """A proxy: ``split(name)`` gives the (inputs, targets) of "train", "val" or "test"; a batch is one such
    pair of row slices. ``default_batch_size`` is §8's mini-batch."""

    default_batch_size = 64

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in SPLITS:
            raise ValueError(f"{type(self).__name__}: split={name!r}; allowed: {', '.join(map(repr, SPLITS))}")
        return self._splits()[name]

    def _splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def batch_size(self, batch) -> int:
        return len(batch[0])


class HeteroCurvature(ProxyTask):
    """P-hq: f(x) = ½ mean_i (a_iᵀx − y_i)² over the n training rows, x ∈ R^d, x₀ = 0.

    A = Z diag(s), Z_ij ~ N(0, 1), s_j = 10^(−1.5 + 1.5 j/(d − 1)); y = A x* + σε with x*, ε ~ N(0, I).
    ∇²f = AᵀA/n exactly, whose diagonal s_j² Σ_i Z_ij²/n spans about 10^−3 to 1. A batch is (rows of A,
    entries of y). Splits: train and val are the n training rows (val/loss is f itself), test is ``test_rows``
    fresh rows of the same law. One tensor is trained, so a step's points go through one ``batched_loss``.

    Args: rows (n, 4096), dim (d, 1000), noise (σ, 0.01), test_rows (1024), seed, dtype.
    """

    supports_batched = True

    def __init__(self, rows: int = 4096, dim: int = 1000, noise: float = 0.01, test_rows: int = 1024,
                 seed: int = 0, dtype: str = "float32"):
        super().__init__()
        name = type(self).__name__
        check_int(name, "rows", rows, 1)
        check_int(name, "dim", dim, 2)
        check_int(name, "test_rows", test_rows, 1)
        if isinstance(noise, bool) or not isinstance(noise, int | float) or not noise >= 0:
            raise ValueError(f"{name}: noise={noise!r}; allowed: a number >= 0")
        check_seed("seed", seed)
        dt = check_dtype(name, dtype)
        gen = torch.Generator().manual_seed(seed)
        scales = 10.0 ** (-1.5 + 1.5 * torch.arange(dim, dtype=torch.float64) / (dim - 1))
        a = torch.randn(rows, dim, generator=gen, dtype=torch.float64) * scales
        x_star = torch.randn(dim, generator=gen, dtype=torch.float64)
        y = a @ x_star + noise * torch.randn(rows, generator=gen, dtype=torch.float64)
        a_test = torch.randn(test_rows, dim, generator=gen, dtype=torch.float64) * scales
        y_test = a_test @ x_star + noise * torch.randn(test_rows, generator=gen, dtype=torch.float64)
        for key, value in (("scales", scales), ("x_star", x_star), ("a", a), ("y", y), ("a_test", a_test),
                           ("y_test", y_test)):
            self.register_buffer(key, value.to(dt), persistent=False)
        self.x = nn.Parameter(torch.zeros(dim, dtype=dt))
        self._optimum: tuple[torch.Tensor, float] | None = None

    def _splits(self):
        return {"train": (self.a, self.y), "val": (self.a, self.y), "test": (self.a_test, self.y_test)}

    def loss(self, batch) -> torch.Tensor:
        a, y = batch
        return 0.5 * (a.to(self.x.dtype) @ self.x - y.to(self.x.dtype)).square().mean()

    def batched_loss(self, points: torch.Tensor, batch) -> torch.Tensor:
        """f at stacked points (k, d) -> (k,) on the batch's rows: one product for a step's points."""
        a, y = batch
        return 0.5 * (a.to(points.dtype) @ points.T - y.to(points.dtype)[:, None]).square().mean(0)

    @torch.no_grad()
    def exact_gradient(self) -> dict[str, torch.Tensor]:
        """∇f(x) = Aᵀ(Ax − y)/n over the training rows, at the current x."""
        return {"x": self.a.T @ (self.a @ self.x - self.y) / len(self.y)}

    @torch.no_grad()
    def hessian(self) -> torch.Tensor:
        """∇²f = AᵀA/n (constant), d × d."""
        return self.a.T @ self.a / len(self.a)

    @torch.no_grad()
    def hessian_diagonal(self) -> dict[str, torch.Tensor]:
        """diag ∇²f = Σ_i A_ij²/n, per trainable tensor (what HiZOO's H estimates)."""
        return {"x": self.a.square().mean(0)}

    @torch.no_grad()
    def optimum(self) -> tuple[torch.Tensor, float]:
        """(x̂, f(x̂)): the least-squares solution in float64 (computed once), the floor of every loss curve."""
        if self._optimum is None:
            a, y = self.a.double().cpu(), self.y.double().cpu()
            x_hat = torch.linalg.lstsq(a, y[:, None]).solution[:, 0]
            self._optimum = (x_hat, float(0.5 * (a @ x_hat - y).square().mean()))
        return self._optimum


class LowRankLinear(ProxyTask):
    """P-lr: x ↦ W₂W₁x with the MSE (mean over examples and outputs) to a teacher T = W₂⁰W₁⁰ + ΔW.

    Sizes (in, hidden, out) = (64, 128, 32): W₁ ∈ R^{128×64}, W₂ ∈ R^{32×128} (12,288 numbers); ``wide=True``:
    (1024, 1024, 1024), 2,097,152 numbers, for timing rules whose cost is in sweeps over θ. W₁⁰ ~ N(0, 1/in),
    W₂⁰ ~ N(0, 1/hidden); ΔW = U Vᵀ with U, V Gaussian of ``rank`` columns, scaled to ‖ΔW‖²_F = out, so the
    population loss at the start is 1. Inputs x ~ N(0, I), targets T x (no noise: the minimum is 0).
    With P = W₂W₁ and Σ̂ = XᵀX/n over the training inputs, f = tr((P − T)Σ̂(P − T)ᵀ)/out and
    ∇f = (W₂ᵀG, G W₁ᵀ), G = (2/out)(P − T)Σ̂: at the start G = −(2/out)ΔW Σ̂ has the rank of ΔW.
    Splits: train and val are the ``examples`` training inputs (val/loss is f), test ``test_examples`` fresh ones.

    Args: wide (False), rank (2), examples (4096), test_examples (1024), seed, dtype.
    """

    def __init__(self, wide: bool = False, rank: int = 2, examples: int = 4096, test_examples: int = 1024,
                 seed: int = 0, dtype: str = "float32"):
        super().__init__()
        name = type(self).__name__
        if not isinstance(wide, bool):
            raise ValueError(f"{name}: wide={wide!r}; allowed: true or false")
        self.sizes = (1024, 1024, 1024) if wide else (64, 128, 32)
        n_in, hidden, out = self.sizes
        check_int(name, "rank", rank, 1)
        if rank > min(n_in, out):
            raise ValueError(f"{name}: rank={rank}; allowed: an integer in [1, {min(n_in, out)}] (ΔW is {out}×{n_in})")
        check_int(name, "examples", examples, 1)
        check_int(name, "test_examples", test_examples, 1)
        check_seed("seed", seed)
        dt = check_dtype(name, dtype)
        gen = torch.Generator().manual_seed(seed)

        def draw(*shape):
            return torch.randn(*shape, generator=gen, dtype=torch.float64)

        w1, w2 = draw(hidden, n_in) / n_in**0.5, draw(out, hidden) / hidden**0.5
        delta = draw(out, rank) @ draw(rank, n_in)
        delta *= out**0.5 / torch.linalg.matrix_norm(delta)
        teacher = w2 @ w1 + delta
        x, x_test = draw(examples, n_in), draw(test_examples, n_in)
        for key, value in (("teacher", teacher), ("delta", delta), ("second_moment", x.T @ x / examples),
                           ("x_train", x), ("y_train", x @ teacher.T), ("x_test", x_test),
                           ("y_test", x_test @ teacher.T)):
            self.register_buffer(key, value.to(dt), persistent=False)
        # modules, not bare tensors: the engine's module-mode perturbation builds θ + μu inside each forward
        self.layer1 = nn.Linear(n_in, hidden, bias=False, device="meta")
        self.layer2 = nn.Linear(hidden, out, bias=False, device="meta")
        self.layer1.weight = nn.Parameter(w1.to(dt))
        self.layer2.weight = nn.Parameter(w2.to(dt))

    def _splits(self):
        return {"train": (self.x_train, self.y_train), "val": (self.x_train, self.y_train),
                "test": (self.x_test, self.y_test)}

    def loss(self, batch) -> torch.Tensor:
        x, y = batch
        dt = self.layer1.weight.dtype
        return nn.functional.mse_loss(self.layer2(self.layer1(x.to(dt))), y.to(dt))

    @torch.no_grad()
    def exact_gradient(self) -> dict[str, torch.Tensor]:
        """∇f over the training inputs at the current weights, by the closed form (class docstring)."""
        w1, w2 = self.layer1.weight, self.layer2.weight
        g = (2 / self.sizes[2]) * (w2 @ w1 - self.teacher) @ self.second_moment
        return {"layer1.weight": w2.T @ g, "layer2.weight": g @ w1.T}


class ProxyDataModule(L.LightningDataModule):
    """Seeded, resumable mini-batches of a proxy task's splits (``ProxyTask.split``).

    The training batches come from a ``ResumableLoader`` (shuffled with ``seed``; a run resumed from any
    checkpoint sees the batches the uninterrupted one would); validation and test go in order, in batches of
    ``eval_batch_size`` (Lightning weights their means by batch size, so val/loss is the split's mean).
    The task is the trained module's (``trainer.lightning_module.task``), or one given by ``attach(task)``.

    Args: batch_size (None: the task's, §8: 64, 64, 32), seed (batch order), n_train (None: the whole training
    split; else its first n_train examples, e.g. SVRG's n = 512; val and test are unchanged), eval_batch_size.
    ``full_batches()`` gives the whole training subset in batches (MeZO-SVRG's anchor steps).
    """

    def __init__(self, batch_size: int | None = None, seed: int = 0, n_train: int | None = None,
                 eval_batch_size: int = 1024):
        super().__init__()
        name = type(self).__name__
        if batch_size is not None:
            check_int(name, "batch_size", batch_size, 1)
        if n_train is not None:
            check_int(name, "n_train", n_train, 1)
        check_int(name, "eval_batch_size", eval_batch_size, 1)
        self.batch_size, self.seed, self.n_train = batch_size, check_seed("seed", seed), n_train
        self.eval_batch_size = eval_batch_size
        self.task: ProxyTask | None = None
        self.sets: dict[str, TensorDataset] = {}

    def attach(self, task: ProxyTask) -> ProxyDataModule:
        """Serve ``task``'s splits (outside a trainer); returns self."""
        if not isinstance(task, ProxyTask):
            raise TypeError(f"{type(self).__name__} serves a proxy task (zolab.tasks.proxies.ProxyTask: "
                            f"HeteroCurvature, LowRankLinear, DigitsFineTune); got {type(task).__name__}")
        self.task, self.sets = task, {}
        return self

    def setup(self, stage: str | None = None) -> None:
        module = getattr(self.trainer, "lightning_module", None) if self.trainer is not None else None
        if module is not None and getattr(module, "task", None) is not self.task:
            self.attach(getattr(module, "task", None))
        if self.task is None:
            raise RuntimeError(f"{type(self).__name__}: no task; fit a module with a proxy task, or call attach(task)")
        if self.sets:
            return
        x, y = self.task.split("train")
        if self.n_train is not None:
            if self.n_train > len(x):
                raise ValueError(f"{type(self).__name__}: n_train={self.n_train}; allowed: an integer in "
                                 f"[1, {len(x)}] (the training split of {type(self.task).__name__})")
            x, y = x[: self.n_train], y[: self.n_train]
        self.sets = {"train": TensorDataset(x, y), **{s: TensorDataset(*self.task.split(s)) for s in ("val", "test")}}

    def full_batches(self) -> list:
        """The whole training subset (its first ``n_train`` examples) in order, in batches of the training batch
        size: what MeZO-SVRG's anchor steps evaluate (n/b forwards each)."""
        batch_size = self.batch_size or self.task.default_batch_size
        x, y = self.sets["train"].tensors
        return list(zip(x.split(batch_size), y.split(batch_size)))

    def train_dataloader(self):
        batch_size = self.batch_size or self.task.default_batch_size
        return ResumableLoader(self.sets["train"], batch_size, self.seed, trained=lightning_progress(self))

    def val_dataloader(self):
        return DataLoader(self.sets["val"], self.eval_batch_size)

    def test_dataloader(self):
        return DataLoader(self.sets["test"], self.eval_batch_size)
