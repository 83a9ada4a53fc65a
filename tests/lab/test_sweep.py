"""``zolab sweep``: grids of ``zolab fit`` runs; and the Figure 1 sweep with its figure script."""

import json
import math
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml
from torch.utils.tensorboard import SummaryWriter

from paper_figures import radazo_fig1
from paper_figures._tb import find_runs, read_hparams, read_scalars
from zolab.lab import sweep, workers

REPO = Path(__file__).resolve().parents[2]
FIG1 = REPO / "experiments" / "radazo" / "fig1.yaml"
TINY = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.log_every_n_steps=1"]


def _tiny_spec(**grid):
    return {
        "name": "abl",
        "base": {
            "model": {"task": {"class_path": "zolab.tasks.synthetic.Quadratic", "init_args": {"dim": 8}},
                      "optimizer": {"class_path": "zolab.RAdaZO", "init_args": {"lr": 0.01, "mu": 0.05}}},
            "data": {"class_path": "zolab.tasks.synthetic.SyntheticDataModule"},
            "trainer": {"max_steps": 3},
        },
        "grid": grid,
        "args": TINY,
    }


def test_fig1_expands_to_the_20_runs_of_the_figure():
    name, runs = sweep.load(FIG1, root="somewhere")
    assert name == "radazo_fig1" and len(runs) == 20
    functions = ["Quadratic", "Cubic", "Levy", "Rosenbrock"]
    rules = ["zo_sgd", "zo_signsgd", "zo_adamm", "zo_rmsprop", "radazo"]
    assert [r.run_id for r in runs] == [f"{f}-{r}" for f in functions for r in rules]
    first = runs[0].args
    assert first[0] == "fit" and first[1] == "--config" and first[2].endswith("experiments/radazo/base.yaml")
    assert "--model.task.class_path=zolab.tasks.synthetic.Quadratic" in first
    assert any(a.startswith("--model.optimizer=") and a.endswith("rules/zo_sgd.yaml") for a in first)
    assert first[-3:] == ["--trainer.default_root_dir=somewhere", "--name=radazo_fig1", "--version=Quadratic-zo_sgd"]
    assert runs[-1].run_dir == Path("somewhere/radazo_fig1/Rosenbrock-radazo")


def test_fig1_configs_share_the_proxy_settings():
    """§6 proxy settings in base.yaml; the same estimator for every rule; β = (0.9, 0.99) where a rule has β."""
    base = yaml.safe_load((FIG1.parent / "base.yaml").read_text())
    opt = base["model"]["optimizer"]["init_args"]
    assert base["model"]["task"]["init_args"] == {"dim": 10000, "init_seed": 0}
    assert base["trainer"]["max_steps"] == 20000
    assert (opt["lr"], opt["mu"], opt["num_queries"]) == (1e-3, 0.05, 10)
    assert (opt["estimator"], opt["directions"]) == ("forward", "sphere")
    rules = {p.stem: yaml.safe_load(p.read_text()) for p in (FIG1.parent / "rules").glob("*.yaml")}
    assert sorted(rules) == ["radazo", "zo_adamm", "zo_rmsprop", "zo_sgd", "zo_signsgd"]
    assert rules["radazo"]["init_args"]["betas"] == rules["zo_adamm"]["init_args"]["betas"] == [0.9, 0.99]
    assert rules["zo_rmsprop"]["init_args"]["beta"] == 0.99
    assert all(set(r.get("init_args", {})) <= {"betas", "beta", "sign_of"} for r in rules.values())


