"""Estimator variance probe (docs/algorithms.md §4 "Estimator variance"; MeZO-BCD claim B2).

At θ_{t−1} on batch ξ_t, before step t, it draws ``num_samples`` independent estimates ĝ with the
optimizer's own settings (direction law, scale c, estimator, K, μ of each group, and the block(s) step t
will estimate) but from a ``torch.Generator`` of its own, seeded by (``seed``, t), never the optimizer's,
and logs

- ``measured``: the mean of ‖ĝ − ∇F‖² (finite differences at the run's μ);
- ``measured_jvp``: the same with p_k = ⟨∇F, u_k⟩, the exact directional derivative (the JVP), on the
  same directions: the difference between the two is the finite-μ bias;
- ``theory``, ``ratio`` = measured/theory, ``ratio_jvp`` = measured_jvp/theory, with (exact directional
  derivatives, per estimated block B of size n and K queries)

  - Gaussian: (n + 1)‖∇_B F‖²/K;  sphere with c = n, and Rademacher: (n − 1)‖∇_B F‖²/K;
  - plus ‖∇_{B^c} F‖² for the coordinates step t does not estimate (block-wise rules);
  - sphere with c = 1 is biased (mean ∇F/n): no theory, no ratio;
- ``grad_norm_sq``: ‖∇F‖².

Cost per probe step: ``num_samples`` × K × (1 or 2) forwards and one backward (for a task with
``batched_loss``, the synthetic functions, all of them in one or two calls when they fit in 2**22
numbers). With one query (K = 1) no estimate is built: ‖ĝ − ∇F‖² = Σ_n a_n²‖u_n‖² − 2a_n⟨u_n, ∇_n F⟩ +
‖∇_n F‖² over the block's tensors n, read in one float64 pass over u; memory: ∇F, the direction and one
perturbed point. With K > 1, two running estimates more (float32, or the parameters' float64); on the
one-call path, the S·K directions in float64. Only the three isotropic laws
(``gaussian``, ``sphere``, ``rademacher``) are supported (ZO-AdaMU's directions depend on its momentum).
"""

from __future__ import annotations

import torch

from diagnostics.guards import parameters_at, untouched
from diagnostics.probe import Probe, gradient_sq
from diagnostics.reductions import sq_sum, sq_sum_and_dot
from zolab import kernels
from zolab.engine.directions import mix

LAWS = ("gaussian", "sphere", "rademacher")


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


