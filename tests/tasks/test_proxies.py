"""The CPU proxies P-hq, P-lr, P-mlp (docs/algorithms.md §6): closed forms, sizes, determinism, MeZO's progress,
resume."""

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.func import functional_call, jvp

import zolab
from paper_figures._tb import read_scalars
from zolab.lab.cli import ConfigError, cli_main
from zolab.tasks.proxies import HeteroCurvature, LowRankLinear, ProxyDataModule
from zolab.tasks.proxies_mlp import DigitsFineTune, load_digits_split
from zolab.tasks.toy import Linear

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "proxies"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def mlp():
    return DigitsFineTune()


def _full(task):
    return task.split("train")


# ---------------------------------------------------------------- P-hq
def test_hq_has_the_specified_sizes_scales_and_curvature_spread():
    task = HeteroCurvature()
    assert [(n, p.shape) for n, p in task.named_parameters()] == [("x", (1000,))] and not task.x.any()  # x₀ = 0
    assert task.split("train")[0].shape == (4096, 1000) and task.split("test")[0].shape == (1024, 1000)
    assert task.scales[0].item() == pytest.approx(10**-1.5) and task.scales[-1].item() == pytest.approx(1.0)
    diag = task.hessian_diagonal()["x"].double()
    ratio = diag / task.scales.double().square()  # Σ_i Z_ij²/n: 1 up to a chi-square's 2.2% spread
    assert 0.85 < ratio.min() and ratio.max() < 1.15
    assert 700 < diag.max() / diag.min() < 1400  # "diag Hessian spread ~10³"


def test_hq_gradient_hessian_and_its_diagonal_are_autograd_s():
    task = HeteroCurvature(rows=200, dim=30, dtype="float64", seed=3)
    with torch.no_grad():
        task.x.normal_(generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad(task.loss(_full(task)), task.x)
    torch.testing.assert_close(task.exact_gradient()["x"], grad, rtol=1e-12, atol=1e-12)
    hessian = torch.autograd.functional.hessian(lambda x: task.batched_loss(x[None], _full(task))[0], task.x.detach())
    torch.testing.assert_close(task.hessian(), hessian, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(task.hessian_diagonal()["x"], hessian.diagonal(), rtol=1e-12, atol=1e-12)


def test_hq_optimum_zeroes_the_gradient_at_the_noise_floor():
    task = HeteroCurvature(rows=2000, dim=100, dtype="float64")
    x_hat, f_hat = task.optimum()
    with torch.no_grad():
        task.x.copy_(x_hat)
        assert task.exact_gradient()["x"].abs().max() < 1e-12
        assert task.loss(_full(task)).item() == pytest.approx(f_hat, rel=1e-9)
    assert f_hat == pytest.approx(0.5 * 0.01**2 * (1 - 100 / 2000), rel=0.15)  # ½σ²(n − d)/n in expectation


def test_hq_batched_loss_is_the_loss_at_each_point():
    task = HeteroCurvature(rows=64, dim=20, dtype="float64")
    batch = tuple(t[:16] for t in _full(task))
    points = torch.randn(3, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = []
    for point in points:
        with torch.no_grad():
            task.x.copy_(point)
        expected.append(task.loss(batch))
    torch.testing.assert_close(task.batched_loss(points, batch), torch.stack(expected), rtol=1e-12, atol=0)


# ---------------------------------------------------------------- P-lr
def test_lr_has_the_specified_sizes_and_a_rank_two_teacher_gap():
    task = LowRankLinear(dtype="float64")
    shapes = [(n, tuple(p.shape)) for n, p in task.named_parameters()]
    assert shapes == [("layer1.weight", (128, 64)), ("layer2.weight", (32, 128))]
    assert sum(p.numel() for p in task.parameters()) == 12_288
    w1, w2 = task.layer1.weight.detach(), task.layer2.weight.detach()
    torch.testing.assert_close(task.teacher, w2 @ w1 + task.delta)
    assert torch.linalg.matrix_rank(task.delta).item() == 2
    assert torch.linalg.matrix_norm(task.delta).square().item() == pytest.approx(32)  # population loss 1 at start
    with torch.no_grad():
        assert task.loss(_full(task)).item() == pytest.approx(1.0, abs=0.05)
    wide = LowRankLinear(wide=True, examples=64, test_examples=8)
    assert [tuple(p.shape) for p in wide.parameters()] == [(1024, 1024), (1024, 1024)]


def test_lr_exact_gradient_is_autograd_s_and_has_rank_two_at_the_start():
    task = LowRankLinear(dtype="float64", examples=512)
    params = [p for _, p in task.named_parameters()]
    for moved in (False, True):
        if moved:  # away from the start P − T is no longer ΔW: the closed form must still hold
            with torch.no_grad():
                for p in params:
                    p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2), dtype=p.dtype))
        grads = torch.autograd.grad(task.loss(_full(task)), params)
        exact = task.exact_gradient()
        for (name, _), g in zip(task.named_parameters(), grads):
            torch.testing.assert_close(exact[name], g, rtol=1e-10, atol=1e-12)
            if not moved:
                assert torch.linalg.matrix_rank(g).item() == 2, name


