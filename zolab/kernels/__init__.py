"""Fused passes over a tensor that draw the counter-based direction z and use it without storing it.

Three backends give the same numbers (``reference.py`` is the specification):

- ``c``: a small C library (``zo_cpu.c``) for contiguous float32/float64 CPU tensors, multi-threaded;
- ``triton``: a Triton kernel for CUDA tensors (and CPU tensors under ``TRITON_INTERPRET=1``, for tests);
- ``torch``: plain torch ops, any device and dtype (float16/bfloat16 are computed in float32).

The backend is chosen per tensor; ``ZOLAB_KERNELS=torch|c|triton`` (or ``use_backend``) forces one.
Every function takes the direction keys (63-bit integers from ``zolab.directions.mix``) and the element
offset of the tensor's first element, so a slice of a tensor draws exactly the slice of the whole.

Arithmetic: the compute type is float64 for float64 tensors and float32 otherwise;
``axpz`` computes ``acc = base; acc = acc + α_k·z_k`` for k = 1 … K, each operation rounded once.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from contextlib import contextmanager

import torch

from zolab.kernels import reference
from zolab.kernels.reference import KINDS

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


def _check(kind: str, keys: Sequence[int], alphas: Sequence) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; allowed: {list(KINDS)}")
    if not keys or len(keys) != len(alphas):
        raise ValueError(f"need at least one key and one alpha per key, got {len(keys)} keys, {len(alphas)} alphas")


def _ctype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _alpha(a, ct: torch.dtype, device) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().to(device=device, dtype=ct)
    return torch.tensor(float(a), dtype=ct, device=device)


def axpz(out: torch.Tensor, keys: Sequence[int], alphas: Sequence, base: torch.Tensor | None = None,
         offset: int = 0, kind: str = "gaussian") -> torch.Tensor:
    """``out = base + Σ_k alphas[k]·z(keys[k])`` (``Σ_k …`` without base), in one pass; returns ``out``.

    ``base`` may be ``out`` (in place). ``alphas`` are floats or 0-dim tensors (device tensors stay on
    the device: no host synchronisation on CUDA). z is drawn for elements offset … offset + numel − 1."""
    _check(kind, keys, alphas)
    if len(keys) > MAXK:  # the kernels take up to MAXK draws a pass; more continue in place
        axpz(out, keys[:MAXK], alphas[:MAXK], base, offset, kind)
        return axpz(out, keys[MAXK:], alphas[MAXK:], out, offset, kind)
    if base is not None and (base.shape != out.shape or base.dtype != out.dtype):
        raise ValueError(f"base {tuple(base.shape)} {base.dtype} must match out {tuple(out.shape)} {out.dtype}")
    which = backend(out)
    if which == "c" and (base is None or base.is_contiguous()):
        from zolab.kernels import cpu

        lib = cpu.load()
        n = out.numel()
        rc = lib.zo_axpz(out.data_ptr(), base.data_ptr() if base is not None else None, n, int(offset),
                         _C_DTYPES[out.dtype], KINDS.index(kind), len(keys), _u64(keys), _f64(alphas),
                         torch.get_num_threads())
        if rc != 0:
            raise RuntimeError(f"zo_axpz failed ({rc})")
        return out
    if which == "triton":
        from zolab.kernels import triton_kernels

        return triton_kernels.axpz(out, keys, alphas, base, offset, kind)
    ct = _ctype(out)
    acc = None if base is None else base.to(ct)
    for key, a in zip(keys, alphas):
        z = reference.draw(key, out.numel(), offset, kind, out.device).view(out.shape).to(ct)
        term = z * _alpha(a, ct, out.device)
        acc = term if acc is None else acc + term
    return out.copy_(acc)


def fill(out: torch.Tensor, key: int, offset: int = 0, kind: str = "gaussian") -> torch.Tensor:
    """z itself (α = 1 is exact) into ``out``."""
    return axpz(out, [key], [1.0], None, offset, kind)


def fill_rows(out: torch.Tensor, keys: Sequence[int], offset: int = 0, kind: str = "gaussian") -> torch.Tensor:
    """Row k of the (K, n) tensor ``out`` = z(keys[k]) for elements offset … offset + n − 1, in one call."""
    _check(kind, keys, [1.0] * len(keys))
    if out.dim() != 2 or out.shape[0] != len(keys):
        raise ValueError(f"out must be (K, n) with K = {len(keys)} keys, got {tuple(out.shape)}")
    if backend(out) == "c":
        from zolab.kernels import cpu

        rc = cpu.load().zo_fill_rows(out.data_ptr(), out.shape[1], int(offset), _C_DTYPES[out.dtype],
                                     KINDS.index(kind), len(keys), _u64(keys), torch.get_num_threads())
        if rc != 0:
            raise RuntimeError(f"zo_fill_rows failed ({rc})")
        return out
    for k, key in enumerate(keys):
        fill(out[k], key, offset, kind)
    return out


def sumsq(key: int, like: torch.Tensor, offset: int = 0, kind: str = "gaussian") -> torch.Tensor:
    """Σ z² over ``like.numel()`` elements as a float64 0-dim tensor on ``like``'s device (sphere's norm).
    Summed in float64; backends agree to rounding (the summation order is theirs)."""
    _check(kind, [key], [1.0])
    which = backend(like)
    if which == "c":
        from zolab.kernels import cpu

        value = cpu.load().zo_sumsq(like.numel(), int(offset), KINDS.index(kind), int(key), torch.get_num_threads())
        return torch.tensor(value, dtype=torch.float64)
    if which == "triton":
        from zolab.kernels import triton_kernels

        return triton_kernels.sumsq(key, like, offset, kind)
    z = reference.draw(key, like.numel(), offset, kind, like.device)
    return z.double().square().sum()


def rows(base_rows: torch.Tensor, row_ids: torch.Tensor, dim: int, key: int, alpha,
         kind: str = "gaussian") -> torch.Tensor:
    """``base_rows + α·z`` where row j of the result draws elements ``row_ids[j]·dim + (0 … dim − 1)`` of
    a (rows × dim) table: the lookup of a perturbed embedding table without building the table."""
    _check(kind, [key], [alpha])
    flat = base_rows.reshape(-1, dim)
    ids = row_ids.reshape(-1)
    out = torch.empty_like(flat, memory_format=torch.contiguous_format)
    if backend(out) == "c" and flat.dtype == torch.float32:
        from zolab.kernels import cpu

        flat, ids = flat.contiguous(), ids.to(torch.int64).contiguous()
        cpu.load().zo_rows_f32(out.data_ptr(), flat.data_ptr(), ids.data_ptr(), ids.numel(), dim,
                               KINDS.index(kind), int(key), float(alpha), torch.get_num_threads())
        return out.view(base_rows.shape)
    ct = _ctype(flat)
    index = ids.to(torch.int64)[:, None] * dim + torch.arange(dim, device=ids.device)
    z = reference.draw_at(key, index, kind).to(ct)
    return out.copy_(flat.to(ct) + z * _alpha(alpha, ct, out.device)).view(base_rows.shape)


MOMENT_MODES = {"radazo": 1, "adamm": 2, "rmsprop": 3}


def moments(param: torch.Tensor, m: torch.Tensor | None, v: torch.Tensor, keys: Sequence[int], alphas: Sequence,
            mode: str, beta1: float, beta2: float, eps: float, eps_inside_sqrt: bool, v_fill: bool, lr: float,
            decay: float = 1.0, offset: int = 0, kind: str = "gaussian", g: torch.Tensor | None = None) -> None:
    """An adaptive rule's whole update in one pass over θ, m and v, with g = Σ_k α_k z_k rebuilt on the fly:

    - ``radazo``:  m = β1 m + (1−β1) g;  v = β2 v + (1−β2)(m·m) (v = 1 when ``v_fill``);  u = m
    - ``adamm``:   m = β1 m + (1−β1) g;  v = β2 v + (1−β2)(g·g);  u = m
    - ``rmsprop``: v = β2 v + (1−β2)(g·g);  u = g   (``m`` unused)

    then d = sqrt(v + ε) or sqrt(v) + ε, θ = θ·decay (when decay ≠ 1), θ = θ − lr·(u/d). m and v are in
    the compute type (float32 for half-precision θ, which is rounded once at the end). ``g`` (a contiguous
    compute-type tensor shaped like θ) replaces the draws when the directions were drawn once already."""
    if g is None:
        _check(kind, keys, alphas)
    if mode not in MOMENT_MODES:
        raise ValueError(f"unknown mode {mode!r}; allowed: {list(MOMENT_MODES)}")
    if len(keys) > MAXK:
        raise ValueError(f"at most {MAXK} directions per fused update, got {len(keys)}")
    ct = _ctype(param)
    states = [v] if m is None else [m, v]
    if any(s.dtype != ct or s.shape != param.shape for s in states):
        raise ValueError(f"m and v must be {ct} tensors shaped like the parameter {tuple(param.shape)}")
    if g is not None and (g.dtype != ct or g.shape != param.shape or g.device != param.device):
        raise ValueError(f"g must be a {ct} tensor shaped like the parameter {tuple(param.shape)} on {param.device}, "
                         f"got {g.dtype} {tuple(g.shape)} on {g.device}")
    if any(s.device != param.device for s in states):
        raise ValueError(f"m and v must be on the parameter's device {param.device}")
    c1, c2 = 1.0 - beta1, 1.0 - beta2
    which = backend(param)
    if g is not None and which == "c" and all(s.is_contiguous() for s in states) and g.is_contiguous():
        from zolab.kernels import cpu

        rc = cpu.load().zo_moments_g(
            param.data_ptr(), m.data_ptr() if m is not None else None, v.data_ptr(), g.data_ptr(), param.numel(),
            _C_DTYPES[param.dtype], MOMENT_MODES[mode], beta1, c1, beta2, c2, eps, int(eps_inside_sqrt),
            int(v_fill), float(lr), float(decay), torch.get_num_threads())
        if rc != 0:
            raise RuntimeError(f"zo_moments_g failed ({rc})")
        return
    if g is None and which == "c" and all(s.is_contiguous() for s in states):
        from zolab.kernels import cpu

        rc = cpu.load().zo_moments(
            param.data_ptr(), m.data_ptr() if m is not None else None, v.data_ptr(), param.numel(), int(offset),
            _C_DTYPES[param.dtype], KINDS.index(kind), len(keys), _u64(keys), _f64(alphas),
            MOMENT_MODES[mode], beta1, c1, beta2, c2, eps, int(eps_inside_sqrt), int(v_fill), float(lr),
            float(decay), torch.get_num_threads())
        if rc != 0:
            raise RuntimeError(f"zo_moments failed ({rc})")
        return
    if g is None and which == "triton" and all(s.is_contiguous() for s in states):
        from zolab.kernels import triton_kernels

        return triton_kernels.moments(param, m, v, keys, alphas, MOMENT_MODES[mode], beta1, c1, beta2, c2, eps,
                                      eps_inside_sqrt, v_fill, lr, decay, offset, kind)
    dev = param.device

    def t(x):
        return _alpha(x, ct, dev)

    if g is not None:
        g = g.view(param.shape).to(ct)
    for key, a in zip(keys if g is None else [], alphas):
        term = t(a) * reference.draw(key, param.numel(), offset, kind, dev).view(param.shape).to(ct)
        g = term if g is None else g + term
    if mode == "rmsprop":
        u = g
        new_v = t(beta2) * v + t(c2) * (g * g)
    else:
        new_m = t(beta1) * m + t(c1) * g
        m.copy_(new_m)
        u = new_m
        x = new_m if mode == "radazo" else g
        new_v = torch.ones_like(v) if v_fill else t(beta2) * v + t(c2) * (x * x)
    v.copy_(new_v)
    den = reference.sqrt_rn(new_v + t(eps)) if eps_inside_sqrt else reference.sqrt_rn(new_v) + t(eps)
    theta = param.detach().to(ct)
    if decay != 1.0:
        theta = theta * t(decay)
    param.data.copy_(theta - t(lr) * (u / den))
