"""Shared pieces of the lab's reliability tests: tiny runs, a signal sent at a chosen step, file snapshots."""

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from zolab.tasks.synthetic import Quadratic

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("ZOLAB_TEST_DATA") or REPO.parent / "shared" / "data")  # ../shared/data beside the repo
SST2 = DATA / "glue-sst2"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def quadratic_args(root, *extra, rule="zolab.RAdaZO", dim=16, steps=10, name="t", per_epoch=1000):
    """``zolab fit`` arguments: a tiny Quadratic, logging every step, runs under ``root``."""
    return [
        "fit", "--model.task=zolab.tasks.synthetic.Quadratic", f"--model.task.init_args.dim={dim}",
        f"--model.optimizer={rule}", "--model.optimizer.init_args.lr=0.02", "--model.optimizer.init_args.mu=0.05",
        "--data=zolab.tasks.synthetic.SyntheticDataModule", f"--data.init_args.steps_per_epoch={per_epoch}",
        "--trainer.log_every_n_steps=1", f"--trainer.default_root_dir={root}", f"--trainer.max_steps={steps}",
        f"--name={name}", *QUIET, *extra,
    ]


class SignalAt(Callback):
    """Sends this process ``signum`` when the training batch of global step ``step`` starts (a signal that
    lands inside a step, as a user's Ctrl-C or a scheduler's SIGTERM would)."""

    def __init__(self, step: int = 0, signum: int = int(signal.SIGINT)):
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class DropoutQuadratic(Quadratic):
    """½‖dropout(x)‖²: with ``zo_dropout=True`` every ZO forward draws a dropout mask from the global RNG."""

    supports_batched = False

    def __init__(self, dim: int = 16, init_seed: int = 0, p: float = 0.3):
        super().__init__(dim=dim, init_seed=init_seed)
        self.drop = torch.nn.Dropout(p)

    def loss(self, batch=None):
        return 0.5 * self.drop(self.x).square().sum()


class SlowQuadratic(Quadratic):
    """A Quadratic whose steps take at least ``sleep`` seconds (so that a signal from outside lands mid-run)."""

    def __init__(self, dim: int = 8, init_seed: int = 0, sleep: float = 0.002):
        super().__init__(dim=dim, init_seed=init_seed)
        self.sleep = sleep

    def batched_loss(self, points, batch=None):
        import time

        time.sleep(self.sleep)
        return super().batched_loss(points, batch)


def snapshot(root) -> dict[str, str]:
    """Every file below ``root`` (relative path -> sha256), to prove what a command wrote or deleted."""
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def final_state(run_dir) -> tuple[dict[str, torch.Tensor], int]:
    """The state_dict and global_step of a run's newest checkpoint (its largest global_step)."""
    ckpts = [torch.load(p, weights_only=True, map_location="cpu") for p in Path(run_dir).glob("checkpoints/*.ckpt")]
    ckpt = max(ckpts, key=lambda c: c["global_step"])
    return ckpt["state_dict"], ckpt["global_step"]


def zolab_process(args, cwd, **kwargs) -> subprocess.Popen:
    """``python -m zolab.entry ARGS`` (the ``zolab`` command) in its own process, importing this checkout's zolab."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "zolab.entry", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def tiny_lm_folder(folder: Path, texts) -> Path:
    """A tiny random Llama and its word tokenizer over ``texts``, saved as a model folder zolab can load."""
    from tests.tasks._tiny import tiny_llama, word_tokenizer

    tok = word_tokenizer(texts)
    tiny_llama(len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def sst2_texts(n_train=16, n_val=4, seed=42) -> list[str]:
    from zolab.tasks.text import SST2DataModule

    dm = SST2DataModule(str(SST2), n_train=n_train, n_val=n_val, n_test=0, seed=seed)
    dm.setup()
    return [o for e in dm.train_set + dm.val_set for o in e.options]


def sst2_config(model_dir, steps=10, n_train=16, batch_size=4) -> dict:
    """A tiny LoRA SST-2 run (``n_train / batch_size`` steps an epoch, validation on 4 examples each epoch)."""
    return {
        "trainer": {"max_steps": steps, "accelerator": "cpu", "log_every_n_steps": 1, "limit_val_batches": 1,
                    "enable_progress_bar": False, "enable_model_summary": False},
        "model": {
            "task": {"class_path": "zolab.tasks.lm.LMTask", "init_args": {"model": str(model_dir), "mode": "lora"}},
            "optimizer": {"class_path": "zolab.ZOSGD", "init_args": {"lr": 0.05, "mu": 1e-2}},
        },
        "data": {"class_path": "zolab.tasks.text.SST2DataModule",
                 "init_args": {"data_dir": str(SST2), "n_train": n_train, "n_val": 4, "n_test": 0,
                               "batch_size": batch_size, "eval_batch_size": 4}},
    }
