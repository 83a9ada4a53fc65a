"""``zolab claims``: every row "not run" without runs; the verdict rules on small hand-made event files (holds,
partly, fails) without training; the scoreboard, the commands it prints and docs/claims.md."""

import json
import subprocess
import sys
import time

import pytest
import yaml

from tests.claims.fake_runs import EXPERIMENTS, complete_sweep, fig2a_maker
from tests.claims.fake_runs import fake_run as _fake_run
from zolab import claims as C
from zolab.claims import minilm as study
from zolab.claims.experiments import Runs
from zolab.claims.radazo import FUNCTIONS


def fake_run(root, sweep, run_id, hp: dict, scalars: dict[str, list]):
    """A run directory ROOT/SWEEP/RUN_ID as ``zolab fit`` leaves it (hparams.yaml and an event file)."""
    return _fake_run(root / sweep / run_id, hp, scalars)


def read(root, claim_id, part):
    """A part's reading (its power rule applied) from every run under its sweeps' folders."""
    claim = C.claim_by_id(claim_id)
    return next(p for p in claim.parts if p.name == part).reading(Runs(root, EXPERIMENTS))


# ---------------------------------------------------------------------------------------------- no runs
def test_without_runs_every_claim_is_not_run_with_its_command(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    start = time.perf_counter()
    assert C.main(["--root", str(tmp_path / "runs")]) == 0
    assert time.perf_counter() - start < 10
    out = capsys.readouterr().out
    ids = [c.id for c in C.CLAIMS]
    assert out.count("NOT RUN") == len(ids) and f"{len(ids)} not run" in out
    for i in ids:
        assert f"zolab claims --run {i} --root {tmp_path / 'runs'}" in out
    assert "zolab fit --config experiments/llm/sst2_opt1.3b_radazo.yaml" in out  # the GPU part's command
    assert "(GPU)" in out


def test_a_fresh_clone_answers_without_importing_torch(tmp_path):
    """No runs: no torch, no Lightning (labels and sweeps are looked up only once runs are on disk)."""
    code = ("import sys; from zolab.claims import main; code = main([]); "
            "print('imported:', sorted(m for m in ('torch', 'lightning') if m in sys.modules)); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "imported: []" in proc.stdout and "(no runs: runs does not exist yet" in proc.stdout


def test_python_m_zolab_claims_is_the_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "zolab.claims", "R9"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "unknown claim 'R9'" in proc.stderr


def test_selection_dry_run_and_bad_ids(tmp_path, capsys):
    assert C.main(["R2", "Z1.quadratics", "--run", "--dry-run", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "would run: zolab sweep experiments/claims/fig2a_seeds.yaml" in out
    assert f"fig2a_seeds.yaml --root={tmp_path} --resume --workers=2 --threads=1\n" in out  # small runs: 2 at a time
    assert f"z1_dim.yaml --root={tmp_path} --resume\n" in out
    assert "minilm" not in out  # R2 and Z1.quadratics need none of the study's runs, and only they show
    assert "z1_dim.yaml" in out and "z1_rank.yaml" in out
    assert not (tmp_path / "claims_fig2a_seeds").exists()  # nothing ran
    with pytest.raises(SystemExit):
        C.main(["R9"])
    with pytest.raises(SystemExit):
        C.main(["Z1.nothing"])


def test_verdicts_combine():
    assert C.combine([]) == "not run"
    assert C.combine(["holds", "holds"]) == C.combine(["holds", "inconclusive"]) == "holds"
    assert C.combine(["fails"]) == "fails"
    assert C.combine(["holds", "fails"]) == C.combine(["partly"]) == "partly"
    assert C.combine(["inconclusive", "inconclusive"]) == "inconclusive"
    assert C.VERDICTS == ("holds", "partly", "fails", "inconclusive", "not run")


# ---------------------------------------------------------------------------------------------- R2, R3
def fig2a(root, cos_m_by_beta):
    for b1, cos_m in cos_m_by_beta.items():
        for seed in (0, 1):
            fake_run(root, "claims_fig2a_seeds", f"b{b1}-s{seed}", {"beta1": b1, "beta2": 0.99, "seed": seed},
                     {"diagnostics/alignment/cos_g": [0.5, 0.1, 0.1],
                      "diagnostics/alignment/cos_m": [0.5, cos_m + seed / 1000, cos_m + seed / 1000]})


@pytest.mark.parametrize("cos_m, verdict", [
    ({0.0: 0.1, 0.9: 0.4, 0.99: 0.8, 0.999: 0.7}, "holds"),
    ({0.0: 0.1, 0.9: 0.4, 0.99: 0.8, 0.999: 0.9}, "partly"),  # no drop at very high β1
    ({0.0: 0.1, 0.9: 0.05, 0.99: 0.8, 0.999: 0.7}, "fails"),  # cos(m) below cos(ĝ) at β1 = 0.9
])
def test_r2(tmp_path, cos_m, verdict):
    fig2a(tmp_path, cos_m)
    res = read(tmp_path, "R2", "quadratic")
    assert res.verdict == verdict
    assert "(β1 = 0)" in res.number and "±" in res.number


@pytest.mark.parametrize("refined, verdict", [([3.0, 2.0, 1.0], "holds"), ([3.0, 2.0, 2.5], "partly"),
                                              ([3.0, 60.0, 1.0], "fails")])
def test_r3(tmp_path, refined, verdict):
    for b2, rule in zip((0.5, 0.9, 0.99), refined):
        fake_run(tmp_path, "claims_fig2b_seeds", f"b{b2}", {"beta1": 0.9, "beta2": b2, "seed": 0},
                 {"diagnostics/second_moment/rel_error_conventional": [50.0, 50.0],
                  "diagnostics/second_moment/rel_error_rule": [9.0, rule]})
    assert read(tmp_path, "R3", "quadratic").verdict == verdict


# ---------------------------------------------------------------------------------------------- R1, R4
def fig1(root, sweep, finals: dict[str, dict[str, float]], seeds=(0,)):
    for task, rules in finals.items():
        for rule, final in rules.items():
            for s in seeds:
                fake_run(root, sweep, f"{task}-{rule}-{s}", {"task": task, "rule": rule, "seed": s},
                         {"train/loss": [100.0, final * (1 + s / 100)]})


ALL_RULES = ("ZOSGD", "ZOSignSGD", "ZOAdaMM", "ZORMSProp")


@pytest.mark.parametrize("wins, verdict", [(3, "holds"), (2, "partly"), (1, "fails")])
def test_r1_most_functions(tmp_path, wins, verdict):
    finals = {}
    for i, task in enumerate(FUNCTIONS):
        finals[task] = {r: 10.0 for r in ALL_RULES}
        finals[task]["RAdaZO"] = 1.0 if i < wins else 20.0
    fig1(tmp_path, "claims_fig1_seeds", finals, seeds=(0, 1, 2))
    res = read(tmp_path, "R1", "seeds")
    assert res.verdict == verdict and f"on {wins}/4 functions" in res.number and "(3 seeds)" in res.number


def test_r1_diverged_counts_as_worst(tmp_path):
    finals = {task: {**{r: 10.0 for r in ALL_RULES}, "RAdaZO": 1.0} for task in FUNCTIONS}
    finals["Cubic"]["ZOSGD"] = float("nan")  # diverged: not a winner
    finals["Levy"]["ZOSGD"] = 1e9  # above 1e3 × the initial loss (100): diverged
    fig1(tmp_path, "radazo_fig1", finals, seeds=(0, 1))
    assert read(tmp_path, "R1", "proxy").verdict == "holds"


@pytest.mark.parametrize("ratio, verdict", [(1.05, "holds"), (1.5, "partly"), (3.0, "fails")])
def test_r4_figure1(tmp_path, ratio, verdict):
    fig1(tmp_path, "radazo_fig1", {t: {"ZOAdaMM": 10.0 * ratio, "ZORMSProp": 10.0} for t in FUNCTIONS}, seeds=(0, 1))
    assert read(tmp_path, "R4", "proxy").verdict == verdict


# ---------------------------------------------------------------------------------------------- R5, R4 attack
def attack(root, runs: dict[str, list], seeds: int = 2):
    """The attack runner's JSON files (settings as registered, but for ``seeds``)."""
    from zolab.claims.radazo import ATTACK_SETTINGS

    settings = {**dict(ATTACK_SETTINGS), "victims": list(range(10)), "seeds": seeds}
    for rule, iterations in runs.items():
        path = root / f"attack/table1_2k_{rule}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"settings": settings, "rules": {rule: {"runs": iterations}}}))


@pytest.mark.parametrize("radazo, verdict", [
    ([100, 100, 100, 100], "holds"),  # 4× faster than ZO-RMSProp, no more failures
    ([200, 200, 200, 200], "partly"),  # 2×
    ([800, 800, None, None], "fails"),  # slower and fails more
])
def test_r5(tmp_path, radazo, verdict):
    attack(tmp_path, {"ZO-RMSProp": [400, 400, 400, 400], "ZO-AdaMM": [400, 420, 380, 400], "R-AdaZO": radazo})
    res = read(tmp_path, "R5", "attack")
    assert res.verdict == verdict and "speed-up over ZO-RMSProp" in res.number
    assert read(tmp_path, "R4", "attack").verdict == "holds"


def test_r5_not_run_until_every_rule_has_run(tmp_path):
    attack(tmp_path, {"ZO-RMSProp": [400], "R-AdaZO": [100]})
    assert read(tmp_path, "R5", "attack") is None


# ---------------------------------------------------------------------------------------------- A2
@pytest.mark.parametrize("finals, verdict", [
    ({"hold": 0.2, "all_off": 0.5, "alpha_off": 0.3, "beta1_off": 0.4, "beta2_off": 0.3}, "holds"),
    ({"hold": 0.2, "all_off": 0.5, "alpha_off": 0.3, "beta1_off": 0.1, "beta2_off": 0.3}, "partly"),
    ({"hold": 0.5, "all_off": 0.2, "alpha_off": 0.6, "beta1_off": 0.9, "beta2_off": 0.3}, "fails"),
])
def test_a2(tmp_path, finals, verdict):
    for arm, final in finals.items():
        for seed in (0, 1):
            fake_run(tmp_path, "adamu_schedules", f"{arm}-seed={seed}", {"rule": "ZOAdaMU", "seed": seed},
                     {"train/loss": [2.0, final + seed / 100]})
    assert read(tmp_path, "A2", "mlp").verdict == verdict


# ---------------------------------------------------------------------------------------------- Z1
def z1(root, sweep, steps_by_cell: dict[tuple[int, float], int]):
    """Runs whose loss reaches 1% of f(x₀) at the given step (at lr 0.0625; lr 0.125 never reaches it)."""
    from zolab.tasks.toy import SpectrumQuadratic

    for (d, r), step in steps_by_cell.items():
        f0 = SpectrumQuadratic(d, r, 0).initial_loss
        for lr, reached in ((0.0625, step), (0.125, None)):
            for seed in (0, 1):
                curve = [(s, f0 * (0.005 if reached is not None and s + 1 >= reached + 10 * seed else 0.5))
                         for s in range(9, 8000, 10)]
                fake_run(root, sweep, f"d{d}-r{r}-lr{lr}-s{seed}",
                         {"task.dim": d, "task.effective_rank": r, "task.init_seed": 0, "lr": lr, "seed": seed},
                         {"train/loss": curve})


@pytest.mark.parametrize("dim_steps, rank_steps, verdict", [
    ({256: 1430, 4096: 1450}, {4: 300, 16: 1440, 64: 6400}, "holds"),
    ({256: 1430, 4096: 1450}, {4: 300, 16: 310, 64: 320}, "partly"),  # flat in r: does not follow it
    ({256: 400, 4096: 3000}, {4: 300, 16: 310, 64: 320}, "fails"),  # follows d, not r
])
def test_z1(tmp_path, dim_steps, rank_steps, verdict):
    z1(tmp_path, "z1_dim", {(d, 16): s for d, s in dim_steps.items()})
    z1(tmp_path, "z1_rank", {(4096, r): s for r, s in rank_steps.items()})
    res = read(tmp_path, "Z1", "quadratics")
    assert res.verdict == verdict
    assert "(a) r = 16" in res.number and "(b) d = 4,096" in res.number and "theory 276" in res.number


@pytest.mark.parametrize("rank, verdict", [(300.0, "holds"), (1e6, "fails"), (-5.0, "fails")])
def test_z1_minilm(tmp_path, rank, verdict):
    fake_run(tmp_path, "minilm_seeds", "zo_sgd", {"rule": "ZOSGD", "lr": 1e-6, "seed": 0},
             {"diagnostics/hessian/effective_rank": [rank, rank * 1.1], "diagnostics/hessian/dim": [2.27e7] * 2})
    assert read(tmp_path, "Z1", "minilm").verdict == verdict


# ---------------------------------------------------------------------------------------------- B2
def b2(root, slope: float):
    """Probe steps with ν = 1 − ρ + (n + 1)ρ·slope (slope 1: §4's relation; negative: the claim's direction)."""
    for blocks, sizes in (("None", [5578]), ("module", [1056, 1056, 2080]), ("tensor", [1024, 32])):
        for seed in (0, 1):
            rows = {k: [] for k in ("measured", "theory", "grad_norm_sq", "grad_overlap", "block_size")}
            for i in range(12):
                n = sizes[i % len(sizes)]
                rho = 1.0 if blocks == "None" else 0.1 + 0.02 * (i % 5) + 0.001 * seed
                nu = 1 - rho + (n + 1) * (rho if slope > 0 else (0.3 - rho) * 10 / (n + 1) + 0.05)
                for key, value in (("measured", nu), ("theory", 1 - rho + (n + 1) * rho), ("grad_norm_sq", 1.0),
                                   ("grad_overlap", rho), ("block_size", n)):
                    rows[key].append((4 * i, value))
            scalars = {f"diagnostics/variance/{k}": rows[k] for k in ("measured", "theory", "grad_norm_sq")}
            scalars.update({f"diagnostics/block_overlap/{k}": rows[k] for k in ("grad_overlap", "block_size")})
            fake_run(root, "b2_blocks", f"{blocks}-{seed}", {"rule": "MeZOBCD", "blocks": blocks, "seed": seed},
                     scalars)


@pytest.mark.parametrize("slope, verdict", [(1.0, "partly"), (-1.0, "holds")])
def test_b2(tmp_path, slope, verdict):
    b2(tmp_path, slope)
    res = read(tmp_path, "B2", "mlp")
    assert res.verdict == verdict
    assert "one block (5578)" in res.number and "Spearman" in res.number


# ---------------------------------------------------------------------------------------------- the MiniLM rows
def minilm(root, rules: dict[str, dict], grid: dict[str, dict[float, float]] | None = None):
    """minilm_seeds runs (per rule its val/loss curve and test accuracy, 3 seeds) and minilm_cost runs (peak
    RSS and step time of full fine-tuning)."""
    for rule, spec in rules.items():
        for seed in (0, 1, 2):
            fake_run(root, "minilm_seeds", f"{rule}-{seed}", {"rule": rule, "lr": 1e-5, "seed": seed}, {
                "val/loss": [(s, v) for s, v in zip((0, 100, 200, 300), spec.get("val", [0.7, 0.6, 0.5, 0.4]))],
                "test/acc": [(300, spec.get("acc", 0.8) + seed / 1000)]})
        fake_run(root, "minilm_cost", rule, {"rule": rule, "lr": 1e-7, "seed": 0},
                 {"diagnostics/step_cost/peak_rss_mib": [spec.get("mib", 1000.0)] * 2,
                  "diagnostics/step_cost/wall_ms": [spec.get("ms", 100.0)] * 3})
    for rule, finals in (grid or {}).items():
        for lr, final in finals.items():
            fake_run(root, "minilm_grid", f"{rule}-{lr}", {"rule": rule, "lr": lr, "seed": 0},
                     {"val/loss": [(0, 0.7), (100, final)]})


@pytest.mark.parametrize("radazo_val, verdict", [
    ([0.7, 0.45, 0.4, 0.4], "holds"),  # reaches 0.45 at step 100, the others at 300
    ([0.7, 0.6, 0.45, 0.4], "partly"),  # 1.5× sooner
    ([0.7, 0.7, 0.7, 0.45], "fails"),  # last
])
def test_r6(tmp_path, radazo_val, verdict):
    slow = [0.7, 0.6, 0.55, 0.45]
    minilm(tmp_path, {"RAdaZO": {"val": radazo_val}, "ZORMSProp": {"val": slow}, "ZOAdaMM": {"val": slow}})
    res = read(tmp_path, "R6", "minilm")
    assert res.verdict == verdict and "sooner than ZO-RMSProp" in res.number


@pytest.mark.parametrize("adamu, verdict", [({"acc": 0.85}, "holds"), ({"acc": 0.85, "mib": 1500.0}, "partly"),
                                            ({"acc": 0.805}, "partly"), ({"acc": 0.75}, "fails")])
def test_a1(tmp_path, adamu, verdict):
    minilm(tmp_path, {"ZOAdaMU": adamu, "ZOSGD": {"acc": 0.8}})
    assert read(tmp_path, "A1", "minilm").verdict == verdict


@pytest.mark.parametrize("bcd, verdict", [({"acc": 0.8, "ms": 50.0}, "holds"), ({"acc": 0.8, "ms": 90.0}, "partly"),
                                          ({"acc": 0.7, "ms": 90.0}, "fails")])
def test_b1(tmp_path, bcd, verdict):
    minilm(tmp_path, {"MeZOBCD": bcd, "ZOSGD": {"acc": 0.8, "ms": 100.0}})
    assert read(tmp_path, "B1", "minilm").verdict == verdict


@pytest.mark.parametrize("meazo_grid, meazo, verdict", [
    ({1e-6: 0.51, 1e-5: 0.502, 1e-4: 0.508}, {"acc": 0.8, "mib": 1000.0}, "holds"),
    ({1e-6: 0.538, 1e-5: 0.502, 1e-4: 0.538}, {"acc": 0.8, "mib": 1000.0}, "partly"),  # not robust
    ({1e-6: 0.538, 1e-5: 0.502, 1e-4: 0.538}, {"acc": 0.7, "mib": 2000.0}, "fails"),
])
def test_m1(tmp_path, meazo_grid, meazo, verdict):
    """Robust: as many lrs as ZO-AdaMM (2 here) within 75% of the grid's best gain (0.50) on the start 0.5388."""
    grid = {"MEAZO": meazo_grid, "ZOAdaMM": {1e-6: 0.538, 1e-5: 0.50, 1e-4: 0.505},
            "ZOSGD": {1e-6: 0.538, 1e-5: 0.505, 1e-4: 0.538}}
    minilm(tmp_path, {"MEAZO": meazo, "ZOAdaMM": {"acc": 0.8}, "ZOSGD": {"acc": 0.8, "mib": 1000.0}}, grid)
    assert read(tmp_path, "M1", "minilm").verdict == verdict


# ---------------------------------------------------------------------------------------------- the pages
def test_board_and_docs_with_some_runs(tmp_path, capsys):
    complete_sweep(tmp_path / "runs", "claims/fig2a_seeds.yaml", fig2a_maker)
    attack(tmp_path / "runs", {"ZO-RMSProp": [400] * 30, "ZO-AdaMM": [400] * 30, "R-AdaZO": [800] * 30}, seeds=3)
    md = tmp_path / "docs" / "claims.md"
    assert C.main(["--root", str(tmp_path / "runs"), "--write", str(md)]) == 0
    out = capsys.readouterr().out
    assert "R2   HOLDS" in out and "R5   FAILS" in out and "R4   HOLDS" in out  # R4: only its attack part ran
    assert "missing   proxy: not run -> zolab claims --run R4.proxy" in out
    assert "power: the reference ZO-RMSProp moved 100 points (0 -> 100)" in out
    text = md.read_text()
    assert text.count("\n| [") == len(C.CLAIMS) and "| **holds** |" in text and "| **not run** |" in text
    assert "Power: [attack] inconclusive unless ZO-RMSProp raises its success rate" in text
    assert (tmp_path / "docs/figures/claims/r2_quadratic.png").stat().st_size > 5000
    assert "![R5 attack](figures/claims/r5_attack.png)" in text


def test_attack_results_with_other_settings_read_mismatched(tmp_path, capsys):
    attack(tmp_path, {"ZO-RMSProp": [400] * 20, "ZO-AdaMM": [400] * 20, "R-AdaZO": [800] * 20}, seeds=2)
    row = C.score(tmp_path, EXPERIMENTS, C.select(["R5"]))[0]
    assert row.verdict == "mismatched"
    assert "attack/table1_2k_R-AdaZO.json (seeds 2, registered 3)" in row.state(row.claim.parts[0])


def test_a_malformed_run_is_reported_not_fatal(tmp_path, capsys):
    made = complete_sweep(tmp_path, "claims/fig2a_seeds.yaml", fig2a_maker)
    hp = made[0].run_dir / "hparams.yaml"
    hp.write_text(yaml.safe_dump({k: v for k, v in yaml.safe_load(hp.read_text()).items() if k != "beta1"}))
    rows = C.score(tmp_path, EXPERIMENTS, C.select(["R2", "R3"]))
    assert rows[0].verdict == "incomplete" and "KeyError" in rows[0].errors["quadratic"]
    C.print_board(rows, str(tmp_path), "data", "experiments")
    assert "quadratic: incomplete: the reader failed (KeyError" in capsys.readouterr().out


def test_minilm_seed_zero_comes_from_the_grid_run_of_the_same_settings(tmp_path):
    for seed in (1, 2):
        fake_run(tmp_path, "minilm_seeds", f"zo_sgd-{seed}", {"rule": "ZOSGD", "lr": 1e-3, "seed": seed,
                                                             "max_steps": 200}, {"test/acc": [(199, 0.7)]})
    for lr, steps in ((1e-3, 200), (3e-3, 200), (1e-3, 400)):
        fake_run(tmp_path, "minilm_grid", f"zo_sgd-{lr}-{steps}", {"rule": "ZOSGD", "lr": lr, "seed": 0,
                                                                   "max_steps": steps}, {"test/acc": [(199, 0.7)]})
    runs = study.seed_runs(Runs(tmp_path, EXPERIMENTS))["ZOSGD"]
    assert sorted(r.path.name for r in runs) == ["zo_sgd-0.001-200", "zo_sgd-1", "zo_sgd-2"]


def test_a_sweep_still_running_gives_no_verdict(tmp_path):
    made = complete_sweep(tmp_path, "claims/fig2a_seeds.yaml", fig2a_maker)
    assert C.score(tmp_path, EXPERIMENTS, C.select(["R2"]))[0].verdict == "holds"
    (made[-1].run_dir / "sweep_run.yaml").write_text("status: running\n")
    row = C.score(tmp_path, EXPERIMENTS, C.select(["R2"]))[0]
    assert row.verdict == "incomplete" and [p.name for p in row.missing] == ["quadratic"]
    assert f"not finished: 1 of the 21 runs of claims/fig2a_seeds.yaml: claims_fig2a_seeds/{made[-1].run_id} " \
           "(running)" in row.state(row.claim.parts[0])
