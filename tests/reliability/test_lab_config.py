"""Bad input stops before training as ``zolab: error: ...``: config errors, n_test, malformed data files, seeds out
of range, a strategy that would let several processes diverge; the ``zolab`` command passes on a sweep's status.
Each test failed before its fix."""

import gc
import gzip
import json
import re
import runpy
import sys

import pytest
import yaml

from tests.reliability._lab import quadratic_args, snapshot
from zolab.lab.cli import main
from zolab.tasks.mnist import read_idx
from zolab.tasks.text import COPADataModule, SST2DataModule, read_copa, read_sst2


def _fails_before_training(capsys, tmp_path, args, match):
    """``zolab ARGS`` exits 2 with ``zolab: error:`` matching ``match``, no traceback, and no file written."""
    before = snapshot(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "zolab: error:" in err and "Traceback" not in err, err
    assert re.search(match, err, flags=re.S), err
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- config errors before training
@pytest.mark.parametrize("extra, match", [
    (["--model.optimizer=zolab.MeZOBCD", "--model.optimizer.init_args.blocks=[nomatch]"],
     r"model\.optimizer \(zolab\.MeZOBCD\): blocks: .*matches none of the regexes"),
    (["--model.optimizer=zolab.MeZOBCD", "--model.optimizer.init_args.blocks=[(]"], r"regex '\(' is invalid"),
    (["--model.optimizer=zolab.MeZOBCD", "--model.optimizer.init_args.blocks=5"], r"blocks='?5'?"),
    (["--model.optimizer.init_args.betas=[0.9, 0.99, 0.5]"], r"model\.optimizer \(zolab\.RAdaZO\): invalid betas"),
])
def test_optimizer_construction_errors_stop_zolab_fit_before_training(tmp_path, capsys, extra, match):
    _fails_before_training(capsys, tmp_path, quadratic_args(tmp_path, *extra), match)


@pytest.mark.parametrize("extra, match", [
    # each of these used to fail at step 1 (a ZeroDivisionError, after writing a checkpoint) or with a traceback
    (["--trainer.log_every_n_steps=0"], r"trainer\.log_every_n_steps=0; allowed: an integer >= 1"),
    (["--model.lr_scheduler=torch.optim.lr_scheduler.StepLR", "--model.lr_scheduler.init_args.step_size=0"],
     r"model\.lr_scheduler \(torch\.optim\.lr_scheduler\.StepLR\): ZeroDivisionError"),
    (["--trainer.accumulate_grad_batches=2"], r"gradient accumulation is not supported for manual optimization"),
    (["--trainer.gradient_clip_val=1.0"], r"gradient clipping is not supported for manual optimization"),
    (["--trainer.max_steps=-5"], r"`max_steps` must be a non-negative integer"),
    (["--seed_everything=99999999999"], r"seed_everything=99999999999; allowed: .*\[0, 2\*\*32\)"),
    (["--model.log_every_n_steps=0"], r"log_every_n_steps=0; allowed"),
    (["--model.steps_per_batch=2", "--trainer.callbacks+=diagnostics.StepCost", "--trainer.callbacks.every_n_steps=1"],
     r"StepCost reads every ZO step's record: it needs steps_per_batch=1"),
    (["--trainer.callbacks+=diagnostics.HessianSpectrum", "--trainer.callbacks.params=[nomatch]",
      "--trainer.callbacks.every_n_steps=3"], r"params=\['nomatch'\] match no trainable tensor"),
])
def test_other_config_errors_stop_before_training(tmp_path, capsys, extra, match):
    _fails_before_training(capsys, tmp_path, quadratic_args(tmp_path, *extra, steps=6), match)


# ---------------------------------------------------------------- n_test, sweep status, data, seeds
@pytest.mark.parametrize("n_test, match", [(-5, r"n_test=-5; allowed: an integer >= 0"), (2.5, r"n_test=2\.5"),
                                            (True, r"n_test=True")])
def test_n_test_outside_its_range_is_refused(tmp_path, n_test, match):
    """n_test=-5 used to drop the last 5 test examples silently."""
    with pytest.raises(ValueError, match=match):
        SST2DataModule(str(tmp_path), n_test=n_test)


def test_n_test_above_the_test_split_is_refused(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"s{i}\t{i % 2}\n" for i in range(10)))
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\na\t0\nb\t1\n")
    dm = SST2DataModule(str(tmp_path), n_train=4, n_val=2, n_test=3)
    with pytest.raises(ValueError, match=r"n_test=3 exceeds the 2 examples of .*dev\.tsv"):
        dm.setup()
    ok = SST2DataModule(str(tmp_path), n_train=4, n_val=2, n_test=2)
    ok.setup()
    assert len(ok.test_set) == 2


