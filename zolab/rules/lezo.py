"""LeZO: ZO-SGD on a random subset of the model's layers each step (docs/algorithms.md §3.20)."""

from zolab.engine.blocks import subset
from zolab.engine.checks import check_range
from zolab.rules.zosgd import ZOSGD


class LeZO(ZOSGD):
    """LeZO (Wang et al., "Simultaneous Computation and Memory Efficient Zeroth-Order Optimizer for Fine-Tuning
    Large Language Models", arXiv 2410.09823; no code was found and only renderings of the paper were available,
    so everything beyond the abstract's "layer-wise sparse perturbation and update" is zolab's reading).

    Step t, over n blocks (units)::

        S_t = k blocks drawn uniformly without replacement (from (seed, t)),  k = max(1, round((1 − ρ) n))
        u ~ N(0, I) on S_t only (z' = R(z, ρ, s_t));  p = (f(θ + μu) − f(θ − μu))/(2μ)
        θ_{S_t} ← θ_{S_t} − η p u,   θ elsewhere untouched

    i.e. MeZO-BCD (§3.9) with ``blocks_per_step=k`` and ``block_selection="uniform_subset"``: the k blocks are
    one joint block (one perturbation, 2 forwards), and no random number is drawn and nothing is written outside
    S_t; the saving is in the parameter sweeps (3(1 − ρ) per step instead of 3), not in forwards. Weight
    decay touches S_t only. **[open]** defaults: ``rho`` ρ = 0.75 (the sparsity: the share of blocks left out);
    units ``blocks="module"`` (one per transformer layer, the embeddings, each other top-level module: non-layer
    tensors count as blocks); ``always_active=()`` (block names always in S_t, drawn from neither side of k:
    k counts the other blocks); ``rescale=False`` (True multiplies the step −ηĝ by 1/(1 − ρ), weight decay
    excepted); η, μ as MeZO's. Pass ``model.named_parameters()``.

    Args: lr (1e-3), mu (1e-3), weight_decay (0), rho (0.75), blocks ("module"), always_active (()),
    rescale (False).
    """

    label = "LeZO"  # the name tables and figures print

    static_options = ("rho", "always_active", "rescale")

    def __init__(self, params, lr=1e-3, mu=1e-3, weight_decay=0.0, rho=0.75, blocks="module",
                 always_active=(), rescale=False, **options):
        check_range("rho", rho, 0.0, 1.0)
        if isinstance(always_active, str) or not all(isinstance(b, str) for b in always_active):
            raise ValueError(f"invalid always_active: {always_active!r}; allowed: a list of block names")
        for key in ("block_selection", "blocks_per_step", "granularity"):
            if key in options:
                raise ValueError(f"LeZO: {key}={options[key]!r}; LeZO draws k = max(1, round((1 − ρ)·n)) blocks "
                                 f"a step (set rho); {key!r} is not an option")
        self.rho, self.always_active, self.rescale = float(rho), tuple(always_active), bool(rescale)
        # k is set in partition(), once the blocks are known; 1 until then
        super().__init__(params, lr=lr, mu=mu, weight_decay=weight_decay, blocks=blocks,
                         block_selection="uniform_subset", blocks_per_step=1, granularity="model", **options)

    def partition(self):
        """The blocks, and k (``block_plan.per_step``) set from their number."""
        if self._partition is None:
            self.block_plan.per_step = 1  # any k passes the plan's check; the real k follows
            parts = super().partition()
            names = [name for name, _ in parts]
            unknown = [b for b in self.always_active if b not in names]
            free = len(parts) - len(set(self.always_active))
            if unknown or (self.always_active and free < 1):
                raise ValueError(f"LeZO: always_active={list(self.always_active)} (unknown: {unknown}); allowed: "
                                 f"names of blocks, leaving at least one to draw, among {names}")
            self.block_plan.per_step = max(1, round((1 - self.rho) * free))
        return self._partition

    def blocks_of_step(self, t):
        """S_t as one joint block (named ``a+b+...``, in model order): k drawn blocks plus the always-active."""
        if not self.always_active:
            return super().blocks_of_step(t)
        parts = self.partition()
        free = [i for i, (name, _) in enumerate(parts) if name not in self.always_active]
        chosen = {free[i] for i in subset(t, len(free), self.block_plan.per_step, self.seed)}
        chosen |= {i for i, (name, _) in enumerate(parts) if name in self.always_active}
        picked = [parts[i] for i in sorted(chosen)]
        return [("+".join(name for name, _ in picked), [r for _, refs in picked for r in refs])]

    def prepare(self, ref, state, est):
        return {"boost": 1 / (1 - self.rho)} if self.rescale else None

    def update(self, e, h):
        return e.g * h.boost if self.rescale else e.g