# ---------------------------------------------------------------- P-mlp
def test_mlp_has_the_specified_layout_and_about_27k_parameters(mlp):
    assert sum(p.numel() for p in mlp.parameters()) == 26_634  # (64+1)128 + 2·128 + (128+1)128 + 2·128 + (128+1)10
    kinds = [type(m).__name__ for m in mlp.net]
    assert kinds == ["Linear", "LayerNorm", "GELU", "Linear", "LayerNorm", "GELU", "Linear"]
    assert mlp.head is mlp.net[6] and mlp.head.out_features == 10
    assert all(p.dtype == torch.float32 for p in mlp.parameters())


def test_mlp_splits_are_80_10_10_of_the_bundled_digits_fixed_by_the_seed():
    from sklearn.datasets import load_digits

    split = load_digits_split(0)
    assert [len(split[s][1]) for s in ("train", "val", "test")] == [1437, 180, 180]
    images, labels = load_digits(return_X_y=True)
    every = torch.cat([split[s][0] for s in ("train", "val", "test")])
    assert sorted(map(tuple, every.tolist())) == sorted(map(tuple, (images / 16.0).tolist()))  # a partition
    assert torch.cat([split[s][1] for s in split]).bincount().tolist() == np.bincount(labels).tolist()
    again, other = load_digits_split(0), load_digits_split(1)
    assert all(torch.equal(split[s][0], again[s][0]) for s in split)
    assert not torch.equal(split["val"][0], other["val"][0])


def test_mlp_pretraining_is_identical_every_time_and_learns_digits_0_to_4(mlp):
    rng = torch.get_rng_state()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # another thread count: pre-training pins one thread, so the same bits
    try:
        again = DigitsFineTune(dtype="float64")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(rng, torch.get_rng_state())  # the global RNG is not drawn from
    for (name, p), q in zip(mlp.named_parameters(), again.parameters()):
        assert torch.equal(p, q.float()), name  # float32 is float64's weights rounded
        assert p.grad is None
    x, y = mlp.split("val")
    with torch.no_grad():
        old, new = (mlp.metrics((x[m], y[m]))["acc"].item() for m in (y < 5, y >= 5))
        assert old > 0.95 and new < 0.05  # digits 0–4 learned, 5–9 not yet: what fine-tuning is for
        assert 0.35 < mlp.metrics((x, y))["acc"].item() < 0.6


def test_mlp_random_head_keeps_the_pretrained_body(mlp):
    fresh = DigitsFineTune(head="random")
    for (name, p), q in zip(mlp.named_parameters(), fresh.parameters()):
        assert torch.equal(p, q) != name.startswith("net.6."), name  # the head alone is new
    with torch.no_grad():
        assert fresh.metrics(fresh.split("val"))["acc"].item() < 0.3


def test_mlp_float64_directional_derivative_matches_a_central_difference():
    """What Forward-Grad's unit test (FG1) needs of the proxy: the loss is smooth, so at μ = 1e-4 in float64 a
    central difference agrees with the JVP to 1e-3 relative."""
    task = DigitsFineTune(dtype="float64", pretrain_steps=20)
    batch = tuple(t[:32] for t in _full(task))
    params = {n: p.detach() for n, p in task.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    tangent = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in params.items()}

    def f(ps):
        return functional_call(_LossOf(task), {f"task.{n}": v for n, v in ps.items()}, (batch,))

    _, s = jvp(f, (params,), (tangent,))
    mu = 1e-4
    shift = {sign: {n: p + sign * mu * tangent[n] for n, p in params.items()} for sign in (1, -1)}
    p = (f(shift[1]) - f(shift[-1])) / (2 * mu)
    assert abs(s - p) <= 1e-3 * abs(s)


