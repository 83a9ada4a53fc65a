"""WindowAlignment against a hand computation on a quadratic: the cosine of each window's summed estimates with its
summed true gradients, and the mean of the steps' cosines."""

import numpy as np
import pytest
from lightning.pytorch.callbacks import Callback

from diagnostics.window_alignment import WindowAlignment
from tests.diagnostics._helpers import fit
from zolab import ZOSGD
from zolab.tasks.toy import QuadraticForm

H3 = [3.0, 1.0, 0.2]  # f(x) = ½ Σ h_i x_i², ∇f = h ⊙ x


class Trajectory(Callback):
    def __init__(self):
        self.grad, self.g_hat = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.grad.append(np.array(H3) * pl_module.task.x.detach().numpy())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.g_hat.append(pl_module.zo_optimizer.grad_estimate()["x"].numpy().copy())


def cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_each_full_window_logs_the_cosine_of_its_sums_and_the_mean_step_cosine():
    probe, traj = WindowAlignment(window=4), Trajectory()
    _, logger = fit(QuadraticForm(H3, rotate=False, seed=5), ZOSGD, [probe, traj], steps=10, lr=0.05, mu=1e-3)
    cos_w, cos_step = logger.series("diagnostics/window_alignment/cos"), logger.series(
        "diagnostics/window_alignment/cos_step")
    assert [s for s, _ in cos_w] == [3, 7] and [s for s, _ in cos_step] == [3, 7]  # steps 4 and 8; 9–10 not full
    for k, (window_cos, step_cos) in enumerate(zip(cos_w, cos_step)):
        span = range(4 * k, 4 * k + 4)
        expect = cos(sum(traj.g_hat[i] for i in span), sum(traj.grad[i] for i in span))
        assert window_cos[1] == pytest.approx(expect, rel=1e-9)
        assert step_cos[1] == pytest.approx(np.mean([cos(traj.g_hat[i], traj.grad[i]) for i in span]), rel=1e-9)
    assert cos_w[0][1] != pytest.approx(cos_step[0][1])  # the sum's cosine is not the steps' mean


@pytest.mark.parametrize("window", [1, 0, 2.5])
def test_a_window_below_two_steps_is_refused(window):
    with pytest.raises(ValueError, match=rf"invalid (every_n_steps|window): {window!r}"):
        WindowAlignment(window=window)
