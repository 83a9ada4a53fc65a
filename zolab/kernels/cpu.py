"""Builds and loads ``zo_cpu.c`` (a plain C shared library, called through ctypes).

The library is compiled on first use with the system C compiler (``$CC``, else ``cc``) into
``$ZOLAB_CACHE`` (default ``~/.cache/zolab``), keyed by the source, the flags and the CPU, so a fresh
machine needs only a C compiler (OpenMP used when it has it): no torch headers, no ninja. Without one,
``load()`` returns None and zolab uses the torch implementation (same numbers, slower), saying so once.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

SOURCE = Path(__file__).with_name("zo_cpu.c")
HEADER = SOURCE.with_name("zo_core.h")  # the draw core, shared with codegen.py's programs
# -ffp-contract=off: no fused multiply-add, so every product is rounded as the reference rounds it.
FLAGS = ["-O3", "-std=c11", "-fPIC", "-shared", "-ffp-contract=off", "-fno-math-errno", "-pthread"]
NATIVE = ["-march=native"]
# OpenMP: libgomp.so.1 is the library torch's CPU wheels load, so the kernels share torch's thread team.
OPENMP = ["-fopenmp"]

_lib = None
_tried = False


def _cpu_tag() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return hashlib.sha1(line.encode()).hexdigest()[:8]
    except OSError:
        pass
    return platform.processor() or "cpu"


def _compiler() -> str | None:
    cc = os.environ.get("CC") or "cc"
    return shutil.which(cc)


def build(verbose: bool = False, source: Path = SOURCE, name: str = "zo_cpu") -> Path:
    """Compile ``source`` into a shared library (or find it in the cache) and return its path; raises if no
    compiler works. The cache key covers the source, the draw core it includes, the flags and the CPU."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set $CC or install cc/gcc)")
    src = source.read_bytes() + HEADER.read_bytes()
    recipe = " ".join(FLAGS + NATIVE + OPENMP) + cc + _cpu_tag()
    tag = hashlib.sha1(src + recipe.encode()).hexdigest()[:16]
    target = cache_dir() / f"{name}_{tag}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        for flags in (FLAGS + NATIVE + OPENMP, FLAGS + NATIVE, FLAGS):  # fall back without what a compiler lacks
            cmd = [cc, *flags, str(source), "-o", str(out), "-lm"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode == 0:
                break
        else:
            raise RuntimeError(f"compiling {source.name} failed:\n{' '.join(cmd)}\n{proc.stderr[-2000:]}")
        if verbose:
            print(" ".join(cmd))
        os.replace(out, target)  # atomic: parallel processes never load a half-written file
    return target


def cache_dir() -> Path:
    return Path(os.environ.get("ZOLAB_CACHE", Path.home() / ".cache" / "zolab"))


def load():
    """The ctypes library, or None (with one warning) when it cannot be built."""
    global _lib, _tried
    if _tried:
        return _lib
    _tried = True
    try:
        lib = ctypes.CDLL(str(build()))
    except (RuntimeError, OSError) as err:
        warnings.warn(f"zolab: CPU kernels unavailable, using the torch implementation ({err})", stacklevel=2)
        return None
    c_i64, c_u64, c_int, c_dbl, c_p = ctypes.c_int64, ctypes.c_uint64, ctypes.c_int, ctypes.c_double, ctypes.c_void_p
    lib.zo_axpz.argtypes = [c_p, c_p, c_i64, c_u64, c_int, c_int, c_int, c_p, c_p, c_int]
    lib.zo_axpz.restype = c_int
    lib.zo_sumsq.argtypes = [c_i64, c_u64, c_int, c_u64, c_int]
    lib.zo_sumsq.restype = c_dbl
    lib.zo_rows_f32.argtypes = [c_p, c_p, c_p, c_i64, c_i64, c_int, c_u64, c_dbl, c_int]
    lib.zo_rows_f32.restype = c_int
    lib.zo_program.argtypes = [c_int, c_i64, c_u64, c_int, c_p, c_int, c_p, c_int, c_p, c_p, c_p, c_p, c_p, c_p, c_p,
                               c_p, c_int]
    lib.zo_program.restype = c_int
    lib.zo_fill_rows.argtypes = [c_p, c_i64, c_u64, c_int, c_int, c_int, c_p, c_int]
    lib.zo_fill_rows.restype = c_int
    _lib = lib
    return lib


from zolab.kernels.reference import LAWS  # noqa: E402

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


def run_program(program, tensors, outputs, scalars, slots, ct, n, offset) -> None:
    """``kernels.run`` on the C library (checked tensors: contiguous, compute type, CPU)."""
    import torch

    ins, stores, nreg, (inputs, outs) = _encode(program)
    order = [tensors[k] for k in inputs] + [outputs[k] for k in outs]
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
    from zolab.kernels import codegen

    fn = codegen.compiled(program, ct, n) or load().zo_program
    rc = fn(
        0 if ct == torch.float32 else 1, n, int(offset), len(program.nodes), ins, len(program.stores), stores,
        nreg, ptrs, sc, (i32 * max(1, len(law)))(*law), (i32 * max(1, len(nk)))(*nk),
        (i32 * max(1, len(start)))(*start), (u64 * max(1, len(base)))(*base), (u64 * max(1, len(keys)))(*keys),
        (f64 * max(1, len(coefs)))(*coefs), torch.get_num_threads())
    if rc != 0:
        raise RuntimeError(f"zolab's C program kernel failed ({rc}): out of memory, or an unknown instruction")