class _LossOf(torch.nn.Module):
    """``task.loss`` as a forward, for ``functional_call``."""

    def __init__(self, task):
        super().__init__()
        self.task = task

    def forward(self, batch):
        return self.task.loss(batch)


# ---------------------------------------------------------------- all three
def _from_config(name):
    """(task, ZO-SGD, data module) as experiments/proxies/NAME.yaml builds them."""
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    model, data = config["model"], config["data"]
    module, _, cls = model["task"]["class_path"].rpartition(".")
    task = getattr(importlib.import_module(module), cls)(**model["task"]["init_args"])
    assert model["optimizer"]["class_path"] == "zolab.ZOSGD"  # MeZO is every proxy's default rule
    assert data["class_path"] == "zolab.tasks.proxies.ProxyDataModule"
    opt = zolab.ZOSGD(task.zo_named_parameters(), **model["optimizer"]["init_args"]).bind(task)
    return task, opt, ProxyDataModule(**data["init_args"]).attach(task)


@pytest.mark.parametrize("name, steps, ratio", [("p_hq", 300, 0.9), ("p_lr", 300, 0.95), ("p_mlp", 300, 0.5)])
def test_zo_sgd_at_the_configs_settings_reduces_each_loss(name, steps, ratio):
    task, opt, data = _from_config(name)
    data.setup()
    loader = data.train_dataloader()  # one loader for every epoch, as Lightning keeps it
    with torch.no_grad():
        before = task.loss(task.split("val")).item()
    t = 0
    while t < steps:
        for batch in loader:
            batched = (lambda p, b=batch: task.batched_loss(p, b)) if task.supports_batched else None
            opt.step(lambda b=batch: task.loss(b), batched=batched)
            t += 1
            if t == steps:
                break
    with torch.no_grad():
        after = task.loss(task.split("val")).item()
    assert after < ratio * before, (before, after)


@pytest.mark.parametrize("make", [lambda d: HeteroCurvature(rows=64, dim=8, dtype=d),
                                  lambda d: LowRankLinear(examples=64, dtype=d),
                                  lambda d: DigitsFineTune(pretrain_steps=3, dtype=d)], ids=["hq", "lr", "mlp"])
def test_each_proxy_is_the_same_problem_in_float32_and_float64(make):
    single, double = make("float32"), make("float64")
    for (name, p), q in zip(single.named_parameters(), double.parameters()):
        assert p.dtype == torch.float32 and q.dtype == torch.float64 and torch.equal(p, q.float()), name
    with torch.no_grad():
        a, b = single.loss(single.split("val")), double.loss(double.split("val"))
    assert b.dtype == torch.float64 and a.item() == pytest.approx(b.item(), rel=1e-5)


