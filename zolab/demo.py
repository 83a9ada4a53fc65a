"""``python -m zolab.demo`` (``make demo``): R-AdaZO's Figure 1, reduced to run in a few minutes on 2 cores.

The same 20 runs as ``zolab sweep experiments/radazo/fig1.yaml`` (4 functions × ZO-SGD, ZO-signSGD,
ZO-AdaMM, ZO-RMSProp, R-AdaZO; one initial point, one estimator, shared hyper-parameters; ALGORITHMS.md
§5 R1/R4, §6), with a smaller d and fewer iterations (default d = 1,000, 2,000 iterations instead of
10,000 and 20,000). Writes ``runs/demo/radazo_fig1.png`` and prints the rules ranked by final loss per
function. The runs are ordinary TensorBoard runs: ``tensorboard --logdir runs/demo``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

import torch

from zolab import sweep

REPO = Path(__file__).resolve().parents[1]
FIG1 = REPO / "experiments" / "radazo" / "fig1.yaml"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zolab.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=1000, help="d (Figure 1 at the proxy settings: 10,000)")
    parser.add_argument("--steps", type=int, default=2000, help="iterations (proxy settings: 20,000)")
    parser.add_argument("--root", default="runs", help="runs go to ROOT/demo/")
    parser.add_argument("--out", default=None, help="PNG (default ROOT/demo/radazo_fig1.png)")
    args = parser.parse_args(argv)
    if args.dim < 2 or args.steps < 1:
        parser.error(f"--dim must be >= 2 (Rosenbrock) and --steps >= 1, got {args.dim}, {args.steps}")
    torch.set_num_threads(1)  # d = 1,000: threads cost more than they bring
    import lightning.pytorch  # noqa: F401  (it sets its logger's level on import: import first, then quiet it)

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-run banners
    warnings.filterwarnings("ignore", module="lightning")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from paper_figures import radazo_fig1

    overrides = [
        f"--model.task.init_args.dim={args.dim}",
        f"--trainer.max_steps={args.steps}",
        f"--trainer.log_every_n_steps={max(1, args.steps // 200)}",
    ]
    name, runs = sweep.load(FIG1, root=args.root, extra_args=overrides, name="demo")
    print(f"R-AdaZO Figure 1, reduced: d={args.dim}, {args.steps} iterations, {len(runs)} runs "
          f"-> {Path(args.root) / name}", flush=True)
    start = time.perf_counter()
    sweep.run_sweep(runs, overwrite=True, log=lambda line: print(line, flush=True))
    failed = [r for r in runs if r.status != "done"]
    for r in failed:
        print(f"run {r.run_id}: {r.status} {r.error}", file=sys.stderr)
    if any(r.status == "interrupted" for r in runs):
        return 130
    curves = radazo_fig1.collect(Path(args.root) / name)
    out = radazo_fig1.plot(curves, args.out or Path(args.root) / name / "radazo_fig1.png")
    print(f"\n{len(runs) - len(failed)}/{len(runs)} runs in {time.perf_counter() - start:.0f} s; figure: {out}")
    print(radazo_fig1.report(curves))
    print(f"TensorBoard: tensorboard --logdir {Path(args.root) / name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
