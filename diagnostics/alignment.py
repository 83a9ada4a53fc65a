"""Gradient alignment probe (R-AdaZO Fig. 2a, claim R2; docs/algorithms.md §4 "Alignment").

Logs cos(a, ∇F_t) = ⟨a, ∇F_t⟩/(‖a‖‖∇F_t‖) over all trainable tensors for

- ``cos_g``: the estimate ĝ_t (regenerated from the step record, zero outside the active block);
- ``cos_m``: the rule's first moment after the step, m_t (``m`` for R-AdaZO/ZO-AdaMM/ZO-AdaMU,
  ``momentum_buffer`` for ZO-SGD-momentum; absent for rules without one). For ZO-AdaMU m_t is the
  direction momentum u_t;
- ``cos_u``: the mean over the step's queries of cos(u_k, ∇F_t), and ``abs_cos_u`` the mean of |cos|
  (≈ √(2/(πd)) for an isotropic direction in R^d);
- ``grad_norm``: ‖∇F_t‖.

∇F_t = ∇f(θ_{t−1}; ξ_t) by autograd on the step's batch before the update (exact for synthetic tasks).
R2 says cos_m > cos_g, rising with β1 with a small drop at very high β1.
"""

from __future__ import annotations

from diagnostics.gradients import trainable
from diagnostics.probe import Probe, gradient_sq, step_gradient
from diagnostics.reductions import cosine, cosine_from_sums, sq_sum_and_dot

MOMENT_KEYS = ("m", "momentum_buffer")


def estimate_and_cosines(opt, grad: dict, grad_sq: dict) -> tuple[float, list[float]]:
    """cos(ĝ, ∇F) of the last step and cos(u_k, ∇F) for each query k, regenerating each u_k once and
    holding one at a time; ``grad_sq``: ‖∇_n F‖² per name. With one query ĝ = Σ_n coef_n u_n is never
    built: ‖ĝ‖² and ⟨ĝ, ∇F⟩ follow from each tensor's ‖u_n‖² and ⟨u_n, ∇_n F⟩, read in one pass. For
    ZO-AdaMU, whose probed and applied u_t is the new momentum, ĝ = c p u_t."""
    record, g_sq = opt.record, sum(grad_sq.values())
    if record.directions == "adamu":
        u = {r.name: opt.state[r.param]["m"] for b in record.blocks for r in b.refs}
        return cosine(opt.grad_estimate(), grad, g_sq), [cosine(u, grad, g_sq)]
    K = record.num_queries
    g_hat, cos_u = {}, []
    hat_sq = hat_g = 0.0  # ‖ĝ‖², ⟨ĝ, ∇F⟩ when K = 1
    for k in range(K):
        uu = ug = 0.0
        for b in record.blocks:
            for r in b.refs:
                u = opt.direction(r, b.queries[k])  # unit-normalised for sphere
                coef = b.coefficients(r)[k]
                u_sq, u_g = sq_sum_and_dot(u, grad[r.name])
                uu, ug = uu + u_sq, ug + u_g
                if K == 1:
                    hat_sq, hat_g = hat_sq + coef.double() ** 2 * u_sq, hat_g + coef.double() * u_g
                else:
                    term = u.mul_(coef.to(u.dtype))
                    g_hat[r.name] = term if k == 0 else g_hat[r.name].add_(term)
        cos_u.append(cosine_from_sums(ug, uu, g_sq))
    return (cosine_from_sums(hat_g, hat_sq, g_sq) if K == 1 else cosine(g_hat, grad, g_sq)), cos_u


def first_moment(opt, refs, key: str | None = None) -> dict:
    """The rule's first-moment tensors by name (inactive blocks: their frozen state), or {} if none."""
    out = {}
    for r in refs:
        state = opt.state.get(r.param, {})
        k = key or next((k for k in MOMENT_KEYS if k in state), None)
        if k is not None and k in state:
            out[r.name] = state[k]
    return out


class GradientAlignment(Probe):
    """Cosines of ĝ_t, m_t and u_t with the true gradient, every ``every_n_steps`` steps.

    Cost class: cheap. Per probe step ∇F (one backward, shared with the step's other probes) and K
    direction regenerations; nothing at other steps.

    Args:
        every_n_steps: probe at step 1 and every n-th step (costs one backward at those steps).
        moment_key: the state key of the first moment; None: ``m`` or ``momentum_buffer``, whichever the
            rule has.

    Example (YAML, under ``trainer:``)::

        callbacks:
          - class_path: diagnostics.GradientAlignment
            init_args: {every_n_steps: 10}
    """

    name = "alignment"

    def __init__(self, every_n_steps: int = 100, moment_key: str | None = None):
        super().__init__(every_n_steps)
        if moment_key is not None and not isinstance(moment_key, str):
            raise TypeError(f"moment_key must be a state key (str) or None, got {moment_key!r}")
        self.moment_key = moment_key

    def measure(self, trainer, pl_module, batch, t):
        self.true_gradient(pl_module, batch, t)

    def collect(self, trainer, pl_module, batch, t):
        opt = pl_module.zo_optimizer
        grad, grad_sq = step_gradient(pl_module, t), gradient_sq(pl_module, t)
        metrics = {"grad_norm": sum(grad_sq.values()) ** 0.5}
        if opt.record.skipped:
            return metrics
        metrics["cos_g"], cos_u = estimate_and_cosines(opt, grad, grad_sq)
        moment = first_moment(opt, trainable(opt), self.moment_key)
        if moment:
            metrics["cos_m"] = cosine(moment, grad, sum(grad_sq.values()))
        metrics["cos_u"] = sum(cos_u) / len(cos_u)
        metrics["abs_cos_u"] = sum(abs(c) for c in cos_u) / len(cos_u)
        return metrics
