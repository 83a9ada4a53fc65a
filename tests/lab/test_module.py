"""ZOModule: a zolab rule on a task inside Lightning (manual optimization), its logs and its checks."""

import functools

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch import nn

import zolab
from paper_figures._tb import read_hparams, read_scalars
from zolab.lab.module import ZOModule, check_precision
from zolab.tasks.base import Task
from zolab.tasks.synthetic import Quadratic, SyntheticDataModule


def _trainer(tmp_path, steps, **kwargs):
    kwargs.setdefault("logger", TensorBoardLogger(tmp_path, name="m", version="v", default_hp_metric=False))
    kwargs.setdefault("enable_checkpointing", False)
    return L.Trainer(max_steps=steps, log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, accelerator="cpu", **kwargs)


def test_lightning_path_equals_the_plain_loop(tmp_path):
    """Same parameters bitwise, and train/loss at logging step k is f(θ_k), the plain loop's k-th loss."""
    factory = functools.partial(zolab.RAdaZO, lr=0.05, mu=0.05, num_queries=3)
    module = ZOModule(Quadratic(dim=30, init_seed=1), optimizer=factory)
    _trainer(tmp_path, 6).fit(module, SyntheticDataModule())

    task = Quadratic(dim=30, init_seed=1)
    opt = factory([task.x])
    losses = [opt.step(task.loss, batched=task.batched_loss).item() for _ in range(6)]
    assert torch.equal(module.task.x, task.x)
    steps, values = read_scalars(tmp_path / "m" / "v", "train/loss")
    assert steps.tolist() == list(range(6))
    assert values.tolist() == pytest.approx(losses, rel=1e-7)
    forwards = read_scalars(tmp_path / "m" / "v", "train/forwards")[1]
    assert forwards.tolist() == [4.0 * t for t in range(1, 7)]  # K + 1 forwards per step


class _CountingQuadratic(Quadratic):
    def __init__(self, dim: int):
        super().__init__(dim=dim)
        self.loss_calls = self.batched_calls = 0

    def loss(self, batch=None):
        self.loss_calls += 1
        return super().loss(batch)

    def batched_loss(self, points, batch=None):
        self.batched_calls += 1
        return super().batched_loss(points, batch)


@pytest.mark.parametrize("supports_batched, loss_calls, batched_calls", [(True, 0, 4), (False, 4 * 5, 0)])
def test_a_batched_task_is_evaluated_in_one_call_per_step(tmp_path, supports_batched, loss_calls, batched_calls):
    task = _CountingQuadratic(dim=10)
    task.supports_batched = supports_batched
    module = ZOModule(task, optimizer=functools.partial(zolab.RAdaZO, lr=0.05, mu=0.05, num_queries=4))
    _trainer(tmp_path, 4, logger=False).fit(module, SyntheticDataModule())
    assert (task.loss_calls, task.batched_calls) == (loss_calls, batched_calls)
    assert module.zo_optimizer.zo["forwards"] == 4 * 5  # counted alike: K + 1 points per step


def test_hparams_are_logged_to_tensorboard(tmp_path):
    factory = functools.partial(zolab.ZOAdaMM, lr=0.02, mu=0.03, betas=(0.8, 0.95), num_queries=2, seed=5)
    module = ZOModule(Quadratic(dim=12), optimizer=factory)
    module.extra_hparams["task.dim"] = 12
    _trainer(tmp_path, 2).fit(module, SyntheticDataModule())
    hp = read_hparams(tmp_path / "m" / "v")
    assert hp["rule"] == "ZOAdaMM" and hp["task"] == "Quadratic" and hp["task_params"] == 12
    assert (hp["lr"], hp["mu"], hp["beta1"], hp["beta2"]) == (0.02, 0.03, 0.8, 0.95)
    assert (hp["num_queries"], hp["seed"], hp["estimator"], hp["directions"]) == (2, 5, "forward", "sphere")
    assert hp["granularity"] == "model"
    assert hp["task.dim"] == 12
    events = EventAccumulator(str(tmp_path / "m" / "v"))
    events.Reload()
    content = events.PluginTagToContent("hparams")  # TensorBoard's HPARAMS tab
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert session.session_start_info.hparams["lr"].number_value == pytest.approx(0.02)
    assert session.session_start_info.hparams["rule"].string_value == "ZOAdaMM"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert {m.name.tag for m in experiment.experiment.metric_infos} == {"train/loss", "val/loss"}
    assert "hp_metric" not in events.Tags()["scalars"]  # no placeholder metric


