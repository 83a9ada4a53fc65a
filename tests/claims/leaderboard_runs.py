"""Hand-made leaderboard runs for the tests: a protocol in a temporary experiments folder, a probe record, and run
directories as ``zolab sweep`` leaves them (hparams.yaml, an event file, sweep_run.yaml with the command)."""

import json
import shlex
from pathlib import Path

import yaml

from tests.claims.fake_runs import fake_run
from zolab.claims import leaderboard as lb
from zolab.rules import ZOSGD

PROTOCOL = {"title": "TB: a test bed", "config": "tb_fit.yaml", "budget": 4000, "validations": 20, "mu": 1e-3,
            "lr_grid": [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2], "scale_free_factor": 0.1, "extend": 2,
            "tune_seed": 0, "seeds": [1, 2, 3, 4, 5],
            "seed_keys": ["seed_everything", "model.task.init_args.seed", "data.init_args.seed"],
            "first_order": "torch.optim.Adam", "planned_hours": 0.5}
CLASSES = {"zo_sgd": "zolab.rules.zosgd.ZOSGD", "zo_signsgd": "zolab.rules.signsgd.ZOSignSGD",
           "radazo": "zolab.rules.radazo.RAdaZO", "zo_rmsprop": "zolab.rules.rmsprop.ZORMSProp",
           "zo_adamm": "zolab.rules.adamm.ZOAdaMM", "zo_adamu": "zolab.rules.adamu.ZOAdaMU",
           "meazo": "zolab.rules.meazo.MEAZO", "mezo_bcd": "zolab.rules.mezo_bcd.MeZOBCD",
           "mezo_svrg": "zolab.rules.mezo_svrg.MeZOSVRG"}
START_LOSS, START_ACC = 0.70, 0.50


def experiments(tmp_path: Path, testbed: str = "tb", **changes) -> tuple[Path, lb.Protocol]:
    """A temporary experiments folder with leaderboard/<testbed>.yaml (PROTOCOL with ``changes``) and its config."""
    folder = tmp_path / "experiments" / "leaderboard"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{testbed}.yaml").write_text(yaml.safe_dump({**PROTOCOL, "config": f"{testbed}_fit.yaml", **changes}))
    (folder / f"{testbed}_fit.yaml").write_text("model: {}\n")  # never run: the runs are hand-made
    return folder.parent, lb.load_protocol(folder.parent, testbed)


def entry(key: str, fps: float = 2.0, scale_free: bool = False, ms: float = 1.0, memory: float = 1.25) -> dict:
    first = key == lb.FIRST_ORDER
    return {"class": "torch.optim.Adam" if first else CLASSES[key], "label": key.upper(), "forwards_per_step": fps,
            "scale_free": scale_free or first, "step_ms": ms, "step_vs_reference": ms, "memory_vs_inference": memory,
            **({"first_order": True} if first else {})}


def probe(root: Path, p: lb.Protocol, entries: dict[str, dict]) -> None:
    """probe.json with these rule entries and the untrained models' metrics for every seed."""
    starts = {str(s): {"val/loss": START_LOSS, "val/acc": START_ACC, "test/loss": START_LOSS, "test/acc": START_ACC}
              for s in (p.tune_seed, *p.seeds)}
    path = lb.probe_path(root, p)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": lb.probe_settings(p), "machine": {"cpu": "test"}, "starts": starts,
                                "rules": entries}))


def curve(p: lb.Protocol, fps: float, final_acc: float, final_loss: float) -> dict:
    """Scalars of a run that moves linearly from the start to (final_acc, final_loss) over its validations."""
    t = lb.steps(p, fps)
    xs = [t // p.validations * (i + 1) - 1 for i in range(p.validations)]
    frac = [(i + 1) / p.validations for i in range(p.validations)]
    return {"val/acc": [(x, START_ACC + f * (final_acc - START_ACC)) for x, f in zip(xs, frac)],
            "val/loss": [(x, START_LOSS + f * (final_loss - START_LOSS)) for x, f in zip(xs, frac)],
            "train/forwards": [(x, (x + 1) * fps) for x in xs]}


def _arg(run, key: str):
    return next((a.split("=", 1)[1] for a in run.args if a.startswith(f"--{key}=")), None)


def make(root: Path, p: lb.Protocol, spec: dict, outcome, fps: float = 2.0, command=None, status="done") -> list:
    """Every run of ``spec``: ``outcome(lr, seed) -> (final val acc, final val loss, test acc)`` (None: leave it
    out), finished (``status``) with the command the sweep gives it (``command(run)``: another)."""
    made = []
    for r in lb.expected_runs(spec, root):
        lr = float(r.values.get("model.optimizer.init_args.lr") or _arg(r, "model.optimizer.init_args.lr"))
        seed = int(r.values.get("model.optimizer.init_args.seed", r.values.get("model.seed", -1)))
        seed = int(_arg(r, "model.task.init_args.seed")) if seed < 0 else seed
        got = outcome(lr, seed)
        if got is None:
            continue
        acc, loss, test = got
        scalars = curve(p, fps, acc, loss)
        hp = {"rule": str(r.values["model.optimizer"]).rsplit(".", 1)[-1], "lr": lr, "seed": seed,
              "task.seed": int(_arg(r, "model.task.init_args.seed") or seed)}
        fake_run(r.run_dir, hp, {**scalars, "test/acc": [(scalars["val/acc"][-1][0], test)]})
        (r.run_dir / "sweep_run.yaml").write_text(yaml.safe_dump({
            "status": status, "seconds": 1.0, "values": r.values,
            "command": command(r) if command else shlex.join(["zolab", *r.args]), "error": ""}))
        made.append(r)
    return made


def complete(root: Path, experiments_dir: Path, p: lb.Protocol, key: str, val_acc, test_acc=None, loss=None):
    """Tuning, extensions and seeds of a rule (its probe entry in place): a run's final validation accuracy is
    ``val_acc(lr, seed)``, its test accuracy ``test_acc`` (default the same), its final validation loss ``loss``
    (default 1.2 − accuracy). Returns the rule's check, complete."""
    test_acc = test_acc or val_acc
    loss = loss or (lambda lr, seed: 1.2 - val_acc(lr, seed))
    e = lb.read_probe(root, p)["rules"][key]
    for _ in range(10):
        runs = lb.check_rule(root, experiments_dir, p, key, e)
        if not runs.specs:
            return runs
        for _, spec in runs.specs:
            make(root, p, spec, lambda lr, seed: (val_acc(lr, seed), loss(lr, seed), test_acc(lr, seed)),
                 e["forwards_per_step"])
    raise AssertionError("the rule's runs never became complete")


class FourForwards(ZOSGD):
    """A rule "registered later" in the tests: ZO-SGD with K = 2 central differences, 4 forwards a step."""

    label = "ZO-SGD K=2"

    def __init__(self, params, lr=1e-3, mu=1e-3, weight_decay=0.0, num_queries=2, **options):
        super().__init__(params, lr=lr, mu=mu, weight_decay=weight_decay, num_queries=num_queries, **options)
