"""Every config in experiments/ runs as its comment says: each fit config (and each documented combination of
configs) prints its full config with ``--print_config``, each sweep lists its runs with ``zolab sweep --dry-run``
and every file or class its grid names parses as a run. Parsing only: nothing trains, nothing is written."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from zolab.entry import main
from zolab.lab import sweep

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "experiments"


def _load(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _kind(path: Path) -> str:
    data = _load(path)
    if not isinstance(data, dict):
        return "other"
    if "grid" in data:
        return "sweep"
    return "fit" if "model" in data and ({"trainer", "data"} & set(data)) else "fragment"


FILES = sorted(EXPERIMENTS.rglob("*.yaml"))
FIT = [p for p in FILES if _kind(p) == "fit"]
SWEEPS = [p for p in FILES if _kind(p) == "sweep"]


def _documented_fits() -> list[list[str]]:
    """The ``zolab fit`` commands the configs' comments give that combine several files (a fragment onto its
    base, a first-order reference's model): each as its argument list."""
    commands = set()
    for path in FILES:
        text = path.read_text(encoding="utf-8").replace("\\\n#", " ")
        for line in text.splitlines():
            found = re.search(r"zolab fit (.*)", line) if line.startswith("#") else None
            if found:
                args = shlex.split(found.group(1).split(" # ")[0].split("   ")[0])
                if sum(a == "--config" or a.startswith("--model=") for a in args) > 1:
                    commands.add(tuple(args))
    return [list(c) for c in sorted(commands)]


COMBINED = _documented_fits()


def _print_config(capsys, args) -> dict:
    """``zolab ARGS --print_config``: exit status 0 and the full config, as YAML."""
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--print_config"])
    out = capsys.readouterr().out
    assert exit_.value.code in (0, None), out
    config = yaml.safe_load(out)
    assert isinstance(config, dict) and config.get("model"), out[-2000:]
    return config


def test_the_experiments_are_found():
    """The classification this file relies on: complete fit configs, sweeps and documented combinations."""
    assert len(FIT) >= 25 and len(SWEEPS) >= 20 and len(COMBINED) >= 2
    assert EXPERIMENTS / "radazo" / "base.yaml" in FIT and EXPERIMENTS / "radazo" / "fig1.yaml" in SWEEPS
    assert any("experiments/minilm/full_ft.yaml" in c for c in COMBINED)


@pytest.mark.parametrize("path", FIT, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_each_fit_config_prints_its_full_config(path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    text, data = path.read_text(encoding="utf-8"), _load(path)
    if "python -m zolab.tasks.mnist" in text and "zolab fit" not in text:  # the victim CNN's own LightningCLI
        from zolab.tasks.mnist import main as mnist_main

        with pytest.raises(SystemExit) as exit_:
            mnist_main(["--config", str(path), "--print_config"])
        assert exit_.value.code in (0, None)
        assert yaml.safe_load(capsys.readouterr().out)["model"]["save_to"] == data["model"]["save_to"]
        return
    extra = ["--first_order"] if "--first_order" in text else []
    config = _print_config(capsys, ["fit", *extra, "--config", str(path.relative_to(REPO))])
    task = data["model"].get("task")
    if isinstance(task, dict) and "class_path" in task:
        assert config["model"]["task"]["class_path"] == task["class_path"]
    if "max_steps" in (data.get("trainer") or {}):
        assert config["trainer"]["max_steps"] == data["trainer"]["max_steps"]


@pytest.mark.parametrize("args", COMBINED, ids=lambda a: " ".join(Path(x.split("=")[-1]).name for x in a
                                                                    if x.endswith(".yaml")))
def test_each_documented_combination_prints_its_full_config(args, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    _print_config(capsys, ["fit", *args])


def _covering(runs: list) -> list:
    """Runs that between them take every file, class path or mapping of the grid (and its first values)."""
    seen, chosen = set(), []
    for i, run in enumerate(runs):
        new = {(k, repr(v)) for k, v in run.values.items() if isinstance(v, str | dict)} - seen
        if i == 0 or new:
            chosen.append(run)
            seen |= new
    return chosen


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_each_sweep_lists_its_runs_and_each_grid_value_parses(path, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["sweep", str(path.relative_to(REPO)), "--dry-run", "--root", str(tmp_path)]) == 0
    name, runs = sweep.load(path.relative_to(REPO), root=str(tmp_path))
    listed = capsys.readouterr().out
    assert listed.count("zolab fit") == len(runs) and f"[{len(runs)}/{len(runs)}] {runs[-1].run_id}" in listed
    for run in _covering(runs):
        _print_config(capsys, run.args)
    assert not any(tmp_path.iterdir())  # nothing was run or written
