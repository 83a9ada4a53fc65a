"""SubZero: ZO-SGD along subspace directions √(mn)/r · U Z Vᵀ, bases kept for T₀ steps (docs/algorithms.md §3.14)."""

import math

from zolab.engine.checks import check_int, check_range
from zolab.engine.lowrank import Subspace
from zolab.rules.base import ZOOptimizer


class SubZeroDirections(Subspace):
    """``Subspace`` on the tensors whose squeezed shape is two-dimensional (the authors' rule: a (1, m, n) tensor
    is the m × n matrix; 1-D and 3-D or more get dense draws); ``store=False`` rebuilds U, V (two QRs) at every
    use instead of keeping them."""

    def __init__(self, rank, refresh, sampler, rng, store):
        super().__init__(rank, refresh, sampler, rng)
        self.store = store

    def structured(self, ref):
        return sum(s > 1 for s in ref.param.shape) == 2

    def shape2(self, ref):
        m, n = (s for s in ref.param.shape if s > 1)
        return m, n

    def kept(self, ref, index, make):
        return super().kept(ref, index, make) if self.store else make(index)


class SubZero(ZOOptimizer):
    """SubZero (Yu et al., "SubZero: Random Subspace Zeroth-Order Optimization for Memory-Efficient LLM
    Fine-Tuning", ICCV 2025, arXiv 2410.08989). Equation numbers are not cited: the paper's text was not available
    offline; transcribed from the authors' code at zimingyy/SubZero@cf6effd, ``large_models/trainer.py`` L744–762
    (perturbation), L875–951 (step; U, V refresh L884–907), L979–1008 (update), L1195–1212 (the QR bases).

    Directions: on a matrix W ∈ R^{m×n}, every T₀ steps (at t − 1 ≡ 0 mod T₀) U = qr(G₁).Q ∈ R^{m×r} and
    V = qr(G₂).Q ∈ R^{n×r} (orthonormal columns, G ~ N(0, 1)) are drawn and kept; each step Z ~ N(0, 1) ∈ R^{r×r}
    and the direction is the norm-aligned Z̃ = √(mn)/r · U Z Vᵀ, so E‖Z̃‖²_F = mn as for a dense Gaussian and
    MeZO's η and μ carry over; r = min(rank, m, n). Other tensors get a dense u ~ N(0, I). Then::

        p = (ℓ(θ + μZ̃) − ℓ(θ − μZ̃)) / (2μ),    W ← W − η p Z̃      (central, 2 forwards; ``estimator="forward"``
                                                                      is the code's one-sided mode)

    E[p Z̃] = ∇_W f to first order in μ ([D]: E[UUᵀ] = (r/m)I, E[VVᵀ] = (r/n)I). A step adds U (p Z) Vᵀ to W in
    place (no m × n direction is made). U, V come from the optimizer's seed, the tensor and ⌊(t − 1)/T₀⌋ (the code
    draws them from the global RNG), so they are regenerated after a resume, never saved. K > 1 **[D]**: a fresh Z
    per query, the same U, V (the code asserts K = 1).

    ``momentum`` γ > 0: torch's SGD momentum, b ← γ b + ĝ, W ← W − η b (a d-sized ``momentum_buffer``; the code's
    ``--momentum``). Weight decay **[open]**: the code ignores it (λ = 0, the default); zolab applies
    docs/algorithms.md §2 (decoupled, tensors of 2+ dimensions; coupled folds λθ into ĝ and the buffer).
    ``store_subspace``: True (default) keeps U, V (Σ (m_i + n_i) r numbers); False regenerates them (two QRs per
    matrix) at every point and update, the same numbers for no memory.

    Args: lr (1e-3), mu (1e-3), rank r (8), t0 T₀ (1,000), momentum γ (0), weight_decay (0), store_subspace
    (True), directions: the law of G, Z and the vectors' u ("gaussian" or "rademacher"). **[open]** r = 8, T₀ =
    1,000 for full fine-tuning (run.py: 8, 2,000; the README's OPT-1.3B prompt tuning: η = 1e-3, μ = 1e-2,
    r = 24, T₀ = 1,000).
    """

    label = "SubZero"
    static_options = ("store_subspace",)

    def __init__(self, params, lr=1e-3, mu=1e-3, rank=8, t0=1000, momentum=0.0, weight_decay=0.0,
                 store_subspace=True, directions="gaussian", rng="counter", **options):
        check_int("rank", rank, 1)
        check_int("t0", t0, 1)
        check_range("momentum", momentum, 0.0, 1.0)
        if not isinstance(store_subspace, bool):
            raise ValueError(f"invalid store_subspace: {store_subspace!r}; allowed: True or False")
        self.store_subspace, self.with_buffer = store_subspace, momentum > 0
        dirs = SubZeroDirections(rank, t0, directions, rng, store_subspace)
        options.setdefault("estimator", "central")
        super().__init__(params, dict(lr=lr, mu=mu, momentum=momentum, weight_decay=weight_decay),
                         directions=dirs, rng=rng, **options)

    def _check_group(self, g):
        super()._check_group(g)
        check_range("momentum", g["momentum"], 0.0, 1.0)

    def is_eager(self, ref):
        return self.grad_estimator.directions.structured(ref)

    def prepare(self, ref, state, est):
        if self.with_buffer and self.is_eager(ref):
            self.state_tensor(ref, "momentum_buffer")

    def update(self, e, h):  # vectors (matrices: eager_update)
        if not self.with_buffer:
            return e.g
        b = h.momentum * e.momentum_buffer + e.g
        return b, {"momentum_buffer": b}

    def eager_update(self, ref, est, h, theta, state, out):
        """Without momentum the default in-place SGD; with it, ĝ added into the buffer as rank-r products."""
        if not self.with_buffer:
            return super().eager_update(ref, est, h, theta, state, out)
        coupled = self.weight_decay_mode == "coupled"
        b = out["state:momentum_buffer"].mul_(h.momentum)
        if coupled and h.wd:
            b.add_(theta, alpha=h.wd)
        self.grad_estimator.directions.combine(ref, est.queries, self.coefficients(ref, est), out=b, base=b)
        new = out["theta"]
        if h.wd and not coupled:
            new.mul_(1 - h.lr * h.wd)
        new.add_(b, alpha=-h.lr)

    def scale_of(self, ref) -> float:
        """√(mn)/r of a matrix (the norm alignment), for probes."""
        dirs = self.grad_estimator.directions
        return math.sqrt(math.prod(dirs.shape2(ref))) / dirs.rank_of(ref)
