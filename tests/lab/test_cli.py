"""The ``zolab`` LightningCLI: defaults, config errors before training, exact resume, Ctrl-C checkpoints."""

import json
import os
import re
import signal
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar

import zolab
from paper_figures._tb import event_files, read_scalars
from zolab.lab.cli import ConfigError, cli_main, main
from zolab.lab.interrupt import InterruptCheckpoint, Interrupted
from zolab.lab.progress import TimedProgressBar
from zolab.tasks.synthetic import Quadratic

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def fit_args(root, *extra, rule="zolab.RAdaZO", dim=16, steps=10, name="t", task="zolab.tasks.synthetic.Quadratic",
             quiet=True):
    """`zolab fit` on a tiny Quadratic, logging every step, runs under ``root``."""
    return [
        "fit", f"--model.task={task}", f"--model.task.init_args.dim={dim}",
        f"--model.optimizer={rule}", "--model.optimizer.init_args.lr=0.02", "--model.optimizer.init_args.mu=0.05",
        "--data=zolab.tasks.synthetic.SyntheticDataModule", "--trainer.log_every_n_steps=1",
        f"--trainer.default_root_dir={root}", f"--trainer.max_steps={steps}", f"--name={name}",
        *(QUIET if quiet else []), *extra,
    ]


# ---------------------------------------------------------------- the rules through the CLI
@pytest.mark.parametrize("name", sorted(zolab.RULES))
def test_cli_builds_each_rule_with_its_own_defaults(tmp_path, name):
    """jsonargparse fills in every init arg; a rule's own defaults (R-AdaZO: sphere, forward) must survive."""
    cls = zolab.RULES[name]
    cli = cli_main(fit_args(tmp_path, rule=f"zolab.{cls.__name__}", steps=5000)[1:], run=False)  # no subcommand
    built = cli.model.build_optimizer(cli.trainer.max_steps)
    direct = cls(Quadratic(dim=16).zo_named_parameters(), **({"total_steps": 5000} if name == "zo_adamu" else {}))
    assert type(built) is cls
    for attr in ("estimator", "num_queries", "scale", "seed", "block_spec"):
        assert getattr(built, attr) == getattr(direct, attr), attr
    assert built.block_plan.granularity == direct.block_plan.granularity
    assert built.sampler.name == direct.sampler.name


def test_trainer_defaults(tmp_path):
    cli = cli_main(fit_args(tmp_path, name="exp", steps=3, quiet=False)[1:], run=False)
    trainer = cli.trainer
    assert trainer.num_sanity_val_steps == 0
    assert trainer.logger.log_dir == str(tmp_path / "exp" / "version_0")
    bars = [c for c in trainer.callbacks if isinstance(c, TQDMProgressBar)]
    assert len(bars) == 1 and isinstance(bars[0], TimedProgressBar) and bars[0].interval == 0.5
    assert sum(isinstance(c, InterruptCheckpoint) for c in trainer.callbacks) == 1
    assert sum(isinstance(c, ModelCheckpoint) for c in trainer.callbacks) == 1


def test_name_defaults_to_the_config_stem_and_version_is_settable(tmp_path):
    config = tmp_path / "my_experiment.yaml"
    config.write_text("model:\n  task: {class_path: zolab.tasks.synthetic.Quadratic, init_args: {dim: 4}}\n"
                      "data: {class_path: zolab.tasks.synthetic.SyntheticDataModule}\n")
    args = ["--config", str(config), f"--trainer.default_root_dir={tmp_path}", *QUIET]
    assert cli_main(args, run=False).trainer.logger.log_dir == str(tmp_path / "my_experiment" / "version_0")
    cli = cli_main(args + ["--version=beta1=0.5"], run=False)
    assert cli.trainer.logger.log_dir == str(tmp_path / "my_experiment" / "beta1=0.5")
    inline = ["--config", json.dumps(yaml.safe_load(config.read_text()))]
    cli = cli_main(inline + args[2:], run=False)  # an inline config has no file name
    assert cli.trainer.logger.log_dir == str(tmp_path / "zolab" / "version_0")


