"""What a ZO step costs next to its forward passes, on a randomly initialised language model.

    python benchmarks/step_cost.py --device cpu                      # SmolLM2-135M shape, fp32, 8 x 128
    python benchmarks/step_cost.py --device cuda --model opt-1.3b --dtype float16 --batch 16 --seq 256

Times, in one run: two forward passes alone; a MeZO-pattern step written here (re-seed, then
``torch.normal`` and an in-place add per tensor: +μz, −2μz, +μz, update; Malladi et al. 2023); and
zolab's steps (``perturb="module"``, the counter rng's fused kernels). Prints one table: median seconds
per step, the ratio to the two forwards, and the peak memory of a step against the peak of the forwards
(inference): ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the process's peak resident memory
(VmHWM, reset before each method through /proc/self/clear_refs after ``malloc_trim`` has returned the
freed heap to the system), so it includes the interpreter and libraries (~0.4 GB) and the ratio
understates the difference; the "extra MB" column gives it directly. Each method's optimizer is freed
before the next one runs. No weights are downloaded: models are built from configs.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import time
from pathlib import Path

import torch

import zolab

MODELS = {
    "smollm2-135m": dict(
        kind="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, tie_word_embeddings=True,
    ),
    "opt-125m": dict(kind="opt", vocab_size=50272, hidden_size=768, ffn_dim=3072, num_hidden_layers=12,
                     num_attention_heads=12, max_position_embeddings=2048, word_embed_proj_dim=768),
    "opt-1.3b": dict(kind="opt", vocab_size=50272, hidden_size=2048, ffn_dim=8192, num_hidden_layers=24,
                     num_attention_heads=32, max_position_embeddings=2048, word_embed_proj_dim=2048),
}


def build_model(name: str, dtype: torch.dtype, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    spec = dict(MODELS[name])
    kind = spec.pop("kind")
    config = LlamaConfig(**spec) if kind == "llama" else OPTConfig(**spec)
    cls = LlamaForCausalLM if kind == "llama" else OPTForCausalLM
    torch.manual_seed(0)
    model = cls(config).to(device=device, dtype=dtype).eval()
    model.requires_grad_(True)
    return model


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def mezo_step(params, closure, lr=1e-6, eps=1e-3, seed=0):
    """The MeZO reference pattern (Malladi et al. 2023, Algorithm 1), as its public trainer does it."""

    def perturb(scale):
        torch.manual_seed(seed)
        for p in params:
            z = torch.normal(0, 1, size=p.shape, device=p.device, dtype=p.dtype)
            p.data.add_(z, alpha=scale * eps)

    perturb(1)
    l1 = closure()
    perturb(-2)
    l2 = closure()
    perturb(1)
    g = float((l1 - l2) / (2 * eps))
    torch.manual_seed(seed)
    for p in params:
        z = torch.normal(0, 1, size=p.shape, device=p.device, dtype=p.dtype)
        p.data.add_(z, alpha=-lr * g)
    return (l1 + l2) / 2


MODULE = dict(perturb="module")  # each perturbed tensor built only while its module runs
ZOLAB_RULES = {
    "zolab ZO-SGD": lambda named: zolab.ZOSGD(named, lr=1e-6, mu=1e-3, **MODULE),
    "zolab ZO-SGD (copy)": lambda named: zolab.ZOSGD(named, lr=1e-6, mu=1e-3),
    "zolab R-AdaZO": lambda named: zolab.RAdaZO(named, lr=1e-6, mu=1e-3, **MODULE),
    "zolab ZO-AdaMU": lambda named: zolab.ZOAdaMU(named, lr=1e-6, mu=1e-3, total_steps=100, t1=1, **MODULE),
    "zolab MEAZO": lambda named: zolab.MEAZO(named, lr=1e-6, mu=1e-3, **MODULE),
    "zolab MeZO-BCD": lambda named: zolab.MeZOBCD(named, lr=1e-6, mu=1e-3, **MODULE),
}


def reset_peak(cuda: bool) -> None:
    gc.collect()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap back to the system: RSS = live memory
        except OSError:
            pass
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current resident size


def peak_bytes(cuda: bool) -> float:
    if cuda:
        return float(torch.cuda.max_memory_allocated())
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) * 1024
    return float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--model", default="smollm2-135m", choices=sorted(MODELS))
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per method (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rules", default=",".join(ZOLAB_RULES),
                    help=f"comma-separated, from: {', '.join(ZOLAB_RULES)}")
    args = ap.parse_args(argv)
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    unknown = [r for r in rules if r not in ZOLAB_RULES]
    if unknown:
        ap.error(f"unknown rules {unknown}; allowed: {list(ZOLAB_RULES)}")
    torch.set_num_threads(args.threads)
    dtype, device = getattr(torch, args.dtype), args.device
    model = build_model(args.model, dtype, device)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), generator=gen).to(device)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]

    @torch.no_grad()
    def closure():
        return model(input_ids=ids, labels=ids).loss

    def two_forwards():
        closure()
        return closure()

    # each method is built, timed and freed in turn, so one's state never counts in another's memory
    methods = {"two forwards": lambda: two_forwards, "MeZO pattern": lambda: lambda: mezo_step(params, closure)}

    def rule_step(rule):
        opt = ZOLAB_RULES[rule](named).bind(model)
        return lambda: opt.step(closure)

    for rule in rules:
        methods[rule] = lambda rule=rule: rule_step(rule)

    cuda = device.startswith("cuda")
    results = {}
    for name, make in methods.items():
        fn = make()
        fn()  # warm-up (allocates moments and scratch, caches kernels)
        times = []
        reset_peak(cuda)
        for _ in range(args.steps):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - start)
        results[name] = (statistics.median(times), peak_bytes(cuda))
        print(f"  {name}: {results[name][0]:.3f} s, peak {results[name][1] / 2**20:.0f} MB", flush=True)
        del fn
        gc.collect()

    base, base_peak = results["two forwards"]
    where = torch.cuda.get_device_name() if cuda else f"CPU, {args.threads} threads"
    n_params = sum(p.numel() for p in params) / 1e6
    mem_kind = "max_memory_allocated" if cuda else "process peak RSS (VmHWM)"
    print(f"\n{args.model} ({n_params:.1f}M params), {args.dtype}, batch {args.batch} x {args.seq}, {where}")
    print(f"median of {args.steps} steps; memory: {mem_kind}\n")
    print("| step | seconds | / two forwards | peak memory / inference | extra MB |")
    print("|---|---|---|---|---|")
    for name, (sec, peak) in results.items():
        extra = (peak - base_peak) / 2**20
        print(f"| {name} | {sec:.3f} | {sec / base:.2f}x | {peak / base_peak:.2f} | {extra:+.0f} |")


if __name__ == "__main__":
    main()
