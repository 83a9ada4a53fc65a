"""Hessian linear algebra for the probes (docs/algorithms.md §4, "Hessian spectrum").

An operator and free estimator functions, after curvlinops (``hessian.py``, ``trace/hutchinson.py``):

- ``HessianOperator(loss_fn, params)``: H = ∇²f(θ) on the flattened parameters (``named_parameters``
  order) through Hessian-vector products by double backward (Pearlmutter, Neural Computation 1994);
  ``H @ v`` for a vector (d,) or a matrix (d, n); ``H.to_scipy()`` is a ``scipy.sparse.linalg.LinearOperator``.
- ``exact_hessian`` (d HVPs) for small d, the reference the stochastic estimates are tested against.
- ``hutchinson_trace`` (Hutchinson 1990), ``hutchinson_frobenius`` (‖H‖_F² = E‖Hz‖², Avron & Toledo, JACM
  2011), ``hutchinson_diagonal`` (E[z ⊙ Hz] = diag H, Bekas, Kokiopoulou & Saad 2007), all with Rademacher
  vectors from a caller's ``torch.Generator`` (never the global RNG).
- ``power_iteration`` (largest |λ|) and ``lanczos_top_k`` (ARPACK's implicitly restarted Lanczos through
  scipy ``eigsh`` on a ``LinearOperator``; Lehoucq, Sorensen & Yang 1998).
- Ranks of a spectrum: ``effective_rank`` tr(H)/‖H‖_op (MeZO's local effective rank),
  ``positive_effective_rank`` Σ max(λ_i, 0)/max(λ_max, 0), ``stable_rank`` ‖H‖_F²/‖H‖₂², ``entropy_rank``
  exp(−Σ p_i log p_i) with p_i = |λ_i|/Σ|λ_j| (Roy & Vetterli 2007).

No function here touches the global RNG, ``p.grad`` or the module's train/eval mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch.nn.attention import SDPBackend, sdpa_kernel

WHICH = ("LA", "SA", "LM")


def _flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


class HessianOperator:
    """H = ∇²f(θ) of a scalar ``loss_fn()`` w.r.t. ``params``, as a symmetric linear operator on R^d.

    The first derivative is built once, with its graph (``create_graph=True``), when the operator is
    made; each product is one more backward through it (Pearlmutter's R-operator by double backward). The
    graph lives in this object only (never in ``p.grad``): drop the operator to free it.

    Args:
        loss_fn: returns the scalar loss at the current parameters (called once, under grad mode).
        params: the tensors to differentiate (``requires_grad=True``); their concatenation is θ.
        batch_size: columns per batched backward (``is_grads_batched``) for ``H @ matrix``; None: as many
            as fit in 2**26 numbers (all of them for small d). A batched backward has a fixed cost of tens of
            ms on CPU, so small problems want large batches.

    Example::

        x = torch.randn(3, requires_grad=True)
        H = HessianOperator(lambda: (x ** 4).sum(), [x])
        H @ torch.ones(3)            # 12 x²
        lanczos_top_k(H, 1)          # the largest eigenvalue
    """

    def __init__(self, loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor],
                 batch_size: int | None = None):
        self.params = list(params)
        if not self.params:
            raise ValueError("HessianOperator needs at least one parameter tensor")
        if any(not p.requires_grad for p in self.params):
            raise ValueError("HessianOperator: every parameter must have requires_grad=True")
        bad = isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        if batch_size is not None and bad:
            raise ValueError(f"invalid batch_size: {batch_size!r}; allowed: an integer >= 1 or None")
        self.shape = (sum(p.numel() for p in self.params),) * 2
        self.batch_size = batch_size or max(1, 2**26 // self.shape[0])
        self.dtype, self.device = self.params[0].dtype, self.params[0].device
        # SDPA's fused CPU/GPU attention kernels have no double backward: build the graph with its math one
        with torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]):
            loss = loss_fn()
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise TypeError(f"loss_fn must return a scalar tensor, got {type(loss).__name__}")
            grads = torch.autograd.grad(loss.reshape(()), self.params, create_graph=True, allow_unused=True,
                                        materialize_grads=True)
        self.gradient = _flatten([g.detach() for g in grads])  # ∇f(θ), free with the graph
        # Gradient parts that do not depend on θ (linear terms, unused tensors) contribute no curvature.
        self._outputs = [(i, g) for i, g in enumerate(grads) if g.requires_grad]

    def _split(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(n, d) -> per-parameter (n, *shape)."""
        out, i = [], 0
        for p in self.params:
            out.append(x[:, i : i + p.numel()].reshape(x.shape[0], *p.shape))
            i += p.numel()
        return out

    def _products(self, rows: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n, d): each row times H (H v = ∇⟨∇f, v⟩, one backward for the whole batch of rows)."""
        if not self._outputs:
            return torch.zeros_like(rows)
        parts = self._split(rows)
        outputs = [g for _, g in self._outputs]
        single = rows.shape[0] == 1
        vectors = [parts[i][0] if single else parts[i] for i, _ in self._outputs]
        hv = torch.autograd.grad(outputs, self.params, vectors, retain_graph=True, allow_unused=True,
                                 is_grads_batched=not single)
        n = rows.shape[0]
        return torch.cat([rows.new_zeros(n, p.numel()) if h is None else h.reshape(n, -1)
                          for h, p in zip(hv, self.params)], dim=1)

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim not in (1, 2) or x.shape[0] != self.shape[0]:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            d = self.shape[0]
            raise ValueError(f"HessianOperator @ x: x must have shape ({d},) or ({d}, n), got {shape}")
        vector = x.ndim == 1
        rows = x.reshape(1, -1) if vector else x.T
        rows = rows.to(device=self.device, dtype=self.dtype)
        step = self.batch_size
        out = torch.cat([self._products(rows[i : i + step]) for i in range(0, rows.shape[0], step)])
        return out[0] if vector else out.T

    def to_scipy(self) -> LinearOperator:
        """A float64 ``scipy.sparse.linalg.LinearOperator`` (for ``eigsh`` and friends)."""

        def matmat(x: np.ndarray) -> np.ndarray:
            return (self @ torch.from_numpy(np.ascontiguousarray(x))).double().cpu().numpy()

        return LinearOperator(self.shape, matvec=matmat, matmat=matmat, rmatvec=matmat, dtype=np.float64)


def _as_operator(A) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(A, torch.Tensor):
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"expected a square matrix, got shape {tuple(A.shape)}")
        return A
    if not hasattr(A, "__matmul__") or not hasattr(A, "shape"):
        raise TypeError(f"expected a HessianOperator or a square tensor, got {type(A).__name__}")
    return A


def _dim_dtype_device(A) -> tuple[int, torch.dtype, torch.device]:
    return A.shape[0], getattr(A, "dtype", torch.float32), getattr(A, "device", torch.device("cpu"))


def _check_count(name: str, n) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"invalid {name}: {n!r}; allowed: an integer >= 1")


def exact_hessian(A: HessianOperator, batch_size: int | None = None) -> torch.Tensor:
    """The dense d × d matrix H = A @ I (d HVPs), symmetrised; for d up to a few thousand."""
    A = _as_operator(A)
    d, dtype, device = _dim_dtype_device(A)
    step = batch_size or getattr(A, "batch_size", 64)
    cols = []
    for i in range(0, d, step):
        E = torch.zeros(d, min(step, d - i), dtype=dtype, device=device)
        E[i : i + step].fill_diagonal_(1.0)
        cols.append(A @ E)
    H = torch.cat(cols, dim=1)
    return (H + H.T) / 2


def rademacher(shape, generator: torch.Generator, dtype=torch.float32, device=None) -> torch.Tensor:
    """Entries ±1 with probability ½, from ``generator``."""
    bits = torch.randint(0, 2, shape, generator=generator, device=device or generator.device, dtype=torch.int8)
    return bits.to(dtype).mul_(2).sub_(1)


def _probes(A, num_samples: int, generator: torch.Generator, batch_size: int | None):
    """Yield (Z, A Z) for blocks of Rademacher columns Z."""
    _check_count("num_samples", num_samples)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (the probe's own), got {type(generator).__name__}")
    d, dtype, device = _dim_dtype_device(A)
    batch_size = batch_size or getattr(A, "batch_size", None) or num_samples
    done = 0
    while done < num_samples:
        n = min(batch_size, num_samples - done)
        # drawn as rows, used as columns: HessianOperator takes rows, so neither side is copied or strided
        Z = rademacher((n, d), generator, dtype, generator.device).to(device).T
        yield Z, A @ Z
        done += n


def hutchinson_trace(A, num_samples: int, generator: torch.Generator, batch_size: int | None = None) -> torch.Tensor:
    """tr(A) ≈ (1/n) Σ z_iᵀ A z_i, z_i Rademacher (Hutchinson, Comm. Stat. Simul. 1990); variance
    2(‖A‖_F² − Σ A_ii²)/n."""
    total = sum((Z * AZ).double().sum() for Z, AZ in _probes(_as_operator(A), num_samples, generator, batch_size))
    return total / num_samples


def hutchinson_frobenius(A, num_samples: int, generator: torch.Generator,
                         batch_size: int | None = None) -> torch.Tensor:
    """‖A‖_F² = tr(AᵀA) ≈ (1/n) Σ ‖A z_i‖², z_i Rademacher (Hutchinson on AᵀA; Avron & Toledo 2011)."""
    total = sum(AZ.double().square().sum() for _, AZ in _probes(_as_operator(A), num_samples, generator, batch_size))
    return total / num_samples


def hutchinson_trace_frobenius(A, num_samples: int, generator: torch.Generator,
                               batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tr(A), ‖A‖_F²) from the same Rademacher products A z_i: each estimate as above, half the products of
    calling the two functions."""
    trace = frobenius = 0.0
    for Z, AZ in _probes(_as_operator(A), num_samples, generator, batch_size):
        trace = trace + (Z * AZ).double().sum()
        frobenius = frobenius + AZ.double().square().sum()
    return trace / num_samples, frobenius / num_samples


def hutchinson_diagonal(A, num_samples: int, generator: torch.Generator, batch_size: int | None = None) -> torch.Tensor:
    """diag(A) ≈ (1/n) Σ z_i ⊙ A z_i, z_i Rademacher (Bekas, Kokiopoulou & Saad, Appl. Numer. Math. 2007).
    Sums of it over index sets estimate the traces of diagonal blocks, tr(P_B A P_B)."""
    total = sum((Z * AZ).double().sum(dim=1) for Z, AZ in _probes(_as_operator(A), num_samples, generator, batch_size))
    return total / num_samples


def power_iteration(A, generator: torch.Generator, max_iters: int = 100, tol: float = 1e-6):
    """(λ, v): the eigenpair of largest |λ| (λ signed, from the Rayleigh quotient), by power iteration
    (von Mises 1929). Stops when |λ_k − λ_{k−1}| ≤ tol |λ_k|. It finds the largest magnitude, not the
    largest algebraic eigenvalue; convergence is slow when |λ_1| ≈ |λ_2|."""
    _check_count("max_iters", max_iters)
    A = _as_operator(A)
    d, dtype, device = _dim_dtype_device(A)
    v = torch.randn(d, generator=generator, dtype=dtype, device=generator.device).to(device)
    v = v / v.norm()
    lam = torch.zeros((), dtype=torch.float64)
    for _ in range(max_iters):
        Av = A @ v
        new = (v.double() @ Av.double()).cpu()
        norm = Av.norm()
        if norm == 0:
            return new, v
        v = Av / norm
        if abs(new - lam) <= tol * abs(new):
            return new, v
        lam = new
    return lam, v


def lanczos_top_k(A, k: int, which: str = "LA", tol: float = 0.0, seed: int = 0,
                  ncv: int | None = None) -> torch.Tensor:
    """The k extreme eigenvalues (float64, sorted descending) of a symmetric operator, by scipy ``eigsh``
    (ARPACK implicitly restarted Lanczos) on a ``LinearOperator``. ``which``: ``"LA"`` largest algebraic,
    ``"SA"`` smallest algebraic, ``"LM"`` largest magnitude. The start vector comes from ``seed`` (numpy's
    global RNG is not used). ``tol`` = 0: machine precision. ``ncv``: Lanczos vectors kept between restarts
    (None: max(2k + 1, k + 5), at most d). ARPACK builds ncv vectors, one product each, before its first
    convergence check; its own default of 20 is more than a few extreme eigenvalues need."""
    if which not in WHICH:
        raise ValueError(f"unknown which {which!r}; allowed: {list(WHICH)}")
    _check_count("k", k)
    d = A.shape[0]
    if k >= d:
        raise ValueError(f"lanczos_top_k: k={k} must be < the dimension {d} (use exact_hessian + eigvalsh)")
    op = A.to_scipy() if hasattr(A, "to_scipy") else LinearOperator(
        A.shape, matvec=lambda x: (A @ torch.from_numpy(x).to(A.dtype)).double().numpy(), dtype=np.float64
    )
    v0 = np.random.default_rng(seed).standard_normal(d)
    ncv = min(d, max(2 * k + 1, k + 5)) if ncv is None else ncv
    if isinstance(ncv, bool) or not isinstance(ncv, int) or not k < ncv <= d:
        raise ValueError(f"invalid ncv: {ncv!r}; allowed: an integer with k={k} < ncv <= d={d}, or None")
    values = eigsh(op, k=k, which=which, tol=tol, v0=v0, ncv=ncv, return_eigenvectors=False)
    return torch.from_numpy(np.sort(values)[::-1].copy())


# ---------------------------------------------------------------------- ranks of a spectrum
def effective_rank(trace, op_norm) -> float:
    """tr(H)/‖H‖_op: MeZO's local effective rank (defined for H ⪰ 0; meaningless when tr(H) ≤ 0)."""
    op_norm = float(op_norm)
    return float(trace) / op_norm if op_norm > 0 else math.nan


def positive_effective_rank(eigenvalues: torch.Tensor) -> float:
    """Σ_i max(λ_i, 0)/max(λ_max, 0): the effective rank of H's positive part (nan if λ_max ≤ 0)."""
    lam = eigenvalues.double()
    top = float(lam.max())
    return float(lam.clamp(min=0).sum()) / top if top > 0 else math.nan


def stable_rank(frobenius_sq, op_norm) -> float:
    """‖H‖_F²/‖H‖₂² (between 1 and the rank)."""
    op_norm = float(op_norm)
    return float(frobenius_sq) / op_norm**2 if op_norm > 0 else math.nan


def entropy_rank(eigenvalues: torch.Tensor) -> float:
    """exp(−Σ p_i log p_i), p_i = |λ_i|/Σ|λ_j| (Roy & Vetterli, EUSIPCO 2007); 0 log 0 = 0."""
    a = eigenvalues.double().abs()
    total = float(a.sum())
    if total == 0:
        return math.nan
    p = a[a > 0] / total
    return math.exp(float(-(p * p.log()).sum()))


def spectrum_summary(eigenvalues: torch.Tensor) -> dict[str, float]:
    """Every scalar of §4 from a full spectrum (the exact path)."""
    lam = eigenvalues.double()
    op = float(lam.abs().max())
    trace, fro = float(lam.sum()), float(lam.square().sum())
    return {
        "lambda_max": float(lam.max()),
        "lambda_min": float(lam.min()),
        "op_norm": op,
        "trace": trace,
        "frobenius_sq": fro,
        "effective_rank": effective_rank(trace, op),
        "effective_rank_positive": positive_effective_rank(lam),
        "stable_rank": stable_rank(fro, op),
        "entropy_rank": entropy_rank(lam),
    }