# ---------------------------------------------------------------- bad configs fail before training
@pytest.mark.parametrize("extra, error, match", [
    (["--model.optimizer.init_args.lr=-1"], ConfigError, r"model\.optimizer \(zolab\.RAdaZO\): invalid lr: -1"),
    (["--model.optimizer.init_args.betas=[0.9, 1.5]"], ConfigError, r"model\.optimizer .*betas\[1\]: 1\.5"),
    (["--model.optimizer.init_args.num_queries=0"], ConfigError, r"model\.optimizer .*num_queries: 0"),
    (["--model.task.init_args.dim=0"], ConfigError, r"model\.task \(zolab\.tasks\.synthetic\.Quadratic\).*dim=0"),
    (["--trainer.precision=16-mixed"], ConfigError, r"trainer\.precision='16-mixed'.*GradScaler"),
])
def test_bad_values_fail_before_training_naming_the_field(tmp_path, extra, error, match):
    with pytest.raises(error, match=match):
        cli_main(fit_args(tmp_path, *extra))
    assert not list(tmp_path.rglob("events.out.tfevents.*"))  # nothing ran, nothing logged


@pytest.mark.parametrize("extra, match", [
    (["--model.optimizer=zolab.NoSuchRule"], r'model\.optimizer.*NoSuchRule'),
    (["--model.optimizer.init_args.no_such_option=1"], r"no_such_option"),
])
def test_unknown_classes_and_fields_fail_at_parsing(tmp_path, capsys, extra, match):
    with pytest.raises(SystemExit) as exit_:
        cli_main(fit_args(tmp_path, *extra))
    assert exit_.value.code == 2
    assert re.search(match, capsys.readouterr().err, flags=re.DOTALL)


def test_missing_task_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(["fit", "--data=zolab.tasks.synthetic.SyntheticDataModule", f"--trainer.default_root_dir={tmp_path}"])
    assert "model.task" in capsys.readouterr().err


def test_main_prints_config_errors_without_a_traceback(tmp_path, capsys):
    assert main(fit_args(tmp_path, "--model.optimizer.init_args.mu=0")) == 2
    err = capsys.readouterr().err
    assert "zolab: error: model.optimizer (zolab.RAdaZO): invalid mu: 0" in err and "Traceback" not in err


# ---------------------------------------------------------------- precisions
@pytest.mark.parametrize("precision, dtype", [
    ("32", torch.float32), ("64", torch.float64), ("bf16-mixed", torch.float32), ("bf16-true", torch.bfloat16),
    ("16-true", torch.float16),
])
def test_supported_precisions_train(tmp_path, precision, dtype):
    cli = cli_main(fit_args(tmp_path, f"--trainer.precision={precision}", steps=3))
    assert cli.trainer.global_step == 3
    assert cli.model.task.x.dtype == dtype
    assert torch.isfinite(cli.model.task.loss())


def test_zolab_fit_with_its_defaults_ends_where_the_plain_loop_does(tmp_path):
    """Progress bar, model summary, checkpointing, logging every 5 steps, epochs of 7 steps: the parameters of
    the plain loop bitwise; the callbacks done before training have left the trainer's list; train/loss is
    the last logged step's for the progress bar and the callbacks."""
    cli = cli_main(fit_args(tmp_path, "--data.init_args.steps_per_epoch=7", "--trainer.log_every_n_steps=5",
                            steps=23, dim=40, quiet=False))
    task = Quadratic(dim=40)
    opt = zolab.RAdaZO([task.x], lr=0.02, mu=0.05)
    losses = [opt.step(task.loss, batched=task.batched_loss) for _ in range(23)]
    assert torch.equal(cli.model.task.x, task.x)
    names = [type(c).__name__ for c in cli.trainer.callbacks]
    assert not {"_TrainingStarted", "SaveConfigCallback", "ModelSummary", "RichModelSummary"} & set(names), names
    assert "ModelCheckpoint" in names and "InterruptCheckpoint" in names and "TimedProgressBar" in names
    assert (tmp_path / "t" / "version_0" / "config.yaml").is_file()
    assert cli.trainer.progress_bar_metrics["train/loss"] == losses[19].item()  # step 20: the last one logged
    assert torch.equal(cli.trainer.callback_metrics["train/loss"], losses[19])


