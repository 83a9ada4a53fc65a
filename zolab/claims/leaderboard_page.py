"""``zolab leaderboard``: the equal-budget table per testbed from the runs on disk; ``--run`` makes the missing runs,
``--write docs/leaderboard.md`` writes the page and its figures (docs/figures/leaderboard_<testbed>.png)."""

from __future__ import annotations

import argparse
from pathlib import Path

from zolab.claims.board import shown
from zolab.claims.experiments import NoExperiments, find_experiments
from zolab.claims.leaderboard import FIRST_ORDER, REFERENCE, Protocol, load_protocol, read_probe, testbeds
from zolab.claims.leaderboard_table import CPU_FILE, ROBUST_POINTS, cpu_record, figure, markdown, read_rows

USAGE = """examples:
  zolab leaderboard                                   the tables from the runs under runs/
  zolab leaderboard --run --testbed t1                run what T1 misses (probe, tuning, seeds), then the table
  zolab leaderboard --run --testbed t1 --rules zo_sgd,radazo --dry-run     what would run
  zolab leaderboard --write docs/leaderboard.md       the page, figures in docs/figures/"""

PROTOCOL = """\
- **Equal budget.** Every run may spend the testbed's budget B of forward passes. A rule whose step costs f forwards
  (the optimizer's own count over 3 steps, measured by the probe) runs T = ⌊B / f⌋ steps, rounded down to a
  multiple of 20, and validates every T / 20 steps. Adam by backprop, the reference row, is charged f =
  time(forward + backward) / time(forward), measured by the probe on the testbed's model (MeZO's paper counts a
  backward pass as about two forwards); a rule that steps by forward-mode passes (Forward-Grad) is charged
  r_jvp = time(JVP) / time(forward) a pass, measured the same way. MeZO-SVRG's anchor steps count every
  mini-batch of the training split they evaluate.
- **Rules as registered.** Every key of `zolab.rules.RULES` (a rule registered later joins at the next `--run`),
  each with its own defaults (estimator, directions, K), μ = {mu}; a step whose loss is not finite is skipped
  (`nonfinite: skip`), so a diverging run ends, is scored, and is never chosen.
- **Step size on validation.** One lr grid for every rule, × {factor:g} for a rule whose step does not grow with the
  loss (measured, not assumed: the probe's 3 steps on 100 f move the parameters as far as on f, within 10×; sign
  and Adam-like rules and Adam by backprop); one run per lr at seed {tune_seed}; the best final **validation**
  accuracy chooses (ties: the smaller lr); a best lr at an end of the runs adds the next value beyond it, at most
  {extend} times. Test accuracy is never read to choose.
- **Seeds.** {n} runs at the chosen lr (seeds {seeds}; a seed sets the initialisation, the batch order and the
  rule's directions; the validation split stays fixed): the table's test accuracy is their mean ± std.
- **Columns.** *forwards to MeZO's validation loss*: the forwards at which the rule's validation loss, mean over
  its seed runs, first reaches MeZO's final one (the same mean at MeZO's last validation; linear between
  validations, from the untrained models' mean loss at 0; "—": never within the budget), and over MeZO's own.
  *ms/step*: the least wall-clock of 200 steps of the optimizer alone in the probe, every rule stepping in turn
  (indicative: the machine below, shared), and over MeZO's. *memory / inference*: the peak bytes of the tensors
  alive during two steps (parameters, batch, everything allocated, optimizer state included) over those of two
  forward passes.
  *robust lrs*: the grid's lrs whose final validation accuracy is within {robust:g} points of the rule's best."""


