"""T1's data (SST-2 as cached frozen-encoder features) on a tiny SST-2 folder and a tiny random BERT: seeded
disjoint splits, the cache under the runs root, bad settings, and `zolab fit` learning and resuming exactly."""

import json
import signal

import pytest
import torch

from paper_figures._tb import read_scalars
from tests.tasks._tiny_encoder import saved_bert, sst2_folder
from zolab.lab.cli import Interrupted, cli_main
from zolab.tasks.sst2_features import SST2FeaturesDataModule, TensorRows
from zolab.tasks.text import read_sst2

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("t1")
    return sst2_folder(root / "sst2", n_train=240, n_dev=40), saved_bert(root / "bert"), root / "cache"


def module(tiny, **kw):
    data, bert, cache = tiny
    dm = SST2FeaturesDataModule(str(data), model=str(bert), cache_dir=str(cache), **{"n_val": 40, **kw})
    dm.setup()
    return dm


def test_splits_are_disjoint_seeded_and_test_is_dev(tiny):
    dm = module(tiny)
    train, val = set(dm.train_rows.tolist()), set(dm.val_rows.tolist())
    assert len(train) == 200 and len(val) == 40 and not train & val and train | val == set(range(240))
    assert len(dm.test_set) == 40
    labels = [r["label"] for r in read_sst2(tiny[0] / "dev.tsv")]
    assert dm.test_set.y.tolist() == labels
    again, reshuffled = module(tiny), module(tiny, seed=5)  # the batch order's seed leaves the split alone
    assert torch.equal(again.val_rows, dm.val_rows) and torch.equal(reshuffled.val_rows, dm.val_rows)
    other = module(tiny, split_seed=1)
    assert set(other.val_rows.tolist()) != val
    assert len(module(tiny, n_train=50).train_set) == 50
    x, y = dm.val_set.__getitems__([0, 3])
    assert torch.equal(x, dm.val_set.x[[0, 3]]) and torch.equal(y, dm.val_set.y[[0, 3]])


def test_standardize_uses_the_training_split_statistics(tiny):
    dm = module(tiny, standardize=True)
    x = dm.train_set.x
    assert torch.allclose(x.mean(0), torch.zeros(16), atol=1e-5)
    assert torch.allclose(x.std(0), torch.ones(16), atol=1e-4)
    assert not torch.allclose(dm.val_set.x.mean(0), torch.zeros(16), atol=1e-3)  # not its own statistics


def test_full_batches_are_the_training_split_once_in_order_at_the_batch_size(tiny):
    dm = module(tiny, batch_size=64)  # 200 training rows: 64, 64, 64, 8
    batches = dm.full_batches()
    assert [len(y) for _, y in batches] == [64, 64, 64, 8]
    assert torch.equal(torch.cat([x for x, _ in batches]), dm.train_set.x)
    assert torch.equal(torch.cat([y for _, y in batches]), dm.train_set.y)


@pytest.mark.parametrize("kw, message", [
    (dict(batch_size=0), "batch_size=0; allowed: an integer >= 1"),
    (dict(n_val=0), "n_val=0; allowed: an integer >= 1"),
    (dict(n_train=0), "n_train=0; allowed: an integer >= 1"),
    (dict(split_seed=-3), "split_seed=-3; allowed: an integer in"),
    (dict(standardize="yes"), "standardize='yes'; allowed: true or false"),
    (dict(pooling="max"), "pooling='max'; allowed"),
])
def test_bad_settings_are_named_at_construction(tiny, kw, message):
    data, bert, cache = tiny
    with pytest.raises(ValueError, match=message):
        SST2FeaturesDataModule(str(data), model=str(bert), cache_dir=str(cache), **kw)


def test_splits_that_do_not_fit_are_named(tiny):
    with pytest.raises(ValueError, match="n_val=240 leaves no training sentence of the 240"):
        module(tiny, n_val=240)
    with pytest.raises(ValueError, match="n_train \\+ n_val = 260 exceeds the 240"):
        module(tiny, n_train=220)
    with pytest.raises(ValueError, match="TensorRows: 3 inputs but 2 labels"):
        TensorRows(torch.zeros(3, 2), torch.zeros(2))


