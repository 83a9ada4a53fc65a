"""LOZO and LOZO-M: ZO-SGD along low-rank directions U Vᵀ whose V is kept for ν steps (docs/algorithms.md §3.13)."""

from zolab.engine.checks import check_choice, check_int, check_range
from zolab.engine.groups import NO_DECAY
from zolab.engine.lowrank import LowRank
from zolab.rules.base import ZOOptimizer

SCALES = ("code", "unbiased")
RESHAPES = ("flatten_trailing", "dense")
DECAY_TESTS = ("name", "ndim")


class LOZODirections(LowRank):
    """``LowRank`` whose tensors of more than two dimensions are (size(0), rest) matrices (``"flatten_trailing"``)
    or get dense draws like vectors (``"dense"``)."""

    def __init__(self, rank, refresh, sampler, rng, reshape_nd):
        super().__init__(rank, refresh, sampler, rng)
        self.reshape_nd = reshape_nd

    def structured(self, ref):
        return ref.param.dim() == 2 or (ref.param.dim() > 2 and self.reshape_nd == "flatten_trailing")


class LOZO(ZOOptimizer):
    """LOZO (Chen et al., "Enhancing Zeroth-order Fine-tuning for Language Models with Low-rank Structures",
    ICLR 2025, arXiv 2410.07698). Equation numbers are not cited: the paper's text was not available offline;
    transcribed from the authors' code at optsuite/LOZO@5d1ade5, ``large_models/LOZOtrainer.py`` L699–719
    (perturbation), L763–797 (step), L800–823 (update) and, for LOZO-M, ``medium_models/src/LOZOtrainer.py``
    L363–406 (``lowrank_zo_update_momentum``).

    Directions (the paper's lazy sampling): on a matrix W ∈ R^{m×n}, Z = U Vᵀ with U ~ N(0, 1) (m × r) fresh each
    step and V ~ N(0, 1) (n × r) drawn every ν steps (at t − 1 ≡ 0 mod ν) and kept in between; vectors get a dense
    u ~ N(0, I) each step. p = (ℓ(θ + μZ) − ℓ(θ − μZ))/(2μ), one scalar for all tensors (2 forwards). Update::

        W ← W − η (p U Vᵀ + λW),    θ_vec ← θ_vec − η (p u + λθ_vec)

    as ``W.addmm_`` (no m × n direction is made). V comes from its own stream keyed by (seed, tensor, ⌊(t − 1)/ν⌋)
    and U from the step's seed, so the probed and the applied direction are always the same (the authors' code
    replays U alone on refresh steps, where the update's U then differs from the probe's). K > 1: fresh U per
    query, the same V. Options, **[open]** defaults first:

    - ``lozo_scale``: ``"code"`` (E[p U Vᵀ] = r∇_W f, the published η assume it) | ``"unbiased"`` (matrices'
      ĝ divided by r, as third-party renderings write it; ``grad_estimate()`` returns that ĝ).
    - ``reshape_nd``: ``"flatten_trailing"`` (a tensor of ndim > 2 is the (size(0), numel/size(0)) matrix) |
      ``"dense"`` (it gets a dense draw, like a vector); the authors' code fails on such tensors.
    - ``decay_test``: ``"name"`` (the code's MeZO test: names containing bias, layer_norm or layernorm never
      decay, every other tensor does) | ``"ndim"`` (docs/algorithms.md §2: tensors of 2+ dimensions).

    State: none beyond the kept V (Σ n_i r numbers, a cache regenerated after a resume, never saved).

    Args: lr (1e-3), mu (1e-3), rank r (2), nu ν (50), weight_decay (0), lozo_scale ("code"), reshape_nd
    ("flatten_trailing"), decay_test ("name"), directions: the law of U, V and the vectors' u ("gaussian" or
    "rademacher"). The README's OPT-13B setting: η = 1e-7, μ = 1e-3, r = 2, ν = 50.
    """

    label = "LOZO"
    static_options = ("lozo_scale", "reshape_nd", "decay_test")
    extra_defaults: dict = {}  # a subclass's own group hyper-parameters (LOZO-M's β1)

    def __init__(self, params, lr=1e-3, mu=1e-3, rank=2, nu=50, weight_decay=0.0, lozo_scale="code",
                 reshape_nd="flatten_trailing", decay_test="name", directions="gaussian", rng="counter",
                 **options):
        check_int("rank", rank, 1)
        check_int("nu", nu, 1)
        check_choice("lozo_scale", lozo_scale, SCALES)
        check_choice("reshape_nd", reshape_nd, RESHAPES)
        check_choice("decay_test", decay_test, DECAY_TESTS)
        self.lozo_scale, self.reshape_nd, self.decay_test = lozo_scale, reshape_nd, decay_test
        dirs = LOZODirections(rank, nu, directions, rng, reshape_nd)
        options.setdefault("estimator", "central")
        super().__init__(params, dict(lr=lr, mu=mu, weight_decay=weight_decay, **self.extra_defaults),
                         directions=dirs, rng=rng, **options)

    def is_eager(self, ref):
        return self.grad_estimator.directions.structured(ref)

    def coefficients(self, ref, est):
        coefs = est.coefficients(ref)
        if self.lozo_scale == "unbiased" and self.is_eager(ref):
            return coefs / self.grad_estimator.directions.rank
        return coefs

    def decay_of(self, ref):
        if self.decay_test == "ndim":
            return super().decay_of(ref)
        return 0.0 if any(k in ref.name for k in NO_DECAY) else ref.group.get("weight_decay", 0.0)

    def update(self, e, h):  # vectors (matrices: the eager addmm step)
        return e.g

    def grad_estimate(self):
        """ĝ of the last step with this rule's coefficients (``lozo_scale``)."""
        if self.record is None:
            raise RuntimeError("no step taken yet")
        dirs = self.grad_estimator.directions
        return {r.name: dirs.combine(r, b.queries, self.coefficients(r, b)) for b in self.record.blocks for r in b.refs}


