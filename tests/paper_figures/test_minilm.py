"""The MiniLM study's scripts on small fake sweeps: the grid's selection rule, the best-lr files, the table,
the figure."""

import math

import numpy as np
import pytest
import yaml
from torch.utils.tensorboard import SummaryWriter

from paper_figures import minilm, minilm_table
from paper_figures.minilm_table import START, best_lr, steps_to


def fake_run(path, hparams: dict, scalars: dict[str, dict[int, float]]):
    path.mkdir(parents=True)
    (path / "hparams.yaml").write_text(yaml.safe_dump(hparams))
    writer = SummaryWriter(str(path))
    for tag, points in scalars.items():
        for step, value in points.items():
            writer.add_scalar(tag, value, step)
    writer.close()


def test_selection_rule_skips_diverged_breaks_ties_low_and_marks_all_diverged():
    assert best_lr({1e-4: 0.53, 1e-3: 0.52, 1e-2: math.nan}) == (1e-3, False)
    assert best_lr({1e-4: 0.52, 1e-3: 0.51995, 1e-2: 5.0}) == (1e-4, False)  # within 1e-4: the smaller
    assert best_lr({1e-3: 0.50, 1e-2: START + 0.01}) == (1e-3, False)  # above the start: diverged
    assert best_lr({1e-3: math.inf, 1e-2: 7.0}) == (1e-3, True)
    assert best_lr({1e-3: None, 1e-2: 0.53}) == (1e-2, False)  # no validation (running or failed)


def test_steps_to_interpolates_from_the_start():
    steps, values = np.array([100, 200, 300]), np.array([0.53, 0.51, 0.50])
    assert steps_to(steps, values, 0.52, start=0.54) == pytest.approx(150.0)
    assert steps_to(steps, values, 0.535, start=0.54) == pytest.approx(50.0)
    assert math.isnan(steps_to(steps, values, 0.49, start=0.54))


def grid_runs(root):
    losses = {"ZOSGD": {1e-3: 0.535, 3e-3: 0.530, 1e-2: 1e4}, "ZOAdaMU": {1e-4: 0.536, 1e-3: math.nan, 1e-2: 0.54}}
    for rule, by_lr in losses.items():
        for lr, loss in by_lr.items():
            fake_run(root / "minilm_grid" / f"{rule}-{lr}", {"rule": rule, "lr": lr, "seed": 0},
                     {"val/loss": {99: START, 199: loss}})


def test_grid_report_and_best_files(tmp_path, capsys):
    grid_runs(tmp_path)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "zo_sgd.yaml").write_text("class_path: zolab.ZOSGD\ninit_args: {lr: 1.0e-3}\n")
    (rules / "zo_adamu.yaml").write_text("class_path: zolab.ZOAdaMU\ninit_args: {lr: 1.0e-4, t1: 10}\n")
    best = tmp_path / "best"
    assert minilm_table.main(["grid", "--runs", str(tmp_path), "--write-best", str(best), "--rules-dir", str(rules),
                              "--long-steps", "1500"]) == 0
    text = capsys.readouterr().out
    assert "| ZO-SGD | 0.001: 0.5350, 0.003: 0.5300, 0.01: diverged (1e+04) | 0.003 | 2/3 |" in text
    assert "| ZO-AdaMU | 0.0001: 0.5360, 0.001: diverged, 0.01: 0.5400 (above the start) | 0.0001 | 1/3 |" in text
    assert yaml.safe_load((best / "zo_sgd.yaml").read_text()) == {"class_path": "zolab.ZOSGD",
                                                                   "init_args": {"lr": 3e-3}}
    assert yaml.safe_load((best / "zo_adamu.yaml").read_text())["init_args"] == {"lr": 1e-4, "t1": 75}


def study_runs(root):
    val = {"ZOSGD": [0.535, 0.530], "RAdaZO": [0.52, 0.50], "ZOAdaMM": [0.53, 0.51], "ZORMSProp": [0.53, 0.52]}
    for rule, (v1, v2) in val.items():
        for seed in range(3):
            fake_run(root / "minilm_seeds" / f"{rule}-{seed}", {"rule": rule, "lr": 1e-3, "seed": seed},
                     {"val/loss": {149: v1 + seed / 1000, 299: v2 + seed / 1000}, "test/acc": {299: 0.75 + seed / 100},
                      "test/loss": {299: 0.5}, minilm_table.WALL: {0: 900.0, 49: 500.0, 99: 520.0},
                      minilm_table.RSS: {0: 800.0, 99: 810.0}})
        fake_run(root / "minilm_cost" / rule, {"rule": rule, "lr": 1e-7, "seed": 0},
                 {minilm_table.WALL: {0: 5000.0, 4: 1300.0, 9: 1400.0}, minilm_table.RSS: {0: 1200.0, 9: 1210.0}})
    for seed in range(2):
        fake_run(root / "minilm_references" / f"fo_full-{seed}",
                 {"rule": "Adam", "lr": 2e-5, "seed": seed, "first_order": True, "task.mode": "full"},
                 {"val/loss": {99: 0.4, 199: 0.35}, "test/acc": {199: 0.85}, "test/loss": {199: 0.36},
                  minilm_table.WALL: {0: 2000.0, 49: 1500.0}, minilm_table.RSS: {0: 1500.0}})


