"""Signals: a SIGINT or SIGTERM stops a run after its running step and that step's checkpoint, or a sweep after its run.

``InterruptCheckpoint`` (a callback ``zolab fit`` adds) defers the signal to the end of the running ZO step,
saves the step, and raises ``Interrupted``, whose ``exit_status`` is the shell's 128 + signal;
``SweepSignals`` forwards a signal to a sweep's running subprocess, or stops an in-process run that has not
started training, or the sweep before its next run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

from lightning.pytorch.callbacks import Callback
from typing_extensions import override

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A run stopped by a signal: after the running step and its checkpoint (``saved``), or at once (a second
    signal: ``saved`` is None). A ``BaseException``, as ``KeyboardInterrupt``: ``except Exception`` lets it
    through. ``exit_status``: 128 + the signal number (130 for SIGINT, 143 for SIGTERM), as a shell reports it."""

    def __init__(self, signum: int, step: int | None = None, saved: str | None = None):
        self.signum, self.step, self.saved = int(signum), step, saved
        name = signal.Signals(self.signum).name
        where = f" after step {step}" if step is not None else ""
        then = f"; checkpoint {saved}: resume with --ckpt_path={saved}" if saved else "; no checkpoint of this step"
        super().__init__(f"stopped by {name}{where}{then}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class InterruptCheckpoint(Callback):
    """Signal-safe checkpoints. A SIGINT (Ctrl-C) or SIGTERM during training lets the current step finish (a ZO
    step is never cut in half), saves ``DIRPATH/FILENAME.ckpt`` at that step's end (where Lightning's own step
    checkpoints are taken, so the resumed run logs at the right steps), lets that step's validation and logging
    run, then stops the run with ``Interrupted`` (exit status 128 + signal). A second signal stops at once,
    without a checkpoint (the step may be half done). Any other exception during training also leaves that
    checkpoint, if the run made a step since it started; nothing is saved before training starts (a failed
    resume never replaces the checkpoint it came from). ``zolab fit ... --ckpt_path DIRPATH/FILENAME.ckpt``
    resumes exactly.

    With several processes (``ZOStrategy``) a stop reaches every process: the signal one process receives (``kill``
    or ``docker stop`` reach only the process that started the others) rides the next step's all-reduce of the
    losses (``ParallelPoints.request_stop``), every process saves (process 0 writes) and stops at that step, and
    each ends with 128 + signal; a second signal to the first process stops it at once and kills the others.

    A plain ``Callback``, not Lightning's ``OnExceptionCheckpoint``: with that one in the trainer,
    ``fit(ckpt_path=None)`` silently resumes from the newest "last" checkpoint it can find. Lightning's own
    SIGTERM handling ends ``fit`` with exit status 0, as if the run had finished: this callback replaces it
    while training runs.

    Args:
        dirpath: where to save; default ``<trainer.log_dir>/checkpoints`` (resolved at setup).
        filename: file name without ``.ckpt`` (default ``on_exception``).

    Example::

        trainer = L.Trainer(callbacks=[InterruptCheckpoint()], max_steps=10_000)
        # Ctrl-C ...  then: trainer.fit(module, datamodule, ckpt_path=".../checkpoints/on_exception.ckpt")
    """

    def __init__(self, dirpath: str | None = None, filename: str = "on_exception"):
        if not filename:
            raise ValueError("InterruptCheckpoint: filename must not be empty")
        self.dirpath, self.filename = dirpath, filename
        self._fitting = False
        self._start_step = None  # global_step when training started (None: not started)
        self._signum = None  # the signal seen, its step not finished yet
        self._saved_step = None  # the step whose end was saved because of a signal
        self.late_signal = None  # a signal that came after the last step: the run finished, its caller should stop
        self._previous = {}
        self._points = None  # several processes: the ParallelPoints whose all-reduce carries a stop to all of them
        self._launcher = None

    @property
    def ckpt_path(self) -> str | None:
        return None if self.dirpath is None else os.path.join(self.dirpath, self.filename + ".ckpt")

    @override
    def setup(self, trainer, pl_module, stage):
        self._fitting = stage == "fit"
        self._start_step = None
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.log_dir or trainer.default_root_dir, "checkpoints")

    # ---------------------------------------------------------------- signal deferral
    def _on_signal(self, signum, frame):
        if self._signum is not None or self._saved_step is not None:  # second signal: stop now
            self._restore()
            if self._launcher is not None and getattr(self._launcher, "procs", None):
                self._launcher.kill(signal.SIGKILL)  # the processes it started would wait for this one's collectives
            raise Interrupted(signum)
        self._signum = signum
        if self._points is not None:
            self._points.request_stop(signum)
        print(f"\nzolab: {signal.Signals(signum).name}: saving a checkpoint after this step (send it again to stop "
              "at once, without one)", file=sys.stderr, flush=True)

    def _restore(self):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def _save(self, trainer):
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)  # full state (optimizer, loops): resumable
        print(f"zolab: checkpoint at step {trainer.global_step}: {self.ckpt_path}", file=sys.stderr, flush=True)

    @override
    def on_train_start(self, trainer, pl_module):
        self._signum, self._saved_step, self.late_signal = None, None, None
        self._start_step = trainer.global_step
        self._points = getattr(trainer.strategy, "parallel_points", None) if trainer.world_size > 1 else None
        self._launcher = trainer.strategy.launcher if trainer.is_global_zero else None
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._on_signal) for s in SIGNALS}
        if trainer.received_sigterm:  # SIGTERM while Lightning set the run up: nothing trained, nothing to save
            self._restore()
            raise Interrupted(signal.SIGTERM, trainer.global_step)

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        signum = self._signum if self._points is None else self._points.stop  # several: the stop they agreed on
        if signum is not None and self._saved_step is None:  # the step is complete: save here
            self._signum, self._saved_step = signum, trainer.global_step
            check = getattr(pl_module, "verify_in_step", None)
            if self._points is not None and check is not None:
                check()  # a checkpoint of processes out of step would resume one of them silently
            self._save(trainer)

    @override
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._saved_step is not None:  # the saved step's validation and logging are done: stop before the next
            self._restore()
            raise Interrupted(self._signum, self._saved_step, self.ckpt_path)

    @override
    def on_train_end(self, trainer, pl_module):
        self._restore()
        if self._signum is not None and self._saved_step is None:  # no step left to finish: the run is complete
            self.late_signal = self._signum
        self._points = self._launcher = None

    @override
    def on_exception(self, trainer, pl_module, exception):
        self._restore()
        if isinstance(exception, Interrupted | KeyboardInterrupt) or not self._fitting or self.ckpt_path is None:
            return  # a signal's checkpoint is saved at its step's end; a second signal stops mid-step: no save
        started = self._start_step is not None and trainer.global_step > self._start_step
        if started and self._saved_step != trainer.global_step:
            self._save(trainer)

    @override
    def teardown(self, trainer, pl_module, stage):
        self._restore()


class SweepSignals:
    """The sweep's SIGINT/SIGTERM handling: forwarded to a running subprocess (started in its own session, so
    that a terminal's Ctrl-C reaches it only through here); ``Interrupted`` raised inside an in-process run that
    has not started training (training replaces this handler with its own, which saves a checkpoint first);
    between runs, the sweep stops before the next one."""

    def __init__(self):
        self.child: subprocess.Popen | None = None
        self.in_run = False
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        return False

    def _handle(self, signum, frame):
        self.signum = signum
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)
        elif self.in_run:
            raise Interrupted(signum)
