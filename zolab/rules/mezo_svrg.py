"""MeZO-SVRG: ZO-SGD with mini-batch steps variance-reduced by a full-batch anchor (docs/algorithms.md §3.18)."""

import torch

from zolab.engine.checks import check_choice, check_int, check_range
from zolab.engine.estimator import Query
from zolab.engine.ops import where
from zolab.engine.schemes import Differences, DifferenceScheme, Point
from zolab.engine.seeds import mix
from zolab.rules.base import ZOOptimizer

ANCHOR_STORAGE = ("copy",)  # "replay" (rebuild θ̄ from the updates' seeds) is not implemented: see MeZOSVRG
ANCHOR_BATCH = ("full", "closure")
ANNEAL_FLOORS = (1e-5, 1e-6)  # the code's lowest annealed η₁, η₂ (an η below its floor is left as it is)


class AnchorScheme(DifferenceScheme):
    """MeZO-SVRG's points. Anchor step: θ ± μz̄ on the full batch (``full``, or the closure with
    ``anchor_batch="closure"``), 2 evaluations of ``full_forwards`` forwards each; ĝ = p̄ z̄. Other steps: θ ± μz₁,
    then θ̄ ± μz₂ on the step's batch, 4 forwards; ĝ = p₁z₁ − p₂z₂ + p̄z̄ (queries [q₁, q₂, q̄]; with
    ``shared_z`` z₂ = z₁ and ĝ = (p₁ − p₂)z₁ + p̄z̄). δ are the terms' coefficients times Kμ, so that ĝ = (1/K) Σ
    (δ_k/μ) u_k is the combination every probe rebuilds from the record. The logged loss is the mean of the ±
    losses at θ (the full batch's at an anchor step)."""

    name = "mezo_svrg"
    evaluators = ("full",)
    batched = False  # ĝ holds the kept anchor direction, which the batched path's drawn rows do not

    def __init__(self, rule):
        self.rule, self.full_forwards = rule, 1

    def check(self, num_queries):
        if num_queries != 1:
            raise ValueError(f"invalid num_queries: {num_queries!r}; allowed: 1 (MeZO-SVRG's estimates use one "
                             "direction each)")

    def forwards(self, num_queries):
        return 4

    def config(self):
        return f"mezo_svrg(q={self.rule.q}, shared_z={self.rule.shared_z}, anchor_batch={self.rule.anchor_batch!r})"

    def estimate(self, ctx, queries):
        rule, q1 = self.rule, queries[0]
        if rule.anchor_step(q1.t, ctx.block):
            using = "full" if rule.anchor_batch == "full" else None
            losses = ctx.evaluate_all([Point(((q1, 1.0),)), Point(((q1, -1.0),))], using=using)
            if using:
                ctx.forwards += 2 * (self.full_forwards - 1)  # each full evaluation is that many chunk forwards
            return Differences(((losses[0] - losses[1]) / 2).reshape(1), losses, losses.mean(), {"anchor": True})
        kept = rule.zo["anchors"][ctx.block]
        q_bar = Query(kept["seed"], kept["t"], q1.position, 0)
        q2 = q1 if rule.shared_z else Query(mix(q1.seed, 1), q1.t, q1.position, 1)
        losses = ctx.evaluate_all([Point(((q1, 1.0),)), Point(((q1, -1.0),)), Point(((q2, 1.0),), base="anchor"),
                                   Point(((q2, -1.0),), base="anchor")])
        d1, d2 = (losses[0] - losses[1]) / 2, (losses[2] - losses[3]) / 2
        d_bar = kept["delta"].to(d1)
        if rule.shared_z:
            diffs, used = 2 * torch.stack([d1 - d2, d_bar]), [q1, q_bar]
        else:
            diffs, used = 3 * torch.stack([d1, -d2, d_bar]), [q1, q2, q_bar]
        return Differences(diffs, losses, losses[:2].mean(), {"anchor": False, "d1": d1, "d2": d2}, queries=used)


