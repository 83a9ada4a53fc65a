"""Every precision zolab accepts × every rule trains 100 steps on Quadratic through Lightning to finite parameters,
every step taken (bf16-mixed with R-AdaZO or ZO-RMSProp used to end with NaN parameters and 99 skipped steps);
every other precision is refused before training."""

import pytest
import torch

import zolab
from tests.reliability._lab import quadratic_args, snapshot
from zolab.lab.cli import ConfigError, cli_main
from zolab.lab.module import SUPPORTED_PRECISIONS

RULE_CLASSES = {name: f"zolab.{cls.__name__}" for name, cls in sorted(zolab.RULES.items())}


@pytest.mark.parametrize("precision", SUPPORTED_PRECISIONS)
@pytest.mark.parametrize("rule", sorted(RULE_CLASSES))
def test_every_precision_and_rule_ends_100_steps_with_finite_parameters(tmp_path, precision, rule):
    extra = ["--model.optimizer.init_args.t1=10"] if rule == "zo_adamu" else []
    cli = cli_main(quadratic_args(
        tmp_path, *extra, "--model.optimizer.init_args.lr=1e-3", "--model.optimizer.init_args.nonfinite=skip",
        f"--trainer.precision={precision}", "--trainer.logger=false", "--trainer.enable_checkpointing=false",
        "--model.steps_per_batch=50", rule=RULE_CLASSES[rule], dim=64, steps=100))
    opt = cli.model.zo_optimizer
    x = cli.model.task.x
    assert cli.trainer.global_step == 100 and opt.zo["step"] == 100
    assert torch.isfinite(x).all(), f"{rule} at {precision}: non-finite parameters"
    assert opt.zo["skipped"] == 0, f"{rule} at {precision}: {opt.zo['skipped']} of 100 steps skipped"
    assert cli.model.task.loss().item() < Quadratic_start(x.dtype)


def Quadratic_start(dtype) -> float:
    """f(x0) of the 64-dimensional Quadratic the runs start from: they must not end above it."""
    from zolab.tasks.synthetic import Quadratic

    return Quadratic(dim=64).to(dtype).loss().item() * 1.01


@pytest.mark.parametrize("precision", ["16-mixed", "16", "transformer-engine"])
def test_other_precisions_are_refused_before_training(tmp_path, precision):
    with pytest.raises(ConfigError, match=rf"trainer\.precision='?{precision}'?.*allowed: 32, 64, bf16-mixed"):
        cli_main(quadratic_args(tmp_path, f"--trainer.precision={precision}"))
    assert snapshot(tmp_path) == {}
