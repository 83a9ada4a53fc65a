"""Estimator variance vs. its theory on a linear function (acceptance 2), block overlap against closed
forms, and the step cost probe."""

import time

import pytest
import torch
from torch import nn

import diagnostics as D
from diagnostics.guards import untouched
from diagnostics.probe import Probe
from diagnostics.variance import variance_theory
from tests.diagnostics._helpers import TinyNet, fit
from zolab import ZOSGD, MeZOBCD, RAdaZO
from zolab.tasks.base import Task
from zolab.tasks.toy import Linear


class BatchedLinear(Linear):
    """Linear with ``batched_loss``: the probe's one-call path (all S×K queries at once)."""

    supports_batched = True

    def batched_loss(self, points, batch=None):
        return points @ self.a


@pytest.mark.parametrize("task", [Linear, BatchedLinear])
@pytest.mark.parametrize(
    "rule, options",
    [
        (ZOSGD, dict(num_queries=1)),  # Gaussian, central
        (ZOSGD, dict(num_queries=4, estimator="forward")),
        (ZOSGD, dict(num_queries=2, directions="rademacher")),
        (RAdaZO, dict(num_queries=2)),  # sphere with c = d, forward
    ],
)
def test_variance_matches_theory_on_a_linear_function(rule, options, task):
    """f = aᵀx: finite differences are exact, so measured/theory → 1 (within 10%), query by query and with
    all queries in one batched call."""
    probe = D.EstimatorVariance(every_n_steps=100, num_samples=600, seed=3)
    module, _ = fit(task(dim=40, seed=1), rule, [probe], steps=1, lr=1e-3, mu=1e-2, **options)
    blocks = [refs for _, refs in module.zo_optimizer.partition()]
    assert probe._batchable(module, blocks, options["num_queries"]) == (task is BatchedLinear)
    m = probe.last_metrics
    assert m["ratio"] == pytest.approx(1.0, abs=0.10)
    assert m["ratio_jvp"] == pytest.approx(m["ratio"], rel=1e-6)  # linear: p_k is the exact JVP
    law = options.get("directions", "sphere" if rule is RAdaZO else "gaussian")
    assert m["theory"] == pytest.approx(variance_theory(law, True, [m["grad_norm_sq"]], [40], 0.0,
                                                        options["num_queries"]))


@pytest.mark.parametrize("rule, options", [
    (ZOSGD, dict(num_queries=3, estimator="forward")),
    (RAdaZO, dict(num_queries=1)),  # sphere: rows normalised in the batched path, norms per query otherwise
])
def test_batched_and_point_by_point_paths_measure_the_same_estimates(rule, options):
    """One estimator, the probe's own seeds: the one-call path (``batched_loss``) and the point-by-point path
    draw the same directions and losses, so they measure the same numbers."""
    metrics = []
    for task in (Linear, BatchedLinear):
        probe = D.EstimatorVariance(every_n_steps=100, num_samples=8, seed=5)
        fit(task(dim=40, seed=1), rule, [probe], steps=1, lr=1e-3, mu=1e-2, **options)
        metrics.append(probe.last_metrics)
    for key in ("measured", "measured_jvp"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], rel=1e-9)


@pytest.mark.slow
def test_block_restricted_gaussian_theory():
    """MeZO-BCD: ‖∇_{B^c}F‖² + (|B| + 1)‖∇_B F‖²/K, with exact JVPs on a nonlinear net. 2,400 samples: the
    measured ratio's spread over probe seeds is about 0.025 (0.05 at 600), so 10% is four of them."""
    probe = D.EstimatorVariance(every_n_steps=100, num_samples=2400, seed=4)
    module, _ = fit(TinyNet(), MeZOBCD, [probe], steps=1, lr=1e-3, mu=1e-3, num_queries=2)
    assert probe.last_metrics["ratio_jvp"] == pytest.approx(1.0, abs=0.10)
    assert probe.last_metrics["theory"] < 65 * probe.last_metrics["grad_norm_sq"] / 2  # one block only


