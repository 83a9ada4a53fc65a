"""The leaderboard's probe (zolab.lab.leaderboard_probe) and one real leaderboard: tiny MNIST runs through
``zolab leaderboard --run``, a rule registered for the test joining with its own forwards a step, the page."""

import math

import pytest
import torch
import yaml

from tests.claims import leaderboard_runs as L
from tests.tasks.test_testbeds import digits, mnist  # noqa: F401 - the tiny MNIST folder fixture
from zolab.claims.leaderboard_page import main
from zolab.lab.leaderboard_probe import PeakMemory, probe_rule
from zolab.rules import RULES, ZOSGD, ZOAdaMM, ZOSignSGD
from zolab.tasks.mlp import MLPClassifier

assert digits


def test_peak_memory_counts_allocations_until_freed_not_views_or_in_place_writes():
    base = torch.zeros(1000)  # 4,000 bytes, given at entry
    with PeakMemory([base]) as tracker:
        a = torch.empty(500)  # 6,000 alive
        del a
        b = torch.ones(250)  # 5,000 alive
        base.add_(1)  # in place: nothing new
        view = base[:10]  # a view of base's storage: nothing new
        assert tracker.live and sum(tracker.live.values()) == 5000
    assert tracker.peak == 6000 and b.numel() == 250 and view.numel() == 10


@pytest.fixture(scope="module")
def task_and_batch():
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randn(32, 20, generator=gen), torch.randint(0, 3, (32,), generator=gen))
    return MLPClassifier(20, 3, hidden=[16], seed=0).eval(), batch


@pytest.mark.parametrize("cls, scale_free", [(ZOSGD, False), (ZOSignSGD, True), (ZOAdaMM, True)])
def test_the_probe_counts_forwards_and_tells_a_step_that_grows_with_the_loss(task_and_batch, cls, scale_free):
    task, batch = task_and_batch
    got = probe_rule(cls, task, batch, mu=1e-3, budget=100)
    assert got["forwards_per_step"] == 2 and got["scale_free"] is scale_free
    assert got["scale_ratio"] == pytest.approx(1.0, rel=1e-2) if scale_free else got["scale_ratio"] > 50


def test_a_rule_with_moment_buffers_peaks_higher_than_mezo(task_and_batch):
    task, batch = task_and_batch
    sgd, adamm = (probe_rule(c, task, batch, mu=1e-3, budget=100)["peak_bytes"] for c in (ZOSGD, ZOAdaMM))
    params = sum(p.numel() * 4 for _, p in task.zo_named_parameters())
    assert adamm - sgd == pytest.approx(2 * params, rel=0.05)  # m and v, one number each per parameter


def test_the_leaderboard_runs_every_rule_at_the_budget_resumably_and_writes_the_page(mnist, tmp_path, monkeypatch,  # noqa: F811
                                                                                      capsys):
    experiments, _ = L.experiments(tmp_path, "tiny", budget=48, validations=2, lr_grid=[1e-3, 3e-3, 1e-2], extend=1,
                                   seeds=[1, 2])
    fit = yaml.safe_load((L.Path(__file__).resolve().parents[2] / "experiments/leaderboard/t2_fit.yaml").read_text())
    fit["model"]["task"]["init_args"]["hidden"] = [8]
    fit["data"]["init_args"].update(data_dir=str(mnist), val_size=50, batch_size=16, eval_batch_size=50)
    fit["trainer"].update(log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False)
    (experiments / "leaderboard" / "tiny_fit.yaml").write_text(yaml.safe_dump(fit))
    monkeypatch.setitem(RULES, "four_forwards", L.FourForwards)
    root, out = tmp_path / "runs", tmp_path / "docs" / "leaderboard.md"
    args = ["--testbed", "tiny", "--rules", "zo_sgd,four_forwards,adam_backprop", "--root", str(root),
            "--experiments", str(experiments)]
    assert main(["--run", *args, "--write", str(out)]) == 0
    first = capsys.readouterr().out
    assert "probing on tiny: zo_sgd, four_forwards, adam_backprop" in first
    text = out.read_text()
    row = {cells[2].strip(): cells for cells in (line.split("|") for line in text.splitlines())
           if len(cells) > 10 and cells[1].strip().isdigit()}
    assert set(row) == {"ZO-SGD", "ZO-SGD K=2", "Adam by backprop (reference)"}
    assert row["ZO-SGD"][3:5] == [" 2 ", " 24 "] and row["ZO-SGD K=2"][3:5] == [" 4 ", " 12 "]  # 48 forwards each
    charge = float(row["Adam by backprop (reference)"][3].split()[0])
    assert row["Adam by backprop (reference)"][4].strip() == str(math.floor(48 / charge) // 2 * 2)
    assert f"3 of {len(RULES) + 1} rules complete" in text  # the registered rules, the fake one and Adam
    assert (tmp_path / "docs" / "figures" / "leaderboard_tiny.png").is_file()
    assert main(["--run", *args]) == 0  # resumable: everything is there, nothing runs again
    again = capsys.readouterr().out
    assert "running:" not in again and again.count("done: ") == 3


@pytest.mark.parametrize("key", sorted(RULES))
def test_every_registered_rule_is_probed_without_error(task_and_batch, key):
    # MeZO-SVRG reads full= (the training subset, here 3 batches) on anchor steps; Forward-Grad's JVP runs under the
    # memory tracker
    task, batch = task_and_batch
    full = [batch, batch, batch]
    got = probe_rule(RULES[key], task, batch, mu=1e-3, budget=4000, full_batches=full)  # ZO-AdaMU's phases need T
    assert got["forwards_per_step"] >= 1 and got["peak_bytes"] > 0 and math.isfinite(got["scale_ratio"])
    if key == "mezo_svrg":  # q = 2: anchors at steps 1 and 3 evaluate the 3 batches twice, step 2 takes 4 forwards
        assert got["forwards_per_step"] == pytest.approx((2 * 3 + 4 + 2 * 3) / 3)


def test_a_rule_that_reads_full_is_refused_without_full_batches(task_and_batch):
    task, batch = task_and_batch
    with pytest.raises(ValueError, match="MeZOSVRG evaluates the whole training subset"):
        probe_rule(RULES["mezo_svrg"], task, batch, mu=1e-3, budget=100)


def test_a_forward_mode_rule_is_charged_its_jvp_time_over_a_forward(task_and_batch, monkeypatch):
    from zolab.lab import leaderboard_probe as lp

    task, batch = task_and_batch
    forward, jvp = lp._forward_and_jvp(task, batch)
    assert lp._median_ratio(jvp, forward) > 1  # a JVP carries tangents through every operation
    monkeypatch.setattr(lp, "_median_ratio", lambda fn, ref, repeats=21: 2.5)
    entries = {k: probe_rule(RULES[k], task, batch, mu=1e-3, budget=100) for k in ("forward_grad", "zo_sgd")}
    assert entries["forward_grad"]["scheme"] == "jvp" and entries["forward_grad"]["forwards_per_step"] == 1
    lp.charge_jvp(entries, task, batch)  # one JVP pass a step, charged 2.5 forwards; differences untouched
    assert entries["forward_grad"]["forwards_per_step"] == 2.5 and entries["forward_grad"]["passes_per_step"] == 1
    assert entries["forward_grad"]["jvp_ratio"] == 2.5 and entries["zo_sgd"]["forwards_per_step"] == 2
    assert "jvp_ratio" not in entries["zo_sgd"]