@pytest.mark.slow
def test_fig1_runs_end_to_end_and_makes_the_figure(tmp_path, capsys):
    """All 20 runs at d = 8 for 4 steps, then the figure script on their event files."""
    name, runs = sweep.load(FIG1, root=tmp_path, extra_args=["--model.task.init_args.dim=8",
                                                              "--trainer.max_steps=4", *TINY])
    sweep.run_sweep(runs, log=lambda line: None)
    assert [r.status for r in runs] == ["done"] * 20
    hp = read_hparams(tmp_path / name / "Levy-zo_rmsprop")
    assert (hp["rule"], hp["task"], hp["estimator"], hp["directions"], hp["lr"]) == (
        "ZORMSProp", "Levy", "forward", "sphere", 1e-3)
    curves = radazo_fig1.collect(tmp_path / name)
    assert sorted(curves) == ["Cubic", "Levy", "Quadratic", "Rosenbrock"]
    assert all(sorted(v) == sorted(radazo_fig1.RULES) for v in curves.values())
    start = {f: {r: v[1][0] for r, v in c.items()} for f, c in curves.items()}
    assert all(len(set(s.values())) == 1 for s in start.values())  # one initial point per function
    assert radazo_fig1.main([str(tmp_path / name), "--out", str(tmp_path / "fig.png")]) == 0
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "Final loss per function" in out and "R1" in out and "R4" in out


def test_grid_values_become_cli_overrides_and_run_ids():
    spec = _tiny_spec(**{"model.optimizer.init_args.betas": [[0.0, 0.99], [0.5, 0.99]],
                         "model.optimizer.init_args.lr": [0.1]})
    name, runs = sweep.load(spec, root="r")
    assert [r.run_id for r in runs] == ["betas=0.0,0.99-lr=0.1", "betas=0.5,0.99-lr=0.1"]
    args = runs[1].args
    assert args[:2] == ["fit", "--config"] and json.loads(args[2]) == spec["base"]
    assert "--model.optimizer.init_args.betas=[0.5, 0.99]" in args
    assert "--model.optimizer.init_args.lr=0.1" in args
    assert args.index("--trainer.log_every_n_steps=1") < args.index("--name=abl")


def test_runs_go_one_after_another_each_with_its_own_version_and_hparams(tmp_path):
    _, runs = sweep.load(_tiny_spec(**{"model.optimizer.init_args.lr": [0.01, 0.02],
                                       "model.optimizer": ["zolab.RAdaZO", "zolab.ZOAdaMM"]}), root=tmp_path)
    sweep.run_sweep(runs, log=lambda line: None)
    assert [r.status for r in runs] == ["done"] * 4
    assert sorted(p.name for p in find_runs(tmp_path / "abl")) == sorted(r.run_id for r in runs)
    for run in runs:
        hp = read_hparams(run.run_dir)
        assert hp["lr"] == run.values["model.optimizer.init_args.lr"]
        assert hp["rule"] == run.values["model.optimizer"].rsplit(".", 1)[-1]
        assert read_scalars(run.run_dir, "train/loss")[0].tolist() == [0, 1, 2]
        assert yaml.safe_load((run.run_dir / sweep.STATUS_FILE).read_text())["status"] == "done"
    with pytest.raises(ValueError, match="--overwrite.*--resume"):
        sweep.run_sweep(runs, log=lambda line: None)
    sweep.run_sweep(runs, resume=True, log=lambda line: None)
    assert [r.status for r in runs] == ["skipped"] * 4


@pytest.mark.slow
def test_a_failed_run_does_not_stop_the_sweep(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(_tiny_spec(**{"model.optimizer.init_args.lr": [-1.0, 0.01]})))
    assert workers.main([str(spec), "--root", str(tmp_path / "r")]) == 1
    out = capsys.readouterr().out
    assert "1 done" in out and "1 failed" in out and "invalid lr: -1.0" in out