class RecordingVariance(D.EstimatorVariance):
    """EstimatorVariance that keeps every direction and loss of the estimates it drew (query-by-query path):
    its queries' seeds and directions, the ± losses in query order, and f(θ) (forward differences)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.directions, self.losses, self.f0, self.seeds = [], [], [], []

    def _estimate(self, pl_module, batch, estimator, position, block, refs, t, batched):
        est = super()._estimate(pl_module, batch, estimator, position, block, refs, t, batched)
        opt = pl_module.zo_optimizer
        self.directions += [[opt.direction(r, q) for r in est.refs] for q in est.queries]
        self.seeds += est.seeds
        losses = [float(x) for x in est.losses]
        if estimator.difference == "forward":
            self.f0.append(losses.pop(0))
        self.losses += losses
        return est


class KeepGradient(Probe):
    """Keeps a copy of the step's shared ∇F and f(θ_{t−1}; ξ_t)."""

    name = "keep"

    def measure(self, trainer, pl_module, batch, t):
        self.grad = {n: g.clone() for n, g in self.true_gradient(pl_module, batch, t).items()}
        with untouched(pl_module), torch.no_grad():
            self.loss = float(pl_module.compute_loss(batch).double())


@pytest.mark.parametrize("rule, options", [
    (ZOSGD, dict(num_queries=1)),  # one query: the error from ‖u‖² and ⟨u, ∇F⟩, no estimate built
    (ZOSGD, dict(num_queries=2)),
    (MeZOBCD, dict(num_queries=1)),  # the inactive block's ‖∇F‖² as rest
    (RAdaZO, dict(num_queries=1)),  # sphere, forward differences
])
def test_variance_is_the_mean_squared_error_of_its_own_estimates(rule, options):
    """measured = mean over samples of ‖Σ_k (c/K)(δ_k/μ) u_k − ∇F‖² (and with ⟨∇F, u_k⟩ for δ_k/μ), built
    here from the directions and losses the probe used, on a two-module net."""
    samples, mu, K = 3, 1e-3, options["num_queries"]
    probe, keep = RecordingVariance(every_n_steps=100, num_samples=samples, seed=2), KeepGradient()
    module, _ = fit(TinyNet(), rule, [keep, probe], steps=1, lr=1e-3, mu=mu, **options)
    opt = module.zo_optimizer
    refs = [r for _, refs in opt.blocks_of_step(1) for r in refs]
    grad = {r.name: keep.grad[r.name].double() for r in refs}
    rest = sum(float(g.double().square().sum()) for n, g in keep.grad.items() if n not in grad)
    c = float(sum(r.param.numel() for r in refs)) if opt.scale == "dimension" else 1.0
    central = opt.estimator == "central"
    losses = iter(probe.losses)
    f0 = None if central else keep.loss
    err = err_jvp = 0.0
    for s in range(samples):
        est = {n: torch.zeros_like(g) for n, g in grad.items()}
        est_jvp = {n: torch.zeros_like(g) for n, g in grad.items()}
        for k in range(K):
            us = [u.double() for u in probe.directions[s * K + k]]
            fp = next(losses)
            fd = (fp - next(losses)) / 2 if central else fp - f0
            jvp = sum(float(u.flatten() @ grad[r.name].flatten()) for r, u in zip(refs, us))
            for r, u in zip(refs, us):
                est[r.name] += c / K * fd / mu * u
                est_jvp[r.name] += c / K * jvp * u
        err += sum(float((est[n] - g).square().sum()) for n, g in grad.items())
        err_jvp += sum(float((est_jvp[n] - g).square().sum()) for n, g in grad.items())
    assert next(losses, None) is None and len(probe.directions) == samples * K
    assert probe.f0 == ([] if central else [keep.loss])  # f(θ) once for all samples
    assert len(set(probe.seeds)) == samples * K and not set(probe.seeds) & set(opt.record.seeds)  # its own
    assert probe.last_metrics["measured"] == pytest.approx(err / samples + rest, rel=1e-6)
    assert probe.last_metrics["measured_jvp"] == pytest.approx(err_jvp / samples + rest, rel=1e-6)


