"""``python -m zolab.lab.demo`` (``make demo``): R-AdaZO's Figure 1, reduced to run in a few minutes on 2 cores.

The same 20 runs as ``zolab sweep experiments/radazo/fig1.yaml`` (4 functions × ZO-SGD, ZO-signSGD,
ZO-AdaMM, ZO-RMSProp, R-AdaZO; one initial point, one estimator, shared hyper-parameters; docs/algorithms.md
§5 R1/R4, §6), made smaller: d = 1,000 with K = 1 query per step keeps d/K = 1,000 (Figure 1: d = 10,000,
K = 10), and η, μ, β, x0 stay as they are, so each curve follows its full-size counterpart (loss relative
to the start) over the first ``--steps`` iterations (default 4,000 of 20,000): measured against the
full-size sweep, every curve that does not diverge was within 8% of its counterpart at iteration 2,000 and
within 12% at 4,000, with the same ranking (README, lab section). Writes
``runs/demo/radazo_fig1.png`` and prints the rules ranked by final loss per function. The runs are
ordinary TensorBoard runs: ``tensorboard --logdir runs/demo``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

from zolab.lab import sweep

REPO = Path(__file__).resolve().parents[2]
FIG1 = REPO / "experiments" / "radazo" / "fig1.yaml"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zolab.lab.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=1000, help="d (Figure 1 at the proxy settings: 10,000)")
    parser.add_argument("--steps", type=int, default=4000, help="iterations (proxy settings: 20,000)")
    parser.add_argument("--num-queries", type=int, default=None, help="K (default: d/1,000, at least 1)")
    parser.add_argument("--root", default="runs", help="runs go to ROOT/demo/")
    parser.add_argument("--out", default=None, help="PNG (default ROOT/demo/radazo_fig1.png)")
    args = parser.parse_args(argv)
    if args.dim < 2 or args.steps < 1 or (args.num_queries is not None and args.num_queries < 1):
        parser.error(f"need --dim >= 2 (Rosenbrock), --steps >= 1, --num-queries >= 1; got {args.dim}, "
                     f"{args.steps}, {args.num_queries}")
    torch.set_num_threads(1)  # d = 1,000: threads cost more than they bring
    warnings.filterwarnings("ignore", module="lightning")  # per-run hints (few dataloader workers, ...)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from paper_figures import radazo_fig1

    k = args.num_queries or max(1, round(args.dim / 1000))
    overrides = [
        f"--model.task.init_args.dim={args.dim}",
        f"--model.optimizer.init_args.num_queries={k}",
        f"--trainer.max_steps={args.steps}",
        f"--trainer.log_every_n_steps={max(1, args.steps // 200)}",
    ]
    name, runs = sweep.load(FIG1, root=args.root, extra_args=overrides, name="demo")
    print(f"R-AdaZO Figure 1, reduced: d={args.dim}, K={k}, {args.steps} iterations, {len(runs)} runs "
          f"-> {Path(args.root) / name}", flush=True)
    start = time.perf_counter()
    sweep.run_sweep(runs, overwrite=True, log=lambda line: print(line, flush=True),
                    progress=sweep.SweepProgress(name))  # one display for the 20 runs, not a bar per run
    print(sweep.SweepProgress.summary(runs))
    failed = [r for r in runs if r.status != "done"]
    for r in failed:
        print(f"run {r.run_id}: {r.status} {r.error}", file=sys.stderr)
    stopped = [r.signum for r in runs if r.signum]
    if stopped:
        return 128 + stopped[0]
    curves = radazo_fig1.collect(Path(args.root) / name)
    out = radazo_fig1.plot(curves, args.out or Path(args.root) / name / "radazo_fig1.png")
    print(f"\n{len(runs) - len(failed)}/{len(runs)} runs in {time.perf_counter() - start:.0f} s; figure: {out}")
    print(radazo_fig1.report(curves))
    print(f"TensorBoard: tensorboard --logdir {Path(args.root) / name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
