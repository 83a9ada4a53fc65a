"""The verdict rules of LZ1, LZ2 (LOZO), SZ1 (SubZero) and SV1 (MeZO-SVRG) on hand-made runs of their sweep files
(holds, partly, fails), the power rule on them, and the whole scoreboard reading them."""

import pytest

from tests.claims.fake_runs import EXPERIMENTS, complete_sweep, rule_of
from zolab import claims as C
from zolab.claims.experiments import Runs

LRS = (5e-4, 1e-3, 2e-3)


def read(root, claim_id, part):
    claim = C.claim_by_id(claim_id)
    return next(p for p in claim.parts if p.name == part).reading(Runs(root, EXPERIMENTS))


def value(r, key, default=None):
    return r.values.get(f"model.optimizer.init_args.{key}", default)


def hp(r, **more):
    return {"rule": rule_of(r.grid), "lr": float(value(r, "lr", 1e-3)), "seed": int(value(r, "seed", 0)), **more}


# ------------------------------------------------------------------ LZ1, LZ2
def lz_maker(finals: dict, tests: dict, proxy: str = "P-lr"):
    """Each rule's final loss at η = 1e-3 (0.2 worse at the other η) per seed offset seed/100; its test metric."""

    def make(r):
        rule = rule_of(r.grid)
        final = finals[rule] + (0 if float(value(r, "lr", 1e-3)) == 1e-3 else 0.2) + int(value(r, "seed")) / 100
        if proxy == "P-lr":
            return hp(r), {"val/loss": [1.0, 0.5 * (1 + final), final], "test/loss": [tests[rule]]}
        return hp(r), {"train/loss": [2.0] + [final] * 10, "test/acc": [tests[rule] + int(value(r, "seed")) / 1000],
                       "val/acc": [0.45, tests[rule]]}

    return make


def cells(root):
    complete_sweep(root, "claims/lz1_lr_cells.yaml", lambda r: (hp(r), {"val/loss": [1.0, 0.3 + value(r, "rank") / 100],
                                                                         "test/loss": [0.3]}))


@pytest.mark.parametrize("lozo, lozo_test, verdict", [
    (0.30, 0.50, "holds"),  # loss below MeZO's 0.40 in every seed, test loss no worse
    (0.30, 0.90, "partly"),  # the loss only
    (0.45, 0.40, "fails"),
])
def test_lz1_on_p_lr(tmp_path, lozo, lozo_test, verdict):
    complete_sweep(tmp_path, "claims/lz1_lr.yaml", lz_maker({"ZOSGD": 0.40, "LOZO": lozo},
                                                            {"ZOSGD": 0.50, "LOZO": lozo_test}))
    cells(tmp_path)
    res = read(tmp_path, "LZ1", "P-lr")
    assert res.verdict == verdict, res.number
    assert "(η = 0.001)" in res.number and "3/3 seeds" in res.number or verdict == "fails"
    assert "(1, 50) 0.31" in res.detail and res.power.startswith("the reference MeZO moved")


@pytest.mark.parametrize("lozo, lozo_acc, verdict", [(0.30, 0.90, "holds"), (0.30, 0.80, "partly"),
                                                     (0.41, 0.95, "fails")])
def test_lz1_on_p_mlp(tmp_path, lozo, lozo_acc, verdict):
    complete_sweep(tmp_path, "claims/lz1_mlp.yaml", lz_maker({"ZOSGD": 0.40, "LOZO": lozo},
                                                             {"ZOSGD": 0.90, "LOZO": lozo_acc}, "P-mlp"))
    res = read(tmp_path, "LZ1", "P-mlp")
    assert res.verdict == verdict, res.number
    assert "test accuracy LOZO − MeZO" in res.number


def test_lz1_without_power_is_inconclusive(tmp_path):
    """MeZO's loss barely moved (1.0 -> 0.95 < 10% of the start): no verdict from the comparison."""
    def make(r):
        final = 0.95 if rule_of(r.grid) == "ZOSGD" else 0.5
        return hp(r), {"val/loss": [1.0, final], "test/loss": [0.5]}

    complete_sweep(tmp_path, "claims/lz1_lr.yaml", make)
    cells(tmp_path)
    res = read(tmp_path, "LZ1", "P-lr")
    assert res.verdict == "inconclusive" and "would read holds" in res.detail


@pytest.mark.parametrize("lozo_m, verdict", [({0: 0.29, 1: 0.30, 2: 0.31}, "holds"),
                                             ({0: 0.20, 1: 0.30, 2: 0.33}, "partly"),  # seed 2 above LOZO's 0.32
                                             ({0: 0.35, 1: 0.36, 2: 0.37}, "fails")])
