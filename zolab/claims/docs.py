"""``zolab claims --write docs/claims.md``: the scoreboard as a Markdown page, its figures beside it."""

from __future__ import annotations

import shlex
from pathlib import Path

from zolab.claims.board import Row
from zolab.claims.experiments import sweep_name
from zolab.claims.jobs import job_minutes
from zolab.claims.leaderboard import load_protocol, testbeds
from zolab.claims.registry import CLAIMS

# The page shows the commands as a checkout runs them: from its root, runs under runs/, data beside it.
SHOWN_ROOT, SHOWN_DATA, SHOWN_EXPERIMENTS = "runs", "../shared/data", "experiments"

VERDICT_TEXT = (
    "Five verdicts: **holds**, **partly** and **fails** by the claim's rule; **inconclusive** when a comparison "
    "has no power: its reference rule did not improve its metric over the start by more than the part's tolerance, "
    "or fewer than two seeds stand behind the difference (each comparison's \"Power\" line says which); **not run**. "
    "A claim's verdict combines its parts' (all hold: holds, all fail: fails, else partly; inconclusive parts "
    "count only when no part is conclusive). Runs on disk that are not all finished and readable read "
    "**incomplete**, runs made with other settings than the registry's **mismatched**, with the runs named; "
    "neither gives a verdict.")


def _figure(res, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    res.plot(ax)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_docs(rows: list[Row], root: Path, experiments: Path, out: Path) -> list[Path]:
    """The page: the table, then per claim its reading, rule, power rule, prediction, figure and commands."""
    figures = out.parent / "figures" / "claims"
    written = []
    study = sum(p.hours for c in CLAIMS for p in c.parts if p.cpu and p.name == "minilm")
    boards = {t: load_protocol(experiments, t).planned_hours for t in testbeds(experiments)}
    hours = sum(p.hours for c in CLAIMS for p in c.parts if p.cpu) + sum(boards.values())
    lines = ["# Claims: what holds here", "",
             "Written by `zolab claims --write docs/claims.md` from the runs on disk (the registry is `zolab/claims/`, "
             "one file per paper; the claims are docs/algorithms.md §5). Each verdict follows a rule written in the "
             "registry before its runs (Z1's and B2's predictions too); a claim that fails here is a result at "
             "these settings, not a refutation of the paper. Numbers are mean ± standard deviation over seeds.", "",
             VERDICT_TEXT, "",
             f"`make claims` (`zolab claims --run --write docs/claims.md`) runs every CPU-feasible measurement "
             f"that is missing, resumably, then writes this page: about {hours:.0f} CPU-hours planned on 2 cores, "
             f"{study:.1f} of them the MiniLM study and "
             + ", ".join(f"{h:g} the leaderboard's {t.upper()}" for t, h in boards.items())
             + " (docs/leaderboard.md: the testbed parts read its runs; measured minutes per part: \"Cost\" below). "
             "`zolab claims --run ID` runs one claim; GPU-only parts print their commands.", "",
             "| claim | paper | zolab | verdict | re-run |", "|---|---|---|---|---|"]
    for row in rows:
        c = row.claim
        cells = [f"[{n}] {r.verdict}: {r.number}" for n, r in row.results.items() if r is not None]
        cells += [f"[{p.name}] {row.state(p)}" for p in row.missing if p.cpu and row.checks[p.name].state != "not run"]
        lines.append(f"| [{c.id}](#{c.id.lower()}) {c.statement} | {c.paper} | {'<br>'.join(cells) or '—'} | "
                     f"**{row.verdict}** | `zolab claims --run {c.id}` |")
    for row in rows:
        c = row.claim
        lines += ["", f"## {c.id}", "", f"**{c.statement}.** Paper: {c.paper}. Verdict: **{row.verdict}**.", ""]
        if c.prediction:
            lines += [f"Prediction (written before the runs): {c.prediction}", ""]
        lines += [f"Rule: {c.rule}.", ""]
        if c.power_text():
            lines += [f"Power: {c.power_text()}.", ""]
        for part in c.parts:
            res = row.results.get(part.name)
            status = f"**{res.verdict}**: {res.number}" if res else (
                "GPU-only, not run here" if not part.cpu else row.state(part) if part.name in row.checks else "not run")
            lines.append(f"- {part.name} ({part.settings}): {status}")
            for extra in (res.detail, res.power and f"power: {res.power}") if res else ():
                if extra:
                    lines.append(f"  ({extra})")
            commands = [shlex.join(j.command(SHOWN_ROOT, SHOWN_DATA, SHOWN_EXPERIMENTS)) for j in part.jobs]
            lines.append("  Commands: " + "; ".join(f"`{cmd}`" for cmd in commands))
        for name, res in row.results.items():
            if res is not None and res.plot is not None:
                path = figures / f"{c.id.lower()}_{name}.png"
                _figure(res, path)
                written.append(path)
                lines += ["", f"![{c.id} {name}](figures/claims/{path.name})"]
    lines += ["", "## Cost", "", "CPU minutes each measurement took where it ran (the runs' own clocks, "
              "on the machine and load they ran under), and the plan for 2 cores:", "",
              "| claim part | jobs | minutes | planned CPU-hours |", "|---|---|---|---|"]
    seen: set[str] = set()
    counted: set[str] = set()  # sweep folders already counted: sweep files that share one count it once
    for row in rows:
        for part in row.claim.parts:
            if not part.cpu or all(j.key in seen for j in part.jobs):
                continue
            new = [j for j in part.jobs if j.key not in seen]
            seen.update(j.key for j in new)
            minutes = []
            for j in new:
                units = j.dynamic.units if j.dynamic else (sweep_name(experiments, j.sweep) if j.sweep else j.key,)
                fresh = [u for u in units if u not in counted]
                counted.update(fresh)
                if fresh:
                    minutes.append(j.dynamic.minutes(Path(root), fresh) if j.dynamic else
                                   job_minutes(j, Path(root), experiments))
            took = f"{sum(m for m in minutes if m is not None):.0f}" if any(m is not None for m in minutes) else "—"
            keys = ", ".join(f"experiments/{j.key}" if j.sweep or j.in_experiments else j.key for j in new)
            lines.append(f"| {row.claim.id}.{part.name} | {keys} | {took} | {part.hours:g} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return [out, *written]