class TwoBlocks(Task):
    """f(a, b) = ½ θᵀ H θ with θ = (a, b), a ∈ R³, b ∈ R², H a fixed dense SPD matrix."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        q = torch.randn(5, 5, generator=gen, dtype=torch.float64)
        self.register_buffer("H", q @ q.T / 5 + torch.eye(5, dtype=torch.float64))
        self.a = nn.Parameter(torch.randn(3, generator=gen, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(2, generator=gen, dtype=torch.float64))

    def loss(self, batch=None):
        theta = torch.cat([self.a, self.b])
        return 0.5 * theta @ self.H @ theta


class Points(Probe):
    """Keeps θ_{t−1} of each step."""

    name = "points"

    def __init__(self):
        super().__init__(every_n_steps=1)
        self.points = []

    def measure(self, trainer, pl_module, batch, t):
        self.points.append(torch.cat([pl_module.task.a, pl_module.task.b]).detach().clone())


@pytest.mark.parametrize("exact_max_dim, tol", [(5000, 1e-10), (1, 0.05)])
def test_block_overlap_closed_forms(exact_max_dim, tol):
    probe = D.BlockOverlap(every_n_steps=1, exact_max_dim=exact_max_dim, num_samples=4000)
    points = Points()
    task = TwoBlocks()
    _, logger = fit(task, MeZOBCD, [probe, points], steps=4, lr=0.01, mu=1e-3, blocks=["^a$", "^b$"],
                    block_selection="cyclic")
    H = task.H
    index = [v for _, v in logger.series("diagnostics/block_overlap/block_index")]
    assert index == [0.0, 1.0, 0.0, 1.0]
    for t, theta in enumerate(points.points):
        block = slice(0, 3) if t % 2 == 0 else slice(3, 5)
        grad = H @ theta
        logged = {k.split("/")[-1]: v for s, m in logger.rows if s == t for k, v in m.items() if "overlap/" in k}
        grad_overlap = float(grad[block].square().sum() / grad.square().sum())
        assert logged["grad_overlap"] == pytest.approx(grad_overlap, rel=1e-10)
        curvature = float(H.diagonal()[block].sum() / H.diagonal().sum())
        assert logged["curvature_overlap"] == pytest.approx(curvature, rel=tol)
        assert logged["perturbation_stable_rank"] == logged["block_size"] == (3 if t % 2 == 0 else 2)


class Sleeper(Probe):
    name = "sleeper"

    def measure(self, trainer, pl_module, batch, t):
        time.sleep(0.2)

    def collect(self, trainer, pl_module, batch, t):
        time.sleep(0.2)


def test_step_cost_counts_forwards_and_excludes_other_probes_time():
    cost = D.StepCost(every_n_steps=2)
    _, logger = fit(Linear(dim=10), ZOSGD, [Sleeper(every_n_steps=2), cost, Sleeper(every_n_steps=2)], steps=4,
                    lr=1e-3, mu=1e-3, num_queries=3)
    forwards = logger.series("diagnostics/step_cost/forwards")
    assert forwards == [(0, 6.0), (1, 6.0), (3, 6.0)]  # central, K = 3: 2K forwards; steps 1, 2, 4
    assert logger.series("diagnostics/step_cost/forwards_total")[-1] == (3, 24.0)
    walls = [v for _, v in logger.series("diagnostics/step_cost/wall_ms")]
    assert all(0 < w < 200 for w in walls)  # the sleepers' 2 × 0.4 s per step are not counted
    assert "peak_rss_mib" in cost.last_metrics and cost.last_metrics["peak_rss_mib"] > 0
