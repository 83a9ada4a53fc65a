"""Estimator variance probe (docs/algorithms.md §4 "Estimator variance"; MeZO-BCD claim B2).

At θ_{t−1} on batch ξ_t, before step t, it draws ``num_samples`` independent estimates ĝ through the
optimizer's own estimator (``opt.grad_estimator``: its direction law, difference, K, scale c, each group's μ,
on the block(s) step t will estimate, the points built by the step's perturbation path), from queries of its
own: sample s of the block at position i asks ``grad_estimator.queries(mix(opt.seed, TAG, seed, s), t, i)``,
never one of the step's seeds (those are ``queries(opt.seed, t, i)``). It logs

- ``measured``: the mean of ‖ĝ − ∇F‖² (finite differences at the run's μ);
- ``measured_jvp``: the same with p_k = ⟨∇F, u_k⟩, the exact directional derivative (the JVP), on the
  same directions: the difference between the two is the finite-μ bias;
- ``theory``, ``ratio`` = measured/theory, ``ratio_jvp`` = measured_jvp/theory, with (exact directional
  derivatives, per estimated block B of size n and K queries)

  - Gaussian: (n + 1)‖∇_B F‖²/K;  sphere with c = n, and Rademacher: (n − 1)‖∇_B F‖²/K;
  - plus ‖∇_{B^c} F‖² for the coordinates step t does not estimate (block-wise rules);
  - sphere with c = 1 is biased (mean ∇F/n): no theory, no ratio;
- ``grad_norm_sq``: ‖∇F‖².

The S estimates of a block are one call of the estimator with S·K queries (sample s owns queries sK..sK+K−1),
so forward differences evaluate f(θ) once: S·K × (1 or 2) (+ 1) forwards and the shared backward per probe
step. A task with ``batched_loss`` (the synthetic functions) evaluates them all in one call when its one
tensor's S·K directions fit in 2**22 numbers; ĝ and its error then come from the drawn rows (float64). Else
the points are evaluated one by one and the directions regenerated from the queries (``opt.direction``):
with one query (K = 1) no estimate is built, ‖ĝ − ∇F‖² = Σ_n a_n²‖u_n‖² − 2a_n⟨u_n, ∇_n F⟩ + ‖∇_n F‖² over the
block's tensors n (a_n the estimator's coefficient, ``coefficients``), read in one float64 pass over u;
memory: ∇F, one direction tensor and one perturbed point (none in module mode). With K > 1, the block's
direction and two running estimates more. The estimator's process-parallel seam is not used: the points are
this process's own measurements. A forward-mode scheme (Forward-Grad) makes its estimates by JVPs through the
bound model, so ``measured`` equals ``measured_jvp``. Only the three isotropic laws (``gaussian``, ``sphere``,
``rademacher``) are supported (ZO-AdaMU's directions depend on its momentum: no theory); structured directions
drawn from them (low-rank U Vᵀ: LOZO, SubZero) are measured, with no theory (nan). A difference scheme that reads
more than the step's batch (MeZO-SVRG's full-batch anchor, ``scheme.evaluators``) is refused.
"""

from __future__ import annotations

import copy

import torch

from diagnostics.guards import untouched
from diagnostics.probe import Probe, gradient_sq
from diagnostics.reductions import dot, sq_sum, sq_sum_and_dot
from zolab.engine.estimator import BlockEstimate, Local
from zolab.engine.jvp import forward_gradient
from zolab.engine.perturb import ModulePerturbation, NotPerturbed, evaluate_copy, new_pool
from zolab.engine.seeds import mix

LAWS = ("gaussian", "sphere", "rademacher")
TAG = int.from_bytes(b"variance", "big")  # keys the probe's seeds apart from the step's (mix(opt.seed, t, ...))


def _wide(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 promoted to float32 (float32/float64 kept): the accumulators' precision."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def variance_theory(law: str, scaled: bool, grad_sq_blocks: list[float], sizes: list[int], rest_sq: float,
                    num_queries: int) -> float:
    """E‖ĝ − ∇F‖² with exact directional derivatives (docs/algorithms.md §4); nan for unscaled sphere."""
    if law == "sphere" and not scaled:
        return float("nan")
    extra = 1 if law == "gaussian" else -1
    return rest_sq + sum((n + extra) * g / num_queries for g, n in zip(grad_sq_blocks, sizes))


def local_estimator(opt):
    """The optimizer's estimator (same directions, difference, K, scale) evaluating every point here: a
    process-parallel seam would share the probe's points out and count them as the step's."""
    estimator = copy.copy(opt.grad_estimator)
    estimator.parallel = Local()
    return estimator


