"""Hessian spectrum probe (MeZO's local effective rank, ZO-AdaMU Lemma 3, claim Z1; docs/algorithms.md §4).

At θ_{t−1} on batch ξ_t, before step t, for the whole model or the tensors whose names match ``params``:

- exact path (d ≤ ``exact_max_dim``, or ``method="exact"``): the dense H from d Hessian-vector products,
  ``torch.linalg.eigvalsh``; logs ``lambda_max``, ``lambda_min``, ``op_norm`` = max|λ_i|, ``trace``,
  ``frobenius_sq``, ``effective_rank`` tr(H)/‖H‖_op, ``effective_rank_positive``
  Σ max(λ_i, 0)/max(λ_max, 0), ``stable_rank`` ‖H‖_F²/‖H‖₂², ``entropy_rank``, ``top/1`` … ``top/k``;
- stochastic path: ``top/i`` and ``lambda_max`` by Lanczos (scipy ``eigsh``, largest algebraic), ``op_norm``
  by Lanczos (largest magnitude), ``trace`` and ``frobenius_sq`` by Hutchinson from the same ``num_samples``
  Rademacher vectors (the probe's own generator), and the two ranks they give (``effective_rank``,
  ``stable_rank``); the positive-part and entropy ranks need the whole spectrum and are not logged.

Every product is a double backward (``diagnostics.linalg.HessianOperator``) under ``guards.untouched``,
so the run is unchanged. Cost: d products (exact) or ``num_samples`` + Lanczos's products.
"""

from __future__ import annotations

import re

import torch

from diagnostics.gradients import trainable
from diagnostics.guards import untouched
from diagnostics.linalg import (
    HessianOperator,
    effective_rank,
    exact_hessian,
    hutchinson_trace_frobenius,
    lanczos_top_k,
    spectrum_summary,
    stable_rank,
)
from diagnostics.probe import Probe
from zolab.engine.seeds import mix

METHODS = ("auto", "exact", "stochastic")


def select_refs(refs, patterns: list[str] | None):
    """The refs whose name matches any regex (all when ``patterns`` is None); ValueError when none does."""
    if patterns is None:
        return list(refs)
    chosen = [r for r in refs if any(re.search(p, r.name) for p in patterns)]
    if not chosen:
        raise ValueError(f"params={patterns!r} match no trainable tensor; names: {[r.name for r in refs]}")
    return chosen


def hessian_metrics(H: HessianOperator, method: str, exact_max_dim: int, top_k: int, num_samples: int,
                    seed: int, tol: float = 0.0) -> dict[str, float]:
    """The §4 scalars of one Hessian operator (exact or stochastic path, see module doc)."""
    d = H.shape[0]
    if method == "exact" or (method == "auto" and d <= exact_max_dim):
        eig = torch.linalg.eigvalsh(exact_hessian(H).double()).flip(0)
        metrics = spectrum_summary(eig)
        top = eig[:top_k]
    else:
        gen = torch.Generator(device=H.device).manual_seed(seed)
        top = lanczos_top_k(H, min(top_k, d - 1), "LA", tol=tol, seed=seed)
        op = float(lanczos_top_k(H, 1, "LM", tol=tol, seed=seed)[0].abs())
        trace, fro = (float(x) for x in hutchinson_trace_frobenius(H, num_samples, gen))  # shared products
        metrics = {"lambda_max": float(top[0]), "op_norm": op, "trace": trace, "frobenius_sq": fro,
                   "effective_rank": effective_rank(trace, op), "stable_rank": stable_rank(fro, op)}
    metrics.update({f"top/{i + 1}": float(v) for i, v in enumerate(top)})
    return metrics


class HessianSpectrum(Probe):
    """Top eigenvalues, trace, ‖H‖_F² and ranks of the loss Hessian (see module doc).

    Cost class: expensive. Per probe step d Hessian-vector products (exact path) or Lanczos's (tens,
    sequential) and ``num_samples`` Hutchinson products (stochastic path), each about two backwards; use a
    sparse interval (hundreds to thousands of steps).

    Args:
        every_n_steps: probe at step 1 and every n-th step.
        params: None (all trainable tensors) or name regexes (one layer, one block, ...).
        method: ``"auto"`` (exact when d ≤ ``exact_max_dim``), ``"exact"`` or ``"stochastic"``.
        exact_max_dim: the largest d for the exact path under ``"auto"`` (5,000).
        top_k: eigenvalues logged as ``top/1`` … (5).
        num_samples: Hutchinson vectors for the trace and ‖H‖_F² (100).
        tol: relative accuracy of the Lanczos eigenvalues (ARPACK's ``tol``; 1e-3; 0 = machine precision,
            about twice the products).
        seed: seed of the probe's own generator (combined with the step).
        batch_size: Hessian-vector products per batched backward (None: ``HessianOperator``'s default).
        tag: logs under ``diagnostics/hessian/<tag>/`` (to probe several subsets in one run).

    Example (YAML, under ``trainer:``)::

        callbacks:
          - class_path: diagnostics.HessianSpectrum
            init_args: {every_n_steps: 500, params: ["layers\\\\.0\\\\."], method: stochastic}
    """

    name = "hessian"

    def __init__(self, every_n_steps: int = 100, params: str | list[str] | None = None, method: str = "auto",
                 exact_max_dim: int = 5000, top_k: int = 5, num_samples: int = 100, seed: int = 0,
                 batch_size: int | None = None, tag: str | None = None, tol: float = 1e-3):
        super().__init__(every_n_steps)
        if tag is not None:
            if not isinstance(tag, str) or not tag:
                raise ValueError(f"invalid tag: {tag!r}; allowed: a non-empty string or None")
            self.name = f"hessian/{tag}"
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; allowed: {list(METHODS)}")
        for name, value in (("exact_max_dim", exact_max_dim), ("top_k", top_k), ("num_samples", num_samples),
                            ("batch_size", batch_size or 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"invalid {name}: {value!r}; allowed: an integer >= 1")
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < 1:
            raise ValueError(f"invalid tol: {tol!r}; allowed: a number in [0, 1)")
        patterns = [params] if isinstance(params, str) else params
        for p in patterns or ():
            re.compile(p)
        self.params, self.method, self.exact_max_dim = patterns, method, exact_max_dim
        self.top_k, self.num_samples, self.seed, self.batch_size = top_k, num_samples, int(seed), batch_size
        self.tol = float(tol)
        self._metrics: dict[str, float] | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name)

    def check(self, trainer, pl_module):
        select_refs(trainable(pl_module.zo_optimizer), self.params)

    def measure(self, trainer, pl_module, batch, t):
        refs = select_refs(trainable(pl_module.zo_optimizer), self.params)
        with untouched(pl_module), torch.enable_grad():
            H = HessianOperator(lambda: pl_module.compute_loss(batch), [r.param for r in refs], self.batch_size)
            self._metrics = hessian_metrics(H, self.method, self.exact_max_dim, self.top_k, self.num_samples,
                                            mix(self.seed, t), self.tol)
            self._metrics["dim"] = float(H.shape[0])

    def collect(self, trainer, pl_module, batch, t):
        metrics, self._metrics = self._metrics, None
        return metrics
