"""The scoreboard gives a verdict only from the complete, finished, readable runs its registry entry expects,
made with the expected settings: one test per failure mode, through ``zolab claims``."""

import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.claims.fake_runs import EXPERIMENTS, complete_sweep, fig1_maker, fig2a_maker
from zolab.claims import main

REPO = Path(__file__).resolve().parents[2]
VERDICT = re.compile(r"^R1 +(HOLDS|PARTLY|FAILS|INCONCLUSIVE)", re.M)


def board(capsys, *argv) -> str:
    code = main(list(argv))
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def test_complete_runs_give_a_verdict(tmp_path, capsys):  # the baseline the items below spoil
    complete_sweep(tmp_path, "claims/fig1_seeds.yaml", fig1_maker(wins=2))
    out = board(capsys, "R1.seeds", "--root", str(tmp_path))
    assert "R1   PARTLY" in out and "[seeds] partly: R-AdaZO lowest final loss on 2/4 functions" in out


# ---------------------------------------------------------------------------------------------- item 1
def test_a_sweep_still_running_gives_no_verdict_and_names_the_runs_not_done(tmp_path, capsys):
    made = complete_sweep(tmp_path, "radazo/fig1.yaml", lambda r: fig1_maker()(r) if r.run_id < "M" else None)
    assert len(made) == 10  # Cubic and Levy done; Quadratic and Rosenbrock not started
    (made[-1].run_dir / "sweep_run.yaml").unlink()  # running: zolab sweep writes it when the run ends
    out = board(capsys, "R1.proxy", "--root", str(tmp_path))
    assert not VERDICT.search(out) and "R1   INCOMPLETE" in out
    assert "not started: 10 of the 20 runs of radazo/fig1.yaml: radazo_fig1/Quadratic-zo_sgd" in out
    assert f"radazo_fig1/{made[-1].run_id} (no sweep_run.yaml: not known to have finished)" in out


# ---------------------------------------------------------------------------------------------- item 2
def test_a_function_whose_runs_are_missing_reads_incomplete_not_fails(tmp_path, capsys):
    complete_sweep(tmp_path, "claims/fig1_seeds.yaml",
                   lambda r: None if "Levy" in r.run_id else fig1_maker(wins=2)(r))
    out = board(capsys, "R1.seeds", "--root", str(tmp_path))
    assert not VERDICT.search(out) and "R1   INCOMPLETE" in out
    assert "not started: 15 of the 60 runs of claims/fig1_seeds.yaml: claims_fig1_seeds/Levy-" in out


# ---------------------------------------------------------------------------------------------- item 3
def damage(path: Path, how: str) -> None:
    events = next(path.glob("events.out.tfevents.*"))
    data = events.read_bytes()
    if how == "truncated":
        events.write_bytes(data[:-7])
    elif how == "garbage":
        events.write_bytes(data[:40] + bytes(random.Random(0).randrange(256) for _ in range(len(data) - 40)))
    elif how == "empty":
        events.write_bytes(b"")
    else:
        events.unlink()


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "missing"])
def test_a_damaged_event_file_reads_incomplete_with_the_run_named(tmp_path, capsys, how):
    made = complete_sweep(tmp_path, "claims/fig1_seeds.yaml", fig1_maker(wins=3))
    victim = next(r for r in made if r.run_id.startswith("Levy-radazo"))
    damage(victim.run_dir, how)
    out = board(capsys, "R1.seeds", "--root", str(tmp_path))
    assert not VERDICT.search(out) and "R1   INCOMPLETE" in out
    assert f"unreadable: 1 of the 60 runs of claims/fig1_seeds.yaml: claims_fig1_seeds/{victim.run_id} (" in out


