"""Claims HZ1, HZ2 (HiZOO), SM1 (Sparse-MeZO) and FG1 (Forward-Grad): each verdict of their rules read from small
hand-made event files (hparams.yaml, config.yaml for the options hparams does not record, the scalars), the power
rule included, and their sweep files expand."""

import pytest
import yaml

from tests.claims.fake_runs import EXPERIMENTS, sweep_runs
from tests.claims.fake_runs import fake_run as _fake_run
from zolab import claims as C
from zolab.claims.experiments import Runs

STEPS = [500, 1000, 1500, 2000, 2500, 3000, 3500, 4000]


def fake_run(root, sweep, run_id, rule, lr, seed, scalars, **options):
    """A run of ``rule`` under ROOT/SWEEP/RUN_ID: hparams.yaml (rule, lr, seed, alpha when given) and config.yaml
    (the rule's init_args)."""
    hp = {"rule": rule, "lr": lr, "seed": seed, **({"alpha": options["alpha"]} if "alpha" in options else {})}
    path = _fake_run(root / sweep / run_id, hp, scalars)
    (path / "config.yaml").write_text(yaml.safe_dump({"model": {"optimizer": {
        "class_path": f"zolab.{rule}", "init_args": {"lr": lr, "seed": seed, **options}}}}))
    return path


def curve(values, tag):
    return {tag: list(zip(STEPS, values))}


def read(root, claim_id, part):
    claim = C.claim_by_id(claim_id)
    return next(p for p in claim.parts if p.name == part).reading(Runs(root, EXPERIMENTS))


def test_the_registry_lists_the_claims_and_their_sweeps_expand(tmp_path):
    for ident, parts in (("HZ1", ["p_hq", "p_mlp"]), ("HZ2", ["p_hq"]), ("SM1", ["p_mlp"]), ("FG1", ["p_mlp"])):
        claim = C.claim_by_id(ident)
        assert [p.name for p in claim.parts] == parts and claim.rule
        for part in claim.parts:
            for job in part.jobs:
                assert (EXPERIMENTS / job.sweep).exists() and sweep_runs(tmp_path, job.sweep), job.sweep
    assert len(sweep_runs(tmp_path, "claims/hz1_phq.yaml")) == 36
    assert len(sweep_runs(tmp_path, "claims/sm1_pmlp.yaml")) == 60


# ---------------------------------------------------------------------------------------------- HZ1
MEZO_LOSS = [77, 60, 50, 40, 35, 30, 25, 20]  # reaches its best, 20, at step 4000


@pytest.mark.parametrize("hizoo, verdict", [
    ([30, 19, 18, 18, 18, 18, 18, 18], "holds"),  # MeZO's 20 at step 1000: 4× fewer steps, as good
    ([50, 40, 30, 20, 20, 20, 20, 20], "partly"),  # at step 2000: 2×
    ([70, 60, 50, 40, 35, 30, 25, 21], "fails"),  # never
    ([30, 19, 25, 25, 25, 25, 25, 25], "holds"),  # touches 19 at step 1000, its best
])
def test_hz1_on_p_hq(tmp_path, hizoo, verdict):
    sweep = "claims_hz1_phq"
    for seed in (0, 1, 2):
        for lr in (3.5e-4, 7e-4):
            worse = [v + 10 * (lr < 5e-4) for v in MEZO_LOSS]  # the smaller η ends higher
            fake_run(tmp_path, sweep, f"mezo-{lr}-{seed}", "ZOSGD", lr, seed, curve(worse, "val/loss"))
            for alpha in (1e-2, 1e-4):
                values = hizoo if alpha == 1e-2 and lr == 7e-4 else [v + 30 for v in MEZO_LOSS]
                fake_run(tmp_path, sweep, f"hizoo-{alpha}-{lr}-{seed}", "HiZOO", lr, seed, curve(values, "val/loss"),
                         alpha=alpha)
    res = read(tmp_path, "HZ1", "p_hq")
    assert res.verdict == verdict, res.number
    assert "MeZO's best val/loss 20 (η 0.0007) at step 4000" in res.number
    assert "HiZOO α=0.01" in res.number or verdict == "fails"
    assert "the reference MeZO moved" in res.power


def test_hz1_on_p_mlp_needs_hizoo_as_accurate_and_mezo_to_move(tmp_path):
    def runs(root, mezo, hizoo, seeds=(0, 1)):
        for seed in seeds:
            fake_run(root, "claims_hz1_pmlp", f"mezo-{seed}", "ZOSGD", 1e-3, seed, curve(mezo, "val/acc"))
            fake_run(root, "claims_hz1_pmlp", f"hizoo-{seed}", "HiZOO", 1e-3, seed, curve(hizoo, "val/acc"), alpha=1e-4)

    mezo = [0.45, 0.6, 0.7, 0.8, 0.85, 0.88, 0.9, 0.9]  # best 0.9 first at step 3500
    runs(tmp_path / "a", mezo, [0.45, 0.91, 0.92, 0.92, 0.92, 0.92, 0.92, 0.92])  # 0.9 at step 1000: 3.5×
    assert read(tmp_path / "a", "HZ1", "p_mlp").verdict == "partly"
    runs(tmp_path / "b", [0.45, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.95], [0.95] * 8)  # 8×, as good
    assert read(tmp_path / "b", "HZ1", "p_mlp").verdict == "holds"
    runs(tmp_path / "c", [0.45, 0.46, 0.47, 0.47, 0.47, 0.47, 0.47, 0.47], [0.5] * 8)  # 3×; MeZO moved 2 pt
    res = read(tmp_path / "c", "HZ1", "p_mlp")
    assert res.verdict == "inconclusive" and "would read partly" in res.detail
    runs(tmp_path / "d", mezo, [0.95] * 8, seeds=(0,))  # one seed: no spread
    assert read(tmp_path / "d", "HZ1", "p_mlp").verdict == "inconclusive"