class LOZOM(LOZO):
    """LOZO-M (the same paper; the authors' ``lowrank_zo_update_momentum``): LOZO with a momentum kept in the
    factor space of each matrix, M ∈ R^{m×r}, so the dense momentum M Vᵀ is never stored. With p U the step's
    estimate's left factor (Σ_k p_k U_k for K > 1)::

        first update:           M = p U                        (no (1 − β1) factor)
        V unchanged:            M ← β1 M + (1 − β1) p U
        V refreshed (new V):    M ← β1 M V_oldᵀ V / n + (1 − β1) p U      (least-squares projection, VᵀV ≈ nI)
        W ← W − η (M Vᵀ + λW)

    Vectors keep a dense momentum ``momentum``: m = p u at first, then m ← β1 m + (1 − β1) p u; θ ← θ − η (m + λθ).
    V_old is regenerated from its stream (the window M was last written in), not stored. Weight decay is
    decoupled only (λW cannot enter a factor-space momentum). State: M (Σ m_i r), the vectors' momentum (d_1D).

    Args: those of ``LOZO``, and beta1 β1 (0.9). The authors' RoBERTa-large SST-2 setting: η = 1e-7, μ = 1e-3,
    r = 4, ν = 100 (medium_models/lozo.sh: r = 4, ν = 50, η = 1e-6).
    """

    label = "LOZO-M"

    def __init__(self, params, lr=1e-3, mu=1e-3, rank=2, nu=50, beta1=0.9, weight_decay=0.0, **options):
        if options.setdefault("weight_decay_mode", "decoupled") != "decoupled":
            raise ValueError(f"LOZOM: weight_decay_mode={options['weight_decay_mode']!r}; allowed: 'decoupled' "
                             "(a factor-space momentum cannot hold λθ)")
        self.extra_defaults = {"beta1": beta1}
        super().__init__(params, lr, mu, rank, nu, weight_decay, **options)

    def _check_group(self, g):
        super()._check_group(g)
        check_range("beta1", g["beta1"], 0.0, 1.0)

    def state_spec(self, ref, name):
        if name == "M":
            return (self.grad_estimator.directions.shape2(ref)[0], self.grad_estimator.directions.rank), \
                super().state_spec(ref, name)[1]
        return super().state_spec(ref, name)

    def prepare(self, ref, state, est):
        """Counts the tensor's updates; a matrix notes the V window its M is written in (its previous one in h)."""
        first = "updates" not in state
        state["updates"] = state.get("updates", 0) + 1
        beta1, extra = ref.group["beta1"], {}
        if self.is_eager(ref):
            self.state_tensor(ref, "M")
            extra["old_window"] = state.get("window", -1)
            state["window"] = self.grad_estimator.directions.window(est.queries[0].t)
        return {"keep": 0.0 if first else beta1, "new": 1.0 if first else 1.0 - beta1, **extra}

    def update(self, e, h):  # vectors: the dense momentum
        m = h.keep * e.momentum + h.new * e.g
        return m, {"momentum": m}

    def eager_update(self, ref, est, h, theta, state, out):
        dirs = self.grad_estimator.directions
        (m, n), window = dirs.shape2(ref), dirs.window(est.queries[0].t)
        pu = sum(c * dirs.factors(ref, q)[0] for c, q in zip(self.coefficients(ref, est), est.queries))
        M = out["state:M"]
        if h.keep and int(h.old_window) != window:  # a new V: M projected onto it
            v_old = dirs.v(ref, int(h.old_window))
            M.copy_(M @ (v_old.t() @ dirs.v(ref, window)) / n)
        M.mul_(h.keep).add_(pu.to(M.dtype), alpha=h.new)
        new = out["theta"]
        if h.wd:
            new.mul_(1 - h.lr * h.wd)
        v = dirs.v(ref, window)
        new.view(m, n).addmm_(M.to(new.dtype), v.to(new.dtype).t(), alpha=-h.lr)