# ---------------------------------------------------------------- resume (acceptance 2) and Ctrl-C
def _checkpoint_is_plain(path):
    """weights_only=True loads it, and the optimizer state holds tensors and plain values only."""
    ckpt = torch.load(path, weights_only=True)
    plain = (torch.Tensor, int, float, str, bool, type(None))

    def walk(x):
        if isinstance(x, dict):
            return all(isinstance(k, plain) and walk(v) for k, v in x.items())
        if isinstance(x, list | tuple):
            return all(walk(v) for v in x)
        return isinstance(x, plain)

    assert walk(ckpt["optimizer_states"])
    return ckpt


RESUMABLE = {  # ZO-AdaMU's annealing depends on T: fix total_steps so that a shorter first leg has the same one
    "zolab.RAdaZO": [],
    "zolab.ZOAdaMU": ["--model.optimizer.init_args.t1=4", "--model.optimizer.init_args.total_steps=20"],
}


@pytest.mark.parametrize("rule", sorted(RESUMABLE))
def test_resume_is_exact(tmp_path, rule):
    n, extra = 10, RESUMABLE[rule]
    full = cli_main(fit_args(tmp_path, *extra, rule=rule, steps=2 * n, name="full"))
    first = cli_main(fit_args(tmp_path, *extra, rule=rule, steps=n, name="legs"))
    (ckpt,) = (tmp_path / "legs" / "version_0" / "checkpoints").glob("*.ckpt")
    assert _checkpoint_is_plain(ckpt)["global_step"] == n
    second = cli_main(fit_args(tmp_path, *extra, f"--ckpt_path={ckpt}", rule=rule, steps=2 * n, name="legs"))
    assert first.trainer.global_step == n and second.trainer.global_step == 2 * n
    assert second.config.fit.weights_only is True  # the CLI's default: checkpoints load as tensors/plain values
    assert torch.equal(full.model.task.x, second.model.task.x)  # bitwise
    steps_full, loss_full = read_scalars(tmp_path / "full" / "version_0", "train/loss")
    steps_a, loss_a = read_scalars(tmp_path / "legs" / "version_0", "train/loss")
    steps_b, loss_b = read_scalars(tmp_path / "legs" / "version_1", "train/loss")
    assert steps_full.tolist() == list(range(2 * n))
    assert steps_a.tolist() + steps_b.tolist() == steps_full.tolist()
    assert loss_a.tolist() + loss_b.tolist() == loss_full.tolist()  # identical, not close


class InterruptingQuadratic(Quadratic):
    """A Quadratic that sends its own process a SIGINT inside its ``at_call``-th loss: Ctrl-C mid-step."""

    supports_batched = False  # one loss call per point, so that at_call lands inside a step

    def __init__(self, dim: int = 16, init_seed: int = 0, at_call: int = 0):
        super().__init__(dim=dim, init_seed=init_seed)
        self.at_call, self.calls = at_call, 0

    def loss(self, batch=None):
        self.calls += 1
        if self.calls == self.at_call:
            os.kill(os.getpid(), signal.SIGINT)
        return super().loss(batch)


