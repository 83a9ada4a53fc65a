"""FinalTest: test/* on the test split at the end of fit, at the last step's x, without changing the run."""

import json

import pytest
import torch

from paper_figures._tb import read_scalars
from tests.tasks._tiny_encoder import saved_bert, sst2_folder
from zolab.lab.cli import cli_main
from zolab.lab.final_test import FinalTest, evaluate


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("final")
    return saved_bert(root / "bert"), sst2_folder(root / "sst2", n_train=16, n_dev=10)


def zo_fit(folders, root, name, steps=5, callbacks=True):
    bert, data = folders
    config = {
        "trainer": {"max_steps": steps, "accelerator": "cpu", "log_every_n_steps": 1, "enable_progress_bar": False,
                    "enable_model_summary": False, "limit_val_batches": 0,
                    "callbacks": [{"class_path": "zolab.lab.final_test.FinalTest"}] if callbacks else []},
        "model": {"task": {"class_path": "zolab.tasks.encoder.EncoderClassifier",
                           "init_args": {"model": str(bert), "mode": "lora", "head_init": "verbalizer"}},
                  "optimizer": {"class_path": "zolab.ZOSGD", "init_args": {"lr": 0.1, "mu": 1e-3}}},
        "data": {"class_path": "zolab.tasks.text.SST2DataModule",
                 "init_args": {"data_dir": str(data), "n_train": 12, "n_val": 4, "batch_size": 4,
                               "eval_batch_size": 3}},  # 10 test sentences in batches of 3, 3, 3, 1
    }
    return cli_main(["fit", "--config", json.dumps(config), f"--trainer.default_root_dir={root}", f"--name={name}"])


def test_logs_the_weighted_test_metrics_at_the_last_step_and_changes_nothing(folders, tmp_path):
    with_test = zo_fit(folders, tmp_path, "with")
    without = zo_fit(folders, tmp_path, "without", callbacks=False)
    for (n, a), (_, b) in zip(with_test.model.task.named_parameters(), without.model.task.named_parameters()):
        assert torch.equal(a, b), n
    run = tmp_path / "with" / "version_0"
    steps, acc = read_scalars(run, "test/acc")
    _, loss = read_scalars(run, "test/loss")
    assert steps.tolist() == [4] and read_scalars(run, "train/loss")[0][-1] == 4
    task, dm = without.model.task, without.datamodule
    dm.setup("test")
    assert len(dm.test_set) == 10
    with torch.no_grad():
        task.eval()
        ref = task.metrics(dm.test_set)  # all 10 at once: the batch-size weighting must give the same means
    assert acc[0] == pytest.approx(float(ref["acc"])) and loss[0] == pytest.approx(float(ref["loss"]), rel=1e-5)
    (callback,) = [c for c in with_test.trainer.callbacks if isinstance(c, FinalTest)]
    assert callback.metrics["acc"] == pytest.approx(float(ref["acc"]))


def test_evaluate_restores_modes_and_refuses_an_empty_loader(folders):
    from tests.tasks._tiny_encoder import tiny_bert
    from zolab.tasks.encoder import EncoderClassifier

    task = EncoderClassifier(*tiny_bert(dropout=0.5), mode="full").train()
    task.head.eval()
    with pytest.raises(ValueError, match="the test dataloader is empty"):
        evaluate(task, [], "cpu")
    assert task.training and task.encoder.training and not task.head.training


def test_a_run_it_cannot_test_is_refused_before_training():
    class Trainer:
        datamodule = None

    class Module:
        task = None

    with pytest.raises(ValueError, match="needs a LightningDataModule with test_dataloader"):
        FinalTest().setup(Trainer(), Module(), "fit")
    with pytest.raises(TypeError, match="Module has no 'task'"):
        FinalTest().setup(Trainer(), object.__new__(type("Module", (), {})), "fit")
    FinalTest().setup(Trainer(), Module(), "validate")  # only fit is tested at its end
    with pytest.raises(ValueError, match="prefix=''"):
        FinalTest(prefix="")
