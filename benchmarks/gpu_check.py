"""The GPU check's bitwise part: CPU and CUDA draw the same directions and take the same ZO-SGD steps (float32).

    python benchmarks/gpu_check.py [--json PATH] [--steps 5]
    python benchmarks/gpu_check.py --env      # one line: torch, CUDA, the card, triton, the commit

Draws: ``kernels.fill`` and ``kernels.axpz`` for every law, a few keys and offsets (beyond 2**32 too) and
float32/float64, on the CPU (the C kernels) against the torch kernels on the CPU, and on CUDA (Triton, and
torch on CUDA) against the CPU. Steps: ``--steps`` ZO-SGD steps with the same seeds on a small MLP and a
two-layer Llama, float32, parameters compared bit for bit. With the losses computed on each device, CUDA's
matrix products may round differently from the CPU's, which moves every later number; that run is reported
(a note, not a failure, when its first losses already differ). The decisive run gives both devices the same
losses: copy mode, each loss computed on the CPU from the device's perturbed parameters, so what is compared
is the directions and the update arithmetic. Without CUDA the CPU side runs (C against torch kernels, which
must agree bitwise) and the CUDA side is reported as skipped with the reason. One line per check,
``PASS|FAIL|NOTE|SKIP name: detail``; exit status 1 if a check failed.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from zolab import kernels
from zolab.kernels import LAWS, reference
from zolab.kernels import triton_kernels as tk
from zolab.rules import ZOSGD

CASES = [(0x5DEECE66D1234567, 0, 4099), (1, 12_345, 70_001), (2**63 - 25, 2**32 - 1000, 3000)]  # key, offset, n
COEFS = [1e-3, -2.5, 0.75]
results: list[dict] = []


def record(name: str, status: str, detail: str) -> None:
    results.append(dict(name=name, status=status, detail=detail))
    print(f"{status.upper()} {name}: {detail}", flush=True)


def cuda_reason() -> str | None:
    """Why the CUDA side cannot run here, or None."""
    if not torch.cuda.is_available():
        return f"no CUDA device visible to torch {torch.__version__}"
    return None


def draws(device: str, backend: str) -> dict:
    """(law, dtype, case, "fill"|"axpz") -> the numbers, moved to the CPU."""
    out = {}
    with kernels.use_backend(backend):
        for law in LAWS:
            for dtype in (torch.float32, torch.float64):
                for i, (key, offset, n) in enumerate(CASES):
                    z = kernels.fill(torch.empty(n, dtype=dtype, device=device), key, offset, law)
                    base = torch.randn(n, generator=torch.Generator().manual_seed(n), dtype=dtype).to(device)
                    a = kernels.axpz(torch.empty_like(base), [key, key + 1, key ^ 5], COEFS, base, offset, law)
                    out[law, dtype, i, "fill"], out[law, dtype, i, "axpz"] = z.cpu(), a.cpu()
    return out


def compare(name: str, got: dict, want: dict, what: str) -> None:
    bad = [k for k in want if not torch.equal(got[k], want[k])]
    if bad:
        record(name, "fail", f"{len(bad)} of {len(want)} differ, e.g. {bad[0][3]} {bad[0][0]} {bad[0][1]} "
                             f"(key, offset, n) = {CASES[bad[0][2]]}")
    else:
        record(name, "pass", f"{len(want)} {what} bitwise equal")


def check_draws(reason: str | None) -> None:
    cpu = draws("cpu", "c")
    # the spec itself: the C fills against reference.draw
    spec = {k: reference.draw(CASES[k[2]][0], CASES[k[2]][2], CASES[k[2]][1], k[0]).to(k[1])
            for k in cpu if k[3] == "fill"}
    compare("draws cpu c = reference", {k: cpu[k] for k in spec}, spec, "fills (laws x dtypes x keys/offsets)")
    compare("draws cpu c = torch", draws("cpu", "torch"), cpu, "fills and axpz")
    if reason:
        for backend in ("torch", "triton"):
            record(f"draws cuda {backend} = cpu", "skip", reason)
        return
    compare("draws cuda torch = cpu", draws("cuda", "torch"), cpu, "fills and axpz")
    if not tk.available():
        record("draws cuda triton = cpu", "skip", "triton is not installed")
    else:
        compare("draws cuda triton = cpu", draws("cuda", "triton"), cpu, "fills and axpz")


def make_model(kind: str) -> tuple[torch.nn.Module, tuple]:
    """A small float32 model built on the CPU with a fixed seed, and its inputs."""
    torch.manual_seed(0)
    if kind == "mlp":
        model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
        x = torch.randn(32, 16)
        return model, (x, x.sum(1, keepdim=True).sin())
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config).eval()
    return model, (torch.randint(0, 256, (4, 16)),)


def loss_of(model, data: tuple, params: dict | None = None) -> torch.Tensor:
    """The model's loss on ``data``, with ``params`` in place of its own if given."""
    def call(*a, **kw):
        return model(*a, **kw) if params is None else torch.func.functional_call(model, params, a, kw)

    if isinstance(model, torch.nn.Sequential):
        x, y = data
        return torch.nn.functional.mse_loss(call(x), y)
    (ids,) = data
    return call(input_ids=ids, labels=ids).loss