def config(tiny, root, steps=30, **data):
    folder, bert, _ = tiny
    return {
        "seed_everything": 0,
        "trainer": {"max_steps": steps, "accelerator": "cpu", "log_every_n_steps": 1, "val_check_interval": 10,
                    "check_val_every_n_epoch": None, "default_root_dir": str(root), **QUIET,
                    "callbacks": [{"class_path": "zolab.lab.final_test.FinalTest"}]},
        "model": {
            "task": {"class_path": "zolab.tasks.mlp.MLPClassifier",
                     "init_args": {"in_features": 16, "num_classes": 2, "hidden": [8]}},
            "optimizer": {"class_path": "zolab.ZOSGD",
                          "init_args": {"lr": 0.03, "mu": 1e-3, "num_queries": 1, "estimator": "central"}},
        },
        "data": {"class_path": "zolab.tasks.sst2_features.SST2FeaturesDataModule",
                 "init_args": {"data_dir": str(folder), "model": str(bert), "n_val": 40, "batch_size": 16,
                               "eval_batch_size": 64, "standardize": True, **data}},
    }


def fit(cfg, *extra):
    return cli_main(["fit", "--config", json.dumps(cfg), *extra])


def test_zolab_fit_learns_logs_val_and_test_and_caches_under_the_runs_root(tiny, tmp_path):
    cli = fit(config(tiny, tmp_path, steps=120), "--name=t1")
    run = tmp_path / "t1" / "version_0"
    assert cli.trainer.global_step == 120 and cli.model.zo_optimizer.zo["forwards"] == 240
    assert [p.name.split("-mean128-")[0] for p in sorted((tmp_path / ".cache" / "features").glob("*.pt"))] == [
        "sst2-dev", "sst2-train"]  # the cache went under the runs root (the logger's save_dir)
    steps, losses = read_scalars(run, "train/loss")
    assert losses[-20:].mean() < losses[:20].mean() - 0.1, losses
    val_steps, val_acc = read_scalars(run, "val/acc")
    assert val_steps.tolist() == [9, 19, 29, 39, 49, 59, 69, 79, 89, 99, 109, 119]
    assert val_acc[-1] > 0.8  # the tiny sentences are separable by one word
    assert {"test/acc", "test/loss"} <= set(cli.trainer.callback_metrics)
    assert read_scalars(run, "test/acc")[1][-1] > 0.8


def test_a_resumed_run_continues_exactly(tiny, tmp_path):
    """Ctrl-C inside step 17 (mid-epoch 2 of 13-batch epochs), then --ckpt_path: the same head and the same logged
    train/loss and val/loss as the uninterrupted run."""
    cfg = config(tiny, tmp_path, steps=30, cache_dir=str(tiny[2]))
    full = fit(cfg, "--name=full")
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(Interrupted) as stop:
            fit(cfg, "--name=cut", "--trainer.callbacks+=tests.reliability._lab.SignalAt",
                "--trainer.callbacks.step=16")
    finally:
        signal.signal(signal.SIGINT, handler)
    assert stop.value.step == 17
    resumed = fit(cfg, "--name=cut", f"--ckpt_path={stop.value.saved}")
    assert resumed.trainer.global_step == 30
    for (name, p), (_, q) in zip(full.model.task.zo_named_parameters(), resumed.model.task.zo_named_parameters()):
        assert torch.equal(p, q), name
    for tag in ("train/loss", "val/loss"):
        steps, values = read_scalars(tmp_path / "full" / "version_0", tag)
        a = read_scalars(tmp_path / "cut" / "version_0", tag)
        b = read_scalars(tmp_path / "cut" / "version_1", tag)
        assert a[0].tolist() + b[0].tolist() == steps.tolist(), tag
        assert a[1].tolist() + b[1].tolist() == values.tolist(), tag
