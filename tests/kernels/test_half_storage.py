"""Half-precision storage of a program's tensors (reference.round_half): nearest is torch's conversion, stochastic
rounding is unbiased and keyed by (key, element index), and every backend stores the same bits."""

import math
import os

import pytest
import torch

from tests.kernels.test_program import assert_same_bits, every_op_program
from zolab import kernels
from zolab.kernels import codegen
from zolab.kernels.reference import round_half

HALF = [torch.bfloat16, torch.float16]
EDGES = [0.0, 65504.0, 65519.99, 65520.0, 65536.0, 1e9, 3e38, float("inf"), 2**-14, 2**-14 * (1 - 2**-12),
         2**-24, 2**-25, 3 * 2**-26, 1e-40, 1.0, 1 + 2**-8, 1 + 3 * 2**-9, 1 + 2**-11, 1 + 3 * 2**-11]


def bit_patterns(n=1_000_000):
    """Random float32 bit patterns (every exponent, NaNs and subnormals included) and edge values, ±."""
    bits = torch.randint(-2**31, 2**31, (n,), generator=torch.Generator().manual_seed(0)).to(torch.int32)
    edges = torch.tensor(EDGES)
    return torch.cat([bits.view(torch.float32), edges, -edges])


@pytest.mark.parametrize("dtype", HALF)
def test_nearest_is_torchs_conversion(dtype):
    x = bit_patterns()
    mine, torchs = round_half(x, dtype), x.to(dtype)
    nan = torch.isnan(torchs)
    assert torch.equal(torch.isnan(mine), nan) and 1000 < nan.sum() < x.numel() // 2
    assert torch.equal(mine[~nan].view(torch.int16), torchs[~nan].view(torch.int16))


def neighbours(a: float, dtype) -> tuple[float, float]:
    """The values of ``dtype`` just below and just above a > 0 (2^16 past float16's largest)."""
    t = torch.tensor(a).to(dtype)
    below = t if t.float().item() <= a else torch.nextafter(t, torch.zeros((), dtype=dtype))
    above = torch.nextafter(below, torch.tensor(float("inf"), dtype=dtype)).float().item()
    return below.float().item(), (2.0**16 if above == float("inf") else above)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("value", [1 + 2**-12 + 2**-14, -3.3, 0.1, 7e-5, 1e-6, 3e-8, -2e-7, 65510.0, 1e-9])
def test_stochastic_rounding_is_unbiased_between_the_two_neighbours(dtype, value):
    n = 200_000
    x = torch.full((n,), value)
    a = abs(x[0].item())
    below, above = neighbours(a, dtype)
    got = round_half(x, dtype, key=12345, index=torch.arange(n)).float().abs()
    got = torch.where(torch.isinf(got), 2.0**16, got)  # float16 past 65504: infinity stands for 2^16
    assert ((got == below) | (got == above)).all() and (got == below).any() and (got == above).any()
    p = (a - below) / (above - below)
    if dtype == torch.float16 and above <= 2**-14:  # the subnormals compare 24 random bits: p rounded up
        p = math.ceil(p * 2**24) / 2**24
    sigma = (p * (1 - p) / n) ** 0.5 * (above - below)
    assert abs(got.double().mean().item() - (below + p * (above - below))) < 5 * sigma


def test_stochastic_bits_are_a_function_of_the_key_and_the_element_index():
    x = torch.linspace(-3, 3, 10_001)
    whole = round_half(x, torch.bfloat16, key=7, index=torch.arange(10_001))
    part = round_half(x[4000:], torch.bfloat16, key=7, index=torch.arange(4000, 10_001))
    assert torch.equal(whole[4000:].view(torch.int16), part.view(torch.int16))
    other = round_half(x, torch.bfloat16, key=8, index=torch.arange(10_001))
    assert (other.view(torch.int16) != whole.view(torch.int16)).sum() > 1000


