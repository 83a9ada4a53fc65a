"""The counter-based draw as Triton kernels, for CUDA tensors (and, under ``TRITON_INTERPRET=1``, for CPU
tensors, which is how the tests check them on a machine without a GPU).

Same hash, same float32 operations in the same order as ``reference.py``, launched with
``enable_fp_fusion=False`` (no FMA) and ``sqrt_rn`` (IEEE square root), so the numbers equal the C kernel
and the torch implementation bit for bit. The keys go to the GPU from pinned memory without a wait and
the α's stay device tensors: nothing is read back to the host.
"""

from __future__ import annotations

import os

import torch

from zolab.kernels import reference

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is optional
    triton = None

BLOCK = 1024


def available() -> bool:
    return triton is not None


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:

    @triton.jit
    def _h32(x):
        x = x ^ (x >> 16)
        x = (x * 0x7FEB352D).to(tl.uint32)  # literals may widen the type: wrap back to 32 bits
        x = x ^ (x >> 15)
        x = (x * 0x846CA68B).to(tl.uint32)
        return x ^ (x >> 16)

    @triton.jit
    def _horner7(x, c0, c1, c2, c3, c4, c5, c6):
        y = x * c0 + c1
        y = y * x + c2
        y = y * x + c3
        y = y * x + c4
        y = y * x + c5
        return y * x + c6

    @triton.jit
    def _log_unit(u):
        bits = u.to(tl.int32, bitcast=True)
        e = (bits >> 23) - 127
        m = ((bits & 0x7FFFFF) | 0x3F800000).to(tl.float32, bitcast=True)
        big = m > 1.4142135381698608
        m = tl.where(big, m * 0.5, m)
        e = tl.where(big, e + 1, e)
        x = m - 1.0
        fe = e.to(tl.float32)
        z = x * x
        y = x * 0.07037683576345444 + -0.11514610052108765
        y = y * x + 0.11676998436450958
        y = y * x + -0.12420140951871872
        y = y * x + 0.14249323308467865
        y = y * x + -0.16668057441711426
        y = y * x + 0.2000071406364441
        y = y * x + -0.24999994039535522
        y = y * x + 0.3333333134651184
        y = y * x * z
        y = y + fe * -0.00021219444170128554
        y = y - z * 0.5
        r = x + y
        return r + fe * 0.693359375

    @triton.jit
    def _cast_out(x, ptr, BF16: tl.constexpr):
        """x (float32/64) in ``ptr``'s type; bfloat16 by explicit round-to-nearest-even on the bits, so
        every build (and the interpreter, which truncates) rounds as torch does."""
        if BF16:
            bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
            bits = (bits + (0x7FFF + ((bits >> 16) & 1))).to(tl.uint32)
            y = (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
        else:
            y = x.to(ptr.dtype.element_ty)
        return y

    @triton.jit
    def _round_sr(x, key, idx, F16: tl.constexpr):
        """float32 x stored as float16 (F16) or bfloat16, rounded stochastically with the counter bits of
        (key, idx): ``reference.round_half``'s bits."""
        w = _word1((key & 0xFFFFFFFF).to(tl.uint32), ((key >> 32) & 0xFFFFFFFF).to(tl.uint32), idx)
        b = x.to(tl.uint32, bitcast=True)
        a = b & 0x7FFFFFFF
        sign = (b >> 16) & 0x8000
        if F16:
            r = (a + (w & 0x1FFF)) & 0xFFFFE000
            normal = tl.where(r >= 0x47800000, 0x7C00, (r >> 13) - (112 << 10))
            s = tl.minimum(a, 0x38800000).to(tl.float32, bitcast=True) * 16777216.0  # subnormal range, exact
            k = s.to(tl.uint32)
            up = ((w >> 8).to(tl.float32) * 5.9604644775390625e-08 < s - k.to(tl.float32)).to(tl.uint32)
            h = tl.where(a > 0x7F800000, 0x7E00, tl.where(a >= 0x38800000, normal, k + up))
            y = (sign | h).to(tl.uint16).to(tl.float16, bitcast=True)
        else:
            h = tl.where(a > 0x7F800000, 0x7FC0, (a + (w & 0xFFFF)) >> 16)
            y = (sign | h).to(tl.uint16).to(tl.bfloat16, bitcast=True)
        return y

    @triton.jit
    def _word1(k0, k1, j):
        lo = (j & 0xFFFFFFFF).to(tl.uint32)
        hi = (j >> 32).to(tl.uint32)
        return _h32(_h32(lo ^ k0) ^ (hi * 0x9E3779B9).to(tl.uint32) ^ k1)

    @triton.jit
    def _draw(k0, k1, idx, KIND: tl.constexpr):
        if KIND == 1:
            z = 1.0 - (_word1(k0, k1, idx) >> 31).to(tl.float32) * 2.0
        else:  # element idx is the cos (even) or sin (odd) half of counter idx >> 1's Box-Muller pair
            w1 = _word1(k0, k1, idx >> 1)
            w2 = _h32((w1 + 0x632BE5AB).to(tl.uint32))
            u1 = ((w1 >> 8) + 1).to(tl.float32) * 5.9604644775390625e-08
            r = tl.sqrt_rn(_log_unit(u1) * -2.0)
            q = w2 >> 30
            f = ((w2 >> 8) & 0x3FFFFF).to(tl.float32) * 2.384185791015625e-07
            a = f * 1.5707963705062866
            a2 = a * a
            c = _horner7(a2, 2.0876755879584152e-09, -2.755731998149713e-07, 2.4801587642286904e-05,
                         -0.0013888889225199819, 0.0416666679084301, -0.5, 1.0)
            s = _horner7(a2, 1.6059044372074283e-10, -2.5052107943679403e-08, 2.7557318844628753e-06,
                         -0.00019841270113829523, 0.008333333767950535, -0.1666666716337204, 1.0) * a
            cos = tl.where((q & 1) == 1, s, c)
            cos = tl.where((q == 1) | (q == 2), -cos, cos)
            sin = tl.where((q & 1) == 1, c, s)
            sin = tl.where(q >= 2, -sin, sin)
            z = r * tl.where((idx & 1) == 1, sin, cos)
        return z

    @triton.jit
    def _axpz_kernel(out_ptr, base_ptr, key_ptr, coef_ptr, n, offset, NK: tl.constexpr, KIND: tl.constexpr,
                     HAS_BASE: tl.constexpr, F64: tl.constexpr, BF16: tl.constexpr,
                     BLOCK_SIZE: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        i = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE).to(tl.int64)
        mask = i < n
        idx = offset + i
        CT = tl.float64 if F64 else tl.float32
        acc = tl.zeros([BLOCK_SIZE], dtype=CT)
        if HAS_BASE:
            acc = tl.load(base_ptr + i, mask=mask).to(CT)
        for k in tl.static_range(NK):
            key = tl.load(key_ptr + k)  # int64 holding the 63-bit key
            k0 = (key & 0xFFFFFFFF).to(tl.uint32)
            k1 = ((key >> 32) & 0xFFFFFFFF).to(tl.uint32)
            term = tl.load(coef_ptr + k) * _draw(k0, k1, idx, KIND).to(CT)
            if k == 0 and not HAS_BASE:
                acc = term
            else:
                acc = acc + term
        tl.store(out_ptr + i, _cast_out(acc, out_ptr, BF16), mask=mask)

    @triton.jit
    def _sumsq_kernel(partial_ptr, key_ptr, n, offset, KIND: tl.constexpr, BLOCK_SIZE: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        i = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE).to(tl.int64)
        key = tl.load(key_ptr)
        k0 = (key & 0xFFFFFFFF).to(tl.uint32)
        k1 = ((key >> 32) & 0xFFFFFFFF).to(tl.uint32)
        z = _draw(k0, k1, offset + i, KIND).to(tl.float64)
        z = tl.where(i < n, z, 0.0)
        tl.store(partial_ptr + pid, tl.sum(z * z, axis=0))


def _coefs(coefs, ct: torch.dtype, device) -> torch.Tensor:
    vals = [a.detach().to(device=device, dtype=ct).reshape(()) if isinstance(a, torch.Tensor)
            else torch.full((), float(a), dtype=ct, device=device) for a in coefs]
    return torch.stack(vals)  # device-side: no host round trip


def _to_device(host: torch.Tensor, device) -> torch.Tensor:
    """A small host tensor on ``device``, copied from pinned memory without waiting for the GPU."""
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def _keys(keys, device) -> torch.Tensor:
    return _to_device(torch.tensor([int(k) for k in keys], dtype=torch.int64), device)


def axpz(out, keys, coefs, base, offset, law):
    if not out.is_contiguous() or (base is not None and not base.is_contiguous()):
        raise ValueError("the Triton kernels need contiguous tensors")
    ct = torch.float64 if out.dtype == torch.float64 else torch.float32
    n = out.numel()
    _axpz_kernel[(triton.cdiv(n, BLOCK),)](
        out, base if base is not None else out, _keys(keys, out.device), _coefs(coefs, ct, out.device), n,
        int(offset), NK=len(keys), KIND=reference.LAWS.index(law), HAS_BASE=base is not None,
        F64=ct == torch.float64, BF16=out.dtype == torch.bfloat16, BLOCK_SIZE=BLOCK, enable_fp_fusion=False)
    return out


def sumsq(key, like, offset, law):
    n = like.numel()
    nblocks = triton.cdiv(n, BLOCK)
    partial = torch.empty(nblocks, dtype=torch.float64, device=like.device)
    _sumsq_kernel[(nblocks,)](partial, _keys([key], like.device), n, int(offset), KIND=reference.LAWS.index(law),
                              BLOCK_SIZE=BLOCK, enable_fp_fusion=False)
    return partial.sum()


# ---------------------------------------------------------------------------------------------- programs
_EXPR = {"add": "({} + {})", "sub": "({} - {})", "mul": "({} * {})", "neg": "(-{})", "abs": "tl.abs({})",
         "gt": "({} > {}).to(CT)", "lt": "({} < {}).to(CT)"}


def _source(program, slot_sizes: tuple, slot_laws: tuple, n_tensors: int, bf16: tuple, f64: bool,
            stochastic: tuple = ()) -> str:
    """A Triton kernel for one program: its instructions unrolled, each draw slot's keys in a static loop.
    ``stochastic``: per output, None or its storage ("bfloat16"/"float16") rounded stochastically, key R[j]."""
    ct = "tl.float64" if f64 else "tl.float32"
    args = ", ".join([f"T{i}" for i in range(n_tensors)] + ["S", "K", "C", "O", "R", "n", "offset"])
    lines = ["import triton", "import triton.language as tl",
             "from zolab.kernels.triton_kernels import _cast_out, _draw, _round_sr", "", "",
             "@triton.jit", f"def kernel({args}, BLOCK_SIZE: tl.constexpr):",
             f"    CT: tl.constexpr = {ct}",
             "    pid = tl.program_id(0).to(tl.int64)",
             "    i = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE).to(tl.int64)",
             "    mask = i < n"]
    starts = [sum(slot_sizes[:j]) for j in range(len(slot_sizes))]

    def operand(a):
        return f"tl.load(S + {a[1]})" if isinstance(a, tuple) else f"r{a}"

    for k, node in enumerate(program.nodes):
        if node.op == "input":
            expr = f"tl.load(T{program.inputs.index(node.args[0])} + i, mask=mask).to(CT)"
        elif node.op == "draw":
            j = program.slots.index(node.args[0])
            lines.append(f"    r{k} = tl.zeros([BLOCK_SIZE], dtype=CT)")
            lines.append(f"    for q in tl.static_range({slot_sizes[j]}):")
            lines.append(f"        key = tl.load(K + {starts[j]} + q)")
            lines.append("        k0 = (key & 0xFFFFFFFF).to(tl.uint32)")
            lines.append("        k1 = ((key >> 32) & 0xFFFFFFFF).to(tl.uint32)")
            lines.append(f"        z = _draw(k0, k1, offset + tl.load(O + {j}) + i, {slot_laws[j]})")
            lines.append(f"        term = tl.load(C + {starts[j]} + q) * z.to(CT)")
            lines.append(f"        r{k} = term if q == 0 else r{k} + term")
            continue
        else:
            ops = [operand(a) for a in node.args]
            if node.op == "sqrt":
                expr = f"tl.sqrt({ops[0]})" if f64 else f"tl.sqrt_rn({ops[0]})"
            elif node.op == "div":
                expr = f"({ops[0]} / {ops[1]})" if f64 else f"tl.div_rn({ops[0]}, {ops[1]})"
            elif node.op == "sign":
                expr = f"(({ops[0]} > 0).to(CT) - ({ops[0]} < 0).to(CT))"
            elif node.op in ("max", "min"):
                cmp = ">" if node.op == "max" else "<"
                u, v = ops
                expr = f"tl.where({u} != {u}, {u}, tl.where({v} != {v}, {v}, tl.where({u} {cmp} {v}, {u}, {v})))"
            elif node.op == "where":
                expr = f"tl.where({ops[0]} != 0, {ops[1]}, {ops[2]})"
            else:
                expr = _EXPR[node.op].format(*ops)
            if all(isinstance(a, tuple) for a in node.args):
                expr = f"tl.full([BLOCK_SIZE], {expr}, CT)"
        lines.append(f"    r{k} = {expr}")
    for j, (_, k) in enumerate(program.stores):
        t, value = len(program.inputs) + j, f"r{k} + tl.zeros([BLOCK_SIZE], dtype=CT)"
        if j < len(stochastic) and stochastic[j]:
            value = f"_round_sr({value}, tl.load(R + {j}), offset + i, {stochastic[j] == 'float16'})"
        else:
            value = f"_cast_out({value}, T{t}, {bool(bf16[t])})"
        lines.append(f"    tl.store(T{t} + i, {value}, mask=mask)")
    return "\n".join(lines) + "\n"


_PROGRAMS: dict = {}


def _compiled(source: str):
    """Import a generated kernel from a file (Triton's JIT reads the source), cached by its text."""
    import hashlib
    import importlib.util

    from zolab.kernels import toolchain

    tag = hashlib.sha1(source.encode()).hexdigest()[:16]
    if tag not in _PROGRAMS:
        path = toolchain.cached_text(f"triton/program_{tag}.py", source)  # holds exactly this source
        spec = importlib.util.spec_from_file_location(f"zolab_program_{tag}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _PROGRAMS[tag] = module.kernel
    return _PROGRAMS[tag]


def run_program(program, tensors, outputs, scalars, slots, ct, n, offset, rounding=None) -> None:
    """``kernels.run`` as a Triton kernel generated from the program (contiguous tensors, checked);
    ``rounding``: output name -> key of its stochastic rounding."""
    rounding = rounding or {}
    order = [tensors[k] for k in program.inputs] + [outputs[k] for k, _ in program.stores]
    device = order[-1].device
    sizes = tuple(len(slots[k].keys) for k in program.slots)
    bf16 = tuple(t.dtype == torch.bfloat16 for t in order)
    laws = tuple(reference.LAWS.index(slots[k].law) for k in program.slots)
    stochastic = tuple(str(outputs[k].dtype)[6:] if k in rounding else None for k, _ in program.stores)
    round_keys = [int(rounding.get(k, 0)) for k, _ in program.stores] or [0]
    r = _to_device(torch.tensor([k - 2**64 if k >= 2**63 else k for k in round_keys], dtype=torch.int64), device)
    kernel = _compiled(_source(program, sizes, laws, len(order), bf16, ct == torch.float64, stochastic))
    keys = [k for name in program.slots for k in slots[name].keys] or [0]
    coefs = [c for name in program.slots for c in slots[name].coefs] or [0.0]
    s = _coefs(list(scalars) or [0.0], ct, device)
    o = _to_device(torch.tensor([int(slots[k].offset) for k in program.slots] or [0], dtype=torch.int64), device)
    kernel[(triton.cdiv(n, BLOCK),)](*order, s, _keys(keys, device),
                                     _coefs(coefs, ct, device), o, r, n, int(offset), BLOCK_SIZE=BLOCK,
                                     enable_fp_fusion=False)
