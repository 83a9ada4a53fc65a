"""What running a rule through ``zolab fit`` costs next to a plain loop over the same optimizer, at one ZO step a batch.

    python benchmarks/lightning_overhead.py --repeats 5      # the acceptance run: Quadratic d = 40,000, K = 10
    python benchmarks/lightning_overhead.py --profile 40     # + where one fit's time goes (cProfile, top 40)
    python benchmarks/lightning_overhead.py --dim 100 --steps 60 --warmup 10 --repeats 1     # a smoke run

Run it on a quiet machine, nothing else running: the numbers are wall-clock. The default task, R-AdaZO on a
40,000-dimensional Quadratic with K = 10 on one torch thread, was chosen for a step of about a millisecond; the
``plain`` row prints what a step takes on the machine at hand (pick ``--dim`` for another step time).

In one process, alternating, ``--repeats`` times each:

- plain: ``opt = RAdaZO([x], ...)``, then ``opt.step(closure, batched=task.batched_loss)`` in a Python
  loop (the K + 1 points of a step in one call of the objective, as ZOModule does for such a task);
- zolab fit: the Trainer and ZOModule that ``zolab fit`` builds with its defaults
  (``zolab.lab.cli.cli_main(..., run=False)``: TensorBoard logging every 50 steps, the progress bar, the model
  summary, checkpointing), one ZO step a Lightning batch, then ``trainer.fit``: the acceptance row (<= 1.2x);
- zolab fit, logging every step (``--trainer.log_every_n_steps=1``): what writing ``train/*`` costs per step;
- a bare Lightning loop: a LightningModule with manual optimization whose step does nothing, without logger,
  progress bar, checkpoint or summary (``_Idle``), paired with a plain loop run just before it: Lightning's own
  cost a batch, and the least "time vs plain" that any fit through its loop can reach at this step;
- zolab fit, ``--steps-per-batch`` (50) ZO steps a Lightning batch (``--model.steps_per_batch``, for tasks
  whose batch carries nothing), logging every 50 ZO steps as the second row: Lightning's per-batch cost
  shared by 50 steps.

Steps per second are timed after ``--warmup`` steps (no setup, no first-step allocation; a callback that
reads the clock at the first timed batch and at the end of training is part of the fit rows' cost); the whole
``fit`` call, setup included, is printed too. Every path must end with bitwise equal parameters (checked).
Each ``fit`` run is paired with a plain loop run just before it, and its "time vs plain" is the median over
the repeats of those pairs' ratios (the machine's speed drifts over the minutes a benchmark takes), printed
with their range. ``--profile N`` then runs one more ``zolab fit`` (one step a batch) under cProfile and
prints the N functions with the largest cumulative share of that ``fit`` call, and the optimizer step's share
(a profile's shares, not its times, are what it tells: profiling slows small Python functions most).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import logging
import pstats
import statistics
import sys
import tempfile
import time

import lightning as L
import torch

import zolab
from zolab.lab.cli import cli_main
from zolab.tasks.synthetic import Quadratic

OPTIMIZER_STEP = ("optimizer.py", "wrapper")  # torch.optim's step wrapper: the plain loop's whole step


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


class _Idle(L.LightningModule):
    """Lightning's own floor: manual optimization whose step does nothing (an SGD step with lr 0 on one number)."""

    def __init__(self, steps: int):
        super().__init__()
        self.automatic_optimization = False
        self.steps, self.x = steps, torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        self.optimizers().step()

    def configure_optimizers(self):
        return torch.optim.SGD([self.x], lr=0.0)

    def train_dataloader(self):
        return range(self.steps)  # Python ints: nothing to collate or move

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch


def idle_lightning(args, root: str) -> float:
    """Seconds a batch of a bare Lightning loop (``_Idle``: no logger, progress bar, checkpoint or summary), timed
    as the fit rows are: what any fit through Lightning's loop adds to each step, whatever the module does."""
    clock = _Clock(args.warmup)
    trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, callbacks=[clock],
                        default_root_dir=root)
    trainer.fit(_Idle(args.steps))
    return (clock.stop - clock.start) / (args.steps - args.warmup)


def fit_cli(args, root: str, log_every: int, steps_per_batch: int = 1):
    """The CLI of ``zolab fit`` with its defaults (nothing run yet), the clock among its trainer's callbacks."""
    cli = cli_main([f"--model.steps_per_batch={steps_per_batch}",
        "--model.task=zolab.tasks.synthetic.Quadratic", f"--model.task.init_args.dim={args.dim}",
        "--model.optimizer=zolab.RAdaZO", f"--model.optimizer.init_args.lr={args.lr}",
        f"--model.optimizer.init_args.mu={args.mu}", f"--model.optimizer.init_args.num_queries={args.k}",
        "--data=zolab.tasks.synthetic.SyntheticDataModule", f"--trainer.max_steps={args.steps}",
        f"--trainer.log_every_n_steps={log_every}", f"--trainer.default_root_dir={root}", "--name=overhead",
    ], run=False)
    cli.trainer.callbacks.append(_Clock(args.warmup))
    return cli


