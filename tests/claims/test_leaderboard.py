"""The equal-budget leaderboard on hand-made runs: the budget in steps, the lr grid and its extensions, tuning on
validation, the seed runs, the states of incomplete or mismatched runs, a rule registered later, the page."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.claims import leaderboard_runs as L
from zolab.claims import leaderboard as lb
from zolab.claims.leaderboard_page import main, page
from zolab.claims.leaderboard_table import read_rows
from zolab.rules import RULES


@pytest.fixture
def bed(tmp_path):
    experiments, p = L.experiments(tmp_path)
    root = tmp_path / "runs"
    return root, experiments, p


def test_a_rule_runs_the_budget_over_its_forwards_a_step_rounded_to_the_validations(bed):
    _, _, p = bed
    assert lb.steps(p, 2) == 2000  # MeZO: 4,000 forwards, validation every 100 steps
    assert lb.steps(p, 2.79) == 1420  # Adam by backprop charged 2.79 forwards: ⌊1,433.7⌋ -> a multiple of 20
    assert lb.steps(p, 11) == 360 and lb.steps(p, 1e6) == 20  # at least one validation interval


def test_the_grid_is_scaled_for_scale_free_rules_and_continued_beyond_its_ends(bed):
    _, _, p = bed
    assert lb.grid(p, False) == [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    assert lb.grid(p, True) == [1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3]
    assert lb.beyond(lb.grid(p, False), up=True) == 3e-2 and lb.beyond([1e-3, 3e-3, 1e-2, 3e-2], up=True) == 1e-1
    assert lb.beyond(lb.grid(p, False), up=False) == 3e-6 and lb.beyond([3e-6, 1e-5, 3e-5], up=False) == 1e-6


def test_ties_go_to_the_smaller_lr_and_a_run_without_a_finite_loss_is_never_chosen():
    assert lb.best_lr({1e-3: 0.8, 3e-4: 0.8, 1e-2: 0.7}) == 3e-4
    assert lb.best_lr({1e-3: 0.6, 1e-2: math.nan}) == 1e-3 and lb.best_lr({1e-2: math.nan}) is None


def test_the_lr_is_chosen_on_validation_then_seeds_run_at_it(bed):
    root, experiments, p = bed
    L.probe(root, p, {"zo_sgd": L.entry("zo_sgd")})
    runs = lb.check_rule(root, experiments, p, "zo_sgd", L.entry("zo_sgd"))
    assert runs.state == "not run" and [phase for phase, _ in runs.specs] == ["tune"]
    # validation peaks at 3e-4, test at 1e-3: the choice must follow validation
    done = L.complete(root, experiments, p, "zo_sgd", val_acc=lambda lr, s: 0.8 - abs(math.log10(lr / 3e-4)) / 10,
                      test_acc=lambda lr, s: 0.9 if lr == 1e-3 else 0.7 + s / 100)
    assert done.state == "complete" and done.lr == 3e-4 and sorted(done.tuning) == lb.grid(p, False)
    assert [run.hp["seed"] for run in done.seeds] == [1, 2, 3, 4, 5]
    assert {run.hp["task.seed"] for run in done.seeds} == {1, 2, 3, 4, 5}  # a seed sets the task's seed too
    row = next(r for r in read_rows(root, experiments, p, ["zo_sgd"]))
    assert row.complete and row.test == pytest.approx([71, 72, 73, 74, 75])


def test_a_best_lr_at_an_end_adds_the_next_value_beyond_it_at_most_extend_times(bed):
    root, experiments, p = bed
    L.probe(root, p, {"zo_signsgd": L.entry("zo_signsgd", scale_free=True)})
    done = L.complete(root, experiments, p, "zo_signsgd", val_acc=lambda lr, s: 0.5 + 10 * lr)  # larger: better
    assert sorted(done.tuning) == [1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]  # the grid × 0.1, then 2 more
    assert done.lr == 1e-2 and len(done.seeds) == 5
    row = next(r for r in read_rows(root, experiments, p, ["zo_signsgd"]))
    assert row.robust() == (0, 7)  # every grid lr is more than 2 points below 1e-2's accuracy


def test_missing_runs_read_incomplete_with_the_runs_named(bed):
    root, experiments, p = bed
    L.probe(root, p, {"zo_sgd": L.entry("zo_sgd")})
    spec = lb.check_rule(root, experiments, p, "zo_sgd", L.entry("zo_sgd")).specs[0][1]
    L.make(root, p, spec, lambda lr, s: None if lr == 1e-2 else (0.7, 0.5, 0.7))
    L.make(root, p, lb.tune_spec(p, L.entry("zo_sgd"), [1e-3]), lambda lr, s: (0.7, 0.5, 0.7), status="running")
    runs = lb.check_rule(root, experiments, p, "zo_sgd", L.entry("zo_sgd"))
    assert runs.state == "incomplete" and runs.specs[0][0] == "tune"
    notes = " ".join(runs.notes)
    assert "not started: 1 of the 7" in notes and "ZOSGD-lr=0.01" in notes and "ZOSGD-lr=0.001 (running)" in notes


def test_runs_made_with_other_settings_read_mismatched_and_are_not_run_over(bed, capsys):
    root, experiments, p = bed
    L.probe(root, p, {"zo_sgd": L.entry("zo_sgd")})
    spec = lb.check_rule(root, experiments, p, "zo_sgd", L.entry("zo_sgd")).specs[0][1]
    other = lambda r: " ".join(["zolab", *r.args]).replace("max_steps=2000", "max_steps=999")  # noqa: E731
    L.make(root, p, spec, lambda lr, s: (0.7, 0.5, 0.7), command=other)
    runs = lb.check_rule(root, experiments, p, "zo_sgd", L.entry("zo_sgd"))
    assert runs.state == "mismatched" and "--trainer.max_steps=999" in " ".join(runs.notes)
    from zolab.claims.leaderboard_run import run_testbed

    assert run_testbed(root, experiments, p, ["zo_sgd"], log=print) == 1
    assert "not run: zo_sgd" in capsys.readouterr().out and not (root / p.folder / "sweeps").exists()


def test_a_rule_registered_later_joins_the_table_as_not_probed(bed, monkeypatch):
    root, experiments, p = bed
    from zolab.rules import RULES, ZOSGD

    L.probe(root, p, {"zo_sgd": L.entry("zo_sgd")})
    monkeypatch.setitem(RULES, "new_rule", type("NewRule", (ZOSGD,), {"label": "New rule"}))
    rows = {r.key: r for r in read_rows(root, experiments, p)}
    assert set(rows) == {*RULES, lb.FIRST_ORDER} and rows["new_rule"].label == "New rule"
    assert rows["new_rule"].runs.state == "not run" and "not probed yet" in rows["new_rule"].runs.notes[0]


def test_the_page_ranks_rules_by_test_accuracy_with_forwards_to_mezos_loss(bed):
    root, experiments, p = bed
    L.probe(root, p, {"zo_sgd": L.entry("zo_sgd", ms=2.0), "zo_signsgd": L.entry("zo_signsgd", scale_free=True),
                      lb.FIRST_ORDER: L.entry(lb.FIRST_ORDER, fps=4.0, memory=1.75)})
    peak = lambda best: lambda lr, s: 0.8 - abs(math.log10(lr / best)) / 10  # noqa: E731
    L.complete(root, experiments, p, "zo_sgd", peak(1e-3), loss=lambda lr, s: 0.5)  # MeZO: 0.7 -> 0.5 at 4,000
    L.complete(root, experiments, p, "zo_signsgd", peak(1e-4), test_acc=lambda lr, s: 0.9,
               loss=lambda lr, s: 0.3)  # reaches 0.5 at half its run: 2,000 forwards
    L.complete(root, experiments, p, lb.FIRST_ORDER, peak(1e-3), test_acc=lambda lr, s: 0.85, loss=lambda lr, s: 0.65)
    rows = read_rows(root, experiments, p)
    assert [r.key for r in rows[:3]] == ["zo_signsgd", lb.FIRST_ORDER, "zo_sgd"]  # by test accuracy
    reach = {r.key: r.reach for r in rows[:3]}
    assert reach["zo_sgd"] == pytest.approx(4000) and reach["zo_signsgd"] == pytest.approx(2000)
    assert math.isnan(reach[lb.FIRST_ORDER])  # never reaches 0.5 within its 1,000 steps
    out = root.parent / "docs" / "leaderboard.md"
    written = page(root, experiments, ["tb"], out)
    text = out.read_text()
    assert (root.parent / "docs" / "figures" / "leaderboard_tb.png") in written
    assert "| 1 | ZO_SIGNSGD | 2 | 2000 | 0.0001 | 90 ± 0 | 2000 (0.50×) | 1.00 (1.00×) | 1.25× | 1/7 |" in text
    assert "| 2 | ADAM_BACKPROP (reference) | 4 (charged) | 1000 | 0.001 | 85 ± 0 | — |" in text
    assert "| — | ZO-AdaMM | — | — | — | not run |" in text
    assert f"3 of {len(RULES) + 1} rules complete" in text  # every registered rule and Adam


def test_without_runs_the_command_answers_without_importing_torch(tmp_path):
    code = ("import sys; from zolab.entry import main; code = main(['leaderboard', '--root', sys.argv[1]]); "
            "print('imported:', sorted(m for m in ('torch', 'lightning') if m in sys.modules)); sys.exit(code)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "none")], capture_output=True, text=True,
                         cwd=lb.Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert "imported: []" in out.stdout and "not run: no runs under" in out.stdout


def test_bad_testbeds_and_rules_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--testbed", "t9", "--root", str(tmp_path)])
    assert "lacks leaderboard/t9.yaml" in capsys.readouterr().err
    experiments, p = L.experiments(tmp_path)
    L.probe(tmp_path / "runs", p, {})
    with pytest.raises(ValueError, match="unknown rules \\['nope'\\]"):
        lb.rule_entries(tmp_path / "runs", p, ["nope"])


def _add_many(root, p, key, n):
    from zolab.claims.leaderboard_run import _add_cpu

    for _ in range(n):
        _add_cpu(root, p, key, "tune", 1.0)


def test_two_run_processes_on_one_testbed_keep_each_others_cpu_seconds(bed):
    # `--run --rules A` and `--run --rules B` on one testbed share cpu_seconds.yaml: no update may be lost
    import multiprocessing

    from zolab.claims.leaderboard_table import cpu_record

    root, _, p = bed
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_many, args=(root, p, key, 40)) for key in ("zo_sgd", "radazo")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert cpu_record(root, p) == {"zo_sgd": {"tune": 40.0}, "radazo": {"tune": 40.0}}


@pytest.mark.parametrize("status", [1, 143])
def test_a_signal_stops_the_whole_run_a_failed_sweep_only_its_rule(bed, monkeypatch, status):
    import zolab.lab.workers
    from zolab.claims.leaderboard_run import Stopped, run_testbed

    root, experiments, p = bed
    L.probe(root, p, {"zo_sgd": L.entry("zo_sgd"), "radazo": L.entry("radazo")})
    swept = []
    monkeypatch.setattr(zolab.lab.workers, "main", lambda argv: swept.append(argv[0]) or status)
    if status == 143:  # SIGTERM: the first rule's sweep stopped, the second never starts
        with pytest.raises(Stopped, match="signal 15"):
            run_testbed(root, experiments, p, ["zo_sgd", "radazo"], log=print)
        assert len(swept) == 1 and "zo_sgd" in swept[0]
    else:  # a failed sweep: that rule is counted, the next one runs
        assert run_testbed(root, experiments, p, ["zo_sgd", "radazo"], log=print) == 2
        assert [Path(s).name for s in swept] == ["zo_sgd-tune.yaml", "radazo-tune.yaml"]


def test_a_rule_whose_least_run_costs_more_than_the_budget_is_named_with_what_it_spends(bed):
    root, experiments, p = bed
    L.probe(root, p, {"zo_sgd": L.entry("zo_sgd"), "mezo_svrg": L.entry("mezo_svrg", fps=1000.0)})
    out = root.parent / "docs" / "leaderboard.md"
    page(root, experiments, ["tb"], out)
    text = out.read_text()  # 20 steps (one validation interval) of 1,000 forwards: 5x the 4,000
    assert "Over the budget: a run takes at least 20 steps (one validation interval), so MEZO_SVRG spends about " \
           "20,000 forwards (5.0× B)." in text
    assert "ZO_SGD spends" not in text