def test_lz2_compares_lozo_m_with_lozo_at_lozos_best_lr(tmp_path, lozo_m, verdict):
    complete_sweep(tmp_path, "claims/lz1_lr.yaml", lz_maker({"ZOSGD": 0.40, "LOZO": 0.30},
                                                            {"ZOSGD": 0.5, "LOZO": 0.5}))

    def make(r):
        seed, lr = int(value(r, "seed")), float(value(r, "lr"))
        final = lozo_m[seed] if lr == 1e-3 else 0.01  # better at another η: not compared
        return hp(r), {"val/loss": [1.0, final]}

    complete_sweep(tmp_path, "claims/lz2_lr.yaml", make)
    res = read(tmp_path, "LZ2", "P-lr")
    assert res.verdict == verdict, res.number
    assert "best η = 0.001" in res.number


# ------------------------------------------------------------------ SZ1
def sz1(root, sub_cos: float, mezo_cos: float, sub_acc: float):
    def lr_make(r):
        stem = str(r.values["model.optimizer"]).rsplit("/", 1)[-1]
        cos = mezo_cos if stem == "mezo.yaml" else sub_cos if "r8" in stem else 0.0
        return hp(r), {"diagnostics/window_alignment/cos": [cos + int(value(r, "seed")) / 1000] * 16,
                       "diagnostics/window_alignment/cos_step": [0.01] * 16, "val/loss": [1.0, 0.4]}

    def mlp_make(r):
        acc = 0.90 if rule_of(r.grid) == "ZOSGD" else sub_acc
        return hp(r), {"val/acc": [0.45, acc], "test/acc": [acc + int(value(r, "seed")) / 1000]}

    complete_sweep(root, "claims/sz1_lr.yaml", lr_make)
    complete_sweep(root, "claims/sz1_mlp.yaml", mlp_make)
    complete_sweep(root, "claims/sz1_mlp_cells.yaml", mlp_make)


@pytest.mark.parametrize("sub_cos, sub_acc, verdict", [(0.20, 0.91, "holds"), (0.20, 0.80, "partly"),
                                                       (0.05, 0.91, "partly"), (0.05, 0.80, "fails")])
def test_sz1(tmp_path, sub_cos, sub_acc, verdict):
    sz1(tmp_path, sub_cos, 0.10, sub_acc)
    row = C.score(tmp_path, EXPERIMENTS, C.select(["SZ1"]))[0]
    assert row.verdict == verdict
    a, b = row.results["P-lr"], row.results["P-mlp"]
    assert a.verdict == ("holds" if sub_cos > 0.1 else "fails") and "SubZero r = 4" in a.detail
    assert b.verdict == ("holds" if sub_acc > 0.85 else "fails") and "(4, 250)" in b.detail


# ------------------------------------------------------------------ SV1
def sv1(root, svrg_curve, coupled_curve=None):
    """MeZO: dev accuracy 0.40 + 0.02 i at 800 i FE (i = 1..20) at η = 1e-3, lower elsewhere; MeZO-SVRG: the given
    curve (20 points at 800 i FE) at η = 1e-3, lower elsewhere."""

    def mezo(r):
        off = 0 if float(value(r, "lr")) == 1e-3 else 0.1
        return hp(r), {"val/acc": [(400 * i - 1, 0.40 + 0.02 * i - off) for i in range(1, 21)],
                       "train/forwards": [(400 * i - 1, 800 * i) for i in range(1, 21)]}

    def svrg(q):
        steps = {2: 80, 5: 125}[q]

        def make(r):
            off = 0 if float(value(r, "lr")) == 1e-3 else 0.1
            curve = coupled_curve if (value(r, "shared_z") and coupled_curve) else svrg_curve
            return hp(r), {"val/acc": [(steps * i - 1, curve[i - 1] - off) for i in range(1, 21)],
                           "train/forwards": [(steps * i - 1, 800 * i) for i in range(1, 21)]}

        return make

    complete_sweep(root, "claims/sv1_mezo.yaml", mezo)
    complete_sweep(root, "claims/sv1_q2.yaml", svrg(2))
    complete_sweep(root, "claims/sv1_q5.yaml", svrg(5))


FAST = [min(0.85, 0.40 + 0.05 * i) for i in range(1, 21)]  # 0.80 at 6,400 FE (MeZO: 16,000): ratio 2.5
SLOW = [0.40 + 0.02 * i + (0.01 if i == 20 else 0) for i in range(1, 21)]  # 0.81 at 16,000 FE: ratio 1, +1 point
LOW = [0.40 + 0.015 * i for i in range(1, 21)]


@pytest.mark.parametrize("curve, verdict", [(FAST, "holds"), (SLOW, "partly"), (LOW, "fails")])
def test_sv1(tmp_path, curve, verdict):
    sv1(tmp_path, curve, coupled_curve=LOW)
    res = read(tmp_path, "SV1", "q2")
    assert res.verdict == verdict, res.number
    assert "MeZO's best mean dev accuracy 80.0% at 16000 FE" in res.number
    assert "shared_z=True" in res.detail and "ratio" in res.detail
    if verdict == "holds":
        assert "FE to MeZO's best 6400, ratio 2.50" in res.number
    assert C.score(tmp_path, EXPERIMENTS, C.select(["SV1"]))[0].verdict == verdict  # q = 5 reads the same curve
