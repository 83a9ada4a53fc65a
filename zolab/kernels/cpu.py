"""The C library ``zo_cpu.c`` through ctypes: its functions' signatures, and the program VM's call.

``toolchain.library`` builds it on first use with the system C compiler into the kernel cache (verified before it
is loaded), so a fresh machine needs only a C compiler (OpenMP used when it has it): no torch headers, no ninja.
Without one, ``load()`` returns None and zolab uses the torch implementation (same numbers, slower), saying so once.
"""

from __future__ import annotations

import ctypes
import warnings
from pathlib import Path

from zolab.kernels import toolchain
from zolab.kernels.reference import LAWS

SOURCE = Path(__file__).with_name("zo_cpu.c")
_c_i64, _c_u64, _c_int, _c_dbl, _c_p = ctypes.c_int64, ctypes.c_uint64, ctypes.c_int, ctypes.c_double, ctypes.c_void_p
SIGNATURES = {  # name: (argument types, result type)
    "zo_axpz": ([_c_p, _c_p, _c_i64, _c_u64, _c_int, _c_int, _c_int, _c_p, _c_p, _c_int], _c_int),
    "zo_sumsq": ([_c_i64, _c_u64, _c_int, _c_u64, _c_int], _c_dbl),
    "zo_rows_f32": ([_c_p, _c_p, _c_p, _c_i64, _c_i64, _c_u64, _c_int, _c_u64, _c_dbl, _c_int], _c_int),
    "zo_program": ([_c_int, _c_i64, _c_u64, _c_int, _c_p, _c_int, _c_p, _c_int, *[_c_p] * 10, _c_int], _c_int),
    "zo_fill_rows": ([_c_p, _c_i64, _c_u64, _c_int, _c_int, _c_int, _c_p, _c_int], _c_int),
}

_lib = None
_tried = False


def load():
    """The ctypes library, or None (with one warning) when it cannot be built."""
    global _lib, _tried
    if _tried:
        return _lib
    _tried = True
    try:
        lib = toolchain.library("zo_cpu", SOURCE, list(SIGNATURES))
    except (RuntimeError, OSError) as err:
        warnings.warn(f"zolab: CPU kernels unavailable, using the torch implementation ({err})", stacklevel=2)
        return None
    for name, (argtypes, restype) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, restype
    _lib = lib
    return lib


_OPS = ("input", "draw", "neg", "sqrt", "sign", "abs", "add", "sub", "mul", "div", "max", "min", "gt", "lt", "where")


def _encode(program):
    """(instructions, stores, register count, tensor order) of a program for ``zo_program``; cached on it."""
    cached = getattr(program, "_c_encoding", None)
    if cached is not None and cached[0] == program.key():
        return cached[1]
    from zolab.kernels.program import allocate

    reg, nreg = allocate(program)
    inputs, outputs = list(program.inputs), [k for k, _ in program.stores]
    ins = []
    for i, node in enumerate(program.nodes):
        ops, kinds = [-1, -1, -1], 0
        if node.op == "input":
            ops[0] = inputs.index(node.args[0])
        elif node.op == "draw":
            ops[0] = program.slots.index(node.args[0])
        else:
            for j, a in enumerate(node.args):
                if isinstance(a, tuple):
                    ops[j], kinds = a[1], kinds | (1 << j)
                else:
                    ops[j] = reg[a]
        ins += [_OPS.index(node.op), reg[i], *ops, kinds]
    stores = [x for j, (_, i) in enumerate(program.stores) for x in (len(inputs) + j, reg[i])]
    encoded = ((ctypes.c_int32 * len(ins))(*ins), (ctypes.c_int32 * len(stores))(*stores), nreg, (inputs, outputs))
    program._c_encoding = (program.key(), encoded)
    return encoded


def storage(t, stochastic: bool) -> int:
    """A tensor's storage code in ``zo_core.h`` (ST_*): the compute type, or bfloat16/float16 rounded to nearest
    or stochastically."""
    import torch

    half = {torch.bfloat16: 1, torch.float16: 3}.get(t.dtype)
    return 0 if half is None else half + int(stochastic)


def run_program(program, tensors, outputs, scalars, slots, ct, n, offset, entry=None, rounding=None) -> None:
    """``kernels.run`` on the C library (checked tensors: contiguous, the compute type or half beside float32,
    CPU): ``entry`` is the program compiled as C (``codegen.compiled``, same arguments as ``zo_program``), else
    the VM runs it; ``rounding``: output name -> key of its stochastic rounding."""
    import torch

    rounding = rounding or {}
    ins, stores, nreg, (inputs, outs) = _encode(program)
    order = [tensors[k] for k in inputs] + [outputs[k] for k in outs]
    names = [None] * len(inputs) + outs
    codes = [storage(t, name in rounding) for t, name in zip(order, names)]
    round_keys = [int(rounding.get(name, 0)) if name else 0 for name in names]
    ptrs = (ctypes.c_void_p * len(order))(*[t.data_ptr() for t in order])
    sc = (ctypes.c_double * max(1, len(scalars)))(*[float(v) for v in scalars])
    law, nk, start, base, keys, coefs = [], [], [], [], [], []
    for name in program.slots:
        slot = slots[name]
        law.append(LAWS.index(slot.law))
        nk.append(len(slot.keys))
        start.append(len(keys))
        base.append(int(slot.offset))
        keys += [int(k) for k in slot.keys]
        coefs += [float(c) for c in slot.coefs]
    i32, u64, f64 = ctypes.c_int32, ctypes.c_uint64, ctypes.c_double
    fn = entry or load().zo_program
    # Scalars as ctypes values: a generated entry has no argtypes (a plain int would go as a C int).
    rc = fn(
        _c_int(0 if ct == torch.float32 else 1), _c_i64(n), _c_u64(int(offset)), _c_int(len(program.nodes)), ins,
        _c_int(len(program.stores)), stores, _c_int(nreg), ptrs, sc, (i32 * max(1, len(law)))(*law),
        (i32 * max(1, len(nk)))(*nk), (i32 * max(1, len(start)))(*start), (u64 * max(1, len(base)))(*base),
        (u64 * max(1, len(keys)))(*keys), (f64 * max(1, len(coefs)))(*coefs), (i32 * len(codes))(*codes),
        (u64 * len(round_keys))(*round_keys), _c_int(torch.get_num_threads()))
    if rc != 0:
        raise RuntimeError(f"zolab's C program kernel failed ({rc}): out of memory, or an unknown instruction")