def page(root: Path, experiments: Path, names: list[str], out: Path) -> list[Path]:
    """docs/leaderboard.md: the protocol, then per testbed its table, figure, missing runs and cost."""
    protocols = [load_protocol(experiments, t) for t in names]
    p0 = protocols[0]
    lines = ["# Leaderboard: every rule at the same number of forward passes", "",
             "Written by `zolab leaderboard --write docs/leaderboard.md` from the runs on disk (`runs/leaderboard_"
             "<testbed>/`); `zolab leaderboard --run --testbed T` makes the missing ones, resumably (`make "
             "leaderboard`). Each testbed's protocol is `experiments/leaderboard/<testbed>.yaml`, its runs' config "
             "`experiments/leaderboard/<testbed>_fit.yaml` (the testbed's config, EXPERIMENTS.md \"Testbeds\", with "
             "the rule left to each run). Accuracies in %, mean ± standard deviation over the seed runs.", "",
             "## Protocol", "",
             PROTOCOL.format(mu=f"{p0.mu:g}", factor=p0.scale_free_factor, tune_seed=p0.tune_seed, extend=p0.extend,
                             n=len(p0.seeds), seeds=", ".join(map(str, p0.seeds)), robust=ROBUST_POINTS), "",
             "| testbed | budget B (forwards) | lr grid | seeds | planned CPU-hours |", "|---|---|---|---|---|"]
    lines += [f"| {p.title} | {p.budget:,} | {', '.join(f'{x:g}' for x in p.lr_grid)} | {len(p.seeds)} | "
              f"{p.planned_hours:g} |" for p in protocols]
    written = []
    for p in protocols:
        section, fig = testbed_section(root, experiments, p, out.parent / "figures" / f"leaderboard_{p.testbed}.png")
        lines += ["", *section]
        written += [fig] if fig else []
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return [out, *written]


def testbed_section(root: Path, experiments: Path, p: Protocol, fig_path: Path | None) -> tuple[list[str], Path | None]:
    """A testbed's heading, table, figure, missing runs and cost (lines), and the figure written (if any)."""
    lines = [f"## {p.title}", ""]
    if not (Path(root) / p.folder).is_dir():
        return lines + [f"Not run: no runs under {shown(Path(root) / p.folder)} (`zolab leaderboard --run --testbed "
                        f"{p.testbed}` makes them)."], None
    rows = read_rows(root, experiments, p)
    probe = read_probe(root, p)
    m = {k: probe.get("machine", {}).get(k, "?") for k in ("cpu", "cores", "load_average", "torch")}
    lines += [f"Budget {p.budget:,} forwards a run; MeZO = ZO-SGD (`{REFERENCE}`); "
              f"{sum(r.complete for r in rows)} of {len(rows)} rules complete. Probe machine: {m['cpu']}, "
              f"{m['cores']} cores shared with other jobs (load average {m['load_average']} when probed), one torch "
              f"thread, torch {m['torch']}.", "", *markdown(rows)]
    fig = figure(rows, p.title, fig_path) if fig_path else None
    if fig:
        lines += ["", f"![{p.testbed}: validation accuracy against forwards](figures/{fig.name})"]
    over = [(r, f * r.protocol_steps) for r in rows if r.protocol_steps and (f := r.entry.get("forwards_per_step"))
            and f * r.protocol_steps > p.budget * 1.001]
    if over:  # one validation interval is the least a run can take
        lines += ["", f"Over the budget: a run takes at least {p.validations} steps (one validation interval), so "
                  + "; ".join(f"{r.label} spends about {spent:,.0f} forwards ({spent / p.budget:.1f}× B)"
                              for r, spent in over) + "."]
    missing = [r for r in rows if not r.complete]
    if missing:
        lines += ["", "Rules without a complete set of runs (`zolab leaderboard --run --testbed "
                  f"{p.testbed} --rules KEY` runs them):", ""]
        lines += [f"- {r.label} (`{r.key}`): {r.runs.state}" + (f": {'; '.join(r.runs.notes)}" if r.runs.notes else "")
                  for r in missing]
    lines += claims_section(root, experiments, p)
    cpu = cpu_record(root, p)
    total = sum(r.cpu_seconds for r in rows) + float(cpu.get("probe", 0))
    per_rule = ", ".join(f"{r.label} {r.cpu_seconds / 60:.1f}" for r in sorted(rows, key=lambda r: r.key)
                         if r.cpu_seconds) or "none recorded"
    lines += ["", f"Cost: {total / 60:.0f} CPU-minutes recorded in `{p.folder}/{CPU_FILE}` by `--run` (the probe "
              f"{float(cpu.get('probe', 0)) / 60:.1f}; per rule, its tuning and seeds: {per_rule}); planned "
              f"{p.planned_hours:g} CPU-hours for 20 rules and Adam."]
    return lines, fig