def test_table_rows_seeds_references_and_full_fine_tuning_cost(tmp_path):
    study_runs(tmp_path)
    fake_run(tmp_path / "minilm_seeds" / "hessian", {"rule": "Other", "lr": 1.0},
             {f"diagnostics/hessian/{k}": {0: 2.0, 249: 3.5} for k in minilm_table.HESSIAN})
    text = minilm_table.table(tmp_path)
    assert "Hessian probe on hessian" in text and "| 250 | 3.5 | 3.5 | 3.5 | 3.5 |" in text
    assert "Common validation loss (R6): 0.5210" in text  # ZO-RMSProp's last mean, the highest of the three
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    radazo = rows["| ZO, R-AdaZO: LoRA + head"]
    # R-AdaZO's mean curve (0.521, 0.501 at steps 150, 300) crosses 0.521 at step 150
    assert "| 76.00 ± 1.00 | 0.5000 ± 0.0000 | 0.5010 ± 0.0010 | 150 | 810 | 510 | 1210 | 1350 |" in radazo
    assert "| not reached |" in rows["| ZO, ZO-SGD: LoRA + head"]
    fo = rows["| first order, Adam: full fine-tuning"]
    assert "| 2e-05 | 2 | 85.00 ± 0.00 |" in fo and fo.endswith("| 1500 | 1500 | 1500 | 1500 |")


def test_figure_is_written(tmp_path):
    grid_runs(tmp_path)
    study_runs(tmp_path)
    out = tmp_path / "fig.png"
    assert minilm.main(["--runs", str(tmp_path), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert minilm.main(["--runs", str(tmp_path / "nothing"), "--out", str(out)]) == 1


def test_pilot_table(tmp_path):
    for mode, lr, loss in (("lora", 1e-3, 0.53), ("full", 3e-5, 1e4)):
        fake_run(tmp_path / "minilm_pilot" / f"{mode}-{lr}", {"rule": "ZOSGD", "lr": lr, "task.mode": mode},
                 {"val/loss": {99: 0.536, 199: loss}, "test/acc": {199: 0.7}, minilm_table.WALL: {0: 9.0, 49: 4.0}})
    text = minilm_table.pilot(tmp_path / "minilm_pilot")
    assert text.splitlines()[2:] == ["| full | 3e-05 | 100: 0.5360, 200: 1e+04 | 70.00 | 4 |",
                                     "| lora | 0.001 | 100: 0.5360, 200: 0.5300 | 70.00 | 4 |"]


def test_one_extension_beyond_a_best_at_an_end(tmp_path):
    assert [minilm_table.beyond(x, up) for x, up in ((1e-2, True), (3e-3, True), (1e-3, False), (3e-5, False))] == [
        3e-2, 1e-2, 3e-4, 1e-5]
    grid_runs(tmp_path)  # ZO-SGD's best 3e-3 is inside its grid; ZO-AdaMU's 1e-4 is its smallest
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "zo_adamu.yaml").write_text("class_path: zolab.ZOAdaMU\ninit_args: {lr: 1.0e-4, t1: 10}\n")
    (tmp_path / "base.yaml").write_text("seed_everything: 0\n")
    table = minilm_table.grid(tmp_path / "minilm_grid", edges=False)
    path = minilm_table.write_edges(table, rules, tmp_path / "edges")
    sweep = yaml.safe_load(path.read_text())
    assert sweep["name"] == "minilm_grid" and sweep["grid"] == {"model.optimizer": ["zo_adamu-edge-lr=3e-05.yaml"]}
    assert yaml.safe_load((tmp_path / "edges" / "zo_adamu-edge-lr=3e-05.yaml").read_text())["init_args"] == {
        "lr": 3e-5, "t1": 10}
    # the extension joins the choice but is not extended again
    fake_run(tmp_path / "minilm_grid" / "zo_adamu-edge-lr=3e-05", {"rule": "ZOAdaMU", "lr": 3e-5},
             {"val/loss": {199: 0.530}})
    assert best_lr(minilm_table.grid(tmp_path / "minilm_grid")["ZOAdaMU"]) == (3e-5, False)
    assert list(minilm_table.grid(tmp_path / "minilm_grid", edges=False)["ZOAdaMU"]) == [1e-4, 1e-3, 1e-2]
    table["ZOAdaMU"] = {1e-4: 0.53, 1e-3: 0.52, 1e-2: 0.535}  # best inside: nothing to extend
    del table["ZOSGD"]
    assert minilm_table.write_edges(table, rules, tmp_path / "none") is None


def test_seed_zero_is_the_grid_run_of_the_same_step_size_and_length(tmp_path):
    seeds, grid = tmp_path / "minilm_seeds", tmp_path / "minilm_grid"
    for seed in (1, 2):
        fake_run(seeds / f"s{seed}", {"rule": "ZOSGD", "lr": 1e-3, "seed": seed, "max_steps": 200},
                 {"test/acc": {199: 0.7}})
    fake_run(grid / "same", {"rule": "ZOSGD", "lr": 1e-3, "seed": 0, "max_steps": 200}, {"test/acc": {199: 0.7}})
    fake_run(grid / "other_lr", {"rule": "ZOSGD", "lr": 3e-3, "seed": 0, "max_steps": 200}, {"test/acc": {199: 0.7}})
    fake_run(grid / "other_rule", {"rule": "MEAZO", "lr": 1e-3, "seed": 0, "max_steps": 200}, {})
    runs = minilm_table.seed_runs(tmp_path)
    assert sorted(p.name for p in runs["ZOSGD"]) == ["s1", "s2", "same"] and "MEAZO" not in runs
    fake_run(seeds / "s0", {"rule": "ZOSGD", "lr": 1e-3, "seed": 0, "max_steps": 200}, {})  # a seed-0 run of its own
    assert sorted(p.name for p in minilm_table.seed_runs(tmp_path)["ZOSGD"]) == ["s0", "s1", "s2"]
