"""Claims ZA1, CS1 (ZO-Bench), FZ1 (FZOO) and LE1 (LeZO): each reader gives every verdict its rule allows on
hand-made runs of the registry's own sweep files (event files and hparams.yaml as ``zolab sweep`` leaves them),
and the power rule makes a reading inconclusive when the reference did not move."""

import pytest
import yaml

from tests.claims.fake_runs import complete_sweep
from zolab.claims.experiments import Runs
from zolab.claims.registry import claim_by_id
from zolab.claims.types import combine

from .fake_runs import EXPERIMENTS


def read(root, ident, part):
    return next(p for p in claim_by_id(ident).parts if p.name == part).reading(Runs(root, EXPERIMENTS))


def lr(r):
    return float(r.values["model.optimizer.init_args.lr"])


def seed(r):
    return int(r.values["model.optimizer.init_args.seed"])


def rule(r, default="ZOSGD"):
    return str(r.values.get("model.optimizer", default)).rsplit(".", 1)[-1]


def hp(r, **more):
    return {"rule": rule(r), "lr": lr(r), "seed": seed(r), **more}


# ------------------------------------------------------------------ ZA1
def za1(root, adam_wins_hq: bool, adam_wins_mlp: bool, sgd_moves: bool = True):
    def make(r):
        adam, best = rule(r) == "ZOAdam", lr(r) in (7e-4, 1e-3, 3e-3)  # one η per rule is best
        if "phq" in str(r.run_dir):
            end = (0.5 if adam_wins_hq else 2.0) if adam else (1.0 if sgd_moves else 99.0)
            end = end if best else 5.0
            return hp(r), {"val/loss": [(0, 100.0), (3000, end + seed(r) / 100)]}
        acc = (0.92 if adam_wins_mlp else 0.90) if adam else (0.90 if sgd_moves else 0.46)
        acc = acc if best or not (adam or sgd_moves) else 0.6
        return hp(r), {"val/acc": [(0, 0.45), (1500, acc + seed(r) / 1000), (3000, acc - 0.01)]}

    for s in ("claims/za1_phq_sgd.yaml", "claims/za1_phq_adam.yaml", "claims/za1_pmlp_sgd.yaml",
              "claims/za1_pmlp_adam.yaml"):
        complete_sweep(root, s, make)


@pytest.mark.parametrize("hq, mlp, verdict", [(True, True, "holds"), (True, False, "partly"),
                                              (False, True, "partly"), (False, False, "fails")])
def test_za1_verdicts(tmp_path, hq, mlp, verdict):
    za1(tmp_path, hq, mlp)
    hq_res, mlp_res = read(tmp_path, "ZA1", "p_hq"), read(tmp_path, "ZA1", "p_mlp")
    assert (hq_res.verdict, mlp_res.verdict) == ("holds" if hq else "fails", "holds" if mlp else "fails")
    assert combine([hq_res.verdict, mlp_res.verdict]) == verdict
    assert f"ZO-Adam {92.1 if mlp else 90.1}%" in mlp_res.number, mlp_res.number
    assert "(η 0.003)" in mlp_res.number and "ZO-SGD 90.1% (η 0.001)" in mlp_res.number


def test_za1_is_inconclusive_when_zo_sgd_did_not_move(tmp_path):
    za1(tmp_path, True, True, sgd_moves=False)
    res = read(tmp_path, "ZA1", "p_mlp")
    assert res.verdict == "inconclusive" and res.detail.startswith("would read holds"), res.detail
    assert read(tmp_path, "ZA1", "p_hq").verdict == "holds"  # 100 -> 5 at the other η: ZO-SGD moved there


# ------------------------------------------------------------------ CS1
def cs1(root, cons_as_good: bool, cons_robust: bool):
    def make(r):
        cons, eta, hq = rule(r) == "ZOSGDCons", lr(r), "phq" in str(r.run_dir)
        best = 3.5e-4 if hq else 1e-3  # ZO-SGD's best η; ZO-SGD-Cons is read at 4× it
        tag = "val/loss" if hq else "train/loss"
        if not cons:
            end = 1.0 if eta == best else 3.0
        elif eta == 4 * best:
            end = 2.0 if cons_robust else float("nan")
        else:
            end = (0.9 if cons_as_good else 1.5) if eta == best else 4.0
        values = [10.0] + [end + seed(r) / 100] * 20
        return hp(r, nonfinite="skip"), {tag: values}

    for s in ("claims/cs1_phq_sgd.yaml", "claims/cs1_phq_cons.yaml", "claims/cs1_pmlp_sgd.yaml",
              "claims/cs1_pmlp_cons.yaml"):
        complete_sweep(root, s, make)


@pytest.mark.parametrize("good, robust, verdict", [(True, True, "holds"), (False, True, "partly"),
                                                   (True, False, "partly"), (False, False, "fails")])
@pytest.mark.parametrize("part", ["p_hq", "p_mlp"])
def test_cs1_verdicts(tmp_path, good, robust, verdict, part):
    cs1(tmp_path, good, robust)
    res = read(tmp_path, "CS1", part)
    assert res.verdict == verdict, (res.number, res.detail)
    assert f"as good at equal forwards: {good}; robust at 4× η: {robust}" == res.detail


