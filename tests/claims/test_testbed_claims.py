"""The claims' testbed parts (R6, A1, B1, M1 on T1 and T2) read the leaderboard's runs: verdicts by each claim's
rule, the power rule against the untrained models, and the states of missing runs, on hand-made runs."""

import pytest

from tests.claims import leaderboard_runs as L
from zolab.claims import CLAIMS, Runs, claim_by_id, score

PEAK = 1e-3  # every rule's validation accuracy peaks here: its chosen lr


def peaked(acc):
    return lambda lr, seed: acc - (0 if lr == PEAK else 0.05)


@pytest.fixture
def t1(tmp_path):
    experiments, p = L.experiments(tmp_path, "t1")
    return tmp_path / "runs", experiments, p


def runs_of(t1, rules: dict[str, dict], outcomes: dict[str, tuple[float, float]]):
    """The probe with ``rules`` entries, and every rule's complete runs: (test accuracy, final validation loss)."""
    root, experiments, p = t1
    L.probe(root, p, rules)
    for key, (test, loss) in outcomes.items():
        L.complete(root, experiments, p, key, peaked(0.8), test_acc=lambda lr, s, t=test: t,
                   loss=lambda lr, s, v=loss: v)
    return Runs(root, experiments)


def reading(claim: str, runs, part: str = "t1"):
    return next(p for p in claim_by_id(claim).parts if p.name == part).reading(runs)


def test_every_testbed_part_reads_the_leaderboard_with_a_tolerance():
    for ident in ("R6", "A1", "B1", "M1"):
        parts = {p.name: p for p in claim_by_id(ident).parts}
        assert {"t1", "t2"} <= set(parts) and all(parts[t].tolerance for t in ("t1", "t2"))
        assert all(j.dynamic is not None for t in ("t1", "t2") for j in parts[t].jobs)
    assert sum(p.name == "t1" for c in CLAIMS for p in c.parts) == 4


@pytest.mark.parametrize("radazo, rmsprop, verdict", [
    (0.30, 0.50, "holds"),  # R-AdaZO reaches 0.5 at half the budget: 2× sooner than both
    (0.50, 0.50, "fails"),  # the same curve: 1×
    (0.30, 0.68, "inconclusive"),  # ZO-RMSProp moved 0.02 from 0.70: under 5% of the start
])
def test_r6_on_a_testbed_compares_forwards_to_a_common_validation_loss(t1, radazo, rmsprop, verdict):
    rules = {k: L.entry(k, scale_free=True) for k in ("radazo", "zo_rmsprop", "zo_adamm")}
    runs = runs_of(t1, rules, {"radazo": (0.8, radazo), "zo_rmsprop": (0.8, rmsprop), "zo_adamm": (0.8, rmsprop)})
    res = reading("R6", runs)
    assert res.verdict == verdict, (res.number, res.power)
    if verdict == "holds":
        assert "2 ± 0× sooner than ZO_RMSPROP" in res.number and "moved 29% of the start" in res.power


@pytest.mark.parametrize("adamu, memory, sgd, verdict", [
    (0.80, 1.25, 0.75, "holds"), (0.80, 1.50, 0.75, "partly"), (0.70, 1.25, 0.75, "fails"),
    (0.80, 1.25, 0.505, "inconclusive"),  # MeZO rose 0.5 points from the untrained models' 50%
])
def test_a1_on_a_testbed_compares_test_accuracy_and_the_probes_memory(t1, adamu, memory, sgd, verdict):
    rules = {"zo_adamu": L.entry("zo_adamu", memory=memory), "zo_sgd": L.entry("zo_sgd")}
    res = reading("A1", runs_of(t1, rules, {"zo_adamu": (adamu, 0.5), "zo_sgd": (sgd, 0.5)}))
    assert res.verdict == verdict, (res.number, res.power)


@pytest.mark.parametrize("bcd, step, verdict", [(0.75, 0.5, "holds"), (0.75, 0.9, "partly"), (0.6, 0.9, "fails")])
def test_b1_on_a_testbed_compares_accuracy_and_the_probes_step_time(t1, bcd, step, verdict):
    rules = {"mezo_bcd": L.entry("mezo_bcd", ms=step), "zo_sgd": L.entry("zo_sgd")}
    res = reading("B1", runs_of(t1, rules, {"mezo_bcd": (bcd, 0.5), "zo_sgd": (0.75, 0.5)}))
    assert res.verdict == verdict and f"{1 / step:.2f}×" in res.number


def test_m1_on_a_testbed_counts_the_robust_lrs_of_the_grid(t1):
    rules = {"meazo": L.entry("meazo", scale_free=True), "zo_adamm": L.entry("zo_adamm", scale_free=True, memory=1.75),
             "zo_sgd": L.entry("zo_sgd")}
    res = reading("M1", runs_of(t1, rules, {"meazo": (0.8, 0.5), "zo_adamm": (0.8, 0.5), "zo_sgd": (0.75, 0.5)}))
    assert res.verdict == "holds" and "MEAZO 1/7, ZO_ADAMM 1/7, ZO_SGD 1/7" in res.number


def test_the_scoreboard_shows_a_testbed_part_not_run_then_incomplete_then_read(t1):
    root, experiments, p = t1
    selection = [(claim_by_id("B1"), [next(x for x in claim_by_id("B1").parts if x.name == "t1")])]
    assert score(root, experiments, selection)[0].verdict == "not run"
    L.probe(root, p, {"mezo_bcd": L.entry("mezo_bcd", ms=0.5), "zo_sgd": L.entry("zo_sgd")})
    L.complete(root, experiments, p, "zo_sgd", peaked(0.75))
    row = score(root, experiments, selection)[0]
    assert row.verdict == "incomplete" and "mezo_bcd: not run" in row.state(selection[0][1][0])
    L.complete(root, experiments, p, "mezo_bcd", peaked(0.75))
    assert score(root, experiments, selection)[0].verdict == "holds"
    from zolab.claims.leaderboard_page import page

    page(root, experiments, ["t1"], root.parent / "leaderboard.md")
    text = (root.parent / "leaderboard.md").read_text()
    assert "| [B1](claims.md#b1) MeZO-BCD: MeZO's accuracy, faster per iteration | **holds** | test accuracy" in text
    assert "| [R6](claims.md#r6)" in text and "| **not run** | not run |" in text  # R6's rules have no runs


def test_the_claims_page_counts_each_leaderboard_rule_once_in_its_cost(t1):
    root, experiments, p = t1
    (root / p.folder).mkdir(parents=True)
    (root / p.folder / "cpu_seconds.yaml").write_text(
        "probe: 60\nzo_sgd: {tune: 120, seed1: 60}\nzo_adamu: {tune: 240}\nmezo_bcd: {tune: 300}\n")
    from zolab.claims.docs import write_docs

    parts = [(claim_by_id(c), [x for x in claim_by_id(c).parts if x.name == "t1"]) for c in ("A1", "B1")]
    write_docs(score(root, experiments, parts), root, experiments, root.parent / "claims.md")
    text = (root.parent / "claims.md").read_text()
    assert "| A1.t1 | leaderboard_t1 (zo_adamu, zo_sgd) | 8 |" in text  # probe 1 + MeZO 3 + ZO-AdaMU 4 minutes
    assert "| B1.t1 | leaderboard_t1 (mezo_bcd, zo_sgd) | 5 |" in text  # only MeZO-BCD's: the rest counted above