@pytest.mark.slow
def test_the_zolab_command_exits_non_zero_when_a_sweep_run_failed(tmp_path, monkeypatch, capsys):
    """`python -m zolab.entry sweep` (the `zolab` command) passes on the sweep's status: 1 when a run failed."""
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "s", "base": {"model": {"task": {"class_path": "zolab.tasks.synthetic.Quadratic",
                                                  "init_args": {"dim": 4}}},
                              "data": {"class_path": "zolab.tasks.synthetic.SyntheticDataModule"}},
        "grid": {"model.optimizer.init_args.lr": [-1.0]}, "args": ["--trainer.max_steps=2"]}))
    monkeypatch.setattr(sys, "argv", ["zolab", "sweep", str(spec), "--root", str(tmp_path / "runs")])
    monkeypatch.delitem(sys.modules, "zolab.entry", raising=False)  # runpy executes a fresh copy as __main__
    monkeypatch.setattr(gc, "freeze", lambda: None)  # the command's exit shortcut: this process goes on
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("zolab.entry", run_name="__main__")
    assert exit_.value.code == 1
    assert "1 failed" in capsys.readouterr().out


def _write(path, text: bytes):
    path.write_bytes(text)
    return path


@pytest.mark.parametrize("content, match", [
    (b"sentence\tlabel\nfine\t1\nbad \xff byte\t0\n", r"train\.tsv, line 3: not UTF-8 \(byte 0xff at column 5"),
    (b"sentence\tlabel\nfine\t1\ntoo\tmany\tfields\n", r"train\.tsv, line 3: 3 tab-separated field\(s\)"),
    (b"sentence\tlabel\nfine\t1\nno label here\n", r"train\.tsv, line 3: 1 tab-separated field\(s\)"),
    (b"sentence\tlabel\nfine\tpositive\n", r"train\.tsv, line 2: label 'positive'"),
    (b"", r"train\.tsv: empty file"),
])
def test_malformed_sst2_files_name_the_file_and_line(tmp_path, capsys, content, match):
    """A non-UTF-8 byte used to raise a bare UnicodeDecodeError without the file's name; through zolab fit the
    error is one line naming file and line, before training."""
    data = tmp_path / "data"
    data.mkdir()
    _write(data / "train.tsv", content)
    with pytest.raises(ValueError, match=match):
        read_sst2(data / "train.tsv")
    args = quadratic_args(tmp_path / "runs", "--data=zolab.tasks.text.SST2DataModule",
                          f"--data.init_args.data_dir={data}")
    _fails_before_training(capsys, tmp_path, args, rf"zolab: error: before training: .*{match}")


@pytest.mark.parametrize("line, match", [
    (b'{"premise": "p\xe9.", "choice1": "a", "choice2": "b", "question": "cause", "label": 0}',
     r"val\.jsonl, line 2: not UTF-8"),
    (b"[1, 2]", r"val\.jsonl, line 2: a JSON list; expected an object"),
    (b'{"premise": 3, "choice1": "a", "choice2": "b", "question": "cause", "label": 0}',
     r"val\.jsonl, line 2: premise 3; allowed: a string"),
    (b'{"premise": "p", "choice1": "a", "choice2": "b", "question": "cause", "label": true}',
     r"val\.jsonl, line 2: label True; allowed: 0 or 1"),
    (b'{"premise": "p", "choice1": "a"', r"val\.jsonl, line 2: not JSON"),
])
def test_malformed_copa_files_name_the_file_and_line(tmp_path, line, match):
    good = json.dumps({"premise": "p.", "choice1": "a.", "choice2": "b.", "question": "effect", "label": 1})
    path = _write(tmp_path / "val.jsonl", good.encode() + b"\n" + line + b"\n")
    with pytest.raises(ValueError, match=match):
        read_copa(path)