def through_fit(args, root: str, log_every: int, steps_per_batch: int = 1) -> tuple[float, float, torch.Tensor]:
    cli = fit_cli(args, root, log_every, steps_per_batch)
    clock = cli.trainer.callbacks[-1]
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    total = time.perf_counter() - start
    return (args.steps - args.warmup) / (clock.stop - clock.start), total, cli.model.task.x.detach().clone()


def profile_fit(args, root: str, top: int) -> None:
    """One ``zolab fit`` at one step a batch under cProfile: the ``top`` largest cumulative shares of the fit call."""
    cli = fit_cli(args, root, 50)
    profiler = cProfile.Profile()
    with _quiet(args):
        profiler.runcall(cli.trainer.fit, cli.model, cli.datamodule)
    stats = pstats.Stats(profiler)
    whole, stats = stats.total_tt, stats.stats  # the profile holds the fit call alone
    step = sum(ct for (path, _, name), (_, _, _, ct, _) in stats.items()
               if path.endswith(OPTIMIZER_STEP[0]) and name == OPTIMIZER_STEP[1])
    print(f"\ncProfile of one zolab fit at one step a batch ({args.steps} steps): cumulative share of trainer.fit")
    print(f"the optimizer's step (torch.optim's wrapper, the plain loop's whole step): {100 * step / whole:.1f}%; "
          f"everything else: {100 * (whole - step) / whole:.1f}%")
    rows = sorted(((ct, nc, f"{path.split('site-packages/')[-1]}:{line}({name})")
                   for (path, line, name), (_, nc, _, ct, _) in stats.items()), reverse=True)
    print(f"{'cum %':>7}{'calls':>10}  function")
    for ct, calls, where in rows[:top]:
        print(f"{100 * ct / whole:>6.1f}%{calls:>10}  {where}")


def _quiet(args):
    """The progress bar and the model summary render as usual, into a buffer, so this output stays readable."""
    stack = contextlib.ExitStack()
    if not args.show_progress:
        sink = io.StringIO()
        stack.enter_context(contextlib.redirect_stdout(sink))
        stack.enter_context(contextlib.redirect_stderr(sink))
    return stack


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=40_000, help="the Quadratic's dimension (sets the step's cost)")
    parser.add_argument("--k", type=int, default=10, help="queries per step (K)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--mu", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps-per-batch", type=int, default=50, help="ZO steps a batch in the last row")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared machine)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="then profile one zolab fit and print its N largest cumulative shares (0: no)")
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
    one_step = "zolab fit, 1 step a batch"
    variants = {  # name -> (log_every in batches, steps a batch); every one logs every 50 ZO steps but the 2nd
        one_step: (50, 1),
        "zolab fit, log every step": (1, 1),
        f"zolab fit, {n} steps a batch": (max(1, 50 // n), n),
    }
    plain_rates, rates, ratios, totals = [], {v: [] for v in variants}, {v: [] for v in variants}, []
    idle, floors = [], []  # a bare Lightning loop's seconds a batch; (plain step + that) / plain step
    with tempfile.TemporaryDirectory() as root:
        for _ in range(args.repeats):
            rate_plain, _ = plain(args)
            with _quiet(args):
                idle.append(idle_lightning(args, root))
            floors.append(1 + idle[-1] * rate_plain)
            for name, (log_every, steps_per_batch) in variants.items():
                rate_plain, x_plain = plain(args)  # just before each fit: the pair sees the same machine load
                plain_rates.append(rate_plain)
                with _quiet(args):
                    rate, total, x_fit = through_fit(args, root, log_every, steps_per_batch)
                if not torch.equal(x_plain, x_fit):
                    raise AssertionError(f"{name} and the plain loop ended with different parameters")
                rates[name].append(rate)
                ratios[name].append(rate_plain / rate)
                if name == one_step:
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
                  f"{min(r):>9.3f}-{max(r):.3f}x")  # 3 decimals: a median at the range's end reads as one
        print(f"whole zolab fit call incl. setup: {statistics.median(totals):.2f} s for {args.steps} steps "
              f"(plain loop: {args.steps / base:.2f} s); same final parameters: yes")
        print(f"a bare Lightning loop (manual optimization, a step that does nothing; no logger, bar, checkpoint or "
              f"summary): {1e3 * statistics.median(idle):.3f} ms a batch, so any fit through Lightning's loop costs "
              f"at least {statistics.median(floors):.3f}x the plain loop at this step "
              f"(range {min(floors):.3f}-{max(floors):.3f}x)")
        ratio = statistics.median(ratios[one_step])
        print(f"zolab fit at one ZO step a batch ({1e3 / base:.3f} ms a plain step): {ratio:.3f}x the plain loop "
              f"(target <= 1.2: {'met' if ratio <= 1.2 else 'NOT met'})")
        if args.profile:
            profile_fit(args, root, args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