def claims_section(root: Path, experiments: Path, p: Protocol) -> list[str]:
    """The registry's claim parts that read this testbed's runs (zolab.claims.testbeds), with their verdicts."""
    from zolab.claims.board import score
    from zolab.claims.registry import CLAIMS

    selection = [(c, [x for x in c.parts if x.name == p.testbed]) for c in CLAIMS]
    rows = score(root, experiments, [(c, parts) for c, parts in selection if parts])
    if not rows:
        return []
    lines = ["", f"The papers' claims on {p.testbed.upper()} (docs/claims.md: their rules and power rules, written "
             f"before these runs; `zolab claims ID.{p.testbed}` prints the same):", "",
             "| claim | verdict | zolab | power |", "|---|---|---|---|"]
    for row in rows:
        part = row.claim.parts[[x.name for x in row.claim.parts].index(p.testbed)]
        res = row.results.get(p.testbed)
        text = f"{res.number}" + (f" ({res.detail})" if res.detail else "") if res else row.state(part)
        lines.append(f"| [{row.claim.id}](claims.md#{row.claim.id.lower()}) {row.claim.statement} | "
                     f"**{res.verdict if res else row.verdict}** | {text} | {res.power if res else ''} |")
    return lines


def print_tables(root: Path, experiments: Path, names: list[str], keys: list[str] | None) -> None:
    for name in names:
        p = load_protocol(experiments, name)
        print(f"\n{p.title}: budget {p.budget:,} forwards a run (experiments/leaderboard/{name}.yaml)")
        if not (Path(root) / p.folder).is_dir():
            print(f"not run: no runs under {Path(root) / p.folder} (`zolab leaderboard --run --testbed {name}`)")
            continue
        rows = read_rows(root, experiments, p, keys)
        print("\n".join(markdown(rows)))
        for r in rows:
            if not r.complete:
                print(f"  {r.key}: {r.runs.state}" + (f": {'; '.join(r.runs.notes)}" if r.runs.notes else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="zolab leaderboard", epilog=USAGE,
                                     formatter_class=argparse.RawTextHelpFormatter,
                                     description="Every rule at the same number of forwards (docs/leaderboard.md).")
    parser.add_argument("--testbed", action="append", help="a testbed (t1, t2; repeatable); default: all")
    parser.add_argument("--rules", help=f"comma-separated rule keys (zolab.rules.RULES, {FIRST_ORDER}); default: all")
    parser.add_argument("--root", default="runs", help="the runs root (default runs/)")
    parser.add_argument("--experiments", help="the experiments folder (default: ./experiments, else the checkout's)")
    parser.add_argument("--run", action="store_true", help="run what is missing first (probe, tuning, seeds)")
    parser.add_argument("--dry-run", action="store_true", help="with --run: print what would run, run nothing")
    parser.add_argument("--write", metavar="MD", help="write the page (figures in figures/ beside it)")
    args = parser.parse_args(argv)
    try:
        experiments = find_experiments(args.experiments, [f"leaderboard/{t}.yaml" for t in args.testbed or ["t1"]])
        names = args.testbed or testbeds(experiments)
        for name in names:
            load_protocol(experiments, name)
    except (ValueError, NoExperiments) as err:
        parser.error(str(err))
    keys = [k.strip() for k in args.rules.split(",") if k.strip()] if args.rules else None
    root = Path(args.root)
    failed = 0
    if args.run:
        from zolab.claims.leaderboard_run import Stopped, run_testbed

        for name in names:
            try:
                failed += run_testbed(root, experiments, load_protocol(experiments, name), keys, args.dry_run)
            except ValueError as err:
                parser.error(str(err))
            except Stopped as stop:
                print(f"zolab leaderboard: {stop}")
                return stop.status
    print_tables(root, experiments, names, keys)
    if args.write:
        for path in page(root, experiments, names, Path(args.write)):
            print(f"wrote {path}")
    return 1 if failed else 0
