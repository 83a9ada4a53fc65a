"""ZO-Adam, FZOO, ZO-SGD-Cons and LeZO from their configs (experiments/rules/) through ``zolab fit``: each lowers the
loss of the lab's Quadratic and, with the task swapped as the config's comment says, of the digits MLP, whose cheap
probes (alignment, variance, cost) log without error."""

from pathlib import Path

import pytest

from zolab.claims.events import Run
from zolab.lab.cli import cli_main

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
         "--trainer.enable_checkpointing=false"]
RULES = ["zo_adam", "fzoo", "zo_sgd_cons", "lezo"]
MLP_LR = {"zo_sgd_cons": 1e-2, "lezo": 1e-2}  # the ZO-SGD steps: the digits MLP takes 10× the Quadratic's η


def fit(root, name, *args):
    cli_main(["fit", *args, f"--trainer.default_root_dir={root}", f"--name={name}", "--version=v",
              "--trainer.log_every_n_steps=10", *QUIET])
    return Run(Path(root) / name / "v")


@pytest.mark.parametrize("rule", RULES)
def test_the_rules_config_lowers_the_quadratic_and_the_digits_mlp_with_probes(tmp_path, rule):
    config = f"--config={EXPERIMENTS / 'rules' / f'{rule}.yaml'}"
    run = fit(tmp_path, "quadratic", config, "--trainer.max_steps=200")
    steps, losses = run.series("train/loss")
    assert steps[-1] == 199 and losses[-1] < 0.9 * losses[0], losses  # ½‖x‖² from 500: every rule moves it
    lr = [f"--model.optimizer.init_args.lr={MLP_LR[rule]}"] if rule in MLP_LR else []  # as the config says
    run = fit(tmp_path, "mlp", config, "--model.task=zolab.tasks.toy.DigitsMLP", *lr, "--trainer.max_steps=200",
              "--trainer.callbacks+=diagnostics.Economy", "--trainer.callbacks.every_n_steps=50")
    losses = run.series("train/loss")[1]
    assert losses[-1] < 0.95 * losses[0], losses
    logged = {t.split("/")[1] for t in run.scalars if t.startswith("diagnostics/")}
    assert {"alignment", "variance", "step_cost"} <= logged, logged
    assert len(run.series("diagnostics/alignment/cos_g")[1]) == 5  # steps 1, 50, ..., 200
    forwards = {"zo_adam": 2, "fzoo": 9, "zo_sgd_cons": 5, "lezo": 2}[rule]  # a step's forwards, as the docs say
    assert run.series("diagnostics/step_cost/forwards")[1][-1] == forwards
