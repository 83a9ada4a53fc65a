"""Convergence with the adaptive rules' state in bfloat16 against float32 state: final losses over seeds.

    python benchmarks/state_dtype.py                          # both tasks, 2,000 steps, 5 seeds
    python benchmarks/state_dtype.py --steps 100 --seeds 1    # a smoke run

Tasks: R-AdaZO's Quadratic as ``experiments/radazo/base.yaml`` sets it (d = 10,000, x₀ from init_seed 0,
η = 1e-3, μ = 0.05, K = 10, sphere directions, forward differences, β = (0.9, 0.99)), with fewer steps; and
the digits MLP (``zolab.tasks.toy.DigitsMLP``, float32, 2,110 parameters, full batch of 256) with η = 1e-2,
μ = 1e-3, K = 4. Rules: R-AdaZO, ZO-AdaMM and ZO-AdaMU (its own directions, K = 1, central differences, T1 =
T/20 as ``experiments/ablations/adamu_base.yaml``; on the Quadratic η = 1e-4: at 1e-3 it diverged in every state, its
steps p·u/(√v + ζ) being of size ηp). State: float32,
bfloat16 with stochastic rounding, bfloat16 rounded to nearest. The seed is the optimizer's (directions and
rounding bits); the task's initial point is the same for every run. Prints, per task, rule and state, the final
loss (f at the last point) as the mean and [min, max] over the seeds, and the mean over float32 state's mean.
Loss only: no time is measured.
"""

from __future__ import annotations

import argparse
import statistics

import torch

import zolab
from zolab.tasks.synthetic import Quadratic
from zolab.tasks.toy import DigitsMLP

STATES = {"float32": {}, "bfloat16 stochastic": {"state_dtype": "bfloat16"},
          "bfloat16 nearest": {"state_dtype": "bfloat16", "state_rounding": "nearest"}}
RULES = {"R-AdaZO": zolab.RAdaZO, "ZO-AdaMM": zolab.ZOAdaMM, "ZO-AdaMU": zolab.ZOAdaMU}
TASKS = {  # name: (task factory, the rules' common arguments, a rule's own)
    "Quadratic d=10,000": (lambda: Quadratic(dim=10_000, init_seed=0),
                           dict(lr=1e-3, mu=0.05, num_queries=10, estimator="forward", directions="sphere",
                                betas=(0.9, 0.99)), {"ZO-AdaMU": dict(lr=1e-4)}),
    "digits MLP": (lambda: DigitsMLP(hidden=28, num_examples=256, dtype="float32"),
                   dict(lr=1e-2, mu=1e-3, num_queries=4), {}),
}


def run(task_name: str, rule: str, state: str, seed: int, steps: int) -> float:
    make_task, common, own = TASKS[task_name]
    task = make_task()
    kwargs = {**common, **own.get(rule, {}), **STATES[state], "seed": seed, "nonfinite": "skip"}
    if rule == "ZO-AdaMU":  # its own directions: K = 1, central; its annealing over the run
        kwargs = {k: v for k, v in kwargs.items() if k not in ("num_queries", "estimator", "directions", "betas")}
        kwargs.update(total_steps=steps, t1=max(1, steps // 20))
    opt = RULES[rule](list(task.named_parameters()), **kwargs)
    batched = task.batched_loss if getattr(task, "supports_batched", False) else None
    for _ in range(steps):
        opt.step(task.loss, batched=batched)
    with torch.no_grad():
        return float(task.loss())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=5, help="optimizer seeds 0 … n − 1")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.steps < 1 or args.seeds < 1:
        ap.error("--steps and --seeds must be >= 1")
    torch.set_num_threads(args.threads)
    results = {}
    print(f"{args.steps} steps, seeds 0-{args.seeds - 1}, torch {torch.__version__}; final loss: mean [min, max]\n")
    print("| task | rule | state | final loss | / float32 |")
    print("|---|---|---|---|---|")
    for task_name in TASKS:
        for rule in RULES:
            base = None
            for state in STATES:
                losses = [run(task_name, rule, state, seed, args.steps) for seed in range(args.seeds)]
                mean = statistics.fmean(losses)
                base = mean if base is None else base
                results[(task_name, rule, state)] = losses
                print(f"| {task_name} | {rule} | {state} | {mean:.4g} [{min(losses):.4g}, {max(losses):.4g}] | "
                      f"{mean / base:.3f} |", flush=True)
    return results


if __name__ == "__main__":
    main()
