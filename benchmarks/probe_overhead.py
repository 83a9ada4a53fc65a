"""Probe overhead (issue 5, acceptance 4): training time with the probes every 100 steps ÷ time without.

    python benchmarks/probe_overhead.py [--steps 2000] [--repeats 3] [--tasks quadratic,mlp]

Two tasks: the lab's Quadratic at the proxy dimension (d = 10,000, R-AdaZO, K = 10, ``zolab fit``'s
logging every 50 steps to TensorBoard) and a small model (the 2,110-parameter digits MLP of
``diagnostics.toy``, ZO-SGD, K = 1). Three arms, run interleaved ``--repeats`` times, median wall-clock of
``trainer.fit``:

- ``none``: no probe;
- ``periodic``: GradientAlignment, EstimatorVariance (4 samples), HessianSpectrum (stochastic, 20
  Hutchinson vectors), BlockOverlap (Hutchinson diagonal, 20 vectors) and StepCost, all every 100 steps;
- ``all``: the five plus SecondMomentError, which tracks v* at **every** step (one backward and one ĝ
  regeneration a step; ``every_n_steps`` = 100 only thins its logging).

Besides the ratio of medians (noisy on a shared machine) it prints the diagnostics' own time (the seconds
spent inside probe hooks, ``diagnostics.probe.context(module).probe_seconds``) as a share of the probe-free
time of the same run, which machine load hardly moves.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402

import diagnostics as D  # noqa: E402
from diagnostics.probe import context  # noqa: E402
from diagnostics.toy import DigitsMLP  # noqa: E402
from zolab import ZOSGD, RAdaZO  # noqa: E402
from zolab.module import ZOModule  # noqa: E402
from zolab.tasks.synthetic import Quadratic, SyntheticDataModule  # noqa: E402

TASKS = {
    "quadratic": ("Quadratic d=10,000, R-AdaZO K=10", lambda: Quadratic(dim=10_000),
                  functools.partial(RAdaZO, lr=1e-3, mu=0.05, num_queries=10)),
    "mlp": ("digits MLP d=2,110, ZO-SGD K=1", lambda: DigitsMLP(dtype="float32"),
            functools.partial(ZOSGD, lr=1e-3, mu=1e-3)),
}


def probes(arm: str, every: int = 100) -> list:
    if arm == "none":
        return []
    out = [
        D.GradientAlignment(every),
        D.EstimatorVariance(every, num_samples=4),
        D.HessianSpectrum(every, method="stochastic", num_samples=20),
        D.BlockOverlap(every, exact_max_dim=1, num_samples=20),
        D.StepCost(every),
    ]
    return out + [D.SecondMomentError(every, beta2=0.99)] if arm == "all" else out


def run(task_name: str, arm: str, steps: int, root: str) -> tuple[float, float]:
    """(seconds of trainer.fit, seconds spent inside probe hooks)."""
    _, make_task, rule = TASKS[task_name]
    module = ZOModule(make_task(), optimizer=rule)
    trainer = L.Trainer(max_steps=steps, callbacks=probes(arm), logger=TensorBoardLogger(root, name=arm),
                        log_every_n_steps=50, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        trainer.fit(module, SyntheticDataModule(steps_per_epoch=steps))
        seconds = time.perf_counter() - start
    return seconds, context(module).probe_seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", default="quadratic,mlp")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one core each, steadier on a shared 2-core machine
    print(f"torch {torch.__version__}, {args.steps} steps, {args.repeats} repeats, probes every 100 steps")
    print(f"{'task':34s} {'arm':9s} {'median s':>9s} {'ratio':>6s} {'probe time / probe-free time':>29s}")
    with tempfile.TemporaryDirectory() as root:
        for task_name in args.tasks.split(","):
            if task_name not in TASKS:
                parser.error(f"unknown task {task_name!r}; allowed: {sorted(TASKS)}")
            times: dict[str, list] = {"none": [], "periodic": [], "all": []}
            for _ in range(args.repeats):
                for arm in times:
                    times[arm].append(run(task_name, arm, args.steps, root))
            base = statistics.median(s for s, _ in times["none"])
            for arm, rows in times.items():
                median = statistics.median(s for s, _ in rows)
                share = statistics.median(p / (s - p) for s, p in rows)
                print(f"{TASKS[task_name][0]:34s} {arm:9s} {median:9.2f} {median / base:6.3f} {1 + share:29.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
