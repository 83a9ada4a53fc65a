"""A sweep's display: one line refreshed in place on a terminal (run i of N, its step, the ETAs), else one line
per run, and a summary table; Lightning's per-run banners off while it shows."""

from __future__ import annotations

import contextlib
import logging
import sys
import time

from lightning.pytorch.callbacks import ProgressBar
from typing_extensions import override

from zolab.lab.sweep_spec import Run


@contextlib.contextmanager
def quiet_lightning():
    """Lightning's per-run banners (devices, seed, model summary, "max_steps reached") off while the sweep's
    display runs; warnings still show."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _clock(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class SweepProgress:
    """One display for a sweep: on a terminal, one line refreshed in place (run i of N, its step, the run's and
    the sweep's ETA); otherwise one line per run when it ends. ``summary`` prints a table of all runs."""

    def __init__(self, name: str, stream=None, tty: bool | None = None, refresh_seconds: float = 0.5):
        self.name, self.stream = name, stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.refresh_seconds = refresh_seconds
        self._i = self._n = 0
        self._run: Run | None = None
        self._durations: list[float] = []  # seconds per step of finished runs (sweep ETA)
        self._width = 0
        self._last = 0.0

    def callback(self, run: Run) -> _RunProgress:
        """The progress-bar callback of one in-process run (in place of Lightning's bar)."""
        return _RunProgress(self, run)

    def start(self, i: int, n: int, run: Run) -> None:
        self._i, self._n, self._run, self._last = i, n, run, 0.0
        self._show(f"[{i}/{n}] {run.run_id}: starting", force=True)

    def update(self, step: int, total: int | None, seconds: float, loss: float | None) -> None:
        now = time.monotonic()
        if not self.tty or now - self._last < self.refresh_seconds:
            return
        self._last = now
        rate = seconds / step if step else None
        run_eta = rate * (total - step) if rate is not None and total else None
        left = self._n - self._i
        per_run = (sum(self._durations) / len(self._durations)) if self._durations else (
            rate * total if rate is not None and total else None)
        sweep_eta = run_eta + left * per_run if run_eta is not None and per_run is not None else None
        loss_text = f"  loss {loss:.4g}" if loss is not None else ""
        steps = f"{step:,}/{total:,}" if total else f"{step:,}"
        self._show(f"sweep {self.name}  run {self._i}/{self._n} {self._run.run_id}  step {steps}{loss_text}  "
                   f"ETA run {_clock(run_eta)}, sweep {_clock(sweep_eta)}")

    def end(self, run: Run, line: str) -> None:
        if run.status == "done":
            self._durations.append(run.seconds)
        self._show(line, force=True, final=True)

    def _show(self, text: str, force: bool = False, final: bool = False) -> None:
        if self.tty:
            pad = max(self._width - len(text), 0)
            self.stream.write("\r" + text + " " * pad + ("\n" if final else ""))
            self._width = 0 if final else len(text)
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()

    @staticmethod
    def summary(runs: list[Run]) -> str:
        """A table: run, status, steps, last train/loss, seconds."""
        rows = [("run", "status", "steps", "train/loss", "seconds")]
        for r in runs:
            rows.append((r.run_id, r.status, "-" if r.steps is None else f"{r.steps:,}",
                         "-" if r.loss is None else f"{r.loss:.4g}", f"{r.seconds:.1f}" if r.seconds else "-"))
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths)))
                 for row in rows]
        return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


class _RunProgress(ProgressBar):
    """The progress bar of one in-process run of a sweep: reports its step to the sweep's display."""

    def __init__(self, display: SweepProgress, run: Run):
        super().__init__()
        self.display, self.run = display, run
        self._enabled = True
        self._start = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @override
    def on_train_start(self, trainer, pl_module):
        self._start = time.perf_counter()
        self._first_step = trainer.global_step

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = trainer.progress_bar_metrics.get("train/loss")
        self.run.loss = float(loss) if loss is not None else self.run.loss
        self.run.steps = trainer.global_step
        if self._enabled:
            done = trainer.global_step - self._first_step
            total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
            rate_seconds = time.perf_counter() - self._start
            # the ETA from this process's steps: a resumed run starts at its checkpoint's step
            self.display.update(done, None if total is None else total - self._first_step, rate_seconds,
                                self.run.loss)
