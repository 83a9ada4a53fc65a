"""The black-box attack task: clipping, margin loss, success detection, the stop (docs/algorithms.md §6)."""

import lightning as L
import pytest
import torch
from torch import nn

import zolab
from zolab.lab.attack_runner import attack_once, summarize
from zolab.lab.module import ZOModule
from zolab.tasks.attack import MNISTAttack, attacked_image, margin_loss
from zolab.tasks.synthetic import SyntheticDataModule


class PixelNet(nn.Module):
    """A known 'network': logit_j = w_j · (mean pixel) + b_j, log-softmax. Brighter images favour class 3."""

    def forward(self, x):
        m = x.reshape(-1, 784).mean(1, keepdim=True)
        w = torch.zeros(10)
        w[3] = 40.0
        b = torch.zeros(10)
        b[2] = 4.0
        return torch.log_softmax(m * w + b, dim=1)


def test_clip_of_delta_then_of_the_image():
    x = torch.tensor([0.0, 0.5, 1.0, 0.9, 0.1])
    delta = torch.tensor([-0.5, 0.1, 0.5, 0.15, -0.3])
    expected = torch.tensor([0.0, 0.6, 1.0, 1.0, 0.0])  # δ clipped to ±0.2, then the image to [0, 1]
    assert torch.allclose(attacked_image(x, delta, 0.2), expected)
    assert torch.allclose(attacked_image(x, delta, 0.05), torch.tensor([0.0, 0.55, 1.0, 0.95, 0.05]))


def test_margin_loss_on_known_scores():
    s = torch.log_softmax(torch.tensor([1.0, 3.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]), 0)
    assert torch.isclose(margin_loss(s, 2), torch.tensor(1.0))  # −(s_2 − s_1) = 3 − 2
    assert torch.isclose(margin_loss(s, 1), torch.tensor(-1.0))  # target already the arg-max: negative
    batch = torch.stack([s, s])
    assert torch.allclose(margin_loss(batch, 0), torch.tensor([2.0, 2.0]))


def test_attack_loss_clipping_and_success_on_a_known_input():
    image = torch.full((784,), 0.05)  # mean 0.05: logit_3 = 2 < logit_2 = 4, so the class is 2
    task = MNISTAttack(network=PixelNet(), image=image, label=2)
    assert task.target == 3 and [n for n, _ in task.zo_named_parameters()] == ["delta"]
    with torch.no_grad():
        assert torch.isclose(task.loss(), torch.tensor(2.0), atol=1e-5)  # −(2 − 4)
        assert not task.done()
        task.delta.fill_(0.2)  # mean 0.25: logit_3 = 10 > 4
        assert torch.isclose(task.loss(), torch.tensor(-6.0), atol=1e-5)
        assert task.done()
        task.delta.fill_(5.0)  # clipped to 0.2: the same image
        assert torch.isclose(task.loss(), torch.tensor(-6.0), atol=1e-5)
    assert not any(p.requires_grad for p in task.net.parameters())


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="target=2"):
        MNISTAttack(network=PixelNet(), image=torch.zeros(784), label=2, target=2)
    with pytest.raises(ValueError, match="eps=0"):
        MNISTAttack(network=PixelNet(), image=torch.zeros(784), label=2, eps=0)
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        MNISTAttack(checkpoint="nowhere.pt")


def test_success_stops_a_zolab_fit_run():
    task = MNISTAttack(network=PixelNet(), image=torch.full((784,), 0.05), label=2)
    module = ZOModule(task, optimizer=lambda p: zolab.RAdaZO(p, lr=0.01, mu=0.005, num_queries=5, seed=0))
    trainer = L.Trainer(max_steps=500, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, SyntheticDataModule(steps_per_epoch=50))
    assert task.success()
    assert 0 < trainer.global_step < 500  # stopped at success, not at max_steps


def test_runner_counts_iterations_and_failures():
    image = torch.full((784,), 0.05)
    rule = lambda p: zolab.ZOSignSGD(p, lr=0.01, mu=0.005, num_queries=5, directions="sphere", seed=0)  # noqa: E731
    iters = attack_once(MNISTAttack(network=PixelNet(), image=image, label=2), rule, max_iters=200)
    assert iters is not None and 1 <= iters <= 200
    never = attack_once(MNISTAttack(network=PixelNet(), image=image, label=2), rule, max_iters=2)
    assert never is None  # a mean pixel shift of 0.04 is not enough in 2 steps of 0.01
    row = summarize([10, 20, None])
    assert row["successes"] == 2 and row["failures"] == 1 and row["mean"] == 15.0 and row["std"] == 5.0


def test_batched_queries_give_the_same_losses_and_run():
    task = MNISTAttack(network=PixelNet(), image=torch.full((784,), 0.05), label=2)
    points = torch.randn(4, 784, generator=torch.Generator().manual_seed(0)) * 0.3
    with torch.no_grad():
        one_by_one = []
        for p in points:
            task.delta.copy_(p)
            one_by_one.append(task.loss())
        task.delta.zero_()
        assert torch.allclose(task.batched_loss(points), torch.stack(one_by_one), atol=1e-5)
    rule = lambda p: zolab.RAdaZO(p, lr=0.01, mu=0.005, num_queries=5, seed=0)  # noqa: E731
    a = attack_once(MNISTAttack(network=PixelNet(), image=torch.full((784,), 0.05), label=2), rule, 300)
    b = attack_once(MNISTAttack(network=PixelNet(), image=torch.full((784,), 0.05), label=2), rule, 300,
                    batched=False)
    assert a is not None and abs(a - b) <= 2  # same rule and seed: same run up to float rounding
