"""``zolab fit`` on two processes (zolab.lab.strategy.ZOStrategy, gloo on the CPU): query parallel is bitwise the
one-process run, data parallel too on an exact objective, a two-process checkpoint resumes in one process, and
DDP is refused before training with an error that names the strategy to use."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def zolab_fit(tmp_path, name, *extra, steps=12):
    args = [sys.executable, "-m", "zolab.entry", "fit", "--model.task=zolab.tasks.synthetic.Quadratic",
            "--model.task.init_args.dim=50", "--model.optimizer=zolab.RAdaZO", "--model.optimizer.init_args.lr=0.02",
            "--model.optimizer.init_args.mu=0.05", "--model.optimizer.init_args.num_queries=4",
            "--data=zolab.tasks.synthetic.SyntheticDataModule", f"--trainer.max_steps={steps}",
            f"--trainer.default_root_dir={tmp_path}", f"--name={name}", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def final_x(tmp_path, name, version="version_0"):
    (ckpt,) = (tmp_path / name / version / "checkpoints").glob("*step=*.ckpt")
    return torch.load(ckpt, weights_only=True)["state_dict"]["task.x"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("strategy")
    procs = {
        "one": zolab_fit(tmp, "one"),
        "query": zolab_fit(tmp, "query", "--trainer.strategy=zolab.lab.strategy.ZOStrategy",
                           "--trainer.strategy.query=2", "--trainer.devices=2"),
        "data": zolab_fit(tmp, "data", "--trainer.strategy=zo", "--trainer.devices=2"),
    }
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, proc.stderr[-3000:])
    return tmp, procs


def test_query_and_data_parallel_fit_equal_the_one_process_fit(runs):
    tmp, procs = runs
    one = final_x(tmp, "one")
    assert torch.equal(final_x(tmp, "query"), one)
    assert torch.equal(final_x(tmp, "data"), one)  # an exact objective: every shard's loss is the same
    assert "data parallel 1 × query parallel 2" in procs["query"].stderr + procs["query"].stdout


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_in_one_process(runs, tmp_path):
    tmp, _ = runs
    (ckpt,) = (tmp / "query" / "version_0" / "checkpoints").glob("*step=12.ckpt")
    proc = zolab_fit(tmp, "query", f"--ckpt_path={ckpt}", "--version=resumed", steps=20)
    assert proc.returncode == 0, proc.stderr[-3000:]
    straight = zolab_fit(tmp_path, "straight", steps=20)
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert torch.equal(final_x(tmp, "query", "resumed"), final_x(tmp_path, "straight"))


@pytest.mark.slow
def test_ddp_is_refused_before_training_naming_zolabs_strategy(tmp_path):
    proc = zolab_fit(tmp_path, "ddp", "--trainer.strategy=ddp", "--trainer.devices=2")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "use --trainer.strategy=zo" in proc.stderr and "unrelated models" in proc.stderr
    assert not list(tmp_path.glob("ddp/*/checkpoints/*.ckpt"))
