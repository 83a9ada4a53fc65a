"""Element-wise programs: a rule's update written once in Python, traced, and run by every backend.

A rule writes its maths as a function of element-wise values (``e.g``, ``e.theta``, its state ``e.m``, its
noise ``e.noise(i)``) and scalars (``h.lr``, ``h.beta1``, ...) with Python operators and the functions of
``zolab.engine.ops`` (``sqrt``, ``sign``, ``maximum``, ``minimum``, ``where``). Called on torch tensors and floats it
*is* the plain-torch update; called on this module's symbols it records a ``Program``: a few element-wise
instructions over named tensors, named scalars and random-draw slots. ``zolab.kernels.run`` executes a program
in one pass over memory with the C library (CPU) or a Triton kernel generated from it (CUDA), drawing the random
directions on the fly, or with torch ops (``run_torch``, any device and dtype); the three give the same bits.

Rounding, as the eager call rounds: every element-wise operation is rounded once in the compute type (float64
for float64 parameters, float32 otherwise); a sub-expression of scalars only is folded on the host in float64
(Python floats, or float64 0-dim tensors that stay on their device), then cast to the compute type, as Python
folds ``(1 - beta1)`` before torch multiplies. ``sqrt`` is correctly rounded everywhere. No fused multiply-add.

A draw slot is Σ_k c_k z_k(i + offset) over K counter-based draws (``zolab.kernels.reference``), accumulated
as ``acc = c_1 z_1; acc = acc + c_k z_k``: the numbers of ``kernels.axpz`` without a base.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from zolab.kernels import reference

UNARY = ("neg", "sqrt", "sign", "abs")
BINARY = ("add", "sub", "mul", "div", "max", "min", "gt", "lt")
SCALAR_OPS = ("add", "sub", "mul", "div", "neg", "sqrt", "pow")


@dataclass(frozen=True)
class Node:
    """One instruction: ``op`` on operands (element node indices, or ``("s", i)`` for scalar node i)."""

    op: str
    args: tuple = ()


@dataclass
class Program:
    """A traced element-wise function. ``scalars``: host-folded scalar nodes; ``nodes``: element nodes;
    ``stores``: (output name, element node) in order; ``inputs``/``slots``/``scalar_inputs``: the names it reads."""

    scalars: list[Node] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    stores: list[tuple[str, int]] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    slots: list[str] = field(default_factory=list)
    scalar_inputs: list[str] = field(default_factory=list)

    def key(self) -> tuple:
        """A hashable description (kernel caches)."""
        return (tuple(self.scalars), tuple(self.nodes), tuple(self.stores))

    def __repr__(self) -> str:
        lines = [f"s{i} = {n.op} {n.args}" for i, n in enumerate(self.scalars)]
        lines += [f"r{i} = {n.op} {n.args}" for i, n in enumerate(self.nodes)]
        lines += [f"{name} <- r{i}" for name, i in self.stores]
        return "Program(\n  " + "\n  ".join(lines) + "\n)"


# ---------------------------------------------------------------------------------------------- tracing
class Tracer:
    """Records a program; hands out symbols for inputs, draw slots and scalars (each name once)."""

    def __init__(self):
        self.program = Program()
        self._inputs: dict[str, Elem] = {}
        self._slots: dict[str, Elem] = {}
        self._scalars: dict[str, Scalar] = {}
        self._consts: dict[float, Scalar] = {}

    def input(self, name: str) -> Elem:
        if name not in self._inputs:
            self.program.inputs.append(name)
            self._inputs[name] = self._elem(Node("input", (name,)))
        return self._inputs[name]

    def slot(self, name: str) -> Elem:
        if name not in self._slots:
            self.program.slots.append(name)
            self._slots[name] = self._elem(Node("draw", (name,)))
        return self._slots[name]

    def scalar(self, name: str) -> Scalar:
        if name not in self._scalars:
            self.program.scalar_inputs.append(name)
            self._scalars[name] = self._scalar(Node("input", (name,)))
        return self._scalars[name]

    def const(self, value: float) -> Scalar:
        value = float(value)
        key = (value, math.copysign(1.0, value))  # +0.0 and -0.0 are different constants
        if key not in self._consts:
            self._consts[key] = self._scalar(Node("const", (value,)))
        return self._consts[key]

    def store(self, name: str, value) -> None:
        if not isinstance(value, Elem):
            raise TypeError(f"output {name!r} must be an element-wise value, got {type(value).__name__}")
        self.program.stores.append((name, value.index))

    def lift(self, x):
        if isinstance(x, Elem | Scalar):
            return x
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise TypeError(f"element-wise programs take numbers and zolab.engine.ops values, got {type(x).__name__}")
        return self.const(x)

    def _elem(self, node: Node) -> Elem:
        self.program.nodes.append(node)
        return Elem(self, len(self.program.nodes) - 1)

    def _scalar(self, node: Node) -> Scalar:
        self.program.scalars.append(node)
        return Scalar(self, len(self.program.scalars) - 1)

    def apply(self, op: str, *operands):
        vals = [self.lift(x) for x in operands]
        if all(isinstance(v, Scalar) for v in vals):
            if op not in SCALAR_OPS:
                raise TypeError(f"{op} of scalars only: compute it on the host")
            return self._scalar(Node(op, tuple(v.index for v in vals)))
        args = tuple(v.index if isinstance(v, Elem) else ("s", v.index) for v in vals)
        return self._elem(Node(op, args))


class _Symbol:
    __slots__ = ("tracer", "index")

    def __init__(self, tracer: Tracer, index: int):
        self.tracer, self.index = tracer, index

    def __add__(self, o):
        return self.tracer.apply("add", self, o)

    def __radd__(self, o):
        return self.tracer.apply("add", o, self)

    def __sub__(self, o):
        return self.tracer.apply("sub", self, o)

    def __rsub__(self, o):
        return self.tracer.apply("sub", o, self)

    def __mul__(self, o):
        return self.tracer.apply("mul", self, o)

    def __rmul__(self, o):
        return self.tracer.apply("mul", o, self)

    def __truediv__(self, o):
        return self.tracer.apply("div", self, o)

    def __rtruediv__(self, o):
        return self.tracer.apply("div", o, self)

    def __neg__(self):
        return self.tracer.apply("neg", self)

    def __bool__(self):
        raise TypeError("a traced value has no truth value: use zolab.engine.ops.where, or branch on a rule option")


class Elem(_Symbol):
    """An element-wise value while tracing."""

    def __gt__(self, o):
        return self.tracer.apply("gt", self, o)

    def __lt__(self, o):
        return self.tracer.apply("lt", self, o)


class Scalar(_Symbol):
    """A scalar while tracing (folded on the host when the program runs)."""

    def __pow__(self, o):
        return self.tracer.apply("pow", self, o)

    def __rpow__(self, o):
        return self.tracer.apply("pow", o, self)


# ---------------------------------------------------------------------------------------------- ops
def _traced(*xs) -> Tracer | None:
    return next((x.tracer for x in xs if isinstance(x, _Symbol)), None)


def sqrt(x):
    """Correctly rounded square root (the same bits on every backend)."""
    tr = _traced(x)
    if tr is not None:
        return tr.apply("sqrt", x)
    if isinstance(x, torch.Tensor):
        return reference.sqrt_rn(x) if x.dim() else x.sqrt()
    return math.sqrt(x)


def sign(x):
    """-1, 0 or 1 (torch's ``sign``: 0 for ±0 and NaN)."""
    tr = _traced(x)
    return tr.apply("sign", x) if tr is not None else torch.sign(x)


def abs(x):  # noqa: A001 - the element-wise vocabulary mirrors torch's names
    tr = _traced(x)
    return tr.apply("abs", x) if tr is not None else torch.abs(x)


def maximum(a, b):
    """Element-wise max; NaN propagates (torch's ``maximum``)."""
    tr = _traced(a, b)
    return tr.apply("max", a, b) if tr is not None else torch.maximum(*_tensors(a, b))


def minimum(a, b):
    tr = _traced(a, b)
    return tr.apply("min", a, b) if tr is not None else torch.minimum(*_tensors(a, b))


def where(cond, a, b):
    """``a`` where ``cond`` is nonzero, else ``b``; ``cond`` an element value (``x > y``) or a scalar flag."""
    tr = _traced(cond, a, b)
    if tr is not None:
        c = tr.lift(cond)
        args = [tr.lift(x) for x in (a, b)]
        if isinstance(c, Scalar) and all(isinstance(v, Scalar) for v in args):
            raise TypeError("where of scalars only: compute it on the host")
        ops = tuple(v.index if isinstance(v, Elem) else ("s", v.index) for v in (c, *args))
        return tr._elem(Node("where", ops))
    if not isinstance(cond, torch.Tensor):
        return a if cond else b
    a, b = _tensors(a, b)
    return torch.where(cond != 0, a, b)


def _tensors(a, b):
    like = a if isinstance(a, torch.Tensor) else b
    return [x if isinstance(x, torch.Tensor) else torch.tensor(x, dtype=like.dtype, device=like.device)
            for x in (a, b)]


# ---------------------------------------------------------------------------------------------- scalars
def fold(program: Program, values: dict) -> list:
    """The program's scalar nodes evaluated in float64: Python floats, or 0-dim float64 tensors where an input
    is a tensor (they stay on their device: no host synchronisation)."""
    out: list = []
    for node in program.scalars:
        a = [out[i] for i in node.args] if node.op not in ("input", "const") else []
        if node.op == "input":
            v = values[node.args[0]]
            v = v.detach().to(torch.float64) if isinstance(v, torch.Tensor) else float(v)
        elif node.op == "const":
            v = node.args[0]
        elif node.op == "neg":
            v = -a[0]
        elif node.op == "sqrt":
            v = a[0].sqrt() if isinstance(a[0], torch.Tensor) else math.sqrt(a[0])
        elif node.op == "pow":
            v = a[0] ** a[1]
        else:
            v = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
                 "div": lambda x, y: x / y}[node.op](*a)
        out.append(v)
    return out