@pytest.mark.parametrize("keep", [0.5, -3])
def test_a_truncated_mnist_file_is_named(tmp_path, keep):
    raw = gzip.compress(b"\x00\x00\x08\x01" + (100).to_bytes(4, "big") + bytes(100))
    path = _write(tmp_path / "t10k-labels-idx1-ubyte.gz", raw[: int(len(raw) * keep) if keep > 0 else keep])
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz: not a complete gzip file"):
        read_idx(path)


@pytest.mark.parametrize("make, match", [
    (lambda d: SST2DataModule(d, seed=-1), r"seed=-1; allowed: an integer in \[0, 2\*\*63\)"),
    (lambda d: COPADataModule(d, seed=2**64), r"seed=18446744073709551616"),
    (lambda d: __import__("zolab.tasks.synthetic", fromlist=["Quadratic"]).Quadratic(dim=2, init_seed=2**70),
     r"init_seed=1180591620717411303424"),
    (lambda d: __import__("zolab.tasks.mnist", fromlist=["MNISTDataModule"]).MNISTDataModule(d, seed=True),
     r"seed=True"),
])
def test_seeds_outside_the_generators_range_are_refused(tmp_path, make, match):
    """torch.Generator.manual_seed wraps seeds modulo 2**64 (-1 is 2**64 - 1) or overflows: refused instead."""
    with pytest.raises(ValueError, match=match):
        make(str(tmp_path))


# ---------------------------------------------------------------- processes stay in step or are refused
@pytest.mark.parametrize("extra, strategy", [
    (["--trainer.strategy=ddp", "--trainer.devices=2"], "'ddp'"),
    (["--trainer.strategy=ddp_spawn", "--trainer.devices=2"], "'ddp_spawn'"),
    (["--trainer.devices=2"], "'auto'"),
    (["--trainer.num_nodes=2"], "'auto'"),
])
def test_a_strategy_that_would_diverge_is_refused_before_training(tmp_path, capsys, extra, strategy):
    """Trainer(strategy="ddp", devices=2) left the ranks with different parameters and no warning: any strategy
    but zolab's is refused with more than one process, naming the one to use (tests/lab/test_strategy.py runs it)."""
    args = quadratic_args(tmp_path, "--trainer.accelerator=cpu", *extra)
    _fails_before_training(capsys, tmp_path, args,
                           rf"trainer\.strategy={strategy} \(DDPStrategy\) .* runs 2 processes, each of which would "
                           r"step on its own data \(unrelated models\): use --trainer.strategy=zo")


def test_a_plain_trainer_with_ddp_is_refused_by_the_module(tmp_path, monkeypatch):
    """Without the CLI: ZOModule itself refuses several processes under any strategy but zolab's."""
    import functools

    import lightning as L

    import zolab
    from zolab.lab.module import ZOModule
    from zolab.tasks.synthetic import Quadratic

    module = ZOModule(Quadratic(dim=4), optimizer=functools.partial(zolab.ZOSGD, lr=0.01))
    trainer = L.Trainer(strategy="ddp", devices=2, accelerator="cpu", max_steps=1, logger=False)
    monkeypatch.setattr(L.Trainer, "world_size", property(lambda self: 2))  # what the launched processes see
    module.trainer = trainer
    with pytest.raises(ValueError, match=r"runs 2 processes, each of which would step on its own data.*strategy=zo"):
        module.setup("fit")