@pytest.mark.parametrize("make, match", [
    (lambda: HeteroCurvature(rows=0), "rows=0"),
    (lambda: HeteroCurvature(dim=1), r"dim=1; allowed: an integer >= 2"),
    (lambda: HeteroCurvature(noise=-1.0), "noise=-1.0"),
    (lambda: HeteroCurvature(dtype="float16"), "dtype='float16'; allowed: 'float32', 'float64'"),
    (lambda: HeteroCurvature(seed=-1), "seed=-1"),
    (lambda: LowRankLinear(wide="yes"), "wide='yes'; allowed: true or false"),
    (lambda: LowRankLinear(rank=33), r"rank=33; allowed: an integer in \[1, 32\]"),
    (lambda: LowRankLinear(examples=2.5), "examples=2.5"),
    (lambda: DigitsFineTune(head="frozen"), "head='frozen'; allowed: 'pretrained', 'random'"),
    (lambda: DigitsFineTune(pretrain_steps=-1), "pretrain_steps=-1; allowed: an integer >= 0"),
    (lambda: ProxyDataModule(batch_size=0), "batch_size=0"),
    (lambda: ProxyDataModule(n_train=True), "n_train=True"),
    (lambda: ProxyDataModule(seed=2**63), "seed=9223372036854775808"),
    (lambda: ProxyDataModule(n_train=65).attach(HeteroCurvature(rows=64, dim=4)).setup(), r"n_train=65.*\[1, 64\]"),
    (lambda: HeteroCurvature(rows=4, dim=2).split("dev"), "split='dev'"),
])
def test_bad_options_are_refused_naming_the_value_and_what_is_allowed(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_the_data_module_serves_proxies_only():
    with pytest.raises(TypeError, match="serves a proxy task.*got Linear"):
        ProxyDataModule().attach(Linear())
    with pytest.raises(RuntimeError, match="no task"):
        ProxyDataModule().setup()


def test_training_batches_are_seeded_cover_the_split_and_respect_n_train():
    task = HeteroCurvature(rows=100, dim=3, dtype="float64")
    rows = {tuple(r) for r in task.split("train")[0].tolist()}

    def epoch(**kwargs):
        return [b[0] for b in _loader(task, **kwargs)]

    first = epoch(batch_size=32)
    assert [len(b) for b in first] == [32, 32, 32, 4]
    assert {tuple(r) for b in first for r in b.tolist()} == rows  # every training row once an epoch
    assert all(torch.equal(a, b) for a, b in zip(first, epoch(batch_size=32)))
    assert not torch.equal(first[0], epoch(batch_size=32, seed=1)[0])
    assert [len(b) for b in epoch(batch_size=None)] == [64, 36]  # the task's default: §8's 64
    subset = {tuple(r) for b in epoch(batch_size=16, n_train=40) for r in b.tolist()}
    assert subset == {tuple(r) for r in task.split("train")[0][:40].tolist()}


def _loader(task, **kwargs):
    data = ProxyDataModule(**kwargs).attach(task)
    data.setup()
    return data.train_dataloader()


def _fit(root, config, name, steps, *extra):
    return cli_main(["fit", "--config", str(CONFIGS / config), f"--trainer.default_root_dir={root}", f"--name={name}",
                     f"--trainer.max_steps={steps}", "--trainer.log_every_n_steps=1", *QUIET, *extra])


def test_a_p_mlp_run_resumed_mid_epoch_continues_exactly_and_logs_val_and_test(tmp_path):
    """p_mlp.yaml cut to 80 training images (3 batches an epoch), 10 steps; the second leg resumes at step 5,
    inside the second epoch: the weights and every train/loss are bitwise the uninterrupted run's."""
    small = ["--model.task.init_args.pretrain_steps=5", "--data.init_args.n_train=80",
             "--trainer.val_check_interval=5"]
    full = _fit(tmp_path, "p_mlp.yaml", "full", 10, *small)
    _fit(tmp_path, "p_mlp.yaml", "legs", 5, *small)
    (ckpt,) = (tmp_path / "legs" / "version_0" / "checkpoints").glob("*.ckpt")
    second = _fit(tmp_path, "p_mlp.yaml", "legs", 10, *small, f"--ckpt_path={ckpt}")
    for (name, p), q in zip(full.model.task.named_parameters(), second.model.task.parameters()):
        assert torch.equal(p, q), name
    steps, losses = read_scalars(tmp_path / "full" / "version_0", "train/loss")
    a, b = (read_scalars(tmp_path / "legs" / f"version_{v}", "train/loss") for v in (0, 1))
    assert steps.tolist() == list(range(10))
    assert a[0].tolist() + b[0].tolist() == steps.tolist() and a[1].tolist() + b[1].tolist() == losses.tolist()
    for tag in ("val/loss", "val/acc", "test/loss", "test/acc"):
        assert len(read_scalars(tmp_path / "full" / "version_0", tag)[0]) > 0, tag


@pytest.mark.parametrize("config", ["p_hq.yaml", "p_lr.yaml"])
def test_the_p_hq_and_p_lr_configs_run_and_log_val_and_test(tmp_path, config):
    _fit(tmp_path, config, "run", 4, "--trainer.val_check_interval=2", "--trainer.enable_checkpointing=false")
    for tag in ("train/loss", "val/loss", "test/loss"):
        assert len(read_scalars(tmp_path / "run" / "version_0", tag)[0]) > 0, tag


def test_a_config_with_a_task_that_is_no_proxy_stops_before_training(tmp_path):
    with pytest.raises((ConfigError, TypeError), match="serves a proxy task"):
        _fit(tmp_path, "p_hq.yaml", "bad", 2, "--model.task=zolab.tasks.toy.Linear", "--model.task.init_args={}")
