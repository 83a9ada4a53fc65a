"""The ``zolab claims`` command line (also ``python -m zolab.claims``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from zolab.claims.board import print_board, score, shown
from zolab.claims.docs import write_docs
from zolab.claims.experiments import NoExperiments, find_experiments
from zolab.claims.jobs import run_missing
from zolab.claims.registry import select, sweep_files

USAGE = """examples:
  zolab claims                                  the scoreboard from the runs under runs/
  zolab claims R1 Z1 --root /data/runs          two claims, another runs root
  zolab claims --run [IDS]                      run the missing CPU-feasible measurements, then the scoreboard
  zolab claims --run Z1.quadratics --dry-run    what would run
  zolab claims --write docs/claims.md           the scoreboard as Markdown, figures in docs/figures/claims/"""


def _unwritable(path: Path) -> str:
    """Why the page cannot be written at ``path`` ('' when it can, as far as can be told before writing)."""
    if path.is_dir():
        return f"{path} is a directory; allowed: a file path such as docs/claims.md"
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        return f"{path}: {folder} is a file, not a folder"
    if not os.access(folder, os.W_OK):
        return f"{path}: {folder} is not writable"
    return ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="zolab claims", epilog=USAGE, formatter_class=argparse.RawTextHelpFormatter,
                                     description="Each paper claim's verdict from the runs on disk (docs/claims.md).")
    parser.add_argument("ids", nargs="*", help="claims (R1 … Z1) or parts (Z1.quadratics); default: all")
    parser.add_argument("--root", help="the runs root (default runs/; it may not exist yet)")
    parser.add_argument("--data", default="../shared/data", help="the data folder the attack reads (MNIST)")
    parser.add_argument("--experiments", help="the experiments folder (default: ./experiments, else the checkout "
                                              "zolab is installed from)")
    parser.add_argument("--run", action="store_true", help="run the missing CPU-feasible measurements first")
    parser.add_argument("--dry-run", action="store_true", help="with --run: print the commands, run nothing")
    parser.add_argument("--write", metavar="MD", help="write the scoreboard as Markdown (figures beside it)")
    args = parser.parse_args(argv)
    try:
        selection = select(args.ids)
        experiments = find_experiments(args.experiments, sweep_files())
    except (ValueError, NoExperiments) as err:
        parser.error(str(err))
    root = Path(args.root or "runs")
    if root.exists() and not root.is_dir():
        parser.error(f"--root {root}: a file, not a folder; allowed: the folder that holds the sweeps' runs")
    if args.root is not None and not root.exists() and not args.run:
        parser.error(f"--root {root}: no such folder; allowed: the folder that holds the sweeps' runs "
                     "(`zolab claims --run --root DIR` makes it)")
    if args.write and (why := _unwritable(Path(args.write))):
        parser.error(f"--write {why}")
    failed = run_missing(selection, root, args.data, experiments, args.dry_run) if args.run else 0
    rows = score(root, experiments, selection)
    flags = f" --experiments {args.experiments}" if args.experiments else ""
    print_board(rows, str(root), args.data, shown(experiments), flags)
    if args.write:
        try:
            for path in write_docs(rows, root, experiments, Path(args.write)):
                print(f"wrote {path}")
        except OSError as err:
            print(f"zolab claims: error: --write {args.write}: {err.strerror or err}", flush=True)
            return 1
    return 1 if failed else 0
