"""Fused passes over a tensor that draw the counter-based direction z and use it without storing it.

Three backends give the same numbers (``reference.py`` is the specification):

- ``c``: a small C library (``zo_cpu.c``) for contiguous float32/float64 CPU tensors, multi-threaded; a large
  run of a program is compiled as C of its own (``codegen.py``), the same bits as the library's program VM; both
  are built and cached by ``toolchain.py``;
- ``triton``: a Triton kernel for CUDA tensors (and CPU tensors under ``TRITON_INTERPRET=1``, for tests);
- ``torch``: plain torch ops, any device and dtype (float16/bfloat16 are computed in float32).

The backend is chosen per tensor; ``ZOLAB_KERNELS=torch|c|triton`` (or ``use_backend``) forces one.
Every function takes the direction keys (63-bit integers from ``zolab.engine.seeds.mix``) and the element
offset of the tensor's first element, so a slice of a tensor draws exactly the slice of the whole.

Arithmetic: the compute type is float64 for float64 tensors and float32 otherwise;
``axpz`` computes ``acc = base; acc = acc + α_k·z_k`` for k = 1 … K, each operation rounded once. ``run``
executes a traced element-wise program (``program.py``: a rule's update, or its own directions) in one pass;
no kernel knows any rule. Beside a float32 compute type a program's tensors may be stored in bfloat16/float16:
widened in registers on load, rounded on store (to nearest even, or stochastically with counter bits keyed by
the caller and the element index: ``reference.round_half``), in the same pass, bitwise alike on every backend.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from zolab.kernels import reference
from zolab.kernels.reference import LAWS

BACKENDS = ("auto", "c", "triton", "torch")
MAXK = 64
_C_DTYPES = {torch.float32: 0, torch.float64: 1}
_forced: str | None = None
_ENV = os.environ.get("ZOLAB_KERNELS", "auto")  # read once: backend() runs several times a step


def _setting() -> str:
    value = _forced or _ENV
    if value not in BACKENDS:
        raise ValueError(f"invalid ZOLAB_KERNELS={value!r}; allowed: {list(BACKENDS)}")
    return value


@contextmanager
def use_backend(name: str):
    """Force one backend inside the block (tests, benchmarks)."""
    global _forced
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; allowed: {list(BACKENDS)}")
    old, _forced = _forced, name
    try:
        yield
    finally:
        _forced = old


def _triton_ok(t: torch.Tensor) -> bool:
    from zolab.kernels import triton_kernels

    return triton_kernels.available() and (t.is_cuda or triton_kernels.interpreted())


def backend(t: torch.Tensor) -> str:
    """The backend that handles tensor ``t``."""
    want = _setting()
    if want == "torch":
        return "torch"
    if want == "triton":
        if not _triton_ok(t):
            raise RuntimeError("ZOLAB_KERNELS=triton needs triton and a CUDA tensor (or TRITON_INTERPRET=1)")
        return "triton"
    if want == "c" or (want == "auto" and t.device.type == "cpu"):
        if t.device.type == "cpu" and t.dtype in _C_DTYPES and t.is_contiguous():  # else: torch
            from zolab.kernels import cpu

            if cpu.load() is not None:
                return "c"
        if want == "c":
            raise RuntimeError(f"the C backend needs a contiguous float32/float64 CPU tensor, got {t.dtype} on "
                               f"{t.device}, or its library failed to build (see the warning)")
        return "torch"
    if t.is_cuda and t.is_contiguous() and _triton_ok(t):
        return "triton"
    return "torch"


def _u64(keys):
    return (ctypes.c_uint64 * len(keys))(*[int(k) for k in keys])


def _f64(values):
    return (ctypes.c_double * len(values))(*[float(a) for a in values])


def _check(law: str, keys: Sequence[int], coefs: Sequence) -> None:
    if law not in LAWS:
        raise ValueError(f"unknown law {law!r}; allowed: {list(LAWS)}")
    if not keys or len(keys) != len(coefs):
        raise ValueError(f"need at least one key and one coef per key, got {len(keys)} keys, {len(coefs)} coefs")


def _ctype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _coef(a, ct: torch.dtype, device) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().to(device=device, dtype=ct)
    return torch.tensor(float(a), dtype=ct, device=device)


def axpz(out: torch.Tensor, keys: Sequence[int], coefs: Sequence, base: torch.Tensor | None = None,
         offset: int = 0, law: str = "gaussian") -> torch.Tensor:
    """``out = base + Σ_k coefs[k]·z(keys[k])`` (``Σ_k …`` without base), in one pass; returns ``out``.

    ``base`` may be ``out`` (in place). ``coefs`` are floats or 0-dim tensors (device tensors stay on
    the device: no host synchronisation on CUDA). z is drawn for elements offset … offset + numel − 1."""
    _check(law, keys, coefs)
    if len(keys) > MAXK:  # the kernels take up to MAXK draws a pass; more continue in place
        axpz(out, keys[:MAXK], coefs[:MAXK], base, offset, law)
        return axpz(out, keys[MAXK:], coefs[MAXK:], out, offset, law)
    if out.dtype not in _FLOATS:
        raise ValueError(f"out is {out.dtype}; allowed: {list(_FLOATS)}")
    if base is not None and (base.shape != out.shape or base.dtype != out.dtype or base.device != out.device):
        raise ValueError(f"base {tuple(base.shape)} {base.dtype} on {base.device} must match out "
                         f"{tuple(out.shape)} {out.dtype} on {out.device}")
    which = backend(out)
    if which == "c" and (base is None or base.is_contiguous()):
        from zolab.kernels import cpu

        lib = cpu.load()
        n = out.numel()
        rc = lib.zo_axpz(out.data_ptr(), base.data_ptr() if base is not None else None, n, int(offset),
                         _C_DTYPES[out.dtype], LAWS.index(law), len(keys), _u64(keys), _f64(coefs),
                         torch.get_num_threads())
        if rc != 0:
            raise RuntimeError(f"zo_axpz failed ({rc})")
        return out
    if which == "triton":
        from zolab.kernels import triton_kernels

        return triton_kernels.axpz(out, keys, coefs, base, offset, law)
    ct = _ctype(out)
    acc = None if base is None else base.to(ct)
    for key, a in zip(keys, coefs):
        z = reference.draw(key, out.numel(), offset, law, out.device).view(out.shape).to(ct)
        term = z * _coef(a, ct, out.device)
        acc = term if acc is None else acc + term
    return out.copy_(acc)


def fill(out: torch.Tensor, key: int, offset: int = 0, law: str = "gaussian") -> torch.Tensor:
    """z itself (α = 1 is exact) into ``out``."""
    return axpz(out, [key], [1.0], None, offset, law)


def fill_rows(out: torch.Tensor, keys: Sequence[int], offset: int = 0, law: str = "gaussian") -> torch.Tensor:
    """Row k of the (K, n) tensor ``out`` = z(keys[k]) for elements offset … offset + n − 1, in one call."""
    _check(law, keys, [1.0] * len(keys))
    if out.dim() != 2 or out.shape[0] != len(keys):
        raise ValueError(f"out must be (K, n) with K = {len(keys)} keys, got {tuple(out.shape)}")
    if backend(out) == "c":
        from zolab.kernels import cpu

        rc = cpu.load().zo_fill_rows(out.data_ptr(), out.shape[1], int(offset), _C_DTYPES[out.dtype],
                                     LAWS.index(law), len(keys), _u64(keys), torch.get_num_threads())
        if rc != 0:
            raise RuntimeError(f"zo_fill_rows failed ({rc})")
        return out
    for k, key in enumerate(keys):
        fill(out[k], key, offset, law)
    return out


def sumsq(key: int, like: torch.Tensor, offset: int = 0, law: str = "gaussian") -> torch.Tensor:
    """Σ z² over ``like.numel()`` elements as a float64 0-dim tensor on ``like``'s device (sphere's norm).
    Summed in float64; backends agree to rounding (the summation order is theirs)."""
    _check(law, [key], [1.0])
    which = backend(like)
    if which == "c":
        from zolab.kernels import cpu

        value = cpu.load().zo_sumsq(like.numel(), int(offset), LAWS.index(law), int(key), torch.get_num_threads())
        return torch.tensor(value, dtype=torch.float64)
    if which == "triton":
        from zolab.kernels import triton_kernels

        return triton_kernels.sumsq(key, like, offset, law)
    z = reference.draw(key, like.numel(), offset, law, like.device)
    return z.double().square().sum()


def rows(base_rows: torch.Tensor, row_ids: torch.Tensor, dim: int, key: int, coef,
         law: str = "gaussian") -> torch.Tensor:
    """``base_rows + α·z`` where row j of the result draws elements ``row_ids[j]·dim + (0 … dim − 1)`` of
    a (rows × dim) table: the lookup of a perturbed embedding table without building the table."""
    _check(law, [key], [coef])
    flat = base_rows.reshape(-1, dim)
    out = torch.empty_like(flat, memory_format=torch.contiguous_format)
    if backend(out) == "c" and flat.dtype == torch.float32:
        return _c_rows(out, flat.contiguous(), row_ids, dim, 0, key, coef, law).view(base_rows.shape)
    ct = _ctype(flat)
    z = draw_rows(row_ids, dim, key, 0, law, ct)
    return out.copy_(flat.to(ct) + z * _coef(coef, ct, out.device)).view(base_rows.shape)


def draw_rows(row_ids: torch.Tensor, dim: int, key: int, offset: int = 0, law: str = "gaussian",
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """z at the elements ``offset + row_ids[j]·dim + (0 … dim − 1)``, as a (len(row_ids), dim) tensor of
    ``dtype`` on ``row_ids``' device: a direction's numbers at the rows a lookup reads (float32 draws, widened
    for float64, as the whole tensor's)."""
    _check(law, [key], [1.0])
    ids = row_ids.reshape(-1)
    out = torch.empty(ids.numel(), dim, dtype=dtype, device=ids.device)
    if backend(out) == "c" and dtype == torch.float32:
        return _c_rows(out, None, ids, dim, offset, key, 1.0, law)
    index = ids.to(torch.int64)[:, None] * dim + torch.arange(dim, device=ids.device) + offset
    return out.copy_(reference.draw_at(key, index, law))


def _c_rows(out, base, row_ids, dim, offset, key, coef, law):
    from zolab.kernels import cpu

    ids = row_ids.reshape(-1).to(torch.int64).contiguous()
    rc = cpu.load().zo_rows_f32(out.data_ptr(), None if base is None else base.data_ptr(), ids.data_ptr(),
                                ids.numel(), dim, int(offset), LAWS.index(law), int(key), float(coef),
                                torch.get_num_threads())
    if rc != 0:
        raise RuntimeError(f"zo_rows_f32 failed ({rc})")
    return out


@dataclass(frozen=True)
class Slot:
    """A draw slot of a program: Σ_k coefs[k]·z(keys[k]) at element index ``offset`` + i + the run's offset."""

    law: str  # "gaussian" | "rademacher"
    keys: Sequence[int]
    coefs: Sequence  # floats or 0-dim tensors (device tensors stay on the device)
    offset: int = 0


_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_program_tensors(program, tensors: dict, outputs: dict, ct: torch.dtype, n: int, device,
                           rounding: dict | None = None) -> None:
    """Every tensor a program gets: the right names, ``n`` elements, the compute type (or float16/bfloat16
    storage beside a float32 compute type: widened on load, rounded on store), one device; ``rounding`` names
    half outputs and 64-bit keys. Raises ValueError naming the tensor and what is allowed; nothing reaches a
    kernel before this."""
    missing = [k for k in program.inputs if k not in tensors]
    missing += [k for k, _ in program.stores if k not in outputs]
    if missing:
        raise ValueError(f"program tensors missing: {missing}; it reads {program.inputs} and writes "
                         f"{[k for k, _ in program.stores]}")
    if ct not in (torch.float32, torch.float64):
        raise ValueError(f"compute type {ct}; allowed: torch.float32, torch.float64")
    for role, group in (("input", tensors), ("output", outputs)):
        for name, t in group.items():
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"{role} {name!r} must be a tensor, got {type(t).__name__}")
            half = ct == torch.float32 and t.dtype in reference.HALF
            if not (t.dtype == ct or half) or t.numel() != n or t.device != device:
                also = " (or float16/bfloat16 storage)" if ct == torch.float32 else ""
                raise ValueError(f"{role} {name!r}: {t.dtype}, {t.numel()} elements on {t.device}; allowed: "
                                 f"{ct}{also}, {n} elements, on {device}")
    for name, key in (rounding or {}).items():
        t = outputs.get(name)
        if t is None or t.dtype not in reference.HALF:
            what = "not an output" if t is None else f"a {t.dtype} output"
            raise ValueError(f"stochastic rounding of {name!r}: {what}; allowed: the float16/bfloat16 outputs "
                             f"{[k for k, v in outputs.items() if v.dtype in reference.HALF]}")
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < 2**64:
            raise ValueError(f"stochastic rounding key of {name!r}: {key!r}; allowed: an integer in [0, 2**64)")


