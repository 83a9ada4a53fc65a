"""One element-wise program written as C: all its instructions in one loop, compiled once per program and machine.

``zo_cpu.c``'s program VM runs any program, one instruction at a time over a chunk of registers held in memory.
For a run over at least ``MIN_NUMEL`` elements, ``compiled`` writes the program as C instead: per chunk, the draw
slots are drawn as the VM draws them, then one loop computes every instruction of an element in registers. The
operations, their order and their rounding are the VM's (each rounded once in the compute type, no fused
multiply-add, IEEE sqrt), so the bits are the same; the saving is the loads and stores between instructions.
Half-precision tensors are widened into a chunk buffer and rounded back on store by ``zo_core.h``, as in the VM.
The library is compiled with ``toolchain.library`` into the kernel cache, keyed by the generated source, so each
program is compiled once per machine; ``ZOLAB_CODEGEN=0`` keeps the VM everywhere.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch

from zolab.kernels import toolchain

MIN_NUMEL = int(os.environ.get("ZOLAB_CODEGEN_MIN", 1 << 16))  # a smaller run is not worth a compile
ENABLED = os.environ.get("ZOLAB_CODEGEN", "1") != "0"
_EXPR = {
    "neg": "(-{0})", "sqrt": "{sqrt}({0})", "sign": "(({T})(({0} > 0) - ({0} < 0)))",
    "abs": "({0} < 0 ? -{0} : ({0} == 0 ? ({T})0 : {0}))",
    "add": "({0} + {1})", "sub": "({0} - {1})", "mul": "({0} * {1})", "div": "({0} / {1})",
    "max": "({0} != {0} ? {0} : ({1} != {1} ? {1} : ({0} > {1} ? {0} : {1})))",
    "min": "({0} != {0} ? {0} : ({1} != {1} ? {1} : ({0} < {1} ? {0} : {1})))",
    "gt": "(({T})({0} > {1}))", "lt": "(({T})({0} < {1}))", "where": "({0} != 0 ? {1} : {2})",
}
_functions: dict[tuple, object] = {}
_failed = False


def source(program, ct: torch.dtype) -> str:
    """The C of ``program`` for compute type ``ct``: ``zo_generated``, with ``zo_program``'s arguments."""
    T, sfx, sqrt = ("float", "f32", "sqrtf") if ct == torch.float32 else ("double", "f64", "sqrt")
    nin, nslot, nout = len(program.inputs), len(program.slots), len(program.stores)
    used = sorted({a[1] for n in program.nodes for a in n.args if isinstance(a, tuple)})

    def operand(a) -> str:
        return f"S{a[1]}" if isinstance(a, tuple) else f"r{a}"

    lines = []
    for i, node in enumerate(program.nodes):
        if node.op == "input":
            value = f"I{program.inputs.index(node.args[0])}[i]"
        elif node.op == "draw":
            value = f"D{program.slots.index(node.args[0])}[i]"
        else:
            value = _EXPR[node.op].format(*map(operand, node.args), T=T, sqrt=sqrt)
        lines.append(f"        const {T} r{i} = {value};")
    lines += [f"        W{j}[i] = r{index};" for j, (_, index) in enumerate(program.stores)]
    params = ([f"const {T} *restrict I{k}" for k in range(nin)] + [f"const {T} *restrict D{k}" for k in range(nslot)]
              + [f"{T} *restrict W{k}" for k in range(nout)] + [f"const {T} S{k}" for k in used])
    args = ([f"LOAD_CHUNK({T}, c, {k}, buf + {nslot + nout + k} * VM_CHUNK, s, len)" for k in range(nin)]
            + [f"buf + {k} * VM_CHUNK" for k in range(nslot)]
            + [f"buf + {nslot + k} * VM_CHUNK" for k in range(nout)] + [f"S{k}" for k in used])
    header = Path(__file__).with_name("zo_core.h").resolve()
    return "\n".join([
        f'#include "{header}"',
        f"static void chunk(int64_t len, {', '.join(params)}) {{",
        "    for (int64_t i = 0; i < len; i++) {", *lines, "    }", "}",
        "static void body(void *ctx, int64_t a, int64_t b, int tid) {",
        "    (void)tid;",
        "    Prog *c = (Prog *)ctx;",
        f"    {T} *buf = ({T} *)malloc((size_t)({nslot + nout + nin} + 1) * VM_CHUNK * sizeof({T}));",
        "    if (!buf) { c->failed = 1; return; }",
        *[f"    const {T} S{k} = ({T})c->scalars[{k}];" for k in used],
        "    for (int64_t s = a; s < b; s += VM_CHUNK) {",
        "        const int64_t len = b - s < VM_CHUNK ? b - s : VM_CHUNK;",
        *[f"        draw_slot_{sfx}(c, {k}, buf + {k} * VM_CHUNK, s, len);" for k in range(nslot)],
        f"        chunk(len{''.join(', ' + a for a in args)});",
        *[f"        STORE_CHUNK({T}, c, {nin + k}, buf + {nslot + k} * VM_CHUNK, s, len);" for k in range(nout)],
        "    }",
        "    free(buf);",
        "}",
        "int zo_generated(int dtype, int64_t n, uint64_t offset, int nins, const int32_t *ins, int nstore,",
        "                 const int32_t *stores, int nreg, void *const *tensors, const double *scalars,",
        "                 const int32_t *slot_law, const int32_t *slot_nk, const int32_t *slot_start,",
        "                 const uint64_t *slot_offset, const uint64_t *keys, const double *coefs,",
        "                 const int32_t *storage, const uint64_t *round_key, int nthreads) {",
        "    (void)dtype;",
        "    Prog c = {n, offset, nins, ins, nstore, stores, nreg, tensors, scalars, slot_law, slot_nk, slot_start,",
        "              slot_offset, keys, coefs, storage, round_key, 0};",
        "    parallel(body, &c, n, nthreads);",
        "    return c.failed ? -1 : 0;",
        "}",
        "",
    ])


def compiled(program, ct: torch.dtype, n: int, force: bool = False):
    """``zo_generated`` of ``program`` (same arguments and numbers as ``zo_program``), or None: a run of fewer
    than ``MIN_NUMEL`` elements (unless ``force``), ``ZOLAB_CODEGEN=0``, or no compiler (warned once)."""
    global _failed
    if not force and (not ENABLED or n < MIN_NUMEL or _failed):
        return None
    key = (program.key(), ct)
    fn = _functions.get(key)
    if fn is None:
        text = source(program, ct)
        name = "zo_prog_" + hashlib.sha1(text.encode()).hexdigest()[:16]
        try:
            lib = toolchain.library(name, text, ["zo_generated"])
        except (RuntimeError, OSError) as err:
            _failed = True
            warnings.warn(f"zolab: compiling an element-wise program failed; using the program VM ({err})",
                          stacklevel=2)
            return None
        fn = lib.zo_generated  # called with ctypes values (cpu.run_program): no argtypes needed
        fn._lib = lib  # keep the library loaded with the function
        _functions[key] = fn
    return fn
