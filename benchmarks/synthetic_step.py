"""R-AdaZO steps on the synthetic Quadratic: zolab against the pattern of the authors' public optimizer.

    python benchmarks/synthetic_step.py                    # d = 10,000, K = 10, 500 steps x 20 rounds

In one process, after a warm-up, ``--repeats`` rounds; each round times ``--steps`` steps of one, then of
the other (which goes first alternates). Each round's ratio compares the two under the same machine load;
the printed ratio is the median of the rounds' ratios (sub-millisecond steps on a shared machine drift by
tens of percent over a minute, which long blocks would turn into error):

- official pattern: per step and per query, a fresh Gaussian u normalised to the sphere, the closure at θ
  and at θ + μu (2K calls: the public code re-evaluates f(θ) for every query), ĝ = (1/K) Σ p_k u_k, then
  m, v (from the new m) and θ; written here, plain torch;
- zolab: ``RAdaZO([x], num_queries=K)`` stepped with the task's batched objective (all K + 1 points in one
  call), the default counter generator and the fused update.

Prints the median steps per second of each, the median and the range of the rounds' ratios (the issue's
target: zolab ≥ 1.8× the official pattern).
The two do not draw the same directions; the ratio is about cost, not trajectories.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import zolab
from zolab.tasks.synthetic import Quadratic


def official_steps(task: Quadratic, steps: int, k: int, lr: float, mu: float, betas=(0.9, 0.99), eps=1e-8):
    x = task.x
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    with torch.no_grad():
        for _ in range(steps):
            g = torch.zeros_like(x)
            for _ in range(k):
                u = torch.randn_like(x)
                u /= u.norm()
                f0 = task.loss()
                x.add_(u, alpha=mu)
                f1 = task.loss()
                x.sub_(u, alpha=mu)
                g.add_(u, alpha=float((f1 - f0) / mu))
            g /= k
            m.mul_(betas[0]).add_(g, alpha=1 - betas[0])
            v.mul_(betas[1]).addcmul_(m, m, value=1 - betas[1])
            x.sub_(lr * m / (v.sqrt() + eps))


def zolab_steps(task: Quadratic, opt, steps: int):
    for _ in range(steps):
        opt.step(task.loss, batched=task.batched_loss)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--mu", type=float, default=1e-3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    official_task, zolab_task = Quadratic(dim=args.dim, init_seed=0), Quadratic(dim=args.dim, init_seed=0)
    opt = zolab.RAdaZO([zolab_task.x], lr=args.lr, mu=args.mu, num_queries=args.k)
    official_steps(official_task, args.warmup, args.k, args.lr, args.mu)
    zolab_steps(zolab_task, opt, args.warmup)
    runs = {
        "official pattern": lambda: official_steps(official_task, args.steps, args.k, args.lr, args.mu),
        "zolab R-AdaZO": lambda: zolab_steps(zolab_task, opt, args.steps),
    }
    rates = {name: [] for name in runs}
    for i in range(args.repeats):
        for name in (list(runs) if i % 2 == 0 else list(runs)[::-1]):
            start = time.perf_counter()
            runs[name]()
            rates[name].append(args.steps / (time.perf_counter() - start))
    ratios = [z / o for z, o in zip(rates["zolab R-AdaZO"], rates["official pattern"])]
    print(f"Quadratic d={args.dim}, R-AdaZO K={args.k}, {args.repeats} rounds of {args.steps} steps each "
          f"(medians), {args.threads} threads, torch {torch.__version__}\n")
    print("| step | steps / s | vs official pattern (median of rounds) |")
    print("|---|---|---|")
    print(f"| official pattern | {statistics.median(rates['official pattern']):.0f} | 1.00x |")
    print(f"| zolab R-AdaZO | {statistics.median(rates['zolab R-AdaZO']):.0f} | {statistics.median(ratios):.2f}x |")
    print(f"\nrounds' ratios: min {min(ratios):.2f}x, max {max(ratios):.2f}x")
    print(f"final loss: official {official_task.loss().item():.4g}, zolab {zolab_task.loss().item():.4g}")


if __name__ == "__main__":
    main()
