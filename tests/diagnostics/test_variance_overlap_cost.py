"""Estimator variance vs. its theory on a linear function (acceptance 2), block overlap against closed
forms, and the step cost probe."""

import time

import pytest
import torch
from torch import nn

import diagnostics as D
from diagnostics.probe import Probe
from diagnostics.toy import Linear
from diagnostics.variance import variance_theory
from tests.diagnostics._helpers import TinyNet, fit
from zolab import ZOSGD, MeZOBCD, RAdaZO
from zolab.tasks.base import Task


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


def test_block_restricted_gaussian_theory():
    """MeZO-BCD: ‖∇_{B^c}F‖² + (|B| + 1)‖∇_B F‖²/K, with exact JVPs on a nonlinear net. 2,400 samples: the
    measured ratio's spread over probe seeds is about 0.025 (0.05 at 600), so 10% is four of them."""
    probe = D.EstimatorVariance(every_n_steps=100, num_samples=2400, seed=4)
    module, _ = fit(TinyNet(), MeZOBCD, [probe], steps=1, lr=1e-3, mu=1e-3, num_queries=2)
    assert probe.last_metrics["ratio_jvp"] == pytest.approx(1.0, abs=0.10)
    assert probe.last_metrics["theory"] < 65 * probe.last_metrics["grad_norm_sq"] / 2  # one block only


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