class EstimatorVariance(Probe):
    """Measured E‖ĝ − ∇F‖² against the Gaussian/sphere/Rademacher theory (see module doc).

    Cost class: cheap with few samples. Per probe step ``num_samples`` × K × (1 or 2) forwards, as many
    direction draws, and the shared ∇F; nothing at other steps.

    Args:
        every_n_steps: probe at step 1 and every n-th step.
        num_samples: independent estimates ĝ per probe step (each with the optimizer's K queries).
        seed: seed of the probe's own generator (combined with the step).

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
        self._draws = 0
        self._metrics: dict[str, float] | None = None

    def check(self, trainer, pl_module):
        law = pl_module.zo_optimizer.sampler.name
        if law not in LAWS:
            raise ValueError(f"EstimatorVariance: direction law {law!r} has no variance theory; allowed: {list(LAWS)}")

    def _draw(self, law: str, like: torch.Tensor, t: int) -> torch.Tensor:
        """The probe's own directions: counter draws (``zolab.kernels``, fused C on a CPU) keyed by (seed, step,
        draw number), independent of the optimizer's stream."""
        self._draws += 1
        out = torch.empty_like(like, memory_format=torch.contiguous_format)
        counter_law = "rademacher" if law == "rademacher" else "gaussian"  # sphere: normalised by the caller
        return kernels.fill(out, mix(self.seed, t, self._draws), law=counter_law)

    def _directions(self, law: str, refs, t: int) -> list[torch.Tensor]:
        us = [self._draw(law, r.param, t) for r in refs]
        if law == "sphere":
            inv = sum(sq_sum(u) for u in us).rsqrt()
            us = [u.mul_(inv.to(u.dtype)) for u in us]
        return us

    @staticmethod
    def _loss_at(pl_module, batch, refs, us, sign: float, scratch) -> torch.Tensor:
        """f(θ + sign·μ_g·u), the point built in ``scratch`` (one buffer per tensor, reused by every point of
        the call), with θ bitwise restored (``guards.parameters_at``)."""
        points = [(r.param, torch.add(r.param.data, u, alpha=sign * r.group["mu"], out=buf))
                  for r, u, buf in zip(refs, us, scratch)]
        with parameters_at(points):
            return pl_module.compute_loss(batch).detach().double()

    def measure(self, trainer, pl_module, batch, t):
        opt = pl_module.zo_optimizer
        grad = self.true_gradient(pl_module, batch, t)
        grad_sq = gradient_sq(pl_module, t)
        law, K, central = opt.sampler.name, opt.num_queries, opt.estimator == "central"
        blocks = [refs for _, refs in opt.blocks_of_step(t)]  # the block(s) step t estimates
        estimated = {r.name for refs in blocks for r in refs}
        rest_sq = sum(v for n, v in grad_sq.items() if n not in estimated)
        self._draws = 0
        err = err_jvp = 0.0
        with untouched(pl_module), torch.no_grad():
            batchable = self._batchable(pl_module, blocks, K)
            if batchable:
                err, err_jvp = self._batched(pl_module, batch, blocks[0][0], grad, t, law, K, central, opt.scale)
            for refs in [] if batchable else blocks:
                e, e_jvp = self._block_errors(pl_module, batch, refs, grad, grad_sq, t, law, K, central, opt.scale)
                err, err_jvp = err + e, err_jvp + e_jvp
        grad_sq_blocks = [sum(grad_sq[r.name] for r in refs) for refs in blocks]
        sizes = [sum(r.param.numel() for r in refs) for refs in blocks]
        theory = variance_theory(law, opt.scale == "dimension", grad_sq_blocks, sizes, rest_sq, K)
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

    def _block_errors(self, pl_module, batch, refs, grad, grad_sq, t, law, K, central, scale) -> tuple[float, float]:
        """Σ over samples of ‖ĝ_B − ∇_B F‖², finite differences and JVPs, query by query. ĝ_B = Σ_k a_k u_k
        (a_k per tensor: (c/K) δ_k/μ_g, or (c/K)⟨∇F, u_k⟩); with one query the error is
        Σ_n a_n²‖u_n‖² − 2 a_n⟨u_n, ∇_n F⟩ + ‖∇_n F‖², read from one pass over u, so no estimate is built."""
        g_b = [_wide(grad[r.name]) for r in refs]
        g_sq = sum(grad_sq[r.name] for r in refs)
        c = float(sum(r.param.numel() for r in refs)) if scale == "dimension" else 1.0
        f0 = None if central else pl_module.compute_loss(batch).detach().double()
        scratch = [torch.empty_like(r.param) for r in refs]
        est = [torch.empty_like(g) for g in g_b] if K > 1 else []  # running estimates, finite differences
        est_jvp = [torch.empty_like(g) for g in g_b] if K > 1 else []  # and exact directional derivatives
        err = err_jvp = 0.0
        for _ in range(self.num_samples):
            for e in est + est_jvp:
                e.zero_()
            for _ in range(K):
                us = self._directions(law, refs, t)
                fp = self._loss_at(pl_module, batch, refs, us, 1.0, scratch)
                fd = (fp - self._loss_at(pl_module, batch, refs, us, -1.0, scratch)) / 2 if central else fp - f0
                sums = [sq_sum_and_dot(u, g) for u, g in zip(us, g_b)]
                jvp = float(sum(ug for _, ug in sums))
                a = [float(fd) * c / (K * r.group["mu"]) for r in refs]
                if K == 1:  # no estimate: its error from ‖u_n‖² and ⟨u_n, ∇_n F⟩
                    err += sum(float(ai * ai * uu - 2 * ai * ug) for ai, (uu, ug) in zip(a, sums)) + g_sq
                    b = jvp * c
                    err_jvp += sum(float(b * b * uu - 2 * b * ug) for uu, ug in sums) + g_sq
                    continue
                for e, ej, u, ai in zip(est, est_jvp, us, a):
                    e.add_(u.to(e.dtype), alpha=ai)
                    ej.add_(u.to(e.dtype), alpha=jvp * c / K)
            err += sum(float(sq_sum(e.sub_(g))) for e, g in zip(est, g_b))
            err_jvp += sum(float(sq_sum(e.sub_(g))) for e, g in zip(est_jvp, g_b))
        return err, err_jvp

    def _batchable(self, pl_module, blocks, K: int) -> bool:
        """One tensor of a task with ``batched_loss`` (the synthetic functions), all queries within 2**22
        numbers: every query in one call."""
        refs = [r for refs in blocks for r in refs]
        return (pl_module.task.supports_batched and len(refs) == 1
                and self.num_samples * K * refs[0].param.numel() <= 2**22)

    def _batched(self, pl_module, batch, ref, grad, t, law, K, central, scale) -> tuple[float, float]:
        """Σ over samples of ‖ĝ − ∇F‖², finite differences and JVPs, with all S×K directions drawn at once
        and the points evaluated by one ``batched_loss`` call per sign (float64 estimates)."""
        S, x, mu = self.num_samples, ref.param.detach(), ref.group["mu"]
        U = self._draw(law, x.new_empty((S * K, *x.shape)), t).flatten(1)
        if law == "sphere":
            U.mul_(U.double().square().sum(1, keepdim=True).rsqrt().to(U.dtype))
        loss = lambda points: pl_module.task.batched_loss(points.view(-1, *x.shape), batch).double()  # noqa: E731
        fp = loss(x.reshape(1, -1) + mu * U)
        delta = (fp - loss(x.reshape(1, -1) - mu * U)) / 2 if central else fp - loss(x.reshape(1, -1))
        c = float(x.numel()) if scale == "dimension" else 1.0
        g, U = _wide(grad[ref.name]).reshape(-1).double(), U.double()
        errors = []
        for p in (delta / mu, U @ g):  # finite differences, exact directional derivatives
            est = (p * (c / K)).view(S, 1, K) @ U.view(S, K, -1)
            errors.append(float((est.squeeze(1) - g).square().sum()))
        return errors[0], errors[1]

    def collect(self, trainer, pl_module, batch, t):
        metrics, self._metrics = self._metrics, None
        return metrics
