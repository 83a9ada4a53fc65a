"""Sparse-MeZO: ZO-SGD that perturbs and updates only the small-magnitude entries of each tensor (docs/algorithms.md
§3.15)."""

import math
from statistics import NormalDist

import torch

from zolab.engine.blocks import module_block
from zolab.engine.checks import check_choice, check_int, check_range
from zolab.engine.groups import compute_type
from zolab.engine.ops import abs, where  # noqa: A004
from zolab.engine.quantile import kth_smallest
from zolab.rules.base import ZOOptimizer

MASK_SCOPES = ("tensor", "module")
MASK_ON = ("abs", "signed", "random")
MASK_1D = ("same", "dense", "frozen")


class SparseMeZO(ZOOptimizer):
    """Sparse-MeZO (Liu et al., NeurIPS 2025, arXiv 2402.15751 v2, Algorithms "Sparse-MeZO", "PerturbParameters",
    "GetMask"; no code was available, so every code-level choice is an option below).

    A threshold h_i per tensor (per "layer" i) is fixed at construction from the weights θ₀ it is given (the
    pre-trained ones) at sparsity s, the fraction **not** perturbed: h_i is the k-th smallest |θ₀| over the
    tensor, k = ⌈(1 − s)·numel⌉ (``torch.kthvalue``'s value; exact ties at h_i are perturbed too). Each step
    the mask is recomputed from the current unperturbed θ, and the same mask serves +μ, −μ and the update::

        m = 1[|θ_t| ≤ h],   ẑ = m ⊙ z,   p = (f(θ_t + μẑ) − f(θ_t − μẑ))/(2μ),   θ_{t+1} = θ_t − η (p ẑ + λθ_t)

    m is a predicate of θ inside the fused programs (the point, module mode's row chunks and the update): no
    mask is stored, which is the paper's memory-efficient implementation; module mode keeps inference memory.
    **[open]** options (defaults first):

    - ``sparsity`` 0.8 (the paper's best: the 20% smallest entries move);
    - ``mask_scope`` "tensor" | "module" (one threshold over each transformer layer's matrices, MeZO-BCD's
      module blocks; a 1-D tensor keeps its own);
    - ``mask_on`` "abs" | "signed" (GetMask's literal θ ≤ h, h the k-th smallest signed value) | "random"
      (R-MeZO, the paper's control: a fresh mask each step, P(perturbed) = 1 − s, from a second normal draw z'
      as |z'| ≤ Φ⁻¹(1 − s/2));
    - ``threshold_refresh`` None (never) | n (recomputed from θ before steps n + 1, 2n + 1, ...);
    - ``mask_1d`` "same" | "dense" (1-D tensors perturbed whole) | "frozen" (never perturbed).

    Thresholds are 0-dim state ``h`` (saved, resumed). (1 − s)·numel is rounded to 6 decimals before the
    ceiling, so s = 0.8 of 30 entries keeps 6, not 7. λ as ZO-SGD (2-D tensors by default).

    Args: lr (1e-3), mu (1e-3), weight_decay (0), sparsity (0.8), mask_scope ("tensor"), mask_on ("abs"),
    threshold_refresh (None), mask_1d ("same"); Gaussian directions, central differences, K as given.
    """

    label = "Sparse-MeZO"  # the name tables and figures print

    static_options = ("sparsity", "mask_scope", "mask_on", "threshold_refresh", "mask_1d")
    directions_name = "sparse"
    direction_slices = True  # module mode builds embedding rows and Linear row chunks of m ⊙ z

    def __init__(self, params, lr=1e-3, mu=1e-3, weight_decay=0.0, sparsity=0.8, mask_scope="tensor",
                 mask_on="abs", threshold_refresh=None, mask_1d="same", **options):
        check_range("sparsity", sparsity, 0.0, 1.0)
        check_choice("mask_scope", mask_scope, MASK_SCOPES)
        check_choice("mask_on", mask_on, MASK_ON)
        check_choice("mask_1d", mask_1d, MASK_1D)
        if threshold_refresh is not None:
            check_int("threshold_refresh", threshold_refresh, 1)
        directions = options.pop("directions", "gaussian")  # a base config's Gaussian law is accepted
        if directions != "gaussian":
            raise ValueError(f"SparseMeZO: directions={directions!r}; allowed: 'gaussian' (z, masked)")
        super().__init__(params, dict(lr=lr, mu=mu, weight_decay=weight_decay), directions="gaussian", **options)
        self.sparsity, self.mask_scope, self.mask_on = sparsity, mask_scope, mask_on
        self.threshold_refresh, self.mask_1d = threshold_refresh, mask_1d
        shards = [r.name for _, refs in self.partition() for r in refs if r.full_numel is not None]
        if shards and mask_on != "random":  # a shard's k-th value is not the whole tensor's
            raise ValueError(f"SparseMeZO: {shards[:5]} are shards of larger tensors; allowed: whole tensors (the "
                             f"mask_on={mask_on!r} threshold is a k-th value of the whole), or mask_on='random'")
        self.set_thresholds()

    def state_spec(self, ref, name):
        return ((), compute_type(ref.param)) if name == "h" else super().state_spec(ref, name)

    def set_thresholds(self, missing_only: bool = False) -> None:
        """h of every trainable tensor (``missing_only``: of those without one) from its current values."""
        scopes: dict[tuple, list] = {}
        for _, refs in self.partition():
            for r in refs:
                if not (missing_only and "h" in self.state[r.param]):
                    # "module": the layer's matrices share a threshold; a 1-D tensor keeps its own
                    layer = self.mask_scope == "module" and r.param.ndim > 1
                    key = ("module", module_block(r.name)) if layer else ("tensor", r.name)
                    scopes.setdefault(key, []).append(r)
        for refs in scopes.values():
            value = self._threshold(refs)
            for r in refs:
                self.state_tensor(r, "h").fill_(value)

    def _threshold(self, refs) -> float | torch.Tensor:
        if refs[0].param.ndim < 2 and self.mask_1d != "same":
            return math.inf if self.mask_1d == "dense" else -math.inf
        if self.mask_on == "random":
            return math.inf if self.sparsity == 0 else NormalDist().inv_cdf(1 - self.sparsity / 2)
        n = sum(r.param.numel() for r in refs)
        k = math.ceil(round((1 - self.sparsity) * n, 6))
        return kth_smallest([r.param for r in refs], k, absolute=self.mask_on == "abs")

    def hyper(self, ref, extra=None):
        if "h" not in self.state[ref.param]:  # a tensor of a group added after construction
            self.set_thresholds(missing_only=True)
        return {**super().hyper(ref, extra), "h": self.state[ref.param]["h"]}

    def own_direction(self, e, h):
        x = e.theta if self.mask_on == "signed" else abs(e.noise(1) if self.mask_on == "random" else e.theta)
        return where(x > h.h, 0.0, e.noise(0))

    def update(self, e, h):
        return e.g

    def step(self, closure=None, batched=None, **evaluators):
        """A step; with ``threshold_refresh`` n, the thresholds are first recomputed from θ at steps n + 1,
        2n + 1, ... (put back if the step raises)."""
        t, n = self.zo["step"] + 1, self.threshold_refresh
        if not n or t == 1 or (t - 1) % n:
            return super().step(closure, batched, **evaluators)
        saved = {p: s["h"].clone() for p, s in self.state.items() if "h" in s}
        self.set_thresholds()
        try:
            return super().step(closure, batched, **evaluators)
        except BaseException:
            for p, h in saved.items():
                self.state[p]["h"] = h
            raise
