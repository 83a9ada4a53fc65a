"""The synthetic functions of R-AdaZO App. B.1 (docs/algorithms.md §6) and their data module."""

import math

import pytest
import torch

from zolab.tasks.synthetic import Cubic, Levy, Quadratic, Rosenbrock, SyntheticDataModule

FUNCTIONS = [Quadratic, Cubic, Levy, Rosenbrock]
MINIMIZER = {Quadratic: 0.0, Cubic: 0.0, Levy: 1.0, Rosenbrock: 1.0}


def _levy_reference(x):
    """Levy written out term by term in float64 (§6)."""
    w = [1 + (xi - 1) / 4 for xi in x.tolist()]
    total = math.sin(math.pi * w[0]) ** 2
    for wi in w[:-1]:
        total += (wi - 1) ** 2 * (1 + 10 * math.sin(math.pi * wi + 1) ** 2)
    return total + (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2)


def _rosenbrock_reference(x):
    x = x.tolist()
    return sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(len(x) - 1))


@pytest.mark.parametrize("cls", FUNCTIONS)
def test_minimum_is_zero_at_the_minimizer(cls):
    task = cls(dim=7, dtype="float64")
    with torch.no_grad():
        task.x.fill_(MINIMIZER[cls])
    assert task.loss().item() == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        task.x.add_(0.3)
    assert task.loss().item() > 0.0


@pytest.mark.parametrize("cls, reference", [
    (Quadratic, lambda x: 0.5 * float((x**2).sum())),
    (Cubic, lambda x: float(x.abs().pow(3).sum())),
    (Levy, _levy_reference),
    (Rosenbrock, _rosenbrock_reference),
])
def test_objective_matches_the_formula(cls, reference):
    x = torch.randn(9, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert cls.objective(x).item() == pytest.approx(reference(x), rel=1e-12)


@pytest.mark.parametrize("cls", FUNCTIONS)
def test_batched_objective_equals_rows(cls):
    xs = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    batched = cls.objective(xs)
    assert batched.shape == (4,)
    torch.testing.assert_close(batched, torch.stack([cls.objective(x) for x in xs]))


@pytest.mark.parametrize("cls", FUNCTIONS)
def test_batched_loss_is_the_loss_at_each_point(cls):
    task = cls(dim=5, init_seed=2)
    assert cls.supports_batched
    points = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    expected = []
    for point in points:
        with torch.no_grad():
            task.x.copy_(point)
        expected.append(task.loss())
    torch.testing.assert_close(task.batched_loss(points, batch=0), torch.stack(expected))


def test_exact_gradient_by_autograd():
    """Probes take the true gradient from autograd: ∇(½‖x‖²) = x, ∇Σ|x|³ = 3|x|x."""
    for cls, grad in ((Quadratic, lambda x: x), (Cubic, lambda x: 3 * x.abs() * x)):
        task = cls(dim=5, init_seed=4, dtype="float64")
        (g,) = torch.autograd.grad(task.loss(), task.x)
        torch.testing.assert_close(g, grad(task.x.detach()))


def test_initial_point_is_shared_by_seed_and_scaled():
    a, b = Quadratic(dim=50, init_seed=11), Levy(dim=50, init_seed=11)
    assert torch.equal(a.x, b.x)  # same seed, same x0 for every function and rule
    assert not torch.equal(a.x, Quadratic(dim=50, init_seed=12).x)
    c = Quadratic(dim=50, init_seed=11, init_scale=0.5)
    torch.testing.assert_close(c.x, 0.5 * a.x)
    expected = torch.randn(50, generator=torch.Generator().manual_seed(11))
    assert torch.equal(a.x.detach(), expected)  # x0 ~ N(0, I) from its own generator


def test_loss_has_no_side_effects():
    task = Rosenbrock(dim=8, init_seed=2)
    rng = torch.get_rng_state()
    first = task.loss()
    assert torch.equal(first, task.loss())
    assert torch.equal(rng, torch.get_rng_state())


@pytest.mark.parametrize("kwargs, match", [
    ({"dim": 0}, "dim=0"),
    ({"dim": 2.5}, "dim=2.5"),
    ({"dim": True}, "dim=True"),
    ({"dim": 4, "dtype": "float16"}, "dtype='float16'"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Quadratic(**kwargs)


def test_rosenbrock_needs_two_dimensions():
    with pytest.raises(ValueError, match=r"dim=1.*>= 2"):
        Rosenbrock(dim=1)


def test_data_module_epoch_and_validation():
    dm = SyntheticDataModule(steps_per_epoch=7)
    train = dm.train_dataloader()
    assert len(train) == 7 and list(train) == list(range(7))
    assert len(dm.val_dataloader()) == 1
    assert train.state_dict() == {}  # resumable: a mid-epoch checkpoint has no loader position to restore
    with pytest.raises(ValueError, match="steps_per_epoch=0"):
        SyntheticDataModule(steps_per_epoch=0)