# ---------------------------------------------------------------------------------------------- torch
def run_torch(program: Program, tensors: dict[str, torch.Tensor], scalars: list, slots: dict, n: int,
              offset: int, ct: torch.dtype, device) -> dict[str, torch.Tensor]:
    """Execute with torch ops on flat views: ``tensors`` maps input names to tensors of ``n`` elements;
    ``scalars`` are ``fold``'s values; ``slots`` maps a slot name to (law, keys, coefs, base offset). Returns
    the stored values by output name, in the compute type (the caller writes them out)."""

    def s(i):
        v = scalars[i]
        return (v.to(device=device, dtype=ct) if isinstance(v, torch.Tensor)
                else torch.tensor(v, dtype=ct, device=device))

    regs: list[torch.Tensor] = []

    def arg(a):
        return s(a[1]) if isinstance(a, tuple) else regs[a]

    for node in program.nodes:
        if node.op == "input":
            v = tensors[node.args[0]].reshape(-1).to(ct)
        elif node.op == "draw":
            law, keys, coefs, base = slots[node.args[0]]
            v = None
            for key, c in zip(keys, coefs):
                z = reference.draw(key, n, base + offset, law, device).to(ct)
                term = (c.to(device=device, dtype=ct) if isinstance(c, torch.Tensor)
                        else torch.tensor(float(c), dtype=ct, device=device)) * z
                v = term if v is None else v + term
        else:
            a = [arg(x) for x in node.args]
            if node.op == "neg":
                v = -a[0]
            elif node.op == "sqrt":
                v = reference.sqrt_rn(a[0])
            elif node.op == "sign":
                v = torch.sign(a[0])
            elif node.op == "abs":
                v = torch.abs(a[0])
            elif node.op == "where":
                v = torch.where(a[0] != 0, a[1], a[2])
            elif node.op in ("gt", "lt"):
                v = (a[0] > a[1] if node.op == "gt" else a[0] < a[1]).to(ct)
            else:
                v = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
                     "max": torch.maximum, "min": torch.minimum}[node.op](a[0], a[1])
            if v.dim() == 0:
                v = v.expand(n)
        regs.append(v)
    return {name: regs[i] for name, i in program.stores}


# ---------------------------------------------------------------------------------------------- registers
def allocate(program: Program) -> tuple[list[int], int]:
    """A register per element node, reused once its last reader has run (linear scan); returns the
    assignment and the register count. Stored nodes live to the end (stores run after every node)."""
    last = list(range(len(program.nodes)))
    for i, node in enumerate(program.nodes):
        for a in node.args:
            if isinstance(a, int) and node.op not in ("input", "draw"):
                last[a] = max(last[a], i)
    for _, i in program.stores:
        last[i] = len(program.nodes)
    free: list[int] = []
    reg, count = [0] * len(program.nodes), 0
    for i, node in enumerate(program.nodes):
        if node.op not in ("input", "draw"):
            for a in set(x for x in node.args if isinstance(x, int)):
                if last[a] == i:
                    free.append(reg[a])
        if free:
            reg[i] = free.pop()
        else:
            reg[i], count = count, count + 1
    return reg, count
