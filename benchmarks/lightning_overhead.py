"""What running a rule through ``zolab fit`` costs next to a plain loop over the same optimizer.

    python benchmarks/lightning_overhead.py                  # Quadratic d = 10,000, K = 10, R-AdaZO
    python benchmarks/lightning_overhead.py --steps 4000 --repeats 5

In one process, alternating, ``--repeats`` times each:

- plain: ``opt = RAdaZO([x], ...)``, then ``opt.step(closure, batched=task.batched_loss)`` in a Python
  loop (the K + 1 points of a step in one call of the objective, as ZOModule does for such a task);
- zolab fit: the Trainer and ZOModule that ``zolab fit`` builds (``zolab.lab.cli.cli_main(..., run=False)``:
  TensorBoard logging every 50 steps, the TQDM progress bar, checkpointing), then ``trainer.fit``;
- zolab fit, logging every step (``--trainer.log_every_n_steps=1``): what ``self.log`` costs per step;
- zolab fit, ``--steps-per-batch`` (50) ZO steps a Lightning batch (``--model.steps_per_batch``, for tasks
  whose batch carries nothing), logging every 50 ZO steps as in the second row: Lightning's per-batch
  cost (the first row's extra ~0.4 ms a step) shared by 50 steps.

Steps per second are timed after ``--warmup`` steps (no setup, no first-step allocation); the whole ``fit``
call, setup included, is printed too. Every path must end with bitwise equal parameters (checked). Each
``fit`` run is paired with a plain loop run just before it, and its "time vs plain" is the median over the
repeats of those pairs' ratios (the machine's speed drifts over the minutes a benchmark takes), printed with
their range; the target is <= 1.2.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import sys
import tempfile
import time

import lightning as L
import torch

import zolab
from zolab.lab.cli import cli_main
from zolab.tasks.synthetic import Quadratic


class _Clock(L.Callback):
    """Wall time from the start of step ``warmup + 1`` to the end of training."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.stop = warmup, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.stop = time.perf_counter()


def plain(args) -> tuple[float, torch.Tensor]:
    task = Quadratic(dim=args.dim, init_seed=0)
    opt = zolab.RAdaZO([task.x], lr=args.lr, mu=args.mu, num_queries=args.k)
    closure, batched = task.loss, task.batched_loss  # as ZOModule steps a task with a batched objective
    for _ in range(args.warmup):
        opt.step(closure, batched=batched)
    start = time.perf_counter()
    for _ in range(args.steps - args.warmup):
        opt.step(closure, batched=batched)
    return (args.steps - args.warmup) / (time.perf_counter() - start), task.x.detach().clone()


def through_fit(args, root: str, log_every: int, steps_per_batch: int = 1) -> tuple[float, float, torch.Tensor]:
    cli = cli_main([f"--model.steps_per_batch={steps_per_batch}",
        "--model.task=zolab.tasks.synthetic.Quadratic", f"--model.task.init_args.dim={args.dim}",
        "--model.optimizer=zolab.RAdaZO", f"--model.optimizer.init_args.lr={args.lr}",
        f"--model.optimizer.init_args.mu={args.mu}", f"--model.optimizer.init_args.num_queries={args.k}",
        "--data=zolab.tasks.synthetic.SyntheticDataModule", f"--trainer.max_steps={args.steps}",
        f"--trainer.log_every_n_steps={log_every}", f"--trainer.default_root_dir={root}",
        "--trainer.enable_model_summary=false", "--name=overhead",
    ], run=False)
    clock = _Clock(args.warmup)
    cli.trainer.callbacks.append(clock)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    total = time.perf_counter() - start
    return (args.steps - args.warmup) / (clock.stop - clock.start), total, cli.model.task.x.detach().clone()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=10, help="queries per step (K)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--mu", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps-per-batch", type=int, default=50, help="ZO steps a batch in the last row")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared machine)")
    parser.add_argument("--show-progress", action="store_true", help="let the progress bar print (default: "
                        "it runs and renders, into a buffer, so this output stays readable)")
    args = parser.parse_args(argv)
    if not 0 <= args.warmup < args.steps:
        parser.error(f"need 0 <= --warmup < --steps, got {args.warmup}, {args.steps}")
    if args.steps_per_batch < 1 or args.warmup % args.steps_per_batch:
        parser.error(f"--steps-per-batch must be >= 1 and divide --warmup, got {args.steps_per_batch}")
    torch.set_num_threads(args.threads)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    n = args.steps_per_batch
    variants = {  # name -> (log_every in batches, steps a batch); every one logs every 50 ZO steps but the 2nd
        "zolab fit": (50, 1),
        "zolab fit, log every step": (1, 1),
        f"zolab fit, {n} steps a batch": (max(1, 50 // n), n),
    }
    plain_rates, rates, ratios, totals = [], {v: [] for v in variants}, {v: [] for v in variants}, []
    with tempfile.TemporaryDirectory() as root:
        for _ in range(args.repeats):
            for name, (log_every, steps_per_batch) in variants.items():
                rate_plain, x_plain = plain(args)  # just before each fit: the pair sees the same machine load
                plain_rates.append(rate_plain)
                with contextlib.ExitStack() as quiet:
                    if not args.show_progress:  # the bar renders as usual; its text goes to a buffer
                        sink = io.StringIO()
                        quiet.enter_context(contextlib.redirect_stdout(sink))
                        quiet.enter_context(contextlib.redirect_stderr(sink))
                    rate, total, x_fit = through_fit(args, root, log_every, steps_per_batch)
                if not torch.equal(x_plain, x_fit):
                    raise AssertionError(f"{name} and the plain loop ended with different parameters")
                rates[name].append(rate)
                ratios[name].append(rate_plain / rate)
                if name == "zolab fit":
                    totals.append(total)
    base = statistics.median(plain_rates)
    print(f"Quadratic d={args.dim}, R-AdaZO K={args.k}, {args.steps} steps ({args.warmup} warm-up), "
          f"{args.repeats} repeats, torch threads={args.threads}, torch {torch.__version__}, "
          f"lightning {L.__version__}")
    print("time vs plain: median over repeats of (plain loop run just before) / (this run), with its range")
    print(f"{'path':<34}{'steps/s (median)':>18}{'ms/step':>10}{'time vs plain':>15}{'range':>16}")
    print(f"{'plain':<34}{base:>18.1f}{1e3 / base:>10.3f}{1.0:>14.3f}x")
    for name, values in rates.items():
        rate, r = statistics.median(values), ratios[name]
        print(f"{name:<34}{rate:>18.1f}{1e3 / rate:>10.3f}{statistics.median(r):>14.3f}x"
              f"{min(r):>8.2f}-{max(r):.2f}x")
    print(f"whole zolab fit call incl. setup: {statistics.median(totals):.2f} s for {args.steps} steps "
          f"(plain loop: {args.steps / base:.2f} s); same final parameters: yes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