def test_an_interrupted_sweep_resumes_from_the_checkpoint(tmp_path):
    task = "tests.lab.test_cli.InterruptingQuadratic"  # sends SIGINT inside its 6th loss, i.e. step 2 (K = 1)
    spec = _tiny_spec(**{"model.task": [{"class_path": task, "init_args": {"dim": 8, "at_call": 6}}]})
    spec["args"] = [*TINY, "--model.optimizer.init_args.num_queries=1", "--trainer.max_steps=5"]
    _, runs = sweep.load(spec, root=tmp_path)
    handler = signal.getsignal(signal.SIGINT)
    try:
        sweep.run_sweep(runs, log=lambda line: None)
    finally:
        signal.signal(signal.SIGINT, handler)
    assert runs[0].status == "interrupted"
    assert (runs[0].run_dir / "checkpoints" / "on_exception.ckpt").exists()
    sweep.run_sweep(runs, resume=True, log=lambda line: None)  # a fresh task: its call counter restarts
    assert runs[0].status == "done" and runs[0].extra[0].startswith("--ckpt_path=")
    steps, _ = read_scalars(runs[0].run_dir, "train/loss")
    assert steps.tolist() == [0, 1, 2, 3, 4]


def test_dry_run_lists_commands_and_runs_nothing(tmp_path, capsys):
    assert workers.main([str(FIG1), "--dry-run", "--root", str(tmp_path), "--trainer.max_steps=7"]) == 0
    out = capsys.readouterr().out
    assert out.count("zolab fit --config") == 20 and "--trainer.max_steps=7" in out
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("spec, match", [
    ({"grid": {}, "bad_key": 1}, r"unknown key\(s\) \['bad_key'\]"),
    ({"grid": {"model.optimizer.init_args.lr": []}}, r"grid\['model.optimizer.init_args.lr'\].*non-empty list"),
    ({"grid": {"model.optimizer.init_args.lr": 0.1}}, r"non-empty list of values, got 0.1"),
    ({"grid": {"model.optimizer": ["missing.yaml"]}}, r"file 'missing.yaml' not found"),
    ({"base": 3}, r"base must be a config path or a mapping"),
    ({"grid": {"model.task": ["zolab.tasks.synthetic.Levy", "my.tasks.Levy"]}}, r"share the id 'Levy'"),
])
def test_bad_sweep_files(spec, match):
    with pytest.raises(ValueError, match=match):
        sweep.load(spec)


def test_the_zolab_command_dispatches_sweep(tmp_path, capsys):
    from zolab.entry import main

    assert main(["sweep", str(FIG1), "--dry-run", "--root", str(tmp_path)]) == 0
    assert "[20/20] Rosenbrock-radazo" in capsys.readouterr().out


def _fake_run(root, func, rule, values):
    run = root / f"{func}-{rule}"
    with SummaryWriter(str(run)) as writer:
        for step, value in enumerate(values):
            writer.add_scalar("train/loss", value, step)
    (run / "hparams.yaml").write_text(yaml.safe_dump({"task": func, "rule": rule}))


def test_figure_ranking_and_divergence(tmp_path):
    _fake_run(tmp_path, "Quadratic", "RAdaZO", [10.0, 1.0, 0.1])
    _fake_run(tmp_path, "Quadratic", "ZOAdaMM", [10.0, 5.0, 2.0])
    _fake_run(tmp_path, "Quadratic", "ZORMSProp", [10.0, 4.0, 1.0])
    _fake_run(tmp_path, "Quadratic", "ZOSGD", [10.0, 1e6, float("inf")])
    curves = radazo_fig1.collect(tmp_path)
    ranks = radazo_fig1.ranking(curves)["Quadratic"]
    assert [r for r, _ in ranks] == ["RAdaZO", "ZORMSProp", "ZOAdaMM", "ZOSGD"]
    assert ranks[0][1] == pytest.approx(0.1) and math.isinf(ranks[-1][1])
    report = radazo_fig1.report(curves)
    assert "R-AdaZO 0.1 < ZO-RMSProp 1 < ZO-AdaMM 2 < ZO-SGD diverged" in report
    assert "R1 (R-AdaZO lowest final loss): 1/1" in report and "Quadratic 2.000" in report
    out = radazo_fig1.plot(curves, tmp_path / "f.png")
    assert out.stat().st_size > 1000
    assert radazo_fig1.final_loss(np.array([1.0, 2e3]), start=1.0) == math.inf  # above DIVERGED × start