# ---------------------------------------------------------------------------------------------- item 4
def test_runs_made_with_other_settings_read_mismatched_and_are_not_skipped_as_done(tmp_path, capsys):
    overrides = ("--model.task.init_args.dim=50", "--trainer.max_steps=30")
    complete_sweep(tmp_path, "radazo/fig1.yaml", fig1_maker(wins=3), extra=overrides)
    out = board(capsys, "R1.proxy", "--root", str(tmp_path))
    assert not VERDICT.search(out) and "R1   MISMATCHED" in out
    assert ("made with other settings: 20 of the 20 runs of radazo/fig1.yaml: radazo_fig1/Quadratic-zo_sgd (run "
            "with --model.task.init_args.dim=50 --trainer.max_steps=30)") in out
    assert main(["R1.proxy", "--root", str(tmp_path), "--run", "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert "done before" not in out and "not run: radazo/fig1.yaml: made with other settings" in out


def test_where_the_sweep_ran_and_its_data_folder_are_not_settings(tmp_path, capsys):
    complete_sweep(tmp_path, "claims/fig2a_seeds.yaml", fig2a_maker,
                   extra=("--data.init_args.data_dir=/elsewhere/data", f"--ckpt_path={tmp_path}/last.ckpt"))
    assert "R2   HOLDS" in board(capsys, "R2", "--root", str(tmp_path))


# ---------------------------------------------------------------------------------------------- item 5
@pytest.mark.slow
def test_an_installed_copy_of_zolab_reads_the_checkouts_runs(tmp_path):
    """zolab installed into site-packages (not editable), run from a checkout: the same runs, the same verdict;
    and --run finds the sweep files."""
    site, checkout = tmp_path / "site-packages", tmp_path / "checkout"
    shutil.copytree(REPO / "zolab", site / "zolab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(EXPERIMENTS, checkout / "experiments")
    complete_sweep(checkout / "runs", "claims/fig2a_seeds.yaml", fig2a_maker)
    env = {"PYTHONPATH": str(site), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}

    def claims(*argv):
        proc = subprocess.run([sys.executable, "-m", "zolab.claims", *argv], cwd=checkout, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    out = claims("R2", "R3", "--root", "runs")
    assert "experiment files: experiments" in out and "R2   HOLDS" in out and "R3   NOT RUN" in out
    assert "would run: zolab sweep experiments/claims/fig2b_seeds.yaml --root=runs --resume" in claims(
        "R3", "--run", "--dry-run")


def test_without_an_experiments_folder_the_error_says_where_it_looked(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--experiments", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nowhere'} (--experiments): no such folder" in err and "--experiments DIR" in err


# ---------------------------------------------------------------------------------------------- item 6
@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_root_that_is_missing_or_a_file_is_an_error_naming_it(tmp_path, capsys, kind):
    root = tmp_path / "runz"
    if kind == "file":
        root.write_text("not a folder")
    with pytest.raises(SystemExit) as stop:
        main(["--root", str(root)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"--root {root}: " + ("no such folder" if kind == "missing" else "a file, not a folder") in err


def test_writing_onto_a_directory_is_an_error_naming_it(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    with pytest.raises(SystemExit) as stop:
        main(["--root", str(tmp_path / "runs"), "--write", str(tmp_path)])
    assert stop.value.code == 2 and f"--write {tmp_path} is a directory" in capsys.readouterr().err


def test_writing_where_it_cannot_is_an_error_not_a_traceback(tmp_path, capsys, monkeypatch):
    (tmp_path / "runs").mkdir()
    (tmp_path / "docs").write_text("a file where the folder should be")
    with pytest.raises(SystemExit):
        main(["--root", str(tmp_path / "runs"), "--write", str(tmp_path / "docs" / "claims.md")])
    assert "is a file, not a folder" in capsys.readouterr().err
    (tmp_path / "ro").mkdir()

    def refuse(self, *args, **kwargs):  # a read-only folder (the tests run as root, whom chmod does not stop)
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "write_text", refuse)
    assert main(["--root", str(tmp_path / "runs"), "--write", str(tmp_path / "ro" / "claims.md")]) == 1
    assert f"zolab claims: error: --write {tmp_path / 'ro' / 'claims.md'}: Permission denied" in (
        capsys.readouterr().out)


# ---------------------------------------------------------------------------------------------- item 17
def test_readme_installs_the_llm_extra_without_replacing_the_editable_install():
    text = (REPO / "README.md").read_text()
    assert "pip install -e '.[llm]'" in text and not re.search(r"pip install '\.\[llm\]'", text)


def test_the_model_package_error_names_an_extra_pyproject_defines():
    from zolab.tasks.models import package_folder

    text = (REPO / "pyproject.toml").read_text()
    section = text[text.index("[project.optional-dependencies]"):].split("\n[", 1)[0]
    extras = re.findall(r"^(\w+) = \[", section, re.M)
    with pytest.raises(ImportError) as err:
        package_folder("no_such_model_package", "no-such-model-package")
    named = re.findall(r"extra `(\w+)`", str(err.value))
    assert named and all(n in extras for n in named), (str(err.value), sorted(extras))
