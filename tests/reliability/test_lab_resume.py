"""Data tasks resume exactly (the shuffled loader, SST-2 after Ctrl-C mid-epoch, dropout masks), and a resumed run
logs where the uninterrupted one does. Each test failed before its fix."""

import json
import signal

import pytest
import torch
from torch.utils.data import DataLoader

from paper_figures._tb import read_scalars
from tests.reliability._lab import SST2, quadratic_args, sst2_config, sst2_texts, tiny_lm_folder
from zolab.lab.cli import cli_main
from zolab.lab.interrupt import Interrupted
from zolab.tasks.base import ResumableLoader

needs_data = pytest.mark.skipif(not SST2.is_dir(), reason="no ../shared/data")
SIGNAL_AT = "tests.reliability._lab.SignalAt"


# ---------------------------------------------------------------- data tasks resume exactly
def _epoch(loader):
    """One epoch as Lightning reads a sized loader: len(loader) batches, not one more."""
    batches = iter(loader)
    return [next(batches).tolist() for _ in range(len(loader))]


@pytest.mark.parametrize("n, batch_size", [(10, 3), (12, 4), (5, 8)])
def test_resumable_loader_is_the_plain_shuffled_loader_and_resumes_at_any_batch(n, batch_size):
    """Same batches as DataLoader(shuffle=True, generator=seeded) for 4 epochs; a loader restored from the state
    after k batches of epoch e yields the rest of that epoch, then the next epoch, as the plain one does."""
    data = list(range(n))
    plain = DataLoader(data, batch_size, shuffle=True, generator=torch.Generator().manual_seed(5))
    epochs = [_epoch(plain) for _ in range(5)]
    loader = ResumableLoader(data, batch_size, seed=5)
    assert [_epoch(loader) for _ in range(5)] == epochs
    for e in range(3):
        for k in range(1, len(loader) + 1):
            first = ResumableLoader(data, batch_size, seed=5)
            for _ in range(e):
                _epoch(first)
            batches = iter(first)
            for _ in range(k):
                next(batches)
            state = first.state_dict()
            assert state["batches"] == k
            resumed = ResumableLoader(data, batch_size, seed=5)
            resumed.load_state_dict(state)
            rest = iter(resumed)
            if k < len(loader):
                assert [next(rest).tolist() for _ in range(len(loader) - k)] == epochs[e][k:]
                assert _epoch(resumed) == epochs[e + 1]
            else:  # saved at the epoch's end: the next iteration is the next epoch
                assert [next(rest).tolist() for _ in range(len(loader))] == epochs[e + 1]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    if not SST2.is_dir():
        pytest.skip("no ../shared/data")
    return tiny_lm_folder(tmp_path_factory.mktemp("tiny_lm"), sst2_texts())


def _sst2(tiny_lm, root, name, steps, *extra):
    return ["fit", "--config", json.dumps(sst2_config(tiny_lm, steps=steps)), f"--trainer.default_root_dir={root}",
            f"--name={name}", *extra]


def _lora(cli):
    return {n: p.detach().clone() for n, p in cli.model.task.zo_named_parameters()}