def test_schedules_and_state_storage_appear_in_hparams(tmp_path):
    module = ZOModule(Quadratic(dim=6), optimizer=functools.partial(zolab.ZOAdaMU, lr=1e-3, t1=2,
                                                                     state_dtype="bfloat16"))
    _trainer(tmp_path, 10, logger=False).fit(module, SyntheticDataModule())
    hp = module.zo_hparams()
    assert "ThreePhase" in hp["alpha"] and "ThreePhase" in hp["beta1"]
    assert (hp["state_dtype"], hp["state_rounding"]) == ("bfloat16", "stochastic")
    assert module.zo_optimizer.total_steps == 10  # filled from trainer.max_steps


class _DropoutTask(Task):
    def __init__(self):
        super().__init__()
        self.x = nn.Parameter(torch.ones(4))
        self.drop = nn.Dropout(0.5)
        self.modes = []

    def loss(self, batch=None):
        self.modes.append(self.drop.training)
        return self.x.square().sum()


@pytest.mark.parametrize("zo_dropout", [False, True])
def test_dropout_mode_during_zo_forwards(tmp_path, zo_dropout):
    task = _DropoutTask()
    module = ZOModule(task, optimizer=functools.partial(zolab.ZOSGD, lr=0.01), zo_dropout=zo_dropout)
    _trainer(tmp_path, 3, logger=False).fit(module, SyntheticDataModule())
    assert len(task.modes) == 6  # central estimator, K = 1: 2 forwards per step
    assert set(task.modes) == {zo_dropout}


def _cli_style_partial(cls, **init_args):
    """What LightningCLI passes for a Callable[[Iterable], ZOOptimizer]: partial(helper, instantiator, cls, ...)."""
    def helper(instantiator, class_, *args, **kwargs):
        return class_(*args, **kwargs)
    return functools.partial(helper, object(), cls, **init_args)


@pytest.mark.parametrize("make", [functools.partial, _cli_style_partial])
def test_total_steps_filled_from_max_steps_only_when_unset(make):
    module = ZOModule(Quadratic(dim=4), optimizer=make(zolab.ZOAdaMU, lr=1e-3, t1=2, total_steps=None))
    assert module.build_optimizer(max_steps=40).total_steps == 40
    module = ZOModule(Quadratic(dim=4), optimizer=make(zolab.ZOAdaMU, lr=1e-3, t1=2, total_steps=30))
    assert module.build_optimizer(max_steps=40).total_steps == 30
    module = ZOModule(Quadratic(dim=4), optimizer=make(zolab.ZOAdaMU, lr=1e-3, t1=2))
    with pytest.raises(ValueError, match="total_steps"):
        module.build_optimizer(max_steps=-1)


def test_build_optimizer_rejects_a_torch_optimizer():
    module = ZOModule(Quadratic(dim=4), optimizer=lambda params: torch.optim.SGD([p for _, p in params], lr=0.1))
    with pytest.raises(TypeError, match="ZOOptimizer.*SGD"):
        module.build_optimizer()


def test_task_must_be_a_task():
    with pytest.raises(TypeError, match="zolab.tasks.Task.*Linear"):
        ZOModule(nn.Linear(2, 2))


@pytest.mark.parametrize("given, expected", [
    (None, "32-true"), (32, "32-true"), ("32", "32-true"), ("32-true", "32-true"), (64, "64-true"),
    ("64-true", "64-true"), ("bf16", "bf16-mixed"), ("bf16-mixed", "bf16-mixed"), ("bf16-true", "bf16-true"),
    ("16-true", "16-true"),
])
def test_supported_precisions(given, expected):
    assert check_precision(given) == expected


