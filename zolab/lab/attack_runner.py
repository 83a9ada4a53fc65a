"""Iterations to success of the black-box MNIST attack, per rule, over victims × seeds (R-AdaZO Table 1).

Every rule gets the same estimator and hyper-parameters (App. B.2: "the same hyperparameters for all
methods"): sphere directions, the forward estimator with K queries, μ, η, β = (0.9, 0.99). A run stops
at success (target class is the arg-max) or after ``max_iters`` iterations (a failure, counted apart;
the mean ± std is over successes). Plain PyTorch loop, no Lightning: the same ``MNISTAttack`` task and
rules that ``zolab fit --config experiments/attack/*.yaml`` runs one victim at a time.

    python -m zolab.lab.attack_runner --victims 10 --seeds 3 --max-iters 3000 --out runs/attack/table1.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

import zolab
from zolab.tasks.attack import MNISTAttack, victims
from zolab.tasks.mnist import load_cnn, load_mnist

RULES = {
    "ZO-SGD": (zolab.ZOSGD, {}),
    "ZO-signSGD": (zolab.ZOSignSGD, {}),
    "ZO-AdaMM": (zolab.ZOAdaMM, {"betas": (0.9, 0.99)}),
    "ZO-RMSProp": (zolab.ZORMSProp, {"beta": 0.99}),
    "R-AdaZO": (zolab.RAdaZO, {"betas": (0.9, 0.99)}),
}


def rule_factory(name: str, lr: float, mu: float, num_queries: int, seed: int, lrs: dict | None = None):
    """A callable params -> optimizer for rule ``name`` with the shared settings (``lrs`` overrides η)."""
    if name not in RULES:
        raise ValueError(f"unknown rule {name!r}; allowed: {list(RULES)}")
    cls, extra = RULES[name]
    lr = (lrs or {}).get(name, lr)
    return lambda params: cls(params, lr=lr, mu=mu, num_queries=num_queries, estimator="forward",
                              directions="sphere", seed=seed, **extra)


def attack_once(task: MNISTAttack, make_optimizer, max_iters: int, batched: bool = True) -> int | None:
    """Iterations until the target is the arg-max (None: not within ``max_iters``). ``batched``: the step's
    K (+1) queries go through the network as one batch (same losses as one by one, fewer calls)."""
    opt = make_optimizer(task.zo_named_parameters())
    with torch.no_grad():
        for t in range(1, max_iters + 1):
            opt.step(task.loss, batched=task.batched_loss if batched else None)
            if task.success():
                return t
    return None


def summarize(iterations: list[int | None]) -> dict:
    """Mean ± std (population, ddof 0) of the successful runs' iterations; failures counted apart."""
    ok = [i for i in iterations if i is not None]
    mean = sum(ok) / len(ok) if ok else math.nan
    std = math.sqrt(sum((i - mean) ** 2 for i in ok) / len(ok)) if ok else math.nan
    failures = len(iterations) - len(ok)
    return {"mean": mean, "std": std, "successes": len(ok), "failures": failures, "runs": iterations}


def run(checkpoint: str, data_dir: str, n_victims: int, seeds: int, rules: list[str], max_iters: int,
        lr: float, mu: float, num_queries: int, eps: float = 0.2, lrs: dict | None = None, log=print) -> dict:
    net = load_cnn(checkpoint)
    images, labels = load_mnist(data_dir, "test")
    chosen = victims(net, images, labels, n_victims)
    out = {"settings": {"checkpoint": checkpoint, "victims": chosen, "seeds": seeds, "max_iters": max_iters,
                        "lr": lr, "lrs": lrs or {}, "mu": mu, "num_queries": num_queries, "eps": eps,
                        "estimator": "forward", "directions": "sphere", "betas": [0.9, 0.99]}, "rules": {}}
    for name in rules:
        start, iters = time.perf_counter(), []
        for index in chosen:
            for seed in range(seeds):
                task = MNISTAttack(network=net, image=images[index], label=int(labels[index]), eps=eps)
                iters.append(attack_once(task, rule_factory(name, lr, mu, num_queries, seed, lrs), max_iters))
        out["rules"][name] = {**summarize(iters), "seconds": time.perf_counter() - start}
        r = out["rules"][name]
        log(f"{name:11s} {r['mean']:8.1f} ± {r['std']:7.1f}  failures {r['failures']}/{len(iters)}  "
            f"{r['seconds']:.0f} s")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/mnist/cnn.pt")
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--victims", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rules", nargs="+", default=list(RULES))
    p.add_argument("--max-iters", type=int, default=3000)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--mu", type=float, default=0.005)
    p.add_argument("--num-queries", type=int, default=10)
    p.add_argument("--eps", type=float, default=0.2)
    p.add_argument("--out", default="runs/attack/table1.json")
    a = p.parse_args(argv)
    torch.set_num_threads(1)  # one image per forward: threads only add overhead
    out = run(a.checkpoint, a.data_dir, a.victims, a.seeds, a.rules, a.max_iters, a.lr, a.mu, a.num_queries,
              a.eps)
    out["command"] = "python -m zolab.lab.attack_runner " + " ".join(sys.argv[1:] if argv is None else argv)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