@needs_data
@pytest.mark.slow
def test_sst2_resumes_exactly_after_ctrl_c_mid_epoch_and_from_an_epoch_checkpoint(tiny_lm, tmp_path):
    """SST-2 with a tiny LoRA Llama, 4 batches an epoch, 10 steps. Ctrl-C inside step 7 (mid-epoch 2) and a resume
    from its checkpoint; and a resume from the end-of-epoch checkpoint at step 4: the LoRA tensors and every
    logged train/loss and val/loss are bitwise the uninterrupted run's (the shuffled loader used to restart its
    epoch: other batches, other parameters)."""
    full = cli_main(_sst2(tiny_lm, tmp_path, "full", 10))
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(Interrupted) as stop:
            cli_main(_sst2(tiny_lm, tmp_path, "cut", 10, f"--trainer.callbacks+={SIGNAL_AT}",
                           "--trainer.callbacks.step=6"))
    finally:
        signal.signal(signal.SIGINT, handler)
    assert stop.value.step == 7 and stop.value.saved.endswith("on_exception.ckpt")
    resumed = cli_main(_sst2(tiny_lm, tmp_path, "cut", 10, f"--ckpt_path={stop.value.saved}"))
    assert all(torch.equal(p, _lora(full)[n]) for n, p in _lora(resumed).items())
    for tag in ("train/loss", "val/loss"):
        steps, values = read_scalars(tmp_path / "full" / "version_0", tag)
        a = read_scalars(tmp_path / "cut" / "version_0", tag)
        b = read_scalars(tmp_path / "cut" / "version_1", tag)
        assert a[0].tolist() + b[0].tolist() == steps.tolist(), tag
        assert a[1].tolist() + b[1].tolist() == values.tolist(), tag

    # from the first leg's end-of-epoch checkpoint (step 4: the loader at the start of epoch 2)
    legs = cli_main(_sst2(tiny_lm, tmp_path, "legs", 4))
    (ckpt,) = (tmp_path / "legs" / "version_0" / "checkpoints").glob("epoch=0-step=4.ckpt")
    assert legs.trainer.global_step == 4
    second = cli_main(_sst2(tiny_lm, tmp_path, "legs", 10, f"--ckpt_path={ckpt}"))
    assert all(torch.equal(p, _lora(full)[n]) for n, p in _lora(second).items())


def test_dropout_during_zo_forwards_resumes_exactly(tmp_path):
    """zo_dropout=True draws dropout masks from the global RNG, which Lightning re-seeds when a run starts: the
    resumed run drew other masks. The checkpoint now holds the RNG state."""
    task = ["--model.task=tests.reliability._lab.DropoutQuadratic", "--model.zo_dropout=true"]
    full = cli_main(quadratic_args(tmp_path, *task, steps=12, name="full"))
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(Interrupted) as stop:
            cli_main(quadratic_args(tmp_path, *task, f"--trainer.callbacks+={SIGNAL_AT}", "--trainer.callbacks.step=5",
                                    steps=12, name="cut"))
    finally:
        signal.signal(signal.SIGINT, handler)
    resumed = cli_main(quadratic_args(tmp_path, *task, f"--ckpt_path={stop.value.saved}", steps=12, name="cut"))
    assert resumed.trainer.global_step == 12 and torch.equal(full.model.task.x, resumed.model.task.x)


# ---------------------------------------------------------------- logging positions
@pytest.mark.parametrize("steps_per_batch", [1, 2])
def test_a_run_resumed_from_a_periodic_checkpoint_logs_where_the_uninterrupted_one_does(tmp_path,
                                                                                                steps_per_batch):
    """30 steps, an epoch of 10 steps with its checkpoint and validation, train/* every 5 steps (batches): the
    run resumed from the step-20 checkpoint logged train/loss 5 steps late and val/loss one step off."""
    extra = ["--trainer.log_every_n_steps=5", f"--model.steps_per_batch={steps_per_batch}"]
    cli_main(quadratic_args(tmp_path, *extra, steps=30, name="full", per_epoch=10))
    cli_main(quadratic_args(tmp_path, *extra, steps=20, name="legs", per_epoch=10))
    (ckpt,) = (tmp_path / "legs" / "version_0" / "checkpoints").glob("*.ckpt")
    cli_main(quadratic_args(tmp_path, *extra, f"--ckpt_path={ckpt}", steps=30, name="legs", per_epoch=10))
    for tag in ("train/loss", "train/lr", "train/forwards", "val/loss"):
        steps, values = read_scalars(tmp_path / "full" / "version_0", tag)
        a = read_scalars(tmp_path / "legs" / "version_0", tag)
        b = read_scalars(tmp_path / "legs" / "version_1", tag)
        assert a[0].tolist() + b[0].tolist() == steps.tolist(), tag
        assert a[1].tolist() + b[1].tolist() == values.tolist(), tag
    every = 5 * steps_per_batch
    assert read_scalars(tmp_path / "full" / "version_0", "train/loss")[0].tolist() == list(range(every - 1, 30, every))
    assert read_scalars(tmp_path / "full" / "version_0", "val/loss")[0].tolist() == [9, 19, 29]
    assert ckpt.name == "epoch=1-step=20.ckpt"  # named by the ZO step (a logged "step" used to rename it)
