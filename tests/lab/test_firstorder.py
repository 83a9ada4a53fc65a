"""FirstOrderModule through ``zolab fit --first_order``: the tags and hparams of a ZO run, learning, exact
resume with dropout, errors."""

import json

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from paper_figures._tb import read_scalars, scalar_tags
from tests.tasks._tiny_encoder import saved_bert, sentences, sst2_folder
from zolab.lab.cli import ConfigError, cli_main
from zolab.lab.firstorder import FirstOrderModule
from zolab.lab.module import ZOModule
from zolab.tasks.text import sst2_prompt

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fo")
    return saved_bert(root / "bert", dropout=0.1), sst2_folder(root / "sst2", n_train=32, n_dev=12)


def fo_config(folders, steps=6, mode="full", lr=1e-2, callbacks=None, dropout=True):
    bert, data = folders
    return {
        "trainer": {"max_steps": steps, "accelerator": "cpu", "log_every_n_steps": 1, "val_check_interval": 3,
                    "check_val_every_n_epoch": None, "callbacks": callbacks or []},
        "model": {
            "task": {"class_path": "zolab.tasks.encoder.EncoderClassifier",
                     "init_args": {"model": str(bert), "mode": mode, "head_init": "verbalizer"}},
            "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": lr}},
            "dropout": dropout, "seed": 3, "step_cost_every": 2,
        },
        "data": {"class_path": "zolab.tasks.text.SST2DataModule",
                 "init_args": {"data_dir": str(data), "n_train": 24, "n_val": 8, "batch_size": 4,
                               "eval_batch_size": 8}},
    }


def fit(config, root, name, *extra):
    return cli_main(["fit", "--first_order", "--config", json.dumps(config), f"--trainer.default_root_dir={root}",
                     f"--name={name}", *QUIET, *extra])


def test_the_flag_picks_the_module_and_is_not_passed_on(folders, tmp_path):
    config = fo_config(folders)
    cli = cli_main(["--first_order", "--config", json.dumps(config), f"--trainer.default_root_dir={tmp_path}"],
                   run=False)
    assert type(cli.model) is FirstOrderModule
    assert type(cli.model.build_optimizer()) is torch.optim.Adam
    zo = {**config, "model": {"task": config["model"]["task"]}}
    assert type(cli_main(["--config", json.dumps(zo), f"--trainer.default_root_dir={tmp_path}"],
                         run=False).model) is ZOModule


def test_a_zo_rule_is_refused_before_training(folders, tmp_path):
    config = fo_config(folders)
    config["model"]["optimizer"] = {"class_path": "zolab.ZOSGD", "init_args": {"lr": 1e-3}}
    with pytest.raises(ConfigError, match="first-order torch.optim.Optimizer .* got ZOSGD"):
        fit(config, tmp_path, "zo")


def test_logs_the_tags_of_a_zo_run_and_the_final_test(folders, tmp_path):
    cli = fit(fo_config(folders, callbacks=[{"class_path": "zolab.lab.final_test.FinalTest"}]), tmp_path, "tags")
    run = tmp_path / "tags" / "version_0"
    hp = yaml.safe_load((run / "hparams.yaml").read_text())
    assert (hp["rule"], hp["lr"], hp["seed"], hp["first_order"], hp["task.mode"]) == ("Adam", 0.01, 3, True, "full")
    assert {"train/loss", "train/lr", "val/loss", "val/acc", "test/loss", "test/acc",
            "diagnostics/step_cost/wall_ms", "diagnostics/step_cost/peak_rss_mib"} <= set(scalar_tags(run))
    assert read_scalars(run, "train/loss")[0].tolist() == [0, 1, 2, 3, 4, 5]
    steps, wall = read_scalars(run, "diagnostics/step_cost/wall_ms")
    assert steps.tolist() == [0, 1, 3, 5] and (wall > 0).all()  # steps 1, 2, 4, 6 at x = t - 1
    steps, acc = read_scalars(run, "test/acc")
    assert steps.tolist() == [5]  # the last step's x
    from zolab.lab.final_test import evaluate

    cli.datamodule.setup("test")
    again = evaluate(cli.model.task, cli.datamodule.test_dataloader(), cli.model.device)
    assert acc[0] == pytest.approx(again["acc"]) and read_scalars(run, "test/loss")[1][0] == pytest.approx(
        again["loss"], rel=1e-6)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_backprop_lowers_the_loss(folders, tmp_path, mode):
    config = fo_config(folders, steps=8, mode=mode, lr=3e-2 if mode == "lora" else 1e-2, dropout=False)
    config["data"] = {"class_path": f"{__name__}.FixedBatch"}
    config["trainer"]["val_check_interval"] = 8
    start = FixedBatch()
    cli = fit(config, tmp_path, mode)
    _, loss = read_scalars(tmp_path / mode / "version_0", "train/loss")
    val = read_scalars(tmp_path / mode / "version_0", "val/loss")[1][-1]
    assert val < loss[0] - 0.05, (loss, val)  # the same batch: f(θ_8) against f(θ_0)
    assert start.batch == cli.datamodule.batch


class FixedBatch(L.LightningDataModule):
    """The same 8 sentences every step: resuming cannot change the data (SST2DataModule's order does not
    resume mid-epoch), so the parameters, Adam's state and the dropout masks are what is tested."""

    def __init__(self, n: int = 8):
        super().__init__()
        self.batch = [sst2_prompt({"sentence": s, "label": y}) for s, y in sentences(n)]

    def train_dataloader(self):
        return DataLoader([self.batch] * 100, batch_size=None)

    def val_dataloader(self):
        return DataLoader([self.batch], batch_size=None)


@pytest.mark.slow
def test_resume_continues_exactly_with_dropout(folders, tmp_path):
    def config(steps):
        c = fo_config(folders, steps=steps)
        c["data"] = {"class_path": f"{__name__}.FixedBatch"}
        c["trainer"]["val_check_interval"] = 4  # the first leg's checkpoint is saved after step 4's validation
        return c

    full = fit(config(8), tmp_path, "full")
    first = fit(config(4), tmp_path, "legs")
    (ckpt,) = (tmp_path / "legs" / "version_0" / "checkpoints").glob("*.ckpt")
    assert "first_order_rng_state" in torch.load(ckpt, weights_only=True)
    second = fit(config(8), tmp_path, "legs", f"--ckpt_path={ckpt}")
    assert first.trainer.global_step == 4 and second.trainer.global_step == 8
    for (n, a), (_, b) in zip(full.model.task.named_parameters(), second.model.task.named_parameters()):
        assert torch.equal(a, b), n  # bitwise
    steps_full, loss_full = read_scalars(tmp_path / "full" / "version_0", "train/loss")
    steps_a, loss_a = read_scalars(tmp_path / "legs" / "version_0", "train/loss")
    steps_b, loss_b = read_scalars(tmp_path / "legs" / "version_1", "train/loss")
    assert steps_a.tolist() + steps_b.tolist() == steps_full.tolist() == list(range(8))
    assert loss_a.tolist() + loss_b.tolist() == loss_full.tolist()
    assert read_scalars(tmp_path / "legs" / "version_1", "val/loss")[0].tolist() == [7]


def test_dropout_seed_changes_the_run(folders, tmp_path):
    a = fit(fo_config(folders, steps=3), tmp_path, "a")
    b = fit(fo_config(folders, steps=3), tmp_path, "b", "--model.seed=4")
    assert not torch.equal(a.model.task.head.weight, b.model.task.head.weight)
