"""The ``zolab`` command's one dispatcher: sweep, tune, claims and leaderboard to their modules, the rest to fit.

    zolab fit | validate | test ...   # zolab.lab.cli (LightningCLI)
    zolab sweep FILE ...               # zolab.lab.workers (the runs of zolab.lab.sweep on an Optuna study)
    zolab tune FILE ...                # zolab.lab.tune (a search space on an Optuna study)
    zolab claims ...                   # zolab.claims: answers without importing torch or Lightning
    zolab leaderboard ...              # zolab.claims.leaderboard_page: every rule at equal forwards

``python -m zolab.entry ...`` is the same command (what sweeps' subprocesses and tests start).
"""

from __future__ import annotations

import gc
import sys


def main(argv=None) -> int:
    """The command's exit status. ``argv`` None: the command line, which ``zolab fit`` keeps in ``sys.argv``
    (Lightning starts a multi-process run's other processes with it); the process then ends without a last
    garbage collection (``gc.freeze``: it takes seconds after torch and Lightning, and the memory goes anyway)."""
    if argv is None:
        try:
            return _dispatch(sys.argv[1:], None)
        finally:
            gc.freeze()
    return _dispatch(list(argv), argv)


def _dispatch(args: list[str], argv) -> int:
    if args[:1] == ["claims"]:
        from zolab.claims import main as claims_main

        return claims_main(args[1:])
    if args[:1] == ["leaderboard"]:
        from zolab.claims.leaderboard_page import main as leaderboard_main

        return leaderboard_main(args[1:])
    if args[:1] == ["sweep"]:
        from zolab.lab.workers import main as sweep_main  # the runs as trials of an Optuna study

        return sweep_main(args[1:])
    if args[:1] == ["tune"]:
        from zolab.lab.tune import main as tune_main

        return tune_main(args[1:])
    from zolab.lab.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
