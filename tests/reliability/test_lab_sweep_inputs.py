"""A sweep file's runs are the ones its labels say: ``args:`` or command-line overrides cannot replace a grid key,
a key written twice in the YAML is an error (not the last one silently), and a name too long for a directory is
refused before anything runs, as is ``zolab fit --name`` (a run id made long by its values is shortened). Each
test failed before its fix."""

import pytest
import yaml

from tests.reliability._lab import quadratic_args, snapshot
from zolab.entry import main
from zolab.lab import sweep
from zolab.lab.cli import ConfigError, cli_main

LR = "model.optimizer.init_args.lr"


def _spec(**changes):
    spec = {"name": "s", "base": {"model": {"task": {"class_path": "zolab.tasks.synthetic.Quadratic",
                                                     "init_args": {"dim": 4}},
                                            "optimizer": {"class_path": "zolab.ZOSGD", "init_args": {"lr": 0.1}}},
                                  "data": {"class_path": "zolab.tasks.synthetic.SyntheticDataModule"}},
            "grid": {LR: [0.01, 0.001]}, "args": ["--trainer.max_steps=2"]}
    spec.update(changes)
    return spec


@pytest.mark.parametrize("args, extra", [
    (["--model.optimizer.init_args.lr=0.5"], []),  # runs labelled lr=0.01 and lr=0.001 both ran at 0.5
    ([], ["--model.optimizer.init_args.lr=0.5"]),  # the same from the command line
    (["--model.optimizer.lr=0.5"], []),  # jsonargparse's short form of the same key
    (["--model.optimizer=zolab.ZOAdaMM"], []),  # a parent of the grid key: it replaces the value
])
def test_overrides_that_set_a_grid_key_are_refused_naming_both(tmp_path, capsys, args, extra):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(_spec(args=args)))
    with pytest.raises(ValueError, match=rf"sweep: .* sets the grid key {LR}"):
        sweep.load(spec, extra_args=extra)
    before = snapshot(tmp_path)
    assert main(["sweep", str(spec), "--root", str(tmp_path / "runs"), *extra]) == 2
    err = capsys.readouterr().err
    assert "zolab sweep: error:" in err and LR in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_overrides_below_a_grid_key_refine_every_run():
    """A grid over tasks with every task's dim set by args: the overrides refine the grid values, allowed."""
    _, runs = sweep.load(_spec(grid={"model.task.class_path": ["zolab.tasks.synthetic.Quadratic",
                                                               "zolab.tasks.synthetic.Levy"]},
                               args=["--model.task.init_args.dim=8"]))
    assert [r.run_id for r in runs] == ["Quadratic", "Levy"]


def test_a_grid_key_written_twice_is_an_error_naming_it(tmp_path, capsys):
    """YAML keeps the last of two equal keys: one run at lr 0.3 instead of three."""
    spec = tmp_path / "s.yaml"
    text = yaml.safe_dump(_spec(grid={}), sort_keys=False).replace(
        "grid: {}", f"grid:\n  {LR}: [0.1, 0.2]\n  {LR}: [0.3]")
    spec.write_text(text)
    with pytest.raises(ValueError, match=rf"key '{LR}' appears twice \(lines \d+ and \d+\)"):
        sweep.load(spec)
    assert main(["sweep", str(spec), "--dry-run"]) == 2
    assert "appears twice" in capsys.readouterr().err


def test_a_name_too_long_for_a_directory_is_refused_before_anything_runs(tmp_path, capsys):
    """A 300-character sweep name ended with a raw `OSError: File name too long`."""
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(_spec(name="n" * 300)))
    assert main(["sweep", str(spec), "--root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "zolab sweep: error: sweep: name=" in err and "300 bytes; allowed: at most 255" in err, err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()
    with pytest.raises(ConfigError, match=r"--name=.* is 256 bytes; allowed: at most 255"):
        cli_main(quadratic_args(tmp_path / "runs", name="x" * 256))
    assert not (tmp_path / "runs").exists()


def test_a_run_id_made_long_by_its_values_is_shortened_and_stays_unique():
    values = [[0.5 + i / 1000] * 60 for i in range(3)]  # each label ~ 600 characters
    _, runs = sweep.load(_spec(grid={"model.optimizer.init_args.betas": values}))
    ids = [r.run_id for r in runs]
    assert len(set(ids)) == 3 and all(len(i.encode()) <= 255 for i in ids)
    assert all(i.startswith("betas=0.5") for i in ids)
