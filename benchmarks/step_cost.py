"""What a ZO step costs next to its forward passes, as ratios taken inside each round, on a random language model.

    python benchmarks/step_cost.py --device cpu                      # SmolLM2-135M shape, fp32, 8 x 128
    python benchmarks/step_cost.py --device cuda --model opt-1.3b --dtype float16 --batch 16 --seq 256
    python benchmarks/step_cost.py --device cpu --model minilm --batch 16 --seq 32 --threads 1 --steps 10
                                    # MiniLM-L6 + head, full fine-tuning of SST-2 batches
    python benchmarks/step_cost.py --model tiny-llama --steps 2 --memory-repeats 1 --json out.json  # a smoke run
    python benchmarks/step_cost.py --device cpu --steps 0 --rules radazo,zo_adamm,zo_adamu --state-dtype bfloat16
                                    # memory only: each rule with float32 and with bfloat16 state

Methods: two forward passes alone; a MeZO-pattern step written here (re-seed, then ``torch.normal`` and an
in-place add per tensor: +μz, −2μz, +μz, update; Malladi et al. 2023); and every rule registered in
``zolab.rules.RULES`` (a rule added there appears here), each with its default ``perturb`` (module mode once
bound to the model: the "perturb" column), plus ``zo_sgd:copy`` (ZO-SGD in copy mode), and with
``--state-dtype bfloat16`` every selected rule with d-sized state again as ``<rule>:bfloat16``, its state stored in
bfloat16 (``state_dtype``). Every method is
warmed up once, then the methods take turns, one step each, ``--steps`` rounds. The machine's speed drifts
between rounds more than the methods differ, so each method's time is divided by the two forwards' time of
the same round, and by its own forwards' (the step's forwards, ``opt.zo["forwards"]`` over the step, at the
two forwards' time per forward); the table gives the median and [min, max] of these per-round ratios.

Each round also times one draw of every trained number (``kernels.fill`` of the direction law, no step): no
exact update along a direction draws less, so "1 + its ratio" is the least such a step can cost next to two
forwards on the machine at hand (printed below the table).

Memory, ``--memory-repeats`` repeats; in each, the two forwards and every method run two steps in fresh
processes, and each method's peak is divided by the same repeat's inference (two forwards) peak: median and
[min, max]. CUDA: ``torch.cuda.max_memory_allocated``, one process per repeat running the methods one after
another, statistics reset between them; CPU (``--cpu-memory``), one process per method and repeat:
``tensors`` (the default) the peak bytes of the tensor storages alive while the method is built and takes its
steps (the model's parameters and the batch counted from the start; ``zolab.lab.leaderboard_probe.PeakMemory``,
the CPU counterpart of ``max_memory_allocated``: the same every repeat, blind to the allocator's fragmentation),
or ``rss``: the process's peak resident memory (VmHWM), which includes the interpreter and libraries and what
the allocator keeps (it varied by up to 20% between repeats here); "extra MB" (median) gives the difference
directly. ``--steps 0`` measures memory only (no timing). No weights are
downloaded: models are built from configs.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from zolab.rules import RULES
from zolab.testing.rules import REGISTRY

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
    # a two-layer Llama for smoke runs and tests (its numbers measure nothing)
    "tiny-llama": dict(kind="llama", vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256),
}

FORWARDS, MEZO = "two forwards", "MeZO pattern"  # the reference rows
# Arguments a rule needs beyond lr and mu: this table, else its registry entry's (the arguments every test
# passes, e.g. ZO-AdaMU's total_steps), so a newly registered rule runs without an edit here.
BENCH_KWARGS = {"zo_adamu": dict(total_steps=100, t1=1)}
BENCH_KWARGS.update(lozo={}, lozo_m={}, subzero={}, mezo_svrg=dict(anchor_batch="closure"))  # defaults; anchor: batch
VARIANTS = {"zo_sgd:copy": ("zo_sgd", dict(perturb="copy"))}  # name -> (rule, extra arguments)
STATE_DTYPES = ("bfloat16", "float16")  # "<rule>:bfloat16": a rule with d-sized state, its state in bfloat16


def rule_names(state_dtype: str = "float32") -> list[str]:
    """Every registered rule, then the variants, then (``state_dtype`` half) the stateful rules with half state."""
    half = [f"{r}:{state_dtype}" for r in RULES if state_dtype in STATE_DTYPES and REGISTRY[r].state
            and getattr(RULES[r], "half_state", True)  # MeZO-SVRG's state is a point: it keeps float32
            and not (state_dtype == "float16" and RULES[r].squared_state)]  # float16 refused for second moments
    return [*RULES, *VARIANTS, *half]


def variant(name: str) -> tuple[str, dict]:
    key, dtype = name.rsplit(":", 1) if name.rsplit(":", 1)[-1] in STATE_DTYPES else (name, None)
    return VARIANTS[name] if name in VARIANTS else (key, {} if dtype is None else {"state_dtype": dtype})


def rule_kwargs(name: str) -> tuple[str, dict]:
    key, extra = variant(name)
    return key, {**BENCH_KWARGS.get(key, REGISTRY[key].kwargs), "lr": 1e-6, "mu": 1e-3, **extra}


def label(name: str) -> str:
    if name in (FORWARDS, MEZO):
        return name
    key, extra = variant(name)
    cls = RULES[key]
    return f"zolab {cls.label or cls.__name__}" + "".join(f" ({v})" for v in extra.values())


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


class Reference:
    """A reference step of two forwards: the forwards alone, or the MeZO pattern."""

    mode = "-"

    def __init__(self, fn):
        self.fn, self.forwards = fn, 0

    def step(self):
        self.fn()
        self.forwards += 2


class Rule:
    """A zolab rule's step; its forwards are the optimizer's count."""

    def __init__(self, opt, closure):
        self.opt, self.closure = opt, closure

    def step(self):
        self.opt.step(self.closure)

    @property
    def forwards(self) -> int:
        return self.opt.zo["forwards"]

    @property
    def mode(self) -> str:
        return self.opt.perturb_mode


def draw_every_number(params):
    """A timing floor, not a step: one Gaussian of the direction law for every trained number (``kernels.fill``
    of each tensor into one scratch buffer). An exact update along a direction draws at least this much once
    its forwards are done, so two forwards plus this bounds such a step from below."""
    from zolab import kernels

    scratch = torch.empty(max(p.numel() for p in params), dtype=params[0].dtype, device=params[0].device)

    def run():
        offset = 0
        for p in params:
            kernels.fill(scratch[:p.numel()], 0x5EED, offset)
            offset += p.numel()

    return run


def peak_bytes(cuda: bool) -> float:
    if cuda:
        return float(torch.cuda.max_memory_allocated())
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) * 1024
    return float("nan")


def build_methods(args, rules):
    """name -> a function that builds the method (its optimizer) and returns it (``step()``, ``forwards``); the
    number of trained parameters; the model and its batch."""
    torch.set_num_threads(args.threads)
    model = build_model(args.model, getattr(torch, args.dtype), args.device)
    gen = torch.Generator().manual_seed(0)
    vocab = (model.encoder if isinstance(model, EncoderHead) else model).config.vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.seq), generator=gen).to(args.device)
    labels = torch.randint(0, 2, (args.batch,), generator=gen).to(args.device)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]

    @torch.no_grad()
    def closure():
        if isinstance(model, EncoderHead):
            return model(ids, labels)
        return model(input_ids=ids, labels=ids).loss

    def two_forwards():
        closure()
        return closure()

    def rule(name):
        key, kwargs = rule_kwargs(name)
        return Rule(RULES[key](named, **kwargs).bind(model), closure)

    methods = {FORWARDS: lambda: Reference(two_forwards), MEZO: lambda: Reference(lambda: mezo_step(params, closure))}
    for name in rules:
        methods[name] = lambda name=name: rule(name)
    return methods, sum(p.numel() for p in params), (model, (ids, labels))


def memory_of(args, names: list[str]) -> None:
    """In a fresh process: each method in turn runs two steps; prints its peak memory and, on CUDA, the memory
    still held before it beyond what the first held (what an earlier method failed to release), as JSON."""
    cuda = args.device.startswith("cuda")
    methods, _, (model, inputs) = build_methods(args, [n for n in names if n not in (FORWARDS, MEZO)])
    peaks, held, first = {}, {}, None
    if not cuda and args.cpu_memory == "tensors":  # one method a process (measure_memory): its tensors' peak
        from torch.utils._pytree import tree_flatten

        from zolab.lab.leaderboard_probe import PeakMemory

        (name,) = names
        alive = [*model.parameters(), *model.buffers(), *(t for t in tree_flatten(inputs)[0] if torch.is_tensor(t))]
        with PeakMemory(alive) as tracker:
            method = methods[name]()
            for _ in range(2):
                method.step()
        print(json.dumps({"peaks": {name: float(tracker.peak)}, "held": {}}))
        return
    for name in names:
        gc.collect()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            now = torch.cuda.memory_allocated()
            first = now if first is None else first
            held[name] = now - first
            torch.cuda.reset_peak_memory_stats()
        method = methods[name]()
        for _ in range(2):
            method.step()
        sync(args.device)
        peaks[name] = peak_bytes(cuda)
        del method
    print(json.dumps({"peaks": peaks, "held": held}))


def measure_memory(args, names: list[str]) -> dict[str, list[float]]:
    """name -> its peak in each repeat (``names[0]`` is the two forwards)."""
    cuda = args.device.startswith("cuda")
    cmd = [sys.executable, __file__, "--device", args.device, "--model", args.model, "--dtype", args.dtype,
           "--batch", str(args.batch), "--seq", str(args.seq), "--threads", str(args.threads),
           "--cpu-memory", args.cpu_memory]
    groups = [names] if cuda else [[n] for n in names]
    peaks = {n: [] for n in names}
    for r in range(args.memory_repeats):
        for group in groups:
            out = subprocess.run([*cmd, "--memory-of", ",".join(group)], capture_output=True, text=True)
            if out.returncode:
                raise RuntimeError(f"memory of {group} failed ({out.returncode}):\n{out.stderr[-3000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            for n, v in result["peaks"].items():
                peaks[n].append(v)
            for n, v in result["held"].items():
                if v > 2**20:
                    print(f"  warning: {v / 2**20:.0f} MB still held before {n}: its peak is overstated", flush=True)
        print(f"  memory repeat {r + 1}/{args.memory_repeats}: " +
              ", ".join(f"{n} {p[-1] / 2**20:.0f} MB" for n, p in peaks.items()), flush=True)
    return peaks


def spread(values: list[float]) -> dict:
    values = [v for v in values if v == v]  # without NaN
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def show(s: dict, unit: str = "x") -> str:
    if s["median"] != s["median"]:
        return "-"
    return f"{s['median']:.2f}{unit} [{s['min']:.2f}, {s['max']:.2f}]"


def time_methods(args, methods, floor=None) -> tuple[dict, dict, dict, list]:
    """Warm-up, then ``--steps`` rounds, one step of each method per round: seconds and forwards per step; and
    the seconds of ``floor()`` (``draw_every_number``) in each round, after the methods (none without it)."""
    made = {}
    for name, make in methods.items():
        made[name] = make()
        made[name].step()  # warm-up: allocates moments and scratch, caches kernels
    if floor is not None:
        floor()
    secs, fwd, floors = {n: [] for n in made}, {n: [] for n in made}, []
    for r in range(args.steps):
        for name, m in made.items():
            before = m.forwards
            sync(args.device)
            start = time.perf_counter()
            m.step()
            sync(args.device)
            secs[name].append(time.perf_counter() - start)
            fwd[name].append(m.forwards - before)
        if floor is not None:
            sync(args.device)
            start = time.perf_counter()
            floor()
            sync(args.device)
            floors.append(time.perf_counter() - start)
        base = secs[FORWARDS][-1]
        print(f"  round {r + 1}/{args.steps}: two forwards {base:.3f}s; " +
              ", ".join(f"{n} {t[-1] / base:.2f}x" for n, t in secs.items() if n != FORWARDS), flush=True)
    return secs, fwd, {n: m.mode for n, m in made.items()}, floors


def report(args, secs, fwd, modes, peaks, n_params, floors=()) -> dict:
    """Per-round ratios -> the result (for ``--json``); prints the table."""
    cuda = args.device.startswith("cuda")
    base = secs[FORWARDS]
    rows = []
    for name, ts in secs.items():
        own = [t / (b / 2 * f) if f else float("nan") for t, b, f in zip(ts, base, fwd[name])]
        mem = [p / i for p, i in zip(peaks[name], peaks[FORWARDS])] if peaks else []
        extra = [(p - i) / 2**20 for p, i in zip(peaks[name], peaks[FORWARDS])] if peaks else []
        forwards = statistics.median(fwd[name]) if fwd[name] else float("nan")  # none: --steps 0
        rows.append(dict(name=name, label=label(name), forwards=forwards, perturb=modes[name],
                         seconds=ts, forwards_per_round=fwd[name], ratio=spread([t / b for t, b in zip(ts, base)]),
                         ratio_own=spread(own), peaks=peaks.get(name, []), memory_ratio=spread(mem),
                         extra_mb=statistics.median(extra) if extra else None))
    where = torch.cuda.get_device_name() if cuda else f"CPU, {args.threads} threads"
    mem_kind = ("max_memory_allocated" if cuda else "peak bytes of live tensors (PeakMemory)"
                if args.cpu_memory == "tensors" else "process peak RSS (VmHWM)")
    result = dict(model=args.model, params=n_params, dtype=args.dtype, batch=args.batch, seq=args.seq,
                  device=args.device, where=where, torch=torch.__version__, steps=args.steps,
                  memory_repeats=args.memory_repeats, memory_kind=mem_kind, two_forwards_s=spread(base), rows=rows,
                  draw_floor=spread([f / b for f, b in zip(floors, base)]))
    print(f"\n{args.model} ({n_params / 1e6:.1f}M params), {args.dtype}, batch {args.batch} x {args.seq}, {where}, "
          f"torch {torch.__version__}")
    print(f"{args.steps} rounds; two forwards {show(spread(base), ' s')}; ratios inside each round: median "
          f"[min, max]; memory: {mem_kind}, peak / the same repeat's inference peak, {args.memory_repeats} repeats\n")
    print("| step | forwards | perturb | / two forwards | / own forwards | memory / inference | extra MB |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        extra = "-" if row["extra_mb"] is None else f"{row['extra_mb']:+.0f}"
        fwd_s = "-" if row["forwards"] != row["forwards"] else f"{row['forwards']:g}"  # NaN: not timed
        print(f"| {row['label']} | {fwd_s} | {row['perturb']} | {show(row['ratio'])} | "
              f"{show(row['ratio_own'])} | {show(row['memory_ratio'], '')} | {extra} |")
    over = [r["label"] for r in rows if r["name"] not in (FORWARDS, MEZO) and r["ratio_own"]["median"] > 1.10]
    print(f"\nrules above 1.10x of their own forwards (median): {', '.join(over) or 'none'}")
    if floors:
        floor = result["draw_floor"]
        print(f"one draw of every trained number (kernels.fill, no step): {show(floor)} of two forwards; a step "
              f"that draws each number once after two forwards costs at least {1 + floor['median']:.2f}x of them")
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--model", default="smollm2-135m", choices=sorted(MODELS))
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="timed rounds (one step per method each; 0: memory only)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rules", default="all", help=f"'all' or comma-separated, from: {', '.join(rule_names())}")
    ap.add_argument("--state-dtype", default="float32", choices=["float32", *STATE_DTYPES],
                    help="also each selected rule with d-sized state, its state in this dtype ('<rule>:<dtype>')")
    ap.add_argument("--memory-repeats", type=int, default=3, help="repeats of the memory measurement (0: none)")
    ap.add_argument("--cpu-memory", default="tensors", choices=["tensors", "rss"],
                    help="CPU memory: the peak bytes of live tensors (default), or the process's peak RSS")
    ap.add_argument("--json", default=None, help="also write the result here (JSON)")
    ap.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)  # internal: these methods' memory
    args = ap.parse_args(argv)
    if args.memory_of is not None:
        return memory_of(args, args.memory_of.split(","))
    rules = [*RULES, *VARIANTS] if args.rules == "all" else [r.strip() for r in args.rules.split(",") if r.strip()]
    rules += [f"{r}:{args.state_dtype}" for r in rules if f"{r}:{args.state_dtype}" in rule_names(args.state_dtype)]
    unknown = [r for r in rules if r not in rule_names(args.state_dtype)]
    if unknown:
        ap.error(f"unknown rules {unknown}; allowed: {rule_names(args.state_dtype)}")
    if args.steps < 0 or args.memory_repeats < 0 or args.steps == args.memory_repeats == 0:
        ap.error("--steps and --memory-repeats must be >= 0, and not both 0")

    methods, n_params, (model, _) = build_methods(args, rules)
    floors = []
    if args.steps:
        params = [p for p in model.parameters() if p.requires_grad]
        secs, fwd, modes, floors = time_methods(args, methods, draw_every_number(params))
        del params
    else:  # memory only
        secs, fwd, modes = {n: [] for n in methods}, {n: [] for n in methods}, {n: "-" for n in methods}
    del model
    del methods
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()  # the memory processes get the device to themselves
    peaks = measure_memory(args, list(secs)) if args.memory_repeats else {}
    result = report(args, secs, fwd, modes, peaks, n_params, floors)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