def test_figure_refuses_two_runs_of_one_rule(tmp_path):
    _fake_run(tmp_path / "a", "Levy", "RAdaZO", [1.0])
    _fake_run(tmp_path / "b", "Levy", "RAdaZO", [1.0])
    with pytest.raises(ValueError, match="two runs of RAdaZO on Levy"):
        radazo_fig1.collect(tmp_path)


def test_readme_sweep_example(tmp_path):
    """The README's sweep file, placed as it says (experiments/mine/), expands to its four β1 runs."""
    text = (REPO / "README.md").read_text()
    lab = text[text.index("<!-- section:lab -->"):text.index("<!-- /section:lab -->")]
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", lab, re.S) if "grid:" in b]
    (tmp_path / "mine").mkdir()
    shutil.copytree(FIG1.parent, tmp_path / "radazo")
    (tmp_path / "mine" / "beta1.yaml").write_text(block)
    name, runs = sweep.load(tmp_path / "mine" / "beta1.yaml", root="r")
    assert name == "beta1"
    assert [r.run_id for r in runs] == ["betas=0.0,0.99", "betas=0.5,0.99", "betas=0.9,0.99", "betas=0.99,0.99"]
    assert all(r.args[2].endswith("radazo/base.yaml") and "--trainer.max_steps=2000" in r.args for r in runs)


# ---------------------------------------------------------------- one display for the whole sweep
def test_sweep_prints_one_line_per_run_and_a_summary_when_not_on_a_terminal(tmp_path, capsys):
    """Not a terminal: no progress bar per run, one line per run, then a table (claims issue, item 5), from the
    sweep's study (its storage, the grid values, the recorded metrics)."""
    spec = tmp_path / "s.yaml"
    tiny = _tiny_spec(**{"model.optimizer.init_args.lr": [0.01, 0.02]})
    tiny["args"] = ["--trainer.log_every_n_steps=1"]  # progress bar and model summary left on, as in a user's config
    spec.write_text(yaml.safe_dump(tiny))
    assert workers.main([str(spec), "--root", str(tmp_path / "r")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"sweep abl: 2 runs -> {tmp_path / 'r' / 'abl'}"
    assert lines[1] == f"study 'abl/s' in sqlite:///{tmp_path / 'r' / 'abl' / 'study.db'}: 1 worker(s)"
    assert re.fullmatch(r"\[1/2\] lr=0\.01: done in [0-9.]+ s", lines[2])
    assert re.fullmatch(r"\[2/2\] lr=0\.02: done in [0-9.]+ s", lines[3])
    assert lines[4].split() == ["run", "lr", "status", "steps", "train/loss", "forwards", "seconds"]
    assert lines[6].split()[:4] == ["lr=0.01", "0.01", "done", "3"]
    assert lines[7].split()[:4] == ["lr=0.02", "0.02", "done", "3"]
    assert lines[-1] == "sweep abl: 2 done of 2 runs" and len(lines) == 9


def test_sweep_display_refreshes_one_line_in_place_on_a_terminal(tmp_path):
    import io

    stream = io.StringIO()
    display = sweep.SweepProgress("abl", stream=stream, tty=True, refresh_seconds=0.0)
    tiny = _tiny_spec(**{"model.optimizer.init_args.lr": [0.01, 0.02]})
    tiny["args"] = ["--trainer.log_every_n_steps=1", "--trainer.enable_model_summary=false"]
    _, runs = sweep.load(tiny, root=tmp_path)
    sweep.run_sweep(runs, progress=display, log=lambda line: None)
    text = stream.getvalue()
    assert "\n" not in text.split("[1/2] lr=0.01: done")[0]  # updates rewrite one line (carriage returns)
    assert re.search(r"\rsweep abl  run 1/2 lr=0\.01  step 2/3  loss [0-9.]+  ETA run [0-9:]+, sweep [0-9:?]+", text)
    assert re.search(r"\rsweep abl  run 2/2 lr=0\.02  step \d/3", text)
    assert text.count("\n") == 2 and text.endswith("[2/2] lr=0.02: done in " + text.rsplit("done in ", 1)[1])
