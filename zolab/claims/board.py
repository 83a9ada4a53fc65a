"""The scoreboard: each selected claim's verdict from the runs on disk, and its printing.

A part is read only when its runs are complete (``experiments.check_part``): every run its registry entry
expects, finished, readable and made with the registered settings. Otherwise it shows the state of its runs,
"incomplete" or "mismatched", with the runs named; a part without runs shows "not run". A claim's verdict
combines its read parts (``types.combine``); without any, the claim shows the worst of its parts' states.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from zolab.claims.experiments import Check, Runs, check_part
from zolab.claims.types import STATES, VERDICTS, Claim, Part, Result, combine


@dataclass
class Row:
    claim: Claim
    results: dict[str, Result | None] = field(default_factory=dict)  # part name -> reading (None: none)
    checks: dict[str, Check] = field(default_factory=dict)  # part name -> the state of its runs
    errors: dict[str, str] = field(default_factory=dict)  # part name -> why its reader failed

    @property
    def verdict(self) -> str:
        """A verdict from the read parts; else "mismatched", "incomplete" or "not run" from their runs."""
        read = [r.verdict for r in self.results.values() if r is not None]
        if read:
            return combine(read)
        states = {c.state for c in self.checks.values()}
        return "mismatched" if "mismatched" in states else "incomplete" if "incomplete" in states or (
            self.errors) else "not run"

    @property
    def missing(self) -> list[Part]:
        """The selected parts without a reading."""
        return [p for p in self.claim.parts if p.name in self.results and self.results[p.name] is None]

    def state(self, part: Part) -> str:
        """What keeps a part unread: its runs' state, or its reader's failure."""
        if part.name in self.errors:
            return f"incomplete: {self.errors[part.name]}"
        check = self.checks[part.name]
        if not part.cpu:
            return "not run (GPU-only)"
        return check.state + (f": {'; '.join(check.notes)}" if check.notes else "")


def score(root: Path, experiments: Path, selection) -> list[Row]:
    memo: dict = {}  # sweep -> Check: the MiniLM parts share their sweeps
    rows = []
    for claim, parts in selection:
        row = Row(claim)
        for part in parts:
            row.results[part.name] = None
            if part.read is None:
                row.checks[part.name] = Check("not run")
                continue
            check = row.checks[part.name] = check_part(part, Path(root), Path(experiments), memo)
            if check.state != "complete":
                continue
            try:
                row.results[part.name] = part.reading(Runs(root, experiments, check.runs))
            except Exception as err:  # noqa: BLE001 - a malformed run must not hide the other claims
                row.errors[part.name] = f"the reader failed ({type(err).__name__}: {err})"
                continue
            if row.results[part.name] is None:
                row.errors[part.name] = "the runs are all there but hold none of the values its reader needs"
        rows.append(row)
    return rows


def shown(path) -> str:
    """A path as the commands print it: relative to the working directory when below it."""
    rel = os.path.relpath(Path(path).resolve())
    return str(path) if rel.startswith("..") else rel


def rerun(claim: Claim, part: Part, root: str, data: str, experiments: str, flags: str = "") -> str:
    if not part.cpu:
        return "; ".join(shlex.join(j.command(root, data, experiments)) for j in part.jobs) + "  (GPU)"
    return f"zolab claims --run {claim.id}.{part.name} --root {root}{flags}"


def print_board(rows: list[Row], root: str, data: str, experiments: str, flags: str = "", out=None) -> None:
    """The scoreboard as text: per claim its verdict, each part's reading or state, its rules and commands."""
    out = out or sys.stdout
    counts = {v: sum(r.verdict == v for r in rows) for v in (*VERDICTS, *STATES)}
    print(f"zolab claims: {len(rows)} claims from the runs under {root} (experiment files: {experiments}): "
          + ", ".join(f"{n} {v}" for v, n in counts.items() if n), file=out)
    if not Path(root).exists():
        print(f"(no runs: {root} does not exist yet; `zolab claims --run` makes the CPU-feasible ones)", file=out)
    for row in rows:
        c = row.claim
        print(f"\n{c.id:<4} {row.verdict.upper():<8} {c.statement}", file=out)
        print(f"     paper     {c.paper}", file=out)
        for name, res in row.results.items():
            part = next(p for p in c.parts if p.name == name)
            if res is None:
                continue
            print(f"     zolab     [{name}] {res.verdict}: {res.number}", file=out)
            for line in (res.detail, res.power and f"power: {res.power}"):
                if line:
                    print(f"               {line}", file=out)
            print(f"     settings  [{name}] {part.settings}", file=out)
        for p in row.missing:
            print(f"     {'missing':<9} {p.name}: {row.state(p)} -> {rerun(c, p, root, data, experiments, flags)}",
                  file=out)
        print(f"     rule      {c.rule}", file=out)
        if c.power_text():
            print(f"     power     {c.power_text()}", file=out)
        print(f"     re-run    zolab claims --run {c.id} --root {root}{flags}", file=out)
