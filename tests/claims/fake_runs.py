"""Hand-made runs for the scoreboard's tests: run directories as ``zolab fit`` and ``zolab sweep`` leave them
(hparams.yaml, an event file, sweep_run.yaml with the command), without training."""

import shlex
from pathlib import Path

import yaml
from torch.utils.tensorboard import SummaryWriter

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def fake_run(path: Path, hp: dict, scalars: dict[str, list]) -> Path:
    """hparams.yaml and an event file; a scalar is a list of values (steps 0, 1, …) or of (step, value) pairs."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "hparams.yaml").write_text(yaml.safe_dump(hp))
    writer = SummaryWriter(str(path))
    for tag, values in scalars.items():
        for i, v in enumerate(values):
            step, value = v if isinstance(v, tuple) else (i, v)
            writer.add_scalar(tag, value, step)
    writer.close()
    return path


def rule_of(values: dict) -> str:
    """The rule class a sweep run's grid values select (``model.optimizer``: a YAML file or a class path)."""
    spec = values.get("model.optimizer", "")
    if str(spec).endswith(".yaml"):
        spec = yaml.safe_load(Path(spec).read_text())["class_path"]
    return str(spec).rsplit(".", 1)[-1]


def sweep_runs(root: Path, sweep: str):
    """The runs the registry's sweep file (relative to experiments/) makes under ``root``."""
    from zolab.lab import sweep as sweeps

    return sweeps.load(EXPERIMENTS / sweep, root=str(root))[1]


def complete_sweep(root: Path, sweep: str, make, status: str = "done", extra: tuple[str, ...] = ()) -> list:
    """Every run of ``sweep`` that ``make(run)`` describes as (hparams, scalars) (None: leave it out), finished
    (``status``) by the command the sweep gives it (plus ``extra`` arguments). Returns the runs made."""
    made = []
    for r in sweep_runs(root, sweep):
        here = (EXPERIMENTS / sweep).parent  # grid values name files relative to the sweep file
        r.grid = {k: str(here / v) if str(v).endswith(".yaml") else v for k, v in r.values.items()}
        spec = make(r)
        if spec is None:
            continue
        fake_run(r.run_dir, *spec)
        (r.run_dir / "sweep_run.yaml").write_text(yaml.safe_dump({
            "status": status, "seconds": 1.0, "values": r.values,
            "command": shlex.join(["zolab", *r.args, *extra]), "error": ""}))
        made.append(r)
    return made


def fig1_maker(wins: int = 2, seeds_of=lambda r: int(r.values.get("model.optimizer.init_args.seed", 0))):
    """Figure 1 runs: every rule from 100 to a final of 10 on each function, R-AdaZO to 1 on the first ``wins``
    functions and to 20 on the others."""
    functions = ("Quadratic", "Cubic", "Levy", "Rosenbrock")

    def make(r):
        task = r.values["model.task.class_path"].rsplit(".", 1)[-1]
        rule, seed = rule_of(r.grid), seeds_of(r)
        final = (1.0 if functions.index(task) < wins else 20.0) if rule == "RAdaZO" else 10.0
        return ({"task": task, "rule": rule, "seed": seed},
                {"train/loss": [100.0, 50.0, final * (1 + seed / 100)]})

    return make


def fig2a_maker(r):
    """R2's runs (β1 sweep): cos(m) rises with β1 and drops at 0.999; cos(ĝ) 0.1."""
    beta1 = float(r.values["model.optimizer.init_args.betas"][0])
    seed = int(r.values["model.optimizer.init_args.seed"])
    cos_m = {0.0: 0.1, 0.5: 0.2, 0.8: 0.3, 0.9: 0.4, 0.95: 0.5, 0.99: 0.8, 0.999: 0.7}[beta1] + seed / 1000
    return ({"beta1": beta1, "beta2": 0.99, "seed": seed},
            {"diagnostics/alignment/cos_g": [0.5, 0.1, 0.1], "diagnostics/alignment/cos_m": [0.5, cos_m, cos_m]})