# ------------------------------------------------------------------ FZ1
def fz1(root, fe_ratio: float, as_good: bool, mezo_moves: bool = True):
    """MeZO (η 1e-3 best) reaches 0.90 val/acc (P-mlp) at step 4,000 = 8,000 forwards; FZOO N = 8 at η 5e-3
    reaches it after 8,000/fe_ratio forwards (a step is 9), its best 0.91 or 0.89."""
    def make(r):
        n = next((int(a.split("=")[1]) for a in r.args if "num_queries=" in a), 1)
        hq = "phq" in str(r.run_dir)
        if rule(r) == "ZOSGD":
            top = 0.46 if not mezo_moves else 0.90 if lr(r) == (3.5e-4 if hq else 1e-3) else 0.7
            curve = [(0, 0.45), (2000, (0.45 + top) / 2), (4000, top)]
        else:
            step = round(8000 / fe_ratio / (n + 1)) if (n == 8 and lr(r) == 5e-3) else None
            if step and step <= 888:
                curve = [(0, 0.45), (step, 0.90), (888, 0.91 if as_good else 0.89)]
            else:  # this arm never gets to MeZO's best
                curve = [(0, 0.45), (400, 0.5), (888, 0.5)]
        if hq:  # a loss: lower is better, the same shape
            curve = [(s, 1.0 - v) for s, v in curve]
        return hp(r, num_queries=n), {"val/loss" if hq else "val/acc": curve}

    for sweeps in claim_by_id("FZ1").parts:
        for job in sweeps.jobs:
            complete_sweep(root, job.sweep, make)


@pytest.mark.parametrize("ratio, good, verdict", [(4.0, True, "holds"), (4.0, False, "partly"),
                                                  (2.0, True, "partly"), (0.8, True, "fails")])
def test_fz1_verdicts(tmp_path, ratio, good, verdict):
    fz1(tmp_path, ratio, good)
    for part in ("p_mlp", "p_hq"):
        res = read(tmp_path, "FZ1", part)
        assert res.verdict == verdict, (part, res.number)
        assert "after 8000 forwards" in res.number, res.number
        if ratio > 1:  # below 1 the fast arm runs out of forwards before MeZO's best: no arm reaches it
            assert "(FZOO N=8, η 0.005)" in res.number, res.number


def test_fz1_never_reaching_mezo_fails_and_a_still_mezo_is_inconclusive(tmp_path):
    fz1(tmp_path, 1e-9, True)  # FZOO's step far beyond its budget: it never gets there
    assert read(tmp_path, "FZ1", "p_mlp").verdict == "fails"
    fz1(tmp_path / "still", 4.0, True, mezo_moves=False)
    assert read(tmp_path / "still", "FZ1", "p_mlp").verdict == "inconclusive"


# ------------------------------------------------------------------ LE1
def le1(root, speedup: float, per_step: float):
    """MeZO (its best η) reaches its best at step 4,000 with 10 ms steps (40 s); LeZO ρ = 0.75 at its fast η takes
    per_step × 10 ms a step and reaches that value after 40/speedup s (never, when that is past step 4,000)."""
    def make(r):
        hq = "plr" in str(r.run_dir)
        lezo = rule(r) == "LeZO"
        rho = float(r.values.get("model.optimizer.init_args.rho", 0.75))
        ms = 10.0 * per_step if lezo else 10.0
        if not lezo:
            top = 0.9 if lr(r) == (1e-3 if not hq else 1e-5) else 0.7
            curve = [(0, 0.45), (2000, 0.7), (4000, top)]
        else:
            fast = rho == 0.75 and lr(r) == (2e-3 if not hq else 2e-5)
            step = round(40000 / speedup / ms) if fast and speedup > 0 else None
            curve = [(0, 0.45), (step, 0.9)] if step and step <= 4000 else [(0, 0.45), (4000, 0.8)]
        if hq:
            curve = [(s, 1.0 - v) for s, v in curve]
        opts = {"rho": rho} if lezo else {}
        (r.run_dir / "config.yaml").parent.mkdir(parents=True, exist_ok=True)
        (r.run_dir / "config.yaml").write_text(yaml.safe_dump({"model": {"optimizer": {"init_args": opts}}}))
        return hp(r), {"val/loss" if hq else "val/acc": curve,
                       "diagnostics/step_cost/wall_ms": [(k, ms) for k in range(0, 4000, 10)]}

    for part in claim_by_id("LE1").parts:
        for job in part.jobs:
            complete_sweep(root, job.sweep, make)


@pytest.mark.parametrize("speedup, per_step, verdict", [(4.0, 0.6, "holds"), (2.0, 0.6, "partly"),
                                                        (0.0, 0.4, "partly"), (0.0, 0.8, "fails"),
                                                        (0.9, 0.8, "fails")])
@pytest.mark.parametrize("part", ["p_mlp", "p_lr_wide"])
def test_le1_verdicts(tmp_path, speedup, per_step, verdict, part):
    le1(tmp_path, speedup, per_step)
    res = read(tmp_path, "LE1", part)
    assert res.verdict == verdict, res.number
    assert f"step time LeZO / MeZO {per_step:.2f}" in res.number and "after 40 s" in res.number, res.number