class EstimatorVariance(Probe):
    """Measured E‖ĝ − ∇F‖² against the Gaussian/sphere/Rademacher theory (see module doc).

    Cost class: cheap with few samples. Per probe step ``num_samples`` × K × (1 or 2) forwards (+ 1 for
    forward differences), as many direction draws, and the shared ∇F; nothing at other steps.

    Args:
        every_n_steps: probe at step 1 and every n-th step.
        num_samples: independent estimates ĝ per probe step (each with the optimizer's K queries).
        seed: the probe's seed (its queries' seeds mix it with the optimizer's seed, the sample and the step).

    Example (YAML, under ``trainer:``)::

        callbacks:
          - class_path: diagnostics.EstimatorVariance
            init_args: {every_n_steps: 100, num_samples: 32}
    """

    name = "variance"

    def __init__(self, every_n_steps: int = 100, num_samples: int = 32, seed: int = 0):
        super().__init__(every_n_steps)
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"invalid num_samples: {num_samples!r}; allowed: an integer >= 1")
        self.num_samples, self.seed = num_samples, int(seed)
        self._metrics: dict[str, float] | None = None

    def check(self, trainer, pl_module):
        law = pl_module.zo_optimizer.sampler.name
        if law not in LAWS:
            raise ValueError(f"EstimatorVariance: direction law {law!r} has no variance theory; allowed: {list(LAWS)}")
        scheme = pl_module.zo_optimizer.grad_estimator.scheme
        if scheme.evaluators:
            raise ValueError(f"EstimatorVariance: estimator {scheme.name!r} evaluates {list(scheme.evaluators)} "
                             "besides the step's batch, which the probe's extra estimates cannot; allowed: schemes "
                             "of the step's closure alone")

    def measure(self, trainer, pl_module, batch, t):
        opt = pl_module.zo_optimizer
        grad = self.true_gradient(pl_module, batch, t)
        grad_sq = gradient_sq(pl_module, t)
        law, K = opt.sampler.name, opt.num_queries
        plan = opt.blocks_of_step(t)  # the block(s) step t estimates, in its order (positions key the queries)
        blocks = [refs for _, refs in plan]
        estimated = {r.name for refs in blocks for r in refs}
        rest_sq = sum(v for n, v in grad_sq.items() if n not in estimated)
        estimator, batched = local_estimator(opt), self._batchable(pl_module, blocks, K)
        err = err_jvp = 0.0
        with untouched(pl_module), torch.no_grad():
            for position, (block, refs) in enumerate(plan):
                est = self._estimate(pl_module, batch, estimator, position, block, refs, t, batched)
                e, e_jvp = self._row_errors(est, grad) if batched else self._errors(opt, est, grad, grad_sq)
                err, err_jvp = err + e, err_jvp + e_jvp
        grad_sq_blocks = [sum(grad_sq[r.name] for r in refs) for refs in blocks]
        sizes = [sum(r.param.numel() for r in refs) for refs in blocks]
        theory = variance_theory(law, opt.scale == "dimension", grad_sq_blocks, sizes, rest_sq, K)
        if opt.grad_estimator.directions.name != law:  # structured directions (low-rank): measured, no theory
            theory = float("nan")
        measured, measured_jvp = err / self.num_samples + rest_sq, err_jvp / self.num_samples + rest_sq
        ok = theory > 0  # False for nan (unscaled sphere) and a zero gradient
        self._metrics = {
            "measured": measured,
            "measured_jvp": measured_jvp,
            "theory": theory,
            "ratio": measured / theory if ok else float("nan"),
            "ratio_jvp": measured_jvp / theory if ok else float("nan"),
            "grad_norm_sq": sum(grad_sq_blocks) + rest_sq,
        }

    def _estimate(self, pl_module, batch, estimator, position, block, refs, t, batched) -> BlockEstimate:
        """The block's S estimates as one estimate of S·K queries of the probe's own seeds, its points
        evaluated as the step evaluates them: one ``batched_loss`` call, inside the modules
        (``perturb_mode`` "module") or in copies of the perturbed tensors, θ bitwise restored."""
        opt = pl_module.zo_optimizer
        queries = [q for s in range(self.num_samples)
                   for q in estimator.queries(mix(opt.seed, TAG, self.seed, s), t, position)]
        if batched:
            return estimator.estimate(block, refs, queries, None,
                                      batched=lambda points: pl_module.task.batched_loss(points, batch))

        def closure():
            return pl_module.compute_loss(batch)

        dirs = estimator.directions

        def jvp(query):  # a forward-mode scheme's passes (Forward-Grad), through the model the step differentiates
            return forward_gradient(opt.perturber.model, refs, dirs, query, closure)

        if opt.perturb_mode == "module":
            try:
                with ModulePerturbation(pl_module.task, refs, dirs, new_pool(), opt.chunk_numel) as mp:
                    return estimator.estimate(block, refs, queries, lambda q, s: mp.evaluate(q, s, closure), jvp=jvp)
            except NotPerturbed:  # as the step does: "auto" falls back to copies, an explicit "module" fails
                if opt.perturb == "module":
                    raise
        buffers = {r.index: torch.empty_like(r.param) for r in refs}  # one per tensor, reused by every point
        return estimator.estimate(block, refs, queries,
                                  lambda q, s: evaluate_copy(refs, q, s, dirs, closure, lambda r: buffers[r.index]),
                                  jvp=jvp)

    def _coefficients(self, est: BlockEstimate, ref) -> torch.Tensor:
        """a_q = (c/K) δ_q/μ_g per query q, in float64: the estimator's coefficients of its S·K-query estimate
        are (c/(SK)) δ_q/μ_g, S times those of the S estimates of K queries it stands for."""
        return est.coefficients(ref).double() * self.num_samples

    def _errors(self, opt, est: BlockEstimate, grad, grad_sq) -> tuple[float, float]:
        """Σ over samples of ‖ĝ_B − ∇_B F‖², finite differences and JVPs, query by query. ĝ_B = Σ_k a_k u_k
        (a_k per tensor: (c/K) δ_k/μ_g, or (c/K)⟨∇F, u_k⟩); with one query the error is
        Σ_n a_n²‖u_n‖² − 2 a_n⟨u_n, ∇_n F⟩ + ‖∇_n F‖², read from one pass over u, so no estimate is built."""
        refs, S = est.refs, self.num_samples
        K, c = len(est.queries) // S, est.scale
        g_b = [_wide(grad[r.name]) for r in refs]
        g_sq = sum(grad_sq[r.name] for r in refs)
        coefs = [self._coefficients(est, r).tolist() for r in refs]
        acc = [torch.empty_like(g) for g in g_b] if K > 1 else []  # running estimates, finite differences
        acc_jvp = [torch.empty_like(g) for g in g_b] if K > 1 else []  # and exact directional derivatives
        err = err_jvp = 0.0
        for s in range(S):
            for e in acc + acc_jvp:
                e.zero_()
            for i in range(s * K, (s + 1) * K):
                q = est.queries[i]
                if K == 1:  # no estimate: its error from ‖u_n‖² and ⟨u_n, ∇_n F⟩, one direction tensor at a time
                    sums = [sq_sum_and_dot(opt.direction(r, q), g) for r, g in zip(refs, g_b)]
                    err += sum(float(a[i] ** 2 * uu - 2 * a[i] * ug) for a, (uu, ug) in zip(coefs, sums)) + g_sq
                    b = float(sum(ug for _, ug in sums)) * c
                    err_jvp += sum(float(b * b * uu - 2 * b * ug) for uu, ug in sums) + g_sq
                    continue
                us = [opt.direction(r, q) for r in refs]
                jvp = float(sum(dot(u, g) for u, g in zip(us, g_b)))
                for e, ej, u, a in zip(acc, acc_jvp, us, coefs):
                    e.add_(u.to(e.dtype), alpha=a[i])
                    ej.add_(u.to(e.dtype), alpha=jvp * c / K)
            err += sum(float(sq_sum(e.sub_(g))) for e, g in zip(acc, g_b))
            err_jvp += sum(float(sq_sum(e.sub_(g))) for e, g in zip(acc_jvp, g_b))
        return err, err_jvp

    def _batchable(self, pl_module, blocks, K: int) -> bool:
        """One tensor of a task with ``batched_loss`` (the synthetic functions), all queries within 2**22
        numbers: every query in one call."""
        refs = [r for refs in blocks for r in refs]
        return (pl_module.task.supports_batched and len(refs) == 1
                and pl_module.zo_optimizer.grad_estimator.scheme.batched  # a forward-mode scheme has no points
                and self.num_samples * K * refs[0].param.numel() <= 2**22)

    def _row_errors(self, est: BlockEstimate, grad) -> tuple[float, float]:
        """Σ over samples of ‖ĝ − ∇F‖², finite differences and JVPs, from the S·K directions the batched
        estimate drew as rows (``est.drawn``, unit rows for sphere), in float64."""
        ref, S = est.refs[0], self.num_samples
        K = len(est.queries) // S
        U, g = est.drawn.double(), _wide(grad[ref.name]).reshape(-1).double()
        errors = []
        for a in (self._coefficients(est, ref), (U @ g) * (est.scale / K)):  # finite differences, exact JVPs
            estimates = a.view(S, 1, K) @ U.view(S, K, -1)
            errors.append(float((estimates.squeeze(1) - g).square().sum()))
        return errors[0], errors[1]

    def collect(self, trainer, pl_module, batch, t):
        metrics, self._metrics = self._metrics, None
        return metrics
