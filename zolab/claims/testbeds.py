"""The claims' testbed parts: R6, A1, B1 and M1 read the equal-budget leaderboard's runs on T1 and T2
(docs/leaderboard.md; the same runs, no extra cost): each rule at its step size tuned on validation, 5 seeds.

A part's job runs the leaderboard for the rules it compares (``zolab leaderboard --run --testbed T --rules ...``);
its reader gets the rules' rows (``zolab.claims.leaderboard_table.Row``: seed runs, test accuracy per seed, mean
validation curves against forwards, the probe's time and memory, the tuning grid). The accuracy claims' power
rule measures the reference's test accuracy against the untrained models' (the probe's starts, the seeds' mean).
"""

from __future__ import annotations

from zolab.claims.leaderboard import LeaderboardJob, load_protocol, read_probe
from zolab.claims.leaderboard_table import Row, read_rows
from zolab.claims.stats import mean
from zolab.claims.types import Job, Moved, Tolerance

TESTBEDS = ("t1", "t2")
SETTINGS = {
    "t1": "T1: SST-2 on frozen MiniLM-L6 features, MLP head (d = 24,770) trained from scratch, 4,000 forwards a run "
          "(MeZO: 2,000 steps), each rule at its lr tuned on validation (docs/leaderboard.md), 5 seeds",
    "t2": "T2: MNIST, MLP 784-32-10 (d = 25,450) from scratch, 20,000 forwards a run (MeZO: 10,000 steps), each rule "
          "at its lr tuned on validation (docs/leaderboard.md), 5 seeds"}
CLASSES = {"zo_sgd": "ZOSGD", "zo_adamm": "ZOAdaMM", "zo_rmsprop": "ZORMSProp", "radazo": "RAdaZO",
           "zo_adamu": "ZOAdaMU", "meazo": "MEAZO", "mezo_bcd": "MeZOBCD"}  # the rules these claims compare


def job(testbed: str, rules: tuple[str, ...]) -> Job:
    return Job(argv=("zolab", "leaderboard", "--run", "--testbed", testbed, "--rules", ",".join(rules), "--root",
                     "{root}", "--experiments", "{experiments}"),
               output=f"leaderboard_{testbed} ({', '.join(rules)})", dynamic=LeaderboardJob(testbed, rules))


def rows(runs, testbed: str, rules: tuple[str, ...]) -> dict[str, Row] | None:
    """The rules' complete rows (None unless every one is complete)."""
    p = load_protocol(runs.experiments, testbed)
    out = {r.key: r for r in read_rows(runs.root, runs.experiments, p, list(rules))}
    return out if all(k in out and out[k].complete for k in rules) else None


def start(runs, testbed: str, metric: str) -> float:
    """The untrained models' ``metric`` (val/loss, test/acc...), mean over the protocol's seeds (the probe's)."""
    p = load_protocol(runs.experiments, testbed)
    starts = read_probe(runs.root, p).get("starts", {})
    return mean([starts[str(s)][metric] for s in p.seeds if str(s) in starts])


def accuracy_tolerance(reference: str, name: str) -> Tolerance:
    """The accuracy claims' power rule on a testbed: the reference's test accuracy must rise from the untrained
    models' by more than 1 point (the claims' tolerance for a difference)."""
    return Tolerance(CLASSES[reference], name, "test accuracy", 1.0, " points", higher_is_better=True,
                     start="the untrained models', mean over the 5 seeds")


def accuracy_moved(runs, testbed: str, table: dict[str, Row], reference: str, *compared: str) -> Moved:
    return Moved({testbed.upper(): (100 * start(runs, testbed, "test/acc"), table[reference].test)},
                 min(len(table[k].test) for k in (reference, *compared)))


def memory(table: dict[str, Row], rule: str, reference: str = "zo_sgd") -> float:
    """The rule's peak memory over the reference's (the probe's, each over the same two forward passes)."""
    return table[rule].entry["memory_vs_inference"] / table[reference].entry["memory_vs_inference"]


def parts(make_part) -> tuple:
    """One part per testbed: ``make_part(testbed)``."""
    return tuple(make_part(t) for t in TESTBEDS)