@pytest.mark.parametrize("given", ["16-mixed", 16, "16"])
def test_16_mixed_is_refused_with_the_reason(given):
    with pytest.raises(ValueError, match=r"precision=.*16.*GradScaler.*closure.*allowed: 32, 64, bf16-mixed"):
        check_precision(given)


def test_other_precisions_are_refused():
    with pytest.raises(ValueError, match=r"'transformer-engine'.*allowed"):
        check_precision("transformer-engine")



# ---------------------------------------------------------------- several ZO steps per batch
def test_steps_per_batch_gives_the_same_run_on_the_zo_step_axis(tmp_path):
    """N steps a batch: the parameters of N× as many one-step batches, max_steps exact (7 is not a multiple
    of 3), and train/loss logged on the ZO-step axis with the values of the one-step run at those steps."""
    factory = functools.partial(zolab.RAdaZO, lr=0.05, mu=0.05, num_queries=3)
    one = ZOModule(Quadratic(dim=30, init_seed=1), optimizer=factory)
    _trainer(tmp_path, 7, logger=TensorBoardLogger(tmp_path, name="one", version="v")).fit(one, SyntheticDataModule())
    three = ZOModule(Quadratic(dim=30, init_seed=1), optimizer=factory, steps_per_batch=3)
    trainer = _trainer(tmp_path, 7, logger=TensorBoardLogger(tmp_path, name="three", version="v"))
    trainer.fit(three, SyntheticDataModule())
    assert trainer.global_step == 7 and three.zo_optimizer.zo["step"] == 7
    assert trainer.num_training_batches == 334  # the epoch stays 1,000 ZO steps: ⌈1000 / 3⌉ batches
    assert torch.equal(one.task.x, three.task.x)
    steps, values = read_scalars(tmp_path / "three" / "v", "train/loss")
    assert steps.tolist() == [2, 5, 6]  # the last step of each batch (3, 3, then 1), as one-step runs log it
    one_steps, one_values = read_scalars(tmp_path / "one" / "v", "train/loss")
    assert values.tolist() == one_values[steps].tolist()


def test_steps_per_batch_resumes_exactly(tmp_path):
    factory = functools.partial(zolab.ZOAdaMU, lr=0.05, mu=0.05, t1=4, total_steps=12)
    full = ZOModule(Quadratic(dim=20), optimizer=factory, steps_per_batch=4)
    _trainer(tmp_path, 12).fit(full, SyntheticDataModule())
    first = ZOModule(Quadratic(dim=20), optimizer=factory, steps_per_batch=4)
    trainer = _trainer(tmp_path, 8, default_root_dir=tmp_path, enable_checkpointing=True, logger=False)
    trainer.fit(first, SyntheticDataModule())
    ckpt = trainer.checkpoint_callback.best_model_path or trainer.checkpoint_callback.last_model_path
    assert ckpt, "no checkpoint written"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 8

    class Batches(L.Callback):
        n = 0

        def on_train_batch_end(self, *args):
            Batches.n += 1

    second = ZOModule(Quadratic(dim=20), optimizer=factory, steps_per_batch=4)
    _trainer(tmp_path, 12, logger=False, callbacks=[Batches()]).fit(second, SyntheticDataModule(), ckpt_path=ckpt,
                                                                    weights_only=True)
    assert Batches.n == 1  # resumed at step 8: one batch of 4 steps to 12
    assert torch.equal(full.task.x, second.task.x)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_steps_per_batch_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="steps_per_batch"):
        ZOModule(Quadratic(dim=3), steps_per_batch=bad)


def test_steps_per_batch_refuses_a_data_task():
    with pytest.raises(ValueError, match="batch carries nothing"):
        ZOModule(_DropoutTask(), steps_per_batch=2)


def test_probes_refuse_steps_per_batch(tmp_path):
    import diagnostics

    module = ZOModule(Quadratic(dim=5), steps_per_batch=2)
    with pytest.raises(ValueError, match="steps_per_batch=1"):
        _trainer(tmp_path, 4, callbacks=[diagnostics.StepCost(1)]).fit(module, SyntheticDataModule())
