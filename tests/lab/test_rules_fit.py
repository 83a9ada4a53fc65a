"""The newer rules (LOZO, LOZO-M, SubZero, MeZO-SVRG, ZO-Adam, FZOO, ZO-SGD-Cons, LeZO) from their configs
(experiments/rules/) through ``zolab fit``: each lowers the loss of the lab's Quadratic and of the digits MLP, whose
cheap probes log without error; MeZO-SVRG's anchor steps evaluate the whole training subset (``full=``), its
forwards counted as docs/algorithms.md §3.18 says."""

from pathlib import Path

import pytest

from zolab.claims.events import Run
from zolab.lab.cli import cli_main

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
         "--trainer.enable_checkpointing=false"]
RULES = ["lozo", "lozo_m", "subzero", "mezo_svrg", "zo_adam", "fzoo", "zo_sgd_cons", "lezo"]
MLP_LR = {"zo_sgd_cons": 1e-2, "lezo": 1e-2}  # the ZO-SGD steps: the digits MLP takes 10× the Quadratic's η
FORWARDS = {"zo_adam": 2, "fzoo": 9, "zo_sgd_cons": 5, "lezo": 2}  # a step's forwards, as the docs say


def fit(root, name, *args, log_every=10):
    cli_main(["fit", *args, f"--trainer.default_root_dir={root}", f"--name={name}", "--version=v",
              f"--trainer.log_every_n_steps={log_every}", *QUIET])
    return Run(Path(root) / name / "v")


@pytest.mark.parametrize("rule", RULES)
def test_the_rules_config_lowers_the_quadratic_and_the_digits_mlp_with_probes(tmp_path, rule):
    config = f"--config={EXPERIMENTS / 'rules' / f'{rule}.yaml'}"
    run = fit(tmp_path, "quadratic", config, "--trainer.max_steps=200")
    steps, losses = run.series("train/loss")
    assert steps[-1] == 199 and losses[-1] < 0.9 * losses[0], losses  # train/loss at x = k is f(θ_k)
    lr = [f"--model.optimizer.init_args.lr={MLP_LR[rule]}"] if rule in MLP_LR else []  # as the config says
    run = fit(tmp_path, "mlp", config, "--model.task=zolab.tasks.toy.DigitsMLP", *lr, "--trainer.max_steps=200",
              "--trainer.callbacks+=diagnostics.Economy", "--trainer.callbacks.every_n_steps=50")
    losses = run.series("train/loss")[1]
    assert losses[-1] < 0.95 * losses[0], losses
    logged = {t.split("/")[1] for t in run.scalars if t.startswith("diagnostics/")}
    expected = {"alignment", "step_cost"} | ({"variance"} if rule != "mezo_svrg" else set())  # SVRG: left out
    assert expected <= logged, logged
    assert len(run.series("diagnostics/alignment/cos_g")[1]) == 5  # steps 1, 50, ..., 200
    if rule in FORWARDS:
        assert run.series("diagnostics/step_cost/forwards")[1][-1] == FORWARDS[rule]


def test_mezo_svrg_evaluates_the_whole_training_subset_at_anchor_steps(tmp_path):
    """P-mlp with a fresh head, n = 512 training images in batches of 64, q = 2: anchor steps cost 2·512/64 = 16
    forwards (the full subset, 8 chunks, at θ ± μz̄), the others 4: 16, 20, 36, 40, ... as train/forwards logs."""
    run = fit(tmp_path, "svrg", "--model.task=zolab.tasks.proxies_mlp.DigitsFineTune",
              "--model.task.init_args.head=random", "--model.task.init_args.pretrain_steps=20",
              "--model.optimizer=zolab.MeZOSVRG", "--model.optimizer.init_args.lr=1e-4",
              "--model.optimizer.init_args.anchor_lr=1e-3", "--model.optimizer.init_args.q=2",
              "--data=zolab.tasks.proxies.ProxyDataModule", "--data.init_args.batch_size=64",
              "--data.init_args.n_train=512", "--trainer.max_steps=20", "--trainer.limit_val_batches=0", log_every=1)
    steps, forwards = run.series("train/forwards")
    assert steps[:5] == [0, 1, 2, 3, 4] and forwards[:5] == [16, 20, 36, 40, 56]
    assert forwards[-1] == 10 * 16 + 10 * 4  # (2n/b + 4(q − 1))/q = 10 a step


def test_a_data_module_without_full_batches_is_named(tmp_path):
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from zolab.lab.module import ZOModule
    from zolab.rules import MeZOSVRG
    from zolab.tasks.proxies_mlp import DigitsFineTune

    task = DigitsFineTune(pretrain_steps=0)
    x, y = task.split("train")

    class Plain(L.LightningDataModule):
        def train_dataloader(self):
            return DataLoader(TensorDataset(x, y), batch_size=32)

    module = ZOModule(task, optimizer=lambda p: MeZOSVRG(p, lr=1e-4))
    trainer = L.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        default_root_dir=tmp_path, enable_model_summary=False)
    before = [p.detach().clone() for p in task.parameters()]
    with pytest.raises(ValueError, match=r"data module must give full_batches\(\).*Plain does not"):
        trainer.fit(module, datamodule=Plain())
    assert all(torch.equal(a, b) for a, b in zip(before, task.parameters()))