# ---------------------------------------------------------------------------------------------- HZ2
@pytest.mark.parametrize("paper, verdict", [((0.8, 0.7), "holds"), ((0.8, 0.3), "partly"), ((0.2, 0.1), "fails")])
def test_hz2(tmp_path, paper, verdict):
    tag = "diagnostics/hessian_tracking/spearman"
    for seed in (0, 1, 2):
        for alpha, value in zip((1e-2, 1e-4), paper):
            for estimator, final in (("paper", value), ("code", 0.1)):
                fake_run(tmp_path, "claims_hz2_phq", f"{estimator}-{alpha}-{seed}", "HiZOO", 7e-4, seed,
                         {tag: [(0, 0.0), (3999, final + seed / 100)]}, alpha=alpha, hessian_estimator=estimator)
    res = read(tmp_path, "HZ2", "p_hq")
    assert res.verdict == verdict
    assert res.number.startswith("final Spearman(H, diag ∇²f): paper α=0.0001")
    assert "code α=0.01 0.11 ± 0.01" in res.number


# ---------------------------------------------------------------------------------------------- SM1
@pytest.mark.parametrize("sparse, random_best, verdict", [
    ([0.45, 0.8, 0.9, 0.92, 0.92, 0.92, 0.92, 0.92], 0.85, "holds"),  # MeZO's 0.9 at 1500 vs 3500
    ([0.45, 0.6, 0.7, 0.8, 0.85, 0.9, 0.9, 0.9], 0.85, "partly"),  # at 3000: faster, not 2×
    ([0.45, 0.8, 0.9, 0.92, 0.92, 0.92, 0.92, 0.92], 0.95, "partly"),  # 2×, but R-MeZO ends higher
    ([0.45, 0.6, 0.7, 0.8, 0.85, 0.88, 0.89, 0.89], 0.85, "fails"),  # never
])
def test_sm1(tmp_path, sparse, random_best, verdict):
    mezo = [0.45, 0.6, 0.7, 0.8, 0.85, 0.88, 0.9, 0.9]
    for seed in (0, 1, 2):
        fake_run(tmp_path, "claims_sm1_pmlp", f"mezo-{seed}", "ZOSGD", 1e-3, seed, curve(mezo, "val/acc"))
        for s in (0.5, 0.8):
            fake_run(tmp_path, "claims_sm1_pmlp", f"smezo-{s}-{seed}", "SparseMeZO", 2e-3, seed,
                     curve(sparse if s == 0.8 else mezo, "val/acc"), sparsity=s, mask_on="abs")
            fake_run(tmp_path, "claims_sm1_pmlp", f"rmezo-{s}-{seed}", "SparseMeZO", 2e-3, seed,
                     curve([0.45] * 7 + [random_best], "val/acc"), sparsity=s, mask_on="random")
    res = read(tmp_path, "SM1", "p_mlp")
    assert res.verdict == verdict, res.number
    assert "R-MeZO s=0.8" in res.number and "S-MeZO s=0.5" in res.detail and "moved" in res.power


# ---------------------------------------------------------------------------------------------- FG1
@pytest.mark.parametrize("fg_loss, fg_ms, verdict", [(0.3, 5.0, "holds"), (0.3, 20.0, "partly"), (0.6, 5.0, "fails")])
def test_fg1(tmp_path, fg_loss, fg_ms, verdict):
    wall = "diagnostics/step_cost/wall_ms"
    for seed in (0, 1, 2):
        for lr in (1e-3, 2e-3):
            fake_run(tmp_path, "claims_fg1_pmlp", f"mezo-{lr}-{seed}", "ZOSGD", lr, seed,
                     {"val/loss": [(500, 4.0), (3000, 0.5)], wall: [(0, 500.0), (99, 4.0), (199, 4.0)]})
            fake_run(tmp_path, "claims_fg1_pmlp", f"fg-{lr}-{seed}", "ForwardGrad", lr, seed,
                     {"val/loss": [(500, 4.0), (3000, fg_loss + (lr == 1e-3))],
                      wall: [(0, 900.0), (99, fg_ms), (199, fg_ms)]})
        _fake_run(tmp_path / "claims_fg1_backprop" / f"sgd-{seed}", {"rule": "SGD", "seed": seed},
                  {wall: [(0, 300.0), (9, 10.0), (19, 10.0)]})
    res = read(tmp_path, "FG1", "p_mlp")
    assert res.verdict == verdict, res.number
    assert f"Forward-Grad / backprop {fg_ms / 10:.2f}×" in res.number and "(η 0.002)" in res.number


def test_the_curvature_probe_ranks_as_spearman():
    import torch

    from diagnostics.curvature import spearman

    x = torch.tensor([3.0, 1.0, 2.0, 10.0])
    assert spearman(x, x.exp()) == pytest.approx(1.0) and spearman(x, -x) == pytest.approx(-1.0)
    assert spearman(x, torch.tensor([1.0, 3.0, 2.0, 4.0])) == pytest.approx(0.2)  # 1 − 6·8/(4·15)
