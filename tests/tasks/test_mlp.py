"""MLPClassifier (the testbeds' model): sizes, a seeded start, input handling, bad settings, ZO-SGD learning."""

import pytest
import torch

import zolab
from zolab.tasks.mlp import MLPClassifier


def numbers(task) -> int:
    return sum(p.numel() for _, p in task.zo_named_parameters())


def test_the_testbeds_sizes():
    assert numbers(MLPClassifier(384, 2, hidden=[64])) == 384 * 64 + 64 + 64 * 2 + 2 == 24_770  # T1
    assert numbers(MLPClassifier(784, 10, hidden=[32])) == 784 * 32 + 32 + 32 * 10 + 10 == 25_450  # T2
    assert numbers(MLPClassifier(5, 3, hidden=[])) == 18  # a linear model
    names = [n for n, _ in MLPClassifier(4, 2, hidden=[3, 3]).zo_named_parameters()]
    assert names == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias", "net.4.weight", "net.4.bias"]


def test_start_depends_on_seed_alone_and_leaves_the_global_rng():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = MLPClassifier(8, 2, seed=1)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(999)  # another global state: the same start
    b, c = MLPClassifier(8, 2, seed=1), MLPClassifier(8, 2, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.net[0].weight, c.net[0].weight)


def test_inputs_are_flattened_shifted_scaled_and_logits_scaled():
    task = MLPClassifier(4, 3, hidden=[], logit_scale=10.0, input_shift=0.5, input_scale=2.0)
    x = torch.rand(6, 1, 2, 2)
    expected = 10.0 * task.net((x.reshape(6, 4) - 0.5) / 2.0)
    assert torch.allclose(task.logits(x), expected)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    m = task.metrics((x, y))
    assert torch.allclose(m["loss"], torch.nn.functional.cross_entropy(expected, y))
    assert m["acc"] == (expected.argmax(1) == y).float().mean()
    assert task.batch_size((x, y)) == 6


@pytest.mark.parametrize("kw, message", [
    (dict(in_features=0), "in_features=0; allowed: an integer >= 1"),
    (dict(num_classes=1), "num_classes=1; allowed: an integer >= 2"),
    (dict(hidden=64), "hidden=64; allowed: a list of widths"),
    (dict(hidden=[64, 0]), "hidden\\[1\\]=0; allowed: an integer >= 1"),
    (dict(activation="sigmoid"), "activation='sigmoid'; allowed: \\['relu', 'tanh', 'gelu'\\]"),
    (dict(logit_scale=0), "logit_scale=0; allowed: a finite number > 0"),
    (dict(input_scale=float("inf")), "input_scale=inf; allowed: a finite number > 0"),
    (dict(input_shift=float("nan")), "input_shift=nan; allowed: a finite number"),
    (dict(seed=-1), "seed=-1; allowed: an integer in \\[0, 2\\*\\*63\\)"),
])
def test_bad_settings_are_named(kw, message):
    args = {"in_features": 4, "num_classes": 2, **kw}
    with pytest.raises(ValueError, match=message):
        MLPClassifier(**args)


def test_bad_batches_are_named():
    task = MLPClassifier(4, 2)
    with pytest.raises(ValueError, match="in_features=4\\) got inputs of shape \\(3, 5\\)"):
        task.loss((torch.rand(3, 5), torch.zeros(3, dtype=torch.long)))
    with pytest.raises(TypeError, match="expects a batch \\(inputs, labels\\) of two tensors, got dict"):
        task.loss({"x": torch.rand(3, 4)})


def test_zo_sgd_lowers_the_loss_of_a_separable_problem():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 10, generator=gen)
    y = (x[:, 0] + x[:, 1] > 0).long()
    task = MLPClassifier(10, 2, hidden=[16], seed=0)
    opt = zolab.ZOSGD(task.zo_named_parameters(), lr=0.05, mu=1e-3, num_queries=1, estimator="central", seed=0)
    with torch.no_grad():
        start = task.metrics((x, y))
        for i in range(300):
            rows = slice(32 * (i % 8), 32 * (i % 8 + 1))
            opt.step(lambda: task.loss((x[rows], y[rows])))  # noqa: B023 (called at once)
        end = task.metrics((x, y))
    assert end["loss"] < start["loss"] - 0.2, (start, end)
    assert end["acc"] > 0.85 > start["acc"], (start, end)