def run_half(backend, sdt, keys, n=70_001, steps=2, offset=5):
    """θ (float32), m, v (``sdt``) after ``steps`` runs of every_op_program in place; ``keys``: output -> key
    of its stochastic rounding (the step added, as a step's keys differ)."""
    program = every_op_program()
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(n, generator=gen)
    m, v = torch.randn(n, generator=gen).to(sdt), torch.rand(n, generator=gen).to(sdt)
    m[:6] = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-40])
    with kernels.use_backend(backend):
        for step in range(steps):
            slots = {"g": kernels.Slot("gaussian", [11 + step, 2**62 + 5], [0.3, torch.tensor(-0.7)], 0),
                     "z": kernels.Slot("rademacher", [7], [1.0], 123)}
            scalars = {"beta1": 0.9, "beta2": torch.tensor(0.99, dtype=torch.float64), "lr": 1e-3,
                       "flag": float(step == 0)}
            kernels.run(program, {"m": m, "v": v, "theta": theta}, {"theta": theta, "m": m, "v": v}, scalars, slots,
                        torch.float32, offset=offset, rounding={k: key + step for k, key in keys.items()})
    return theta, m, v


ROUNDINGS = {"nearest": {}, "stochastic": {"m": 3, "v": 2**63 + 9}}


@pytest.mark.parametrize("rounding", list(ROUNDINGS))
@pytest.mark.parametrize("dtype", HALF)
def test_c_vm_and_compiled_c_store_torchs_bits(monkeypatch, dtype, rounding):
    keys = ROUNDINGS[rounding]
    want = run_half("torch", dtype, keys)
    monkeypatch.setattr(codegen, "ENABLED", False)
    vm = run_half("c", dtype, keys)
    monkeypatch.setattr(codegen, "ENABLED", True)
    monkeypatch.setattr(codegen, "MIN_NUMEL", 0)
    compiled = run_half("c", dtype, keys)
    assert codegen._functions
    for a, b, c in zip(want, vm, compiled):
        assert a.dtype == b.dtype == c.dtype
        assert_same_bits(a.float(), b.float())
        assert_same_bits(a.float(), c.float())
    # the stochastic rounding changed the stored values: a check of it, not of nearest twice
    nearest = run_half("torch", dtype, {})
    changed = (want[1].float() != nearest[1].float()) & ~torch.isnan(want[1].float())
    assert (changed.sum() > 1000) == (rounding == "stochastic")


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="run by test_backends under TRITON_INTERPRET=1")
@pytest.mark.parametrize("rounding", list(ROUNDINGS))
@pytest.mark.parametrize("dtype", HALF)
def test_half_storage_on_triton_matches_torch(dtype, rounding):
    want = run_half("torch", dtype, ROUNDINGS[rounding], n=3001)
    got = run_half("triton", dtype, ROUNDINGS[rounding], n=3001)
    for a, b in zip(want, got):
        assert a.dtype == b.dtype
        assert_same_bits(a.float(), b.float())


def test_bad_storage_and_rounding_are_refused_by_name():
    program = every_op_program()
    n = 16
    theta, m, v = torch.zeros(n), torch.zeros(n, dtype=torch.bfloat16), torch.zeros(n, dtype=torch.bfloat16)
    slots = {"g": kernels.Slot("gaussian", [1], [1.0]), "z": kernels.Slot("rademacher", [2], [1.0])}
    scalars = {"beta1": 0.9, "beta2": 0.99, "lr": 1e-3, "flag": 0.0}

    def go(ct=torch.float32, rounding=None, **over):
        t = {"m": m, "v": v, "theta": theta, **over}
        kernels.run(program, t, dict(t), scalars, slots, ct, rounding=rounding)

    with pytest.raises(ValueError, match=r"input 'm': torch.bfloat16.*allowed: torch.float64, 16 elements"):
        go(torch.float64, theta=theta.double())
    with pytest.raises(ValueError, match=r"stochastic rounding of 'theta': a torch.float32 output; allowed: the "
                                         r"float16/bfloat16 outputs \['m', 'v'\]"):
        go(rounding={"theta": 1})
    with pytest.raises(ValueError, match=r"stochastic rounding of 'w': not an output"):
        go(rounding={"w": 1})
    with pytest.raises(ValueError, match=r"stochastic rounding key of 'm': -1; allowed: an integer in \[0, 2\*\*64\)"):
        go(rounding={"m": -1})
    go(rounding={"m": 1, "v": 2})  # the same call with good arguments runs
    assert m.dtype == torch.bfloat16 and torch.isfinite(m.float()).all()
