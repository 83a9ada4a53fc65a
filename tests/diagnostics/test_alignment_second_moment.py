"""Alignment and second-moment probes against hand computations on 3-dimensional quadratics (acceptance 2)."""

import functools
import warnings

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

import diagnostics as D
from diagnostics.probe import Probe, step_gradient
from tests.diagnostics._helpers import MemoryLogger, TinyNet, fit
from zolab import ZOSGD, MeZOBCD, RAdaZO, ZOAdaMM, ZOSGDMomentum
from zolab.lab.module import ZOModule
from zolab.tasks.synthetic import Quadratic, SyntheticDataModule
from zolab.tasks.toy import DigitsMLP, QuadraticForm

H3 = [3.0, 1.0, 0.2]  # f(x) = ½ Σ h_i x_i², ∇f = h ⊙ x


class Trajectory(Callback):
    """Records θ_{t−1} before each step, and ĝ_t after it (the record's own estimate)."""

    def __init__(self):
        self.before, self.after, self.g_hat = [], [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before.append(pl_module.task.x.detach().numpy().copy())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after.append(pl_module.task.x.detach().numpy().copy())
        self.g_hat.append(pl_module.zo_optimizer.grad_estimate()["x"].numpy().copy())


def cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_alignment_matches_the_trajectory_of_zo_sgd_momentum():
    """θ_t = θ_{t−1} − η b_t, b_t = γ b_{t−1} + ĝ_t: b and ĝ follow from the parameters alone."""
    lr, gamma, steps = 0.05, 0.9, 12
    probe, traj = D.GradientAlignment(every_n_steps=1), Trajectory()
    _, logger = fit(QuadraticForm(H3, rotate=False, seed=5), ZOSGDMomentum, [probe, traj], steps=steps,
                    lr=lr, mu=1e-3, momentum=gamma)
    h = np.array(H3)
    b_prev = np.zeros(3)
    expect_g, expect_m = [], []
    for x0, x1 in zip(traj.before, traj.after):
        grad = h * x0
        b = (x0 - x1) / lr
        g = b - gamma * b_prev
        expect_g.append(cos(g, grad))
        expect_m.append(cos(b, grad))
        b_prev = b
    logged = dict(logger.series("diagnostics/alignment/cos_g"))
    assert sorted(logged) == list(range(steps))  # x = t − 1, Lightning's x for the step's train/loss
    assert [logged[s] for s in range(steps)] == pytest.approx(expect_g, abs=1e-8)
    cos_m = [v for _, v in logger.series("diagnostics/alignment/cos_m")]
    assert cos_m == pytest.approx(expect_m, abs=1e-8)
    # K = 1: ĝ = p·u, so |cos(u, ∇F)| = |cos(ĝ, ∇F)|
    abs_u = [v for _, v in logger.series("diagnostics/alignment/abs_cos_u")]
    assert abs_u == pytest.approx(np.abs(expect_g).tolist(), abs=1e-8)
    norms = [v for _, v in logger.series("diagnostics/alignment/grad_norm")]
    assert norms == pytest.approx([np.linalg.norm(h * x) for x in traj.before], rel=1e-12)


class ReferenceCosines(Probe):
    """cos(ĝ, ∇F) from the rule's own ``grad_estimate`` and cos(u_k, ∇F) from each regenerated direction,
    as flat float64 vectors (tensors a step does not perturb count as zeros)."""

    name = "reference"

    def __init__(self):
        super().__init__(every_n_steps=1)
        self.cos_g, self.cos_u = [], []

    def measure(self, trainer, pl_module, batch, t):
        self.true_gradient(pl_module, batch, t)

    def collect(self, trainer, pl_module, batch, t):
        opt, grad = pl_module.zo_optimizer, step_gradient(pl_module, t)

        def flat(d):
            return torch.cat([d.get(n, torch.zeros_like(g)).double().flatten() for n, g in grad.items()])

        def cos(a, b):
            return float(a @ b / (a.norm() * b.norm()))

        g, record = flat(grad), opt.record
        self.cos_g.append(cos(flat(opt.grad_estimate()), g))
        self.cos_u.append(np.mean([cos(flat({r.name: opt.direction(r, b.queries[k]) for b in record.blocks
                                             for r in b.refs}), g) for k in range(record.num_queries)]))


@pytest.mark.parametrize("rule, options", [
    (ZOSGD, dict(num_queries=1)),  # one query: ‖ĝ‖² and ⟨ĝ, ∇F⟩ from ‖u‖² and ⟨u, ∇F⟩, ĝ never built
    (ZOSGD, dict(num_queries=3)),
    (MeZOBCD, dict(num_queries=2)),  # one block perturbed, the other a zero of ĝ
    (RAdaZO, dict(num_queries=1)),  # sphere
])
def test_alignment_cosines_match_the_rules_own_estimate(rule, options):
    probe, reference = D.GradientAlignment(every_n_steps=1), ReferenceCosines()
    _, logger = fit(TinyNet(), rule, [probe, reference], steps=4, lr=1e-2, mu=1e-3, **options)
    assert [v for _, v in logger.series("diagnostics/alignment/cos_g")] == pytest.approx(reference.cos_g, rel=1e-6)
    assert [v for _, v in logger.series("diagnostics/alignment/cos_u")] == pytest.approx(reference.cos_u, rel=1e-6)


def test_second_moment_errors_match_a_hand_computation_for_radazo():
    b1, b2, steps = 0.9, 0.8, 15
    probe, traj = D.SecondMomentError(every_n_steps=1), Trajectory()
    module, logger = fit(QuadraticForm(H3, rotate=False, seed=6), RAdaZO, [probe, traj], steps=steps, lr=0.05,
                         mu=1e-3, num_queries=2, betas=(b1, b2))
    h = np.array(H3)
    m, v, v_star, v_conv = (np.zeros(3) for _ in range(4))
    rule, conv = [], []
    for x0, x1, g in zip(traj.before, traj.after, traj.g_hat):
        grad = h * x0
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * m**2  # R-AdaZO eq. 6: the refined v from m²
        v_star = b2 * v_star + (1 - b2) * grad**2
        v_conv = b2 * v_conv + (1 - b2) * g**2  # eq. 5: from ĝ²
        np.testing.assert_allclose(x1, x0 - 0.05 * m / (np.sqrt(v) + 1e-8), rtol=1e-10)  # the rule saw this ĝ
        rule.append(np.linalg.norm(v - v_star) / np.linalg.norm(v_star))
        conv.append(np.linalg.norm(v_conv - v_star) / np.linalg.norm(v_star))
    assert [x for _, x in logger.series("diagnostics/second_moment/rel_error_rule")] == pytest.approx(rule, rel=1e-8)
    assert [x for _, x in logger.series("diagnostics/second_moment/rel_error_conventional")] == pytest.approx(
        conv, rel=1e-8
    )
    np.testing.assert_allclose(probe.v_star["x"].numpy(), v_star, rtol=1e-10)
    np.testing.assert_allclose(module.zo_optimizer.state[module.task.x]["v"].numpy(), v, rtol=1e-10)


def test_conventional_v_is_zo_adamm_own_v_bitwise():
    """ZO-AdaMM's v is the conventional one: the probe's copy, fed the regenerated ĝ, is bitwise equal."""
    probe = D.SecondMomentError(every_n_steps=5)
    module, logger = fit(QuadraticForm([2.0, 1.0, 0.5, 0.1], seed=7), ZOAdaMM, [probe], steps=10, lr=0.05,
                         mu=1e-3, num_queries=3)
    assert torch.equal(probe.v_conv["x"], module.zo_optimizer.state[module.task.x]["v"])
    rule = logger.series("diagnostics/second_moment/rel_error_rule")
    assert [s for s, _ in rule] == [0, 4, 9]  # logs at step 1 and every 5th; tracks every step
    assert rule == logger.series("diagnostics/second_moment/rel_error_conventional")


def test_second_moment_state_round_trip():
    probe = D.SecondMomentError(every_n_steps=5)
    fit(QuadraticForm(H3, seed=8), RAdaZO, [probe], steps=4, lr=0.01, mu=1e-3)
    other = D.SecondMomentError()
    other.load_state_dict(probe.state_dict())
    assert torch.equal(other.v_star["x"], probe.v_star["x"]) and torch.equal(other.v_conv["x"], probe.v_conv["x"])


def _windowed_and_per_step(task_fn, rule, steps=10, every=4, **kwargs):
    """(windowed probe, per-step probe, their runs): the same training, ∇F batched over windows or not."""
    runs = []
    for window in (None, 1):
        probe = D.SecondMomentError(every_n_steps=every, window=window)
        module, logger = fit(task_fn(), rule, [probe], steps=steps, **kwargs)
        runs.append((probe, module, logger))
    return runs


@pytest.mark.parametrize("task_fn, rtol", [
    (lambda: QuadraticForm([2.0, 1.0, 0.5, 0.1], seed=9), 1e-6),  # torch.func.vmap path
    (lambda: Quadratic(dim=50, init_seed=3), 0.0),  # the task's batched_loss: ∇F = x exactly, v* bitwise
    (lambda: DigitsMLP(hidden=6, num_examples=32), 1e-6),  # vmap over a network, four tensors
], ids=["vmap", "batched_loss", "mlp"])
def test_windowed_v_star_equals_one_backward_a_step(task_fn, rtol):
    (windowed, mod_w, log_w), (per_step, mod_s, log_s) = _windowed_and_per_step(
        task_fn, RAdaZO, lr=0.01, mu=1e-3, num_queries=2)
    assert windowed._size == 4 and per_step._size == 1
    for (name, p), q in zip(mod_w.task.named_parameters(), mod_s.task.parameters()):
        assert torch.equal(p, q), name  # the window changes nothing in the run
    for name, v in per_step.v_star.items():  # steps 9 and 10 were taken in at the end of training
        torch.testing.assert_close(windowed.v_star[name], v, rtol=rtol, atol=0)
    for key in ("rel_error_rule", "rel_error_conventional"):
        series = log_w.series(f"diagnostics/second_moment/{key}")
        assert [s for s, _ in series] == [0, 3, 7]
        assert [v for _, v in series] == pytest.approx([v for _, v in log_s.series(f"diagnostics/second_moment/{key}")],
                                                       rel=max(rtol, 1e-12))


def test_a_loss_vmap_cannot_batch_falls_back_to_a_backward_a_step():
    """TinyNet indexes rows with int(batch): vmap fails, the probe goes on per step (with a warning, which
    fit() silences), same v*."""
    (windowed, _, _), (per_step, _, _) = _windowed_and_per_step(
        lambda: TinyNet(seed=2), RAdaZO, lr=0.01, mu=1e-3, num_queries=2)
    assert windowed._size == 1 and windowed.window is None
    for name, v in per_step.v_star.items():
        assert torch.equal(windowed.v_star[name], v), name


def test_a_checkpoint_mid_window_resumes_exactly(tmp_path):
    """A checkpoint at step 5 (window of 4 from step 4) takes the stored point in; resuming from it gives
    the uninterrupted run's v* and logs bitwise."""

    def trainer(steps, probe, logger, ckpt=None):
        callbacks = [probe]
        if ckpt is None:
            callbacks.append(ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=5, save_top_k=-1))
        return L.Trainer(max_steps=steps, logger=logger, callbacks=callbacks, enable_progress_bar=False,
                         enable_checkpointing=ckpt is None, enable_model_summary=False, log_every_n_steps=1,
                         limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu", devices=1)

    def module():
        return ZOModule(QuadraticForm([2.0, 1.0, 0.5], seed=4),
                        optimizer=functools.partial(RAdaZO, lr=0.01, mu=1e-3, num_queries=2), log_every_n_steps=1)

    whole, whole_log = D.SecondMomentError(every_n_steps=4), MemoryLogger()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer(11, whole, whole_log).fit(module(), SyntheticDataModule(steps_per_epoch=100))
        resumed, resumed_log = D.SecondMomentError(every_n_steps=4), MemoryLogger()
        trainer(11, resumed, resumed_log, ckpt=True).fit(module(), SyntheticDataModule(steps_per_epoch=100),
                                                         ckpt_path=tmp_path / "epoch=0-step=5.ckpt")
    assert torch.equal(resumed.v_star["x"], whole.v_star["x"])
    key = "diagnostics/second_moment/rel_error_rule"
    assert resumed_log.series(key) == [(s, v) for s, v in whole_log.series(key) if s >= 5] != []


def test_invalid_window():
    with pytest.raises(ValueError, match="invalid window: 0; allowed: an integer >= 1 or None"):
        D.SecondMomentError(window=0)


def test_default_window_is_one_backward_a_step_on_a_large_model():
    """window=None: vmap would hold a window's activations of a model above a million parameters at once."""
    from zolab.tasks.toy import Linear

    probe = D.SecondMomentError(every_n_steps=10)
    fit(Linear(dim=10**6 + 1, dtype="float32"), RAdaZO, [probe], steps=2, lr=1e-3, mu=1e-3)
    assert probe._size == 1
    small = D.SecondMomentError(every_n_steps=10)
    fit(Linear(dim=10**3, dtype="float32"), RAdaZO, [small], steps=2, lr=1e-3, mu=1e-3)
    assert small._size == 10
