"""The registry's types (a claim, its parts, the jobs that make their runs, a reading) and the verdict rules.

A part's reader returns a ``Result``: holds, partly or fails by the part's rule, zolab's number and, for a
comparison, how far its reference rule moved (``Moved``). The power rule (``power``) then makes a comparison
**inconclusive** unless the reference improved its metric over the start by more than the part's
``Tolerance``, with at least two seeds behind the difference. A claim's verdict combines its parts'
(``combine``); a claim with no reading is "not run", or shows the state of its runs: "incomplete" (missing,
unfinished or unreadable runs) or "mismatched" (made with other settings), with the runs named.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

VERDICTS = ("holds", "partly", "fails", "inconclusive", "not run")
STATES = ("incomplete", "mismatched")  # runs on disk that give no verdict: shown like "not run", runs named


@dataclass(frozen=True)
class Tolerance:
    """A comparison's power rule: ``reference`` (a rule's class name as hparams.yaml records it, or an arm)
    must improve ``metric`` over the start by more than ``amount`` (``relative``: a fraction of the start),
    the mean over at least two seeds."""

    reference: str
    name: str  # the reference as the text names it
    metric: str
    amount: float
    unit: str = ""
    relative: bool = False
    higher_is_better: bool = False
    start: str = "its first logged value"

    def amount_text(self) -> str:
        unit = self.unit[:-1] if self.amount == 1 and self.unit.endswith("s") else self.unit  # 1 point
        return f"{100 * self.amount:g}% of the start" if self.relative else f"{self.amount:g}{unit}"

    def text(self) -> str:
        change = "raise" if self.higher_is_better else "lower"
        return (f"inconclusive unless {self.name} {change}s its {self.metric} from the start ({self.start}) by "
                f"more than {self.amount_text()}, over at least 2 seeds")


@dataclass
class Moved:
    """How far a comparison's reference moved: per cell (a function, the task), its start and its end per
    seed; ``seeds``, the fewest seeds any compared rule has."""

    cells: dict[str, tuple[float, list[float]]]
    seeds: int


def power(tol: Tolerance, moved: Moved) -> tuple[bool, str]:
    """(whether the comparison has power, the sentence that says how far the reference moved)."""
    from zolab.claims.stats import g, mean

    if moved.seeds < 2:
        return False, f"{moved.seeds} seed{'s' * (moved.seeds != 1)}: the difference has no spread across seeds"
    said = []
    for cell, (start, ends) in moved.cells.items():
        end = mean(ends)
        where = f" on {cell}" if len(moved.cells) > 1 else ""
        if not (math.isfinite(start) and math.isfinite(end)):  # a diverged (or absent) reference did not move
            return False, f"the reference {tol.name} diverged or did not run{where}"
        gain = (end - start) if tol.higher_is_better else (start - end)
        gain = gain / abs(start) if tol.relative and start else gain
        amount = f"{100 * gain:.0f}% of the start" if tol.relative else f"{g(gain, 2)}{tol.unit}"
        said.append(f"{amount}{where} ({g(start, 4)} -> {g(end, 4)})")
        if not gain > tol.amount:
            return False, f"the reference {tol.name} moved {said[-1]}; more than {tol.amount_text()} needed"
    return True, f"the reference {tol.name} moved {'; '.join(said)}"


@dataclass
class Result:
    """A part's reading: its verdict, zolab's number (with its spread), a line of detail, a figure, and for a
    comparison how far its reference moved (the power rule's input) and what the rule made of it."""

    verdict: str
    number: str
    detail: str = ""
    plot: Callable | None = None  # plot(ax): draws the part's figure on a matplotlib Axes
    moved: Moved | None = None
    power: str = ""  # the power rule's sentence (a comparison only)


@dataclass(frozen=True)
class Job:
    """What makes a part's runs: a sweep file (relative to the experiments folder; run as ``zolab sweep FILE
    --root ROOT --resume``, with ``--workers=N --threads=1`` for ``workers`` > 1: small runs, two at a time on
    the 2-core machine), or a command (``argv`` with ``{root}``, ``{data}``, ``{experiments}``) whose
    ``output`` (under ROOT, or under the experiments folder with ``in_experiments``) says it ran; a JSON
    output's ``"settings"`` must hold ``settings`` (key, value) pairs."""

    sweep: str = ""
    workers: int = 1
    argv: tuple[str, ...] = ()
    output: str = ""
    in_experiments: bool = False
    settings: tuple[tuple[str, object], ...] = ()
    prerequisite: bool = False  # makes a file later jobs need (a trained CNN), not a measurement a reader uses
    # runs whose set is known only from the runs themselves (the leaderboard's: its seeds follow its tuning):
    # an object with check(root, experiments) -> Check, units (what its minutes count) and minutes(root, units)
    dynamic: object = None

    @property
    def key(self) -> str:
        return self.sweep or self.output

    def command(self, root: str, data: str, experiments: str) -> list[str]:
        if self.sweep:
            return ["zolab", "sweep", f"{experiments}/{self.sweep}", f"--root={root}", "--resume",
                    *([f"--workers={self.workers}", "--threads=1"] if self.workers > 1 else [])]
        return [a.format(root=root, data=data, experiments=experiments) for a in self.argv]


@dataclass(frozen=True)
class Part:
    """One measurement of a claim: its settings, the jobs that make its runs, its reader (None: GPU-only,
    not readable here) and, for a comparison, its tolerance."""

    name: str
    settings: str
    jobs: tuple[Job, ...]
    read: Callable | None  # read(runs: Runs) -> Result | None (None: its runs are not on disk)
    cpu: bool = True
    hours: float = 0.0  # planned CPU-hours on the 2-core machine
    tolerance: Tolerance | None = None

    def reading(self, runs) -> Result | None:
        """The reader's result with the power rule applied."""
        res = self.read(runs)
        if res is None or self.tolerance is None:
            return res
        if res.moved is None:
            raise TypeError(f"part {self.name!r} has a tolerance but its reader reports no reference movement")
        conclusive, res.power = power(self.tolerance, res.moved)
        if not conclusive and res.verdict in ("holds", "partly", "fails"):
            res.detail = f"would read {res.verdict}" + (f"; {res.detail}" if res.detail else "")
            res.verdict = "inconclusive"
        return res


def gpu(configs: list[str], note: str) -> Part:
    """A GPU-only part: its ``zolab fit`` commands, printed, never run or read here."""
    return Part("GPU", note, tuple(Job(argv=("zolab", "fit", "--config", f"{{experiments}}/{c}")) for c in configs),
                None, cpu=False)


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    paper: str
    rule: str  # the verdict rule, thresholds included (written before the runs)
    parts: tuple[Part, ...]
    prediction: str = ""  # the prediction written before the runs (Z1, B2)

    def power_text(self) -> str:
        """Each comparison part's power rule, as the scoreboard and docs print it (parts that share one, once)."""
        texts: dict[str, list[str]] = {}
        for p in self.parts:
            if p.tolerance:
                texts.setdefault(p.tolerance.text(), []).append(p.name)
        return "; ".join(f"[{', '.join(names)}] {text}" for text, names in texts.items())


def combine(verdicts: list[str]) -> str:
    """A claim's verdict from its parts' readings: the conclusive ones combine (all hold -> holds, all fail ->
    fails, else partly); only inconclusive parts -> inconclusive; none -> not run."""
    if not verdicts:
        return "not run"
    conclusive = [v for v in verdicts if v != "inconclusive"]
    if not conclusive:
        return "inconclusive"
    if all(v == "holds" for v in conclusive):
        return "holds"
    if all(v == "fails" for v in conclusive):
        return "fails"
    return "partly"


def two_rule(a: bool, b: bool) -> str:
    """holds when both sub-rules hold, fails when neither does, partly otherwise."""
    return "holds" if a and b else "fails" if not (a or b) else "partly"
