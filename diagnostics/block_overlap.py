"""Block overlap probe for block-coordinate ZO (MeZO-BCD, claim B2; docs/algorithms.md §4 "BCD block overlap").

For the block(s) B that step t perturbs (the record's active blocks), with P_B the coordinate projector,
at θ_{t−1} on batch ξ_t:

- ``grad_overlap`` = ‖P_B ∇F‖²/‖∇F‖²;
- ``curvature_overlap`` = tr(P_B H P_B)/tr(H) = Σ_{i∈B} H_ii / Σ_i H_ii (exact diagonal for
  d ≤ ``exact_max_dim``, else Hutchinson's diagonal estimator with ``num_samples`` Rademacher vectors;
  an optimizer with a single block logs 1 without any Hessian product; ``curvature=False``: not logged, and
  no Hessian product at all);
- ``perturbation_stable_rank`` = tr(Σ)/‖Σ‖_op of the perturbation's covariance Σ; every law zolab has is
  isotropic on its support (ZO-AdaMU's noise too), so it is |B| for a block and d without blocks — not the
  Hessian's stable rank;
- ``block_index`` (position of the first active block in the optimizer's partition) and ``block_size`` |B|.

**[open]** MeZO-BCD's exact "effective overlap" is unavailable; the three are logged under these names.
Pair it with ``EstimatorVariance`` on the same run to test B2 (higher overlap, lower variance).

Cost per probe step: the shared ∇F (one backward); for the curvature overlap of a multi-block rule, d
Hessian-vector products (exact diagonal) or ``num_samples`` (Hutchinson).
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_warn

from diagnostics.gradients import trainable
from diagnostics.guards import untouched
from diagnostics.linalg import HessianOperator, exact_hessian, hutchinson_diagonal
from diagnostics.probe import Probe, gradient_sq
from zolab.engine.seeds import mix


class BlockOverlap(Probe):
    """Gradient and curvature overlap of the active block, and the perturbation's stable rank.

    Cost class: cheap for one block or ``curvature=False`` (the shared ∇F only); Hessian-vector products
    for the curvature overlap of block-wise rules (d for the exact diagonal, else ``num_samples``).

    Args:
        every_n_steps: probe at step 1 and every n-th step.
        exact_max_dim: exact Hessian diagonal up to this d, Hutchinson above (5,000).
        num_samples: Hutchinson vectors for the diagonal (100).
        seed: seed of the probe's own generator (combined with the step).
        curvature: log the curvature overlap (Hessian-vector products); False: the gradient overlap only.

    Example (YAML, under ``trainer:``)::

        callbacks:
          - class_path: diagnostics.BlockOverlap
            init_args: {every_n_steps: 50}
    """

    name = "block_overlap"

    def __init__(self, every_n_steps: int = 100, exact_max_dim: int = 5000, num_samples: int = 100, seed: int = 0,
                 curvature: bool = True):
        super().__init__(every_n_steps)
        if not isinstance(curvature, bool):
            raise ValueError(f"invalid curvature: {curvature!r}; allowed: True or False")
        self.curvature = curvature
        for name, value in (("exact_max_dim", exact_max_dim), ("num_samples", num_samples)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"invalid {name}: {value!r}; allowed: an integer >= 1")
        self.exact_max_dim, self.num_samples, self.seed = exact_max_dim, num_samples, int(seed)
        self._sums: dict[str, tuple[float, float, int]] | None = None

    def check(self, trainer, pl_module):
        if len(pl_module.zo_optimizer.partition()) == 1:
            rank_zero_warn("BlockOverlap: the optimizer has a single block; every overlap is 1")

    def measure(self, trainer, pl_module, batch, t):
        opt = pl_module.zo_optimizer
        self.true_gradient(pl_module, batch, t)
        grad_sq = gradient_sq(pl_module, t)
        refs = trainable(opt)
        if len(opt.partition()) == 1 or not self.curvature:  # no Hessian product: the curvature overlap of a
            # single block is 1 by definition, and curvature=False does not ask for it
            self._sums = {block: (sum(grad_sq[r.name] for r in brefs), 1.0,
                                  sum(r.param.numel() for r in brefs)) for block, brefs in opt.partition()}
            return
        with untouched(pl_module), torch.enable_grad():
            H = HessianOperator(lambda: pl_module.compute_loss(batch), [r.param for r in refs])
            if H.shape[0] <= self.exact_max_dim:
                diag = exact_hessian(H).diagonal().double()
            else:
                gen = torch.Generator(device=H.device).manual_seed(mix(self.seed, t))
                diag = hutchinson_diagonal(H, self.num_samples, gen)
            del H
        offsets, i = {}, 0
        for r in refs:
            offsets[r.name] = (i, i + r.param.numel())
            i += r.param.numel()
        self._sums = {}
        for block, brefs in opt.partition():
            g_sq = sum(grad_sq[r.name] for r in brefs)
            curv = sum(float(diag[slice(*offsets[r.name])].sum()) for r in brefs)
            self._sums[block] = (g_sq, curv, sum(r.param.numel() for r in brefs))

    def collect(self, trainer, pl_module, batch, t):
        sums, self._sums = self._sums, None
        active = pl_module.zo_optimizer.record.active_blocks
        g_all = sum(s[0] for s in sums.values())
        c_all = sum(s[1] for s in sums.values())
        g_b = sum(sums[b][0] for b in active)
        c_b = sum(sums[b][1] for b in active)
        size = sum(sums[b][2] for b in active)
        names = list(sums)
        metrics = {
            "grad_overlap": g_b / g_all if g_all > 0 else float("nan"),
            "curvature_overlap": c_b / c_all if c_all != 0 else float("nan"),
            "perturbation_stable_rank": float(size),
            "block_index": float(names.index(active[0])),
            "block_size": float(size),
        }
        if not self.curvature and len(names) > 1:
            del metrics["curvature_overlap"]
        return metrics