def run_steps(kind: str, device: str, backend: str, losses_on: str, steps: int) -> tuple[dict, list]:
    """``steps`` ZO-SGD steps; returns (parameters on the CPU, losses). ``losses_on="cpu"``: copy mode, each loss
    computed on a CPU twin from the device's (perturbed) parameters; ``"device"``: the model's own forward on
    the device, in the rule's default perturbation (module mode, bound to the model)."""
    model, data = make_model(kind)
    twin = make_model(kind)[0]
    model.to(device)
    dev_data = tuple(t.to(device) for t in data)
    named = list(model.named_parameters())

    @torch.no_grad()
    def closure():
        if losses_on == "cpu":
            return loss_of(twin, data, {n: p.detach().cpu() for n, p in named}).to(device)
        return loss_of(model, dev_data)

    lr = 1e-2 if kind == "mlp" else 1e-3
    opt = ZOSGD(named, lr=lr, mu=1e-3, seed=7, perturb="copy" if losses_on == "cpu" else "auto").bind(model)
    losses = []
    with kernels.use_backend(backend):
        for _ in range(steps):
            losses.append(opt.step(closure).item())
    return {n: p.detach().cpu() for n, p in named}, losses


def same(a: dict, b: dict) -> list[str]:
    return [n for n in a if not torch.equal(a[n], b[n])]


def check_steps(kind: str, steps: int, reason: str | None) -> None:
    what = f"{steps} ZO-SGD steps, {kind}"
    try:
        ref = run_steps(kind, "cpu", "c", "cpu", steps)
    except ImportError as err:
        record(f"steps {kind}", "skip", f"{err}")
        return
    again = run_steps(kind, "cpu", "c", "cpu", steps)
    other = run_steps(kind, "cpu", "torch", "cpu", steps)
    bad = same(ref[0], again[0]) + same(ref[0], other[0])
    still = [n for n, p in make_model(kind)[0].named_parameters() if torch.equal(p.detach(), ref[0][n])]
    record(f"steps cpu {kind}: c twice, c = torch", "fail" if bad or still else "pass",
           f"{what}: {len(ref[0])} tensors " + (f"differ: {bad[:3]}" if bad else "bitwise equal") +
           (f"; {len(still)} never moved, e.g. {still[0]}" if still else ", all moved"))
    cpu_dev = None if reason else run_steps(kind, "cpu", "c", "device", steps)
    backends = ["torch"] + (["triton"] if tk.available() else [])
    for backend in backends:
        name = f"steps cuda {backend} {kind}"
        if reason:
            record(f"{name}, same losses", "skip", reason)
            record(f"{name}, device losses", "skip", reason)
            continue
        got = run_steps(kind, "cuda", backend, "cpu", steps)
        bad = same(ref[0], got[0])
        record(f"{name}, same losses", "fail" if bad else "pass",
               f"{what}, losses computed on the CPU: " + (f"{len(bad)} tensors differ, e.g. {bad[0]}" if bad else
                                                          f"{len(ref[0])} tensors bitwise equal to the CPU's"))
        got = run_steps(kind, "cuda", backend, "device", steps)
        bad = same(cpu_dev[0], got[0])
        first = next((i for i, (a, b) in enumerate(zip(cpu_dev[1], got[1])) if a != b), None)
        if not bad:
            record(f"{name}, device losses", "pass", f"{what}: losses and parameters bitwise equal to the CPU's")
        elif first == 0:
            gap = max((cpu_dev[0][n] - got[0][n]).abs().max().item() for n in bad)
            record(f"{name}, device losses", "note", f"{what}: the first losses already differ ({cpu_dev[1][0]!r} "
                   f"vs {got[1][0]!r}: the matrix products round differently), so the parameters do too "
                   f"(max |diff| {gap:.2e}); the same-losses run is the bitwise check")
        else:
            record(f"{name}, device losses", "fail", f"{what}: losses equal up to step {first}, yet parameters "
                   f"{bad[:3]} differ")


def environment() -> str:
    import subprocess
    from pathlib import Path

    try:
        import triton

        tv = triton.__version__
    except ImportError:
        tv = "not installed"
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent).stdout.strip() or "?"
    card = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), device {card}, " \
           f"triton {tv}, commit {rev}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--json", default=None, help="write the checks here (JSON)")
    ap.add_argument("--env", action="store_true", help="print the environment line only")
    args = ap.parse_args(argv)
    if args.env:
        print(environment())
        return 0
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    reason = cuda_reason()
    check_draws(reason)
    for kind in ("mlp", "llama"):
        check_steps(kind, args.steps, reason)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cuda": reason is None, "reason": reason, "checks": results}, f, indent=1)
    return int(any(r["status"] == "fail" for r in results))


if __name__ == "__main__":
    sys.exit(main())
