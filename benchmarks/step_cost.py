"""What a ZO step costs next to its forward passes, on a randomly initialised language model.

    python benchmarks/step_cost.py --device cpu                      # SmolLM2-135M shape, fp32, 8 x 128
    python benchmarks/step_cost.py --device cuda --model opt-1.3b --dtype float16 --batch 16 --seq 256
    python benchmarks/step_cost.py --device cpu --model minilm --batch 16 --seq 32 --threads 1 --steps 10
                                    # MiniLM-L6 + head, full fine-tuning of SST-2 batches (issue 16)

Times, in one run: two forward passes alone; a MeZO-pattern step written here (re-seed, then
``torch.normal`` and an in-place add per tensor: +μz, −2μz, +μz, update; Malladi et al. 2023); and
zolab's steps (``perturb="module"``, the counter rng's fused kernels). Every method is warmed up once,
then the methods take turns, one step each, ``--steps`` rounds, so that drift of the machine falls on all
of them alike; the table gives the median. Memory: each method runs in fresh processes of its own
(``--memory-of``, ``--memory-repeats`` of them, median), two steps each, and reports its peak against the
same for the two forwards (inference):
``torch.cuda.max_memory_allocated`` on CUDA; on CPU the process's peak resident memory (VmHWM), which
includes the interpreter and libraries, so the ratio understates the difference; the "extra MB"
column gives it directly. No weights are downloaded: models are built from configs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
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
    # all-MiniLM-L6-v2's shape + a 2-class head on the mean-pooled states (zolab.tasks.encoder, mode full;
    # eager attention as there), no pooler: 22.6M numbers
    "minilm": dict(kind="bert", vocab_size=30522, hidden_size=384, intermediate_size=1536, num_hidden_layers=6,
                   num_attention_heads=12, max_position_embeddings=512, attn_implementation="eager"),
}


class EncoderHead(torch.nn.Module):
    """A BERT encoder + a linear head on its mean-pooled last states (EncoderClassifier's model)."""

    def __init__(self, encoder, classes: int = 2):
        super().__init__()
        self.encoder, self.head = encoder, torch.nn.Linear(encoder.config.hidden_size, classes)

    def forward(self, input_ids, labels):
        logits = self.head(self.encoder(input_ids=input_ids).last_hidden_state.mean(1))
        return torch.nn.functional.cross_entropy(logits, labels)


def build_model(name: str, dtype: torch.dtype, device: str):
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    spec = dict(MODELS[name])
    kind = spec.pop("kind")
    torch.manual_seed(0)
    if kind == "bert":
        model = EncoderHead(BertModel(BertConfig(**spec), add_pooling_layer=False))
    else:
        config = LlamaConfig(**spec) if kind == "llama" else OPTConfig(**spec)
        model = (LlamaForCausalLM if kind == "llama" else OPTForCausalLM)(config)
    model = model.to(device=device, dtype=dtype).eval()
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


def peak_bytes(cuda: bool) -> float:
    if cuda:
        return float(torch.cuda.max_memory_allocated())
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) * 1024
    return float("nan")


def build_methods(args, rules):
    """name -> a function that builds the method (its optimizer) and returns its one-step function."""
    torch.set_num_threads(args.threads)
    model = build_model(args.model, getattr(torch, args.dtype), args.device)
    gen = torch.Generator().manual_seed(0)
    vocab = (model.encoder if isinstance(model, EncoderHead) else model).config.vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.seq), generator=gen).to(args.device)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]

    labels = torch.randint(0, 2, (args.batch,), generator=gen).to(args.device)

    @torch.no_grad()
    def closure():
        if isinstance(model, EncoderHead):
            return model(ids, labels)
        return model(input_ids=ids, labels=ids).loss

    def two_forwards():
        closure()
        return closure()

    def rule_step(rule):
        opt = ZOLAB_RULES[rule](named).bind(model)
        return lambda: opt.step(closure)

    methods = {"two forwards": lambda: two_forwards, "MeZO pattern": lambda: lambda: mezo_step(params, closure)}
    for rule in rules:
        methods[rule] = lambda rule=rule: rule_step(rule)
    return methods, sum(p.numel() for p in params)


def memory_of(args, name: str) -> None:
    """In a fresh process: build one method, run it twice, print its peak memory (JSON)."""
    methods, _ = build_methods(args, [name] if name in ZOLAB_RULES else [])
    fn = methods[name]()
    for _ in range(2):
        fn()
    sync(args.device)
    print(json.dumps({"peak": peak_bytes(args.device.startswith("cuda"))}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--model", default="smollm2-135m", choices=sorted(MODELS))
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="timed rounds (one step per method each)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rules", default=",".join(ZOLAB_RULES),
                    help=f"comma-separated, from: {', '.join(ZOLAB_RULES)}")
    ap.add_argument("--memory-repeats", type=int, default=3, help="fresh processes per method's memory (median)")
    ap.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)  # internal: one method's memory
    args = ap.parse_args(argv)
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    unknown = [r for r in rules if r not in ZOLAB_RULES]
    if unknown:
        ap.error(f"unknown rules {unknown}; allowed: {list(ZOLAB_RULES)}")
    if args.memory_of is not None:
        return memory_of(args, args.memory_of)

    methods, n_params = build_methods(args, rules)
    steps = {}
    for name, make in methods.items():
        steps[name] = make()
        steps[name]()  # warm-up: allocates moments and scratch, caches kernels
    times = {name: [] for name in steps}
    for r in range(args.steps):
        for name, fn in steps.items():
            sync(args.device)
            start = time.perf_counter()
            fn()
            sync(args.device)
            times[name].append(time.perf_counter() - start)
        print(f"  round {r + 1}/{args.steps}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()),
              flush=True)
    del steps

    cuda = args.device.startswith("cuda")
    peaks = {}
    base_cmd = [sys.executable, __file__, "--device", args.device, "--model", args.model, "--dtype", args.dtype,
                "--batch", str(args.batch), "--seq", str(args.seq), "--threads", str(args.threads)]
    for name in times:  # the median of a few fresh processes: one process's peak RSS moves by tens of MB
        runs = []
        for _ in range(args.memory_repeats):
            out = subprocess.run([*base_cmd, "--memory-of", name], capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1])["peak"])
        peaks[name] = statistics.median(runs)
        each = " ".join(f"{r / 2**20:.0f}" for r in runs)
        print(f"  memory {name}: {peaks[name] / 2**20:.0f} MB (median of {each})", flush=True)

    base = statistics.median(times["two forwards"])
    base_peak = peaks["two forwards"]
    where = torch.cuda.get_device_name() if cuda else f"CPU, {args.threads} threads"
    mem_kind = ("max_memory_allocated" if cuda else "process peak RSS (VmHWM)") + \
        f", median of {args.memory_repeats} fresh processes per method"
    print(f"\n{args.model} ({n_params / 1e6:.1f}M params), {args.dtype}, batch {args.batch} x {args.seq}, {where}")
    print(f"median of {args.steps} rounds; memory: {mem_kind}\n")
    print("| step | seconds | / two forwards | peak memory / inference | extra MB |")
    print("|---|---|---|---|---|")
    for name, ts in times.items():
        sec, extra = statistics.median(ts), (peaks[name] - base_peak) / 2**20
        print(f"| {name} | {sec:.3f} | {sec / base:.2f}x | {peaks[name] / base_peak:.2f} | {extra:+.0f} |")


if __name__ == "__main__":
    main()
