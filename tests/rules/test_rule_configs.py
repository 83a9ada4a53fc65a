"""The configs of experiments/rules/ run their rule through ``zolab fit`` (CPU) and lower the loss of the lab's
Quadratic and of the digits MLP, the latter with the cheap probes (alignment, variance, cost) logging at every
few steps: a fast version of the check each new rule's config is written for."""

from pathlib import Path

import pytest
import torch

from zolab.claims.events import Run
from zolab.lab.cli import cli_main
from zolab.tasks.synthetic import Quadratic
from zolab.tasks.toy import DigitsMLP

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments" / "rules"
RULES = ["hizoo", "sparse_mezo", "forward_grad"]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def fit(tmp_path, rule, *extra):
    return cli_main(["fit", "--config", str(EXPERIMENTS / f"{rule}.yaml"), f"--trainer.default_root_dir={tmp_path}",
                     "--name=run", "--trainer.max_steps=60", *QUIET, *extra])


@pytest.mark.parametrize("rule", RULES)
def test_the_config_lowers_the_quadratic(tmp_path, rule):
    cli = fit(tmp_path, rule)
    start = Quadratic(dim=100, init_seed=0).loss().item()
    assert cli.trainer.global_step == 60 and cli.model.zo_optimizer.zo["step"] == 60
    assert cli.model.task.loss().item() < start, rule


@pytest.mark.parametrize("rule", RULES)
def test_the_config_lowers_the_digits_mlp_with_the_cheap_probes(tmp_path, rule):
    cli = fit(tmp_path, rule, "--model.task=zolab.tasks.toy.DigitsMLP", "--trainer.callbacks+=diagnostics.Economy",
              "--trainer.callbacks.every_n_steps=20")
    with torch.no_grad():
        start, end = DigitsMLP().loss().item(), cli.model.task.loss().item()
    assert end < start, (rule, start, end)
    tags = Run(Path(cli.trainer.logger.log_dir)).scalars
    for tag in ("alignment/cos_g", "variance/measured", "step_cost/forwards"):
        steps, values = tags[f"diagnostics/{tag}"]
        assert steps == [0, 19, 39, 59] and all(v == v for v in values), tag  # step 1 and every 20th, no NaN
    # the variance theory is the sampler's isotropic law's: HiZOO's z/√H and Sparse-MeZO's masked z have none (nan)
    opt = cli.model.zo_optimizer
    isotropic = opt.grad_estimator.directions.name == opt.sampler.name
    steps, ratios = tags["diagnostics/variance/ratio"]
    assert steps == [0, 19, 39, 59] and all((v == v) == isotropic for v in ratios) and isotropic == (
        rule == "forward_grad")
    forwards = {"hizoo": 3, "sparse_mezo": 2, "forward_grad": 1}[rule]
    assert tags["diagnostics/step_cost/forwards"][1] == [forwards] * 4