class MeZOSVRG(ZOOptimizer):
    """MeZO-SVRG (Gautam et al., "Variance-reduced Zeroth-Order Methods for Fine-Tuning Language Models", ICML
    2024, arXiv 2404.08080, Algorithm 1). With the Gaussian SPSA estimate ∇̄f_I(θ) = (f_I(θ + μz) − f_I(θ − μz))/(2μ)·z
    (fresh z per estimate)::

        t − 1 ≡ 0 (mod q):  g = ∇̄f(θ_t) on the whole training subset,  θ̄ = θ_t,  θ_{t+1} = θ_t − η₁ g
        otherwise:          θ_{t+1} = θ_t − η₂ (∇̄f_{I_t}(θ_t) − ∇̄f_{I_t}(θ̄) + g)      (mini-batch I_t)

    g is kept as its seed and p̄ (no d-sized tensor), θ̄ as a copy (state ``anchor``, d), written by the anchor
    step's update; the paper's θ̄ is kept for real (the authors' code aliases it to θ_t). Forwards: an anchor
    step evaluates the full subset twice (2n/b forwards when the full closure is n/b chunks of b: its
    ``forwards`` attribute), other steps 4. Options, **[open]** defaults first:

    - ``anchor_storage``: ``"copy"`` only; ``"replay"`` (θ̄ rebuilt from the seeds of the ≤ q − 1 updates since the
      anchor) is not implemented: each anchor point would redraw 3(q − 1) + 1 directions, per-group step sizes
      and decay would have to be undone, and its rounding differs, to save one copy of θ.
    - ``shared_z``: False (the paper and code: fresh z₂ for θ̄) | True (z₂ = z₁, the classical SVRG coupling).
    - ``plateau_anneal``: None | a factor a: every ``plateau_window``/2 steps, once 2w mini-batch losses exist
      (w = ``plateau_window``, the code's 2 × batches per epoch), if the mean of the last w/2 losses over the mean
      of those 3w/2..w ago exceeds 1.05, η₁ and η₂ are divided by a (not below 1e-5, 1e-6: the code's floors).
    - ``anchor_batch``: ``"full"`` (the ``full=`` evaluator of ``step``, which ``zolab fit`` passes on anchor steps)
      | ``"closure"`` (the step's closure, when it is already the full objective).

    Weight decay: docs/algorithms.md §2 (decoupled, 2+ dimensions), at the step's η. Blocks: every block is
    estimated each step (``blocks_per_step="all"``), each with its own anchor. K = 1.

    Args: lr η₂ (1e-3), anchor_lr η₁ (None: η₂), mu (1e-3), q (2), weight_decay (0), shared_z (False),
    anchor_batch ("full"), anchor_storage ("copy"), plateau_anneal (None), plateau_window (None), directions
    ("gaussian", the paper's; or "rademacher"). The code's RoBERTa-large setting: n = 512, b = 64, q = 2,
    μ = 1e-3, η₁ ∈ {1e-4, 1e-5}, η₂ ∈ {1e-5, 1e-6}.
    """

    label = "MeZO-SVRG"
    half_state = False  # state_dtype stays float32: the state is θ̄, a point, not a moment
    static_options = ("q", "shared_z", "anchor_batch", "anchor_storage", "plateau_anneal", "plateau_window")

    def __init__(self, params, lr=1e-3, anchor_lr=None, mu=1e-3, q=2, weight_decay=0.0, shared_z=False,
                 anchor_batch="full", anchor_storage="copy", plateau_anneal=None, plateau_window=None,
                 directions="gaussian", **options):
        check_int("q", q, 1)
        check_choice("anchor_batch", anchor_batch, ANCHOR_BATCH)
        check_choice("anchor_storage", anchor_storage, ANCHOR_STORAGE)
        if not isinstance(shared_z, bool):
            raise ValueError(f"invalid shared_z: {shared_z!r}; allowed: True or False")
        if plateau_anneal is not None:
            check_range("plateau_anneal", plateau_anneal, 1.0, float("inf"), lo_open=True)
            check_int("plateau_window", plateau_window, 2)
        check_choice("directions", directions, ("gaussian", "rademacher"))  # a kept z̄ cannot be sphere-normalised
        if options.get("state_dtype", "float32") != "float32":  # θ̄ is a point the losses are taken at, not a moment
            raise ValueError(f"MeZOSVRG: state_dtype={options['state_dtype']!r}; allowed: 'float32' (its state is the "
                             "anchor θ̄, a copy of the parameters: a half copy would move the anchor point)")
        if "estimator" in options:
            raise ValueError("MeZOSVRG makes its own estimator (central estimates at θ and θ̄); 'estimator' is not an "
                             "option")
        self.q, self.shared_z, self.anchor_batch, self.anchor_storage = q, shared_z, anchor_batch, anchor_storage
        self.plateau_anneal, self.plateau_window = plateau_anneal, plateau_window
        super().__init__(params, dict(lr=lr, anchor_lr=lr if anchor_lr is None else anchor_lr, mu=mu,
                                      weight_decay=weight_decay), estimator=AnchorScheme(self),
                         directions=directions, **options)
        if self.block_spec is not None and self.block_plan.per_step != "all":
            raise ValueError(f"MeZOSVRG: blocks_per_step={self.block_plan.per_step!r}; allowed: 'all' (an anchor "
                             "step estimates every block, each keeps its anchor)")
        self.zo.update(anchors={}, anneal=1.0, losses=[])

    def _check_group(self, g):
        super()._check_group(g)
        check_range("anchor_lr", g["anchor_lr"], 0.0, float("inf"))

    def anchor_step(self, t: int, block: str) -> bool:
        """Step t is an anchor step of ``block`` (every q-th from the first, or its first after a skipped one)."""
        return (t - 1) % self.q == 0 or block not in self.zo["anchors"]

    def evaluators_at(self, t: int) -> tuple[str, ...]:
        """The extra evaluators step t reads: ``("full",)`` on anchor steps (``zolab fit`` passes them)."""
        blocks = [b for b, _ in self.blocks_of_step(t)]
        return ("full",) if self.anchor_batch == "full" and any(self.anchor_step(t, b) for b in blocks) else ()

    def scalars_of(self, ref, est) -> dict:
        """h of the step: ``anchor`` (1 on anchor steps: θ̄ ← θ) and ``lr`` (η₁ or η₂, annealed)."""
        anchor = bool(est.extras["anchor"])
        lr, floor = (ref.group["anchor_lr"], ANNEAL_FLOORS[0]) if anchor else (ref.group["lr"], ANNEAL_FLOORS[1])
        if self.zo["anneal"] != 1.0:
            lr = max(lr * self.zo["anneal"], min(lr, floor))
        return {"anchor": float(anchor), "lr": lr}

    def prepare(self, ref, state, est):
        if est.extras["anchor"]:  # g kept as its seed and p̄·μ (new dicts: a failed step puts the old ones back)
            q = est.queries[0]
            kept = {"seed": q.seed, "t": q.t, "delta": est.diffs[0].clone()}
            self.zo["anchors"] = {**self.zo["anchors"], est.block: kept}
        return self.scalars_of(ref, est)

    def update(self, e, h):
        return e.g, {"anchor": where(h.anchor, e.theta, e.anchor)}

    def step(self, closure=None, batched=None, **evaluators):
        self.grad_estimator.scheme.full_forwards = getattr(evaluators.get("full"), "forwards", 1)
        loss = super().step(closure, batched, **evaluators)
        if self.plateau_anneal and not self.record.skipped and not self.record.blocks[0].extras["anchor"]:
            self._anneal(float(loss))
        return loss

    def _anneal(self, loss: float) -> None:
        """The code's plateau test (see the class doc), on the last 2w mini-batch losses."""
        w = self.plateau_window
        self.zo["losses"] = (self.zo["losses"] + [loss])[-2 * w:]
        if self.zo["step"] % max(1, w // 2) == 0 and len(self.zo["losses"]) == 2 * w:
            recent, older = self.zo["losses"][-(w // 2):], self.zo["losses"][-(3 * w // 2):-w]
            if sum(recent) / len(recent) > 1.05 * sum(older) / len(older):
                self.zo["anneal"] /= self.plateau_anneal

