"""Second-moment relative error probe (R-AdaZO Fig. 2b, claim R3; ALGORITHMS.md §4).

Along the run's own trajectory it keeps, per trainable tensor,

.. math::
    v^*_t = β_2 v^*_{t-1} + (1-β_2)(∇F_t)^2, \\qquad v^{conv}_t = β_2 v^{conv}_{t-1} + (1-β_2)\\hat g_t^2

(v* from the true gradient ∇F_t = ∇f(θ_{t−1}; ξ_t); v^conv is the conventional second moment of
ZO-AdaMM/ZO-RMSProp, R-AdaZO eq. 5, fed with the same ĝ_t stream the rule saw), and logs

- ``rel_error_rule``: ‖v_t − v*_t‖₂/‖v*_t‖₂ for the rule's own v (R-AdaZO's refined v from m², eq. 6);
- ``rel_error_conventional``: the same for v^conv.

R3 says the refined v has the lower error and that its error falls as β2 grows.

Cost and schedule: v* and v^conv are exponential averages over every step, so this probe needs ∇F_t (one
backward) and ĝ_t (regenerated from the record) at **every** step; ``every_n_steps`` only sets how often it
logs. Both start at 0 like the rule's v, use the rule's β2 of each step (``betas[1]``, or ``beta`` for
ZO-RMSProp; a fixed ``beta2`` for rules without one) and, for block-wise rules, are updated on the active
block only, as the rule's own state. Its state is saved in checkpoints (``state_dict``).
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_warn

from diagnostics.probe import Probe, sq_norm, step_gradient, trainable, true_gradient


def _rule_beta2(group: dict) -> float | None:
    if "betas" in group:
        return group["betas"][1]
    return group.get("beta")


def relative_error(v: dict[str, torch.Tensor], v_star: dict[str, torch.Tensor]) -> float:
    """‖v − v*‖₂/‖v*‖₂ over all tensors of v* (nan when v* = 0), tensor by tensor."""
    denom = float(sq_norm(v_star).sqrt())
    diff = sq_norm({n: v[n].double() - v_star[n].double() for n in v_star})
    return float(diff.sqrt()) / denom if denom > 0 else float("nan")


class SecondMomentError(Probe):
    """Relative errors of the rule's v and of the conventional ĝ²-based v against v* (see module doc).

    Args:
        every_n_steps: log at step 1 and every n-th step (it tracks every step regardless).
        beta2: the β2 of v* and v^conv; None: the rule's β2 of each step (an error for rules without one).
        v_key: the state key of the rule's second moment (``v``).

    Example (YAML, under ``trainer:``)::

        callbacks:
          - class_path: diagnostics.SecondMomentError
            init_args: {every_n_steps: 10}
    """

    name = "second_moment"
    every_step = True

    def __init__(self, every_n_steps: int = 100, beta2: float | None = None, v_key: str = "v"):
        super().__init__(every_n_steps)
        if beta2 is not None and (isinstance(beta2, bool) or not isinstance(beta2, (int, float)) or not 0 <= beta2 < 1):
            raise ValueError(f"invalid beta2: {beta2!r}; allowed: a number in [0, 1) or None (the rule's)")
        self.beta2, self.v_key = beta2, v_key
        self.v_star: dict[str, torch.Tensor] = {}
        self.v_conv: dict[str, torch.Tensor] = {}

    def check(self, trainer, pl_module):
        group = pl_module.zo_optimizer.param_groups[0]
        if self.beta2 is None and _rule_beta2(group) is None:
            raise ValueError(
                f"SecondMomentError: {type(pl_module.zo_optimizer).__name__} has no β2 "
                "(no 'betas' or 'beta'); pass beta2=... to compare against v* anyway"
            )
        if type(pl_module.zo_optimizer).__name__ == "ZOAdaMU":
            rank_zero_warn("SecondMomentError: ZO-AdaMU's v is instantaneous (no state); only the "
                           "conventional v is compared")

    def measure(self, trainer, pl_module, batch, t):
        true_gradient(pl_module, batch, t)

    def collect(self, trainer, pl_module, batch, t):
        opt = pl_module.zo_optimizer
        record = opt.record
        if not record.skipped:
            grad = step_gradient(pl_module, t)
            g_hat = opt.grad_estimate()
            for block in record.blocks:
                for r in block.refs:
                    beta2 = self.beta2 if self.beta2 is not None else _rule_beta2(r.group)
                    for store, g in ((self.v_star, grad[r.name]), (self.v_conv, g_hat[r.name])):
                        v = store.get(r.name)
                        if v is None:
                            v = store[r.name] = torch.zeros_like(g)
                        elif v.device != g.device:
                            v = store[r.name] = v.to(g.device)
                        # β2·v + (1−β2)·(g·g), rounded as zolab.kernels.moments rounds it
                        v.mul_(beta2).add_((g * g).mul_(1 - beta2))
        if not self.is_probe_step(t) or not self.v_star:
            return None
        refs = [r for r in trainable(opt) if r.name in self.v_star]
        metrics = {"rel_error_conventional": relative_error(self.v_conv, self.v_star)}
        rule_v = {r.name: opt.state[r.param][self.v_key] for r in refs if self.v_key in opt.state.get(r.param, {})}
        if len(rule_v) == len(refs):
            metrics["rel_error_rule"] = relative_error(rule_v, self.v_star)
        return metrics

    def state_dict(self):
        return {"v_star": {k: v.cpu() for k, v in self.v_star.items()},
                "v_conv": {k: v.cpu() for k, v in self.v_conv.items()}}

    def load_state_dict(self, state_dict):
        self.v_star = {k: v.clone() for k, v in state_dict["v_star"].items()}
        self.v_conv = {k: v.clone() for k, v in state_dict["v_conv"].items()}
