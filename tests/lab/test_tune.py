"""``zolab tune`` with a pruner on a small task finds a step size within the grid's best
factor-of-3 bracket and writes a config that ``zolab fit`` runs (bitwise the best trial again); tuning reads
validation only; bad tune files and a study made for another search space are refused before any run."""

import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from optuna.trial import TrialState

from zolab.lab import study as st
from zolab.lab import sweep, tune
from zolab.lab.trials import final_metrics
from zolab.tasks.synthetic import SyntheticDataModule

LR = "model.optimizer.init_args.lr"
QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 10}
BASE = {"model": {"task": {"class_path": "zolab.tasks.synthetic.Quadratic", "init_args": {"dim": 8}},
                  "optimizer": {"class_path": "zolab.ZOSGD", "init_args": {"lr": 0.01, "mu": 0.01}}},
        "data": {"class_path": "zolab.tasks.synthetic.SyntheticDataModule", "init_args": {"steps_per_epoch": 10}},
        "trainer": {"max_steps": 40, **QUIET}}
GRID = [0.01, 0.03, 0.1, 0.3, 1.0]  # a factor of about 3 apart


class TestableData(SyntheticDataModule):
    """Synthetic batches with a test split (for FinalTest)."""

    def test_dataloader(self):
        return self.val_dataloader()


def _tune_file(tmp_path, **over):
    spec = {"name": "lr", "base": BASE, "space": {LR: {"low": 0.01, "high": 1.0, "log": True}}, "trials": 10,
            "sampler": {"type": "tpe", "n_startup_trials": 4}, "pruner": "hyperband", **over}
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_acceptance3_tune_with_a_pruner_lands_in_the_grids_best_bracket_and_writes_a_config_fit_runs(tmp_path,
                                                                                                       capsys):
    _, runs = sweep.load({"name": "grid", "base": BASE, "grid": {LR: GRID}}, root=tmp_path / "r")
    sweep.run_sweep(runs, log=lambda line: None)
    val = {r.values[LR]: final_metrics(r.run_dir)["val/loss"] for r in runs}
    best_grid = min(val, key=val.get)
    assert GRID[0] < best_grid < GRID[-1]  # an inner best: its bracket is [best / 3, best x 3]
    assert tune.main([str(_tune_file(tmp_path)), "--root", str(tmp_path / "r")]) == 0
    study = st.load_study(st.open_storage(st.default_url(tmp_path / "r", "lr")), "lr", "tune")
    states = [t.state for t in study.trials]
    assert len(states) == 10 and TrialState.PRUNED in states and TrialState.COMPLETE in states
    best = study.best_trial
    assert best_grid / 3 <= best.params[LR] <= best_grid * 3, (best.params, val)
    assert all("test/" not in k for t in study.trials for k in t.user_attrs.get("metrics", {}))
    out = capsys.readouterr().out
    assert f"best: {best.user_attrs['run_id']} (val/loss {best.value:.4g})" in out
    best_yaml = tmp_path / "r" / "lr" / "best.yaml"
    config = yaml.safe_load(best_yaml.read_text())
    assert config["model"]["optimizer"]["init_args"]["lr"] == best.params[LR] and config["name"] == "lr_best"
    assert "ckpt_path" not in config and "default_root_dir" not in config["trainer"]
    from zolab.lab.cli import cli_main

    again = cli_main(["fit", "--config", str(best_yaml), f"--trainer.default_root_dir={tmp_path / 'fit'}"])
    assert (tmp_path / "fit" / "lr_best" / "version_0").is_dir()
    assert float(again.trainer.callback_metrics["val/loss"]) == best.value  # the best trial again, bitwise
    assert torch.isfinite(again.model.task.x).all()


def test_tuning_refuses_a_run_that_would_evaluate_the_test_split(tmp_path, capsys):
    base = {**BASE, "data": {"class_path": "tests.lab.test_tune.TestableData", "init_args": {"steps_per_epoch": 10}},
            "trainer": {"max_steps": 10, **QUIET, "callbacks": [{"class_path": "zolab.lab.final_test.FinalTest"}]}}
    assert tune.main([str(_tune_file(tmp_path, base=base, trials=2)), "--root", str(tmp_path / "r")]) == 2
    assert "FinalTest, which evaluates the test split: tuning reads validation only" in capsys.readouterr().err


@pytest.mark.parametrize("over, match", [
    ({"metric": "test/loss"}, r"metric 'test/loss': tuning reads validation metrics only"),
    ({"grid": {LR: [0.1]}}, r"unknown key\(s\) \['grid'\]"),
    ({"space": {LR: {"low": 1.0, "high": 0.1}}}, r"space\['model.optimizer.init_args.lr'\]: .*low"),
    ({"space": {LR: 0.1}}, r"space\['model.optimizer.init_args.lr'\]: 0.1; allowed"),
    ({"sampler": "grid"}, r"sampler grid needs a list of values for every space key"),
    ({"pruner": "asha"}, r"pruner: 'asha'; allowed: one of"),
    ({"args": [f"--{LR}=0.1"]}, r"sets a key of the search space"),
    ({"trials": 0}, r"trials=0; allowed"),
])
def test_bad_tune_files(tmp_path, over, match):
    with pytest.raises(ValueError, match=match):
        tune.load_tune(_tune_file(tmp_path, **over))


def test_a_study_made_for_another_search_space_is_refused(tmp_path):
    (tmp_path / "r" / "lr").mkdir(parents=True)
    storage = st.open_storage(st.default_url(tmp_path / "r", "lr"))
    tune.prepare(storage, tune.load_tune(_tune_file(tmp_path), root=tmp_path / "r"))
    other = tune.load_tune(_tune_file(tmp_path, space={LR: {"low": 0.001, "high": 1.0, "log": True}}),
                           root=tmp_path / "r")
    with pytest.raises(ValueError, match=r"study 'lr' in sqlite.* made for another space .* refused before any run"):
        tune.prepare(storage, other)
    with pytest.raises(ValueError, match=r"is a zolab tune, not a sweep"):
        st.load_study(storage, "lr", "sweep")


def test_readme_tune_example(tmp_path):
    """The README's tune file, placed as it says (experiments/mine/), loads: its space, budget and pruner."""
    repo = Path(__file__).resolve().parents[2]
    text = (repo / "README.md").read_text()
    lab = text[text.index("<!-- section:lab -->"):text.index("<!-- /section:lab -->")]
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", lab, re.S) if "space:" in b]
    (tmp_path / "mine").mkdir()
    shutil.copytree(repo / "experiments" / "radazo", tmp_path / "radazo")
    (tmp_path / "mine" / "lr.yaml").write_text(block)
    spec = tune.load_tune(tmp_path / "mine" / "lr.yaml", root=tmp_path / "r")
    assert spec.name == "radazo_lr" and spec.trials == 20 and spec.pruner == ("hyperband", {})
    assert spec.space[LR].log and spec.space["model.optimizer.init_args.directions"].choices == ("sphere", "gaussian")
    assert spec.base.args[2].endswith("radazo/base.yaml") and "--trainer.max_steps=4000" in spec.base.args
