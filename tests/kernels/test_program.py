"""Element-wise programs (zolab/kernels/program.py): tracing, and the same bits from C, Triton and torch."""

import pytest
import torch

from zolab import kernels
from zolab.engine.ops import Eager, Traced, abs, maximum, minimum, sign, sqrt, where
from zolab.kernels import program as P

BACKENDS = ["c", "torch"]


def every_op_program() -> P.Program:
    """Every instruction, scalars folded from inputs and constants, two draw slots, three outputs."""
    tr = P.Tracer()
    g, z = tr.slot("g"), tr.slot("z")
    m, v, th = tr.input("m"), tr.input("v"), tr.input("theta")
    b1, b2, lr, flag = (tr.scalar(k) for k in ("beta1", "beta2", "lr", "flag"))
    m2 = b1 * m + (1 - b1) * g
    v2 = where(flag, 1.0, b2 * v + (1 - b2) * (m2 * m2))
    step = m2 / (sqrt(v2) + 1e-8) + sign(z) * abs(m) - maximum(g, m) + minimum(z, v) + where(g > m, z, -z)
    step = step + where(g < 0.0, 0.5, 1.5) - lr * (2.0 ** b1) * sqrt(lr * lr) / (0.0 - (0.0 - b2))
    tr.store("theta", th - lr * step)
    tr.store("m", m2)
    tr.store("v", v2)
    return tr.program


def run_every_op(backend, dtype, program, n=70_001, steps=2):
    """θ, m, v after ``steps`` runs of ``program`` in place, on ``backend``, with special values in θ and m."""
    ct = torch.float64 if dtype == torch.float64 else torch.float32
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(n, generator=gen).to(dtype)
    m, v = torch.randn(n, generator=gen, dtype=ct), torch.rand(n, generator=gen, dtype=ct)
    m[:6] = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-40])
    with kernels.use_backend(backend):
        for step in range(steps):
            slots = {"g": kernels.Slot("gaussian", [11 + step, 2**62 + 5], [0.3, torch.tensor(-0.7)], 0),
                     "z": kernels.Slot("rademacher", [7], [1.0], 123)}
            scalars = {"beta1": 0.9, "beta2": torch.tensor(0.99, dtype=torch.float64), "lr": 1e-3,
                       "flag": float(step == 0)}
            kernels.run(program, {"m": m, "v": v, "theta": theta}, {"theta": theta, "m": m, "v": v}, scalars, slots,
                        ct, offset=5)
    return theta, m, v


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_instruction_gives_the_same_bits_in_c_and_torch(dtype):
    outs = [run_every_op(b, dtype, every_op_program()) for b in BACKENDS]
    for a, b in zip(*outs):
        assert_same_bits(a, b)


def assert_same_bits(a, b):
    """Equal values, NaN where NaN (NaN payloads are the hardware's), and the same sign on zeros."""
    nan = torch.isnan(a)
    assert torch.equal(nan, torch.isnan(b)) and nan.sum() < a.numel()
    assert torch.equal(a[~nan], b[~nan]) and torch.equal(a[~nan].signbit(), b[~nan].signbit())


def test_half_precision_parameters_compute_in_float32_and_round_once():
    program = every_op_program()
    half = run_every_op("torch", torch.bfloat16, program, n=4001)
    full = run_every_op("torch", torch.float32, program, n=4001)
    # one run's θ: the bfloat16 result is the float32 result rounded once (m, v stay float32)
    one_half = run_every_op("torch", torch.bfloat16, program, n=4001, steps=1)[0]
    one_full = run_every_op("torch", torch.float32, program, n=4001, steps=1)[0]
    start = torch.randn(4001, generator=torch.Generator().manual_seed(0))
    finite = torch.isfinite(one_full)
    # θ starts as bfloat16(start) in the half run: compare against the float32 run from the same start
    torch.testing.assert_close(one_half.float()[finite], one_full[finite], rtol=2**-7, atol=1e-3)
    assert half[1].dtype == torch.float32 and full[1].dtype == torch.float32 and start.numel() == 4001


