"""Runs stay inside their root: run names and versions cannot leave it, a sweep never deletes outside it, and a run
writes nothing outside its run directory. Each test failed before its fix."""

import os
import signal
import tempfile

import pytest
import yaml

from tests.reliability._lab import quadratic_args, snapshot
from zolab.lab import sweep, workers
from zolab.lab.cli import ConfigError, cli_main
from zolab.lab.interrupt import Interrupted

BAD_NAMES = ["../x", "..", ".", "a/b", "/tmp/abs", "../../victim"]


@pytest.fixture
def victim(tmp_path):
    """A file outside the runs root that nothing may touch: tmp/victim/precious.txt, runs go to tmp/runs."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    return folder


@pytest.mark.parametrize("bad", BAD_NAMES)
@pytest.mark.parametrize("key", ["name", "version"])
def test_fit_refuses_a_name_or_version_that_leaves_the_root(tmp_path, victim, key, bad):
    """`zolab fit --name ../../x` (or --version) used to write outside runs/."""
    before = snapshot(tmp_path)
    args = [*quadratic_args(tmp_path / "runs", steps=2), f"--{key}={bad}"]
    with pytest.raises(ConfigError, match=rf"--{key}=.* is not a directory name"):
        cli_main(args)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_a_sweep_name_cannot_reach_outside_the_root_even_with_overwrite(tmp_path, victim, bad):
    """A sweep file's `name: ../../victim` plus --overwrite deleted a folder outside the runs root."""
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": bad, "base": {"model": {"task": "zolab.tasks.synthetic.Quadratic"}},
                                    "grid": {"model.task.init_args.dim": [2]}}))
    before = snapshot(tmp_path)
    assert workers.main([str(spec), "--root", str(tmp_path / "runs" / "deep"), "--overwrite"]) == 2
    with pytest.raises(ValueError, match="not a directory name"):
        sweep.load(str(spec))
    assert snapshot(tmp_path) == before


def test_a_symbolic_link_in_the_root_is_not_followed_out_of_it(tmp_path, victim):
    """runs/s -> ../victim: --overwrite would rmtree victim/<run>; the sweep refuses before running anything."""
    (victim / "dim=2").mkdir()
    (victim / "dim=2" / "also_precious.txt").write_text("keep")
    (tmp_path / "runs").mkdir()
    os.symlink(victim, tmp_path / "runs" / "s")
    _, runs = sweep.load({"name": "s", "base": {"model": {"task": "zolab.tasks.synthetic.Quadratic"}},
                          "grid": {"model.task.init_args.dim": [2]}}, root=tmp_path / "runs")
    before = snapshot(victim)
    with pytest.raises(ValueError, match="outside the runs root"):
        sweep.run_sweep(runs, overwrite=True, log=lambda line: None)
    assert snapshot(victim) == before
    with pytest.raises(ConfigError, match="outside the runs root"):
        cli_main(quadratic_args(tmp_path / "runs", "--version=dim=2", name="s"))
    assert snapshot(victim) == before


def test_a_run_writes_only_inside_its_run_directory(tmp_path, monkeypatch):
    """A fit interrupted by SIGTERM (its checkpoint), resumed into the same directory and finished, from a working
    directory and with a temporary directory of its own: every file written is below ROOT/NAME/VERSION, and the
    working and temporary directories stay empty (Lightning's own checkpoint writer stages files in /tmp)."""
    cwd, tmp, root = tmp_path / "cwd", tmp_path / "tmp", tmp_path / "root"
    for d in (cwd, tmp, root):
        d.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    staged = []  # temporary files made anywhere (they are moved away after use, so the folder alone tells nothing)
    mkstemp = tempfile.mkstemp
    monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **k: staged.append(mkstemp(*a, **k)) or staged[-1])
    args = quadratic_args(root, "--version=v", steps=12, per_epoch=4, name="n")
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(Interrupted) as stop:
            cli_main([*args, "--trainer.callbacks+=tests.reliability._lab.SignalAt", "--trainer.callbacks.step=5",
                      f"--trainer.callbacks.signum={int(signal.SIGTERM)}"])
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert stop.value.exit_status == 143
    cli_main([*args, f"--ckpt_path={stop.value.saved}"])
    files = snapshot(tmp_path)
    assert files and all(f.startswith(os.path.join("root", "n", "v") + os.sep) for f in files), sorted(files)
    assert not list(cwd.iterdir()) and not list(tmp.iterdir()) and not staged