def test_ctrl_c_leaves_a_checkpoint_at_a_step_boundary_that_resumes_exactly(tmp_path):
    k = 3  # forward estimator: K + 1 = 4 losses per step; call 22 is inside step 6
    rule = ["--model.optimizer.init_args.num_queries=3"]
    # the same task (one loss call per point) without the interruption (at_call=0 never fires)
    full = cli_main(fit_args(tmp_path, *rule, task=f"{__name__}.InterruptingQuadratic", steps=12, name="full"))
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(Interrupted) as stop:  # the step finishes, its checkpoint is saved, then the run stops
            cli_main(fit_args(tmp_path, *rule, f"--model.task.init_args.at_call={5 * (k + 1) + 2}",
                              task=f"{__name__}.InterruptingQuadratic", steps=12, name="cut"))
    finally:
        signal.signal(signal.SIGINT, handler)
    assert stop.value.exit_status == 130 and stop.value.step == 6
    ckpt = tmp_path / "cut" / "version_0" / "checkpoints" / "on_exception.ckpt"
    state = _checkpoint_is_plain(ckpt)
    assert state["global_step"] == 6  # the interrupted step finished; nothing half-applied
    assert state["optimizer_states"][0]["zo"]["step"] == 6
    resumed = cli_main(fit_args(tmp_path, *rule, f"--ckpt_path={ckpt}", task=f"{__name__}.InterruptingQuadratic",
                                steps=12, name="cut"))
    assert torch.equal(full.model.task.x, resumed.model.task.x)
    _, loss_full = read_scalars(tmp_path / "full" / "version_0", "train/loss")
    steps_cut, loss_cut = read_scalars(tmp_path / "cut" / "version_0", "train/loss")
    steps_res, loss_res = read_scalars(tmp_path / "cut" / "version_1", "train/loss")
    assert steps_cut.tolist() + steps_res.tolist() == list(range(12))
    assert loss_cut.tolist() + loss_res.tolist() == loss_full.tolist()


def test_a_finished_run_leaves_no_exception_checkpoint(tmp_path):
    cli_main(fit_args(tmp_path, steps=3))
    names = [p.name for p in (tmp_path / "t" / "version_0" / "checkpoints").iterdir()]
    assert names == ["epoch=0-step=3.ckpt"]
    assert len(event_files(tmp_path / "t" / "version_0")) == 1


def test_validate_evaluates_the_checkpoint(tmp_path):
    cli_main(fit_args(tmp_path, steps=4))
    (ckpt,) = (tmp_path / "t" / "version_0" / "checkpoints").glob("*.ckpt")
    args = fit_args(tmp_path, f"--ckpt_path={ckpt}")
    args = ["validate"] + [a for a in args[1:] if not a.startswith("--trainer.max_steps")]
    cli = cli_main(args)
    x = torch.load(ckpt, weights_only=True)["state_dict"]["task.x"]
    assert cli.trainer.callback_metrics["val/loss"].item() == pytest.approx(Quadratic.objective(x).item(), rel=1e-6)


def _lab_section() -> str:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return text[text.index("<!-- section:lab -->"):text.index("<!-- /section:lab -->")]


def test_readme_rule_example_trains(tmp_path, monkeypatch):
    """The README's "Adding a rule" file, as written, runs from a config by class_path and trains."""
    (code,) = [c for c in re.findall(r"```python\n(.*?)```", _lab_section(), re.S) if "class ZOLion" in c]
    (tmp_path / "readme_rule.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    cli_main(fit_args(tmp_path, "--model.optimizer.init_args.lr=0.05", rule="readme_rule.ZOLion", steps=30))
    hp = (tmp_path / "t" / "version_0" / "hparams.yaml").read_text()
    assert "rule: ZOLion" in hp and "beta1: 0.9" in hp
    _, loss = read_scalars(tmp_path / "t" / "version_0", "train/loss")
    assert loss[-1] < 0.8 * loss[0]


class NaNQuadratic(Quadratic):
    """A Quadratic whose loss turns NaN from its ``from_call``-th evaluation on."""

    supports_batched = False

    def __init__(self, dim: int = 16, from_call: int = 0):
        super().__init__(dim=dim)
        self.from_call, self.calls = from_call, 0

    def loss(self, batch=None):
        self.calls += 1
        value = super().loss(batch)
        return value * float("nan") if self.calls >= self.from_call else value


def test_an_exception_during_fit_leaves_a_checkpoint(tmp_path):
    """nonfinite='raise' stops step 3 before any update; the checkpoint holds the state after step 2."""
    with pytest.raises(FloatingPointError, match="non-finite loss at step 3"):
        cli_main(fit_args(tmp_path, "--model.optimizer.init_args.num_queries=1",
                          f"--model.task.init_args.from_call={2 * 2 + 1}", task=f"{__name__}.NaNQuadratic"))
    state = _checkpoint_is_plain(tmp_path / "t" / "version_0" / "checkpoints" / "on_exception.ckpt")
    assert state["global_step"] == 2 and state["optimizer_states"][0]["zo"]["step"] == 2