def test_scalar_only_expressions_are_folded_on_the_host_in_float64():
    tr = P.Tracer()
    tr.store("out", tr.input("x") * (1 - tr.scalar("b")))
    program = tr.program
    assert [n.op for n in program.nodes] == ["input", "mul"]  # 1 − b is a scalar node, not an element one
    x = torch.ones(3)
    out = torch.empty(3)
    kernels.run(program, {"x": x}, {"out": out}, {"b": 0.1}, {}, torch.float32)
    assert out[0].item() == torch.tensor(1 - 0.1, dtype=torch.float32).item()


def test_eager_and_traced_calls_of_one_function_agree():
    def update(e, h):
        m = h.beta1 * e.m + (1 - h.beta1) * e.g
        return m / (sqrt(m * m) + h.eps), {"m": m}

    g, m0 = torch.randn(1000, dtype=torch.float64), torch.randn(1000, dtype=torch.float64)
    hyper = {"beta1": 0.9, "eps": 1e-8}
    u_eager, new = update(Eager.element(g=g, state={"m": m0}), Eager.hyper(hyper))
    views = Traced()
    u, state = update(views.element(), views.hyper())
    views.tracer.store("u", u)
    views.tracer.store("state:m", state["m"])
    out_u, out_m = torch.empty_like(g), torch.empty_like(g)
    kernels.run(views.tracer.program, {"g": g, "state:m": m0}, {"u": out_u, "state:m": out_m}, hyper, {},
                torch.float64)
    assert torch.equal(out_u, u_eager) and torch.equal(out_m, new["m"])


def test_tracing_errors_name_the_problem():
    views = Traced()
    e, h = views.element(), views.hyper()
    with pytest.raises(TypeError, match="no truth value"):
        bool(e.g > 0)
    with pytest.raises(TypeError, match="must be an element-wise value"):
        views.tracer.store("theta", h.lr * 2)
    with pytest.raises(TypeError, match="of scalars only"):
        sign(h.lr)
    with pytest.raises(TypeError, match="numbers and zolab.engine.ops values"):
        e.g + "x"


def test_missing_inputs_and_bad_laws_are_refused_before_any_kernel():
    tr = P.Tracer()
    tr.store("out", tr.input("x") + tr.slot("g") * tr.scalar("c"))
    x, out = torch.ones(4), torch.empty(4)
    with pytest.raises(ValueError, match=r"program inputs missing: \['g', 'c'\]"):
        kernels.run(tr.program, {"x": x}, {"out": out}, {}, {}, torch.float32)
    with pytest.raises(ValueError, match="unknown law 'uniform'"):
        kernels.run(tr.program, {"x": x}, {"out": out}, {"c": 1.0}, {"g": kernels.Slot("uniform", [1], [1.0])},
                    torch.float32)
    with pytest.raises(ValueError, match=r"program tensors missing: \['x'\]"):
        kernels.run(tr.program, {}, {"out": out}, {"c": 1.0}, {"g": kernels.Slot("gaussian", [1], [1.0])},
                    torch.float32)


def test_registers_are_reused_but_never_while_live():
    program = every_op_program()
    reg, count = P.allocate(program)
    assert count < len(program.nodes) // 2
    live_until = {}
    for i, node in enumerate(program.nodes):
        for a in node.args:
            if isinstance(a, int) and node.op not in ("input", "draw"):
                live_until[a] = i
    for _, i in program.stores:
        live_until[i] = len(program.nodes)
    for i in range(len(program.nodes)):
        for j in range(i + 1, live_until.get(i, i) + (1 if live_until.get(i, i) < len(program.nodes) else 0)):
            if j < len(program.nodes) and reg[j] == reg[i] and j != live_until.get(i):
                pytest.fail(f"node {j} overwrites register {reg[i]} of node {i} while it is live")
