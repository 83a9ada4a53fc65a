"""``zolab claims``: the paper claims of docs/algorithms.md §5, read from the runs on disk, with their verdicts.

The registry holds, for each claim, its statement and the paper's number, the parts that measure it (each: the
sweeps or commands that make its runs, CPU-feasible or GPU-only, its settings, and for a comparison its
tolerance), how each number is read from the runs, and the verdict rule with its thresholds, written before
any run (the git history is the evidence). The package, one purpose a file:

    types.py        a claim, a part, a job, a reading; the five verdicts, the power rule, combining parts
    events.py       the one reader of TensorBoard event files (paper_figures/ reads through it too)
    stats.py        means and spreads over seeds; plots.py, figures the readers share
    experiments.py  where the experiment files are; which runs a part expects; complete, mismatched or not
    radazo.py, adamu.py, mezo_bcd.py, meazo.py, mezo.py
                    one file per paper: its claims' readers beside their registry rows
    minilm.py       the MiniLM study those papers' language-model claims share
    registry.py     every claim, in order; selecting claims and parts
    board.py        the scoreboard; jobs.py, ``--run``; docs.py, ``--write``; command.py, the command line

Adding a claim touches its paper's file (its row and reader), its experiment config, and docs/claims.md
(regenerated); a new paper adds its file to ``registry.PAPERS``.
"""

from zolab.claims.board import Row, print_board, score
from zolab.claims.command import main
from zolab.claims.experiments import Runs, check_part, find_experiments, sweep_name
from zolab.claims.registry import CLAIMS, claim_by_id, select
from zolab.claims.types import STATES, VERDICTS, Claim, Job, Moved, Part, Result, Tolerance, combine, power

__all__ = ["CLAIMS", "STATES", "VERDICTS", "Claim", "Job", "Moved", "Part", "Result", "Row", "Runs", "Tolerance",
           "check_part", "claim_by_id", "combine", "find_experiments", "main", "power", "print_board", "score",
           "select", "sweep_name"]