def run(program, tensors: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor], scalars: dict,
        slots: dict[str, Slot], ct: torch.dtype, offset: int = 0, rounding: dict[str, int] | None = None) -> None:
    """Execute an element-wise program (``zolab.kernels.program``) over ``n`` elements in one pass.

    ``tensors``: its inputs by name; ``outputs``: where its stores go (an output may be an input: in place);
    ``scalars``: its scalar inputs (floats or 0-dim tensors); ``slots``: its draw slots; ``ct``: the compute type;
    ``offset``: the element index of the first element (a slice draws its part of the whole). All tensors hold
    the same number of elements on one device (checked). A float16/bfloat16 tensor beside a float32 compute type
    is widened on load and rounded on store: to nearest even, or stochastically for the outputs that
    ``rounding`` maps to a key (``reference.round_half``: the bits of element i are keyed by (key, offset + i))."""
    from zolab.kernels import program as prog

    rounding = dict(rounding or {})
    first = next(iter(outputs.values()))
    n, device = first.numel(), first.device
    _check_program_tensors(program, tensors, outputs, ct, n, device, rounding)
    missing = [k for k in program.slots if k not in slots] + [k for k in program.scalar_inputs if k not in scalars]
    if missing:
        raise ValueError(f"program inputs missing: {missing}")
    for name in program.slots:
        slot = slots[name]
        _check(slot.law, slot.keys, slot.coefs)
    values = prog.fold(program, scalars)
    every = [*tensors.values(), *outputs.values()]
    which = backend(first)
    if which == "c" and not all(t.is_contiguous() for t in every):
        which = "torch" if _setting() != "c" else "c-refused"
    if which == "c-refused":
        raise RuntimeError("ZOLAB_KERNELS=c: the C backend needs contiguous tensors")
    if which == "triton" and not all(t.is_contiguous() for t in every):
        which = "torch"
    if which == "c":
        from zolab.kernels import codegen, cpu

        entry = codegen.compiled(program, ct, n)  # None: the VM runs it
        return cpu.run_program(program, tensors, outputs, values, slots, ct, n, offset, entry, rounding)
    if which == "triton":
        from zolab.kernels import triton_kernels

        return triton_kernels.run_program(program, tensors, outputs, values, slots, ct, n, offset, rounding)
    torch_slots = {k: (v.law, v.keys, v.coefs, v.offset) for k, v in slots.items()}
    results = prog.run_torch(program, tensors, values, torch_slots, n, offset, ct, device)
    for name, value in results.items():
        out = outputs[name]
        if name in rounding:
            index = torch.arange(offset, offset + n, dtype=torch.int64, device=device)
            value = reference.round_half(value, out.dtype, rounding[name], index)
        out.copy_(value.view(out.shape))
