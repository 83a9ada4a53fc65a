"""The counter-based draw: determinism, slices, backends agreeing bit for bit, and its statistics."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zolab import kernels
from zolab.kernels import reference

KEY = 0x5DEECE66D1234567
BACKENDS = ["torch", "c"]


def draw(backend, n, offset=0, law="gaussian", dtype=torch.float32, key=KEY):
    out = torch.empty(n, dtype=dtype)
    with kernels.use_backend(backend):
        return kernels.fill(out, key, offset, law)


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_key_same_numbers_other_key_other_numbers(backend):
    a, b = draw(backend, 10_000), draw(backend, 10_000)
    assert torch.equal(a, b)
    assert not torch.equal(a, draw(backend, 10_000, key=KEY + 1))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("law", ["gaussian", "rademacher"])
def test_a_slice_draws_the_slice_of_the_whole(backend, law):
    whole = draw(backend, 300_000, law=law)
    for start, stop in [(0, 1), (17, 1000), (65_535, 200_003), (299_990, 300_000)]:
        part = draw(backend, stop - start, offset=start, law=law)
        assert torch.equal(part, whole[start:stop])


@pytest.mark.parametrize("law", ["gaussian", "rademacher"])
def test_c_kernel_equals_torch_bitwise(law):
    # beyond 2**32 too, where the index's high word enters the hash
    for offset in (0, 12_345, 2**32 - 70_000):
        assert torch.equal(draw("c", 200_000, offset, law), draw("torch", 200_000, offset, law))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_axpz_equals_torch_bitwise(dtype):
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(70_001, generator=gen, dtype=dtype)
    coefs = [1e-3, torch.tensor(-2.5), 0.75]
    outs = {}
    for b in BACKENDS:
        out = base.clone()
        with kernels.use_backend(b):
            kernels.axpz(out, [1, 2, 3], coefs, base=out)  # in place, three draws in one pass
        outs[b] = out
    assert torch.equal(outs["c"], outs["torch"])
    z = [reference.draw(k, base.numel()).to(dtype) for k in (1, 2, 3)]
    a = [torch.tensor(float(x), dtype=dtype) for x in coefs]
    expected = ((base + a[0] * z[0]) + a[1] * z[1]) + a[2] * z[2]
    assert torch.equal(outs["c"], expected)


def test_half_precision_uses_float32_arithmetic():
    base = torch.randn(1000).to(torch.bfloat16)
    out = kernels.axpz(torch.empty_like(base), [9], [0.5], base=base)
    expected = (base.float() + 0.5 * reference.draw(9, 1000)).to(torch.bfloat16)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("dim", [8, 7, 601])  # odd widths: rows that start or end on the odd half of a pair
def test_embedding_rows_equal_rows_of_the_perturbed_table(dim):
    table = torch.randn(50, dim)
    ids = torch.tensor([[3, 49, 0], [3, 7, 7]])
    full = table + 0.1 * reference.draw(11, table.numel()).view(50, dim)
    for b in BACKENDS:
        with kernels.use_backend(b):
            got = kernels.rows(table[ids], ids, dim, 11, 0.1)
        assert torch.equal(got, full[ids])


@pytest.mark.parametrize("law", ["gaussian", "rademacher"])
@pytest.mark.parametrize("dim,offset", [(8, 0), (7, 5), (601, 1 << 33)])  # odd starts; past 2^32 elements
def test_draw_rows_are_the_draws_at_those_rows(law, dim, offset):
    ids = torch.tensor([3, 49, 0, 3, 7, 7])
    index = ids[:, None] * dim + torch.arange(dim) + offset
    want = reference.draw_at(11, index, law)
    for b in BACKENDS:
        with kernels.use_backend(b):
            got = kernels.draw_rows(ids.view(2, 3), dim, 11, offset, law)
            wide = kernels.draw_rows(ids, dim, 11, offset, law, dtype=torch.float64)
        assert got.dtype == torch.float32 and torch.equal(got, want), b
        assert torch.equal(wide, want.double()), b


def test_gaussian_statistics():
    n = 2_000_000
    z = draw("c", n).double()
    assert abs(z.mean()) < 5 / n**0.5
    assert abs(z.var() - 1) < 5 * (2 / n) ** 0.5
    assert abs((z**4).mean() - 3) < 5 * (96 / n) ** 0.5  # kurtosis: var(z^4) = 105 - 9 = 96
    assert abs((z[:-1] * z[1:]).mean()) < 5 / n**0.5  # neighbours uncorrelated
    from scipy import stats

    assert stats.kstest(z[:200_000].numpy(), "norm").pvalue > 1e-3
    # Box-Muller on a 2^-24 grid: |z| <= sqrt(48 ln 2)
    assert z.abs().max() <= (48 * torch.log(torch.tensor(2.0, dtype=torch.float64))).sqrt()


def test_rademacher_statistics():
    n = 1_000_000
    r = draw("c", n, law="rademacher")
    assert set(r.unique().tolist()) == {-1.0, 1.0}
    assert abs(r.double().mean()) < 5 / n**0.5


def test_sphere_norm_pass_agrees_across_backends():
    like = torch.empty(123_457)
    with kernels.use_backend("c"):
        c = kernels.sumsq(5, like)
    with kernels.use_backend("torch"):
        t = kernels.sumsq(5, like)
    assert torch.allclose(c, t, rtol=1e-12, atol=0)
    assert c.item() == pytest.approx((reference.draw(5, 123_457).double() ** 2).sum().item(), rel=1e-12)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="law 'uniform'"):
        kernels.fill(torch.empty(3), 1, law="uniform")
    with pytest.raises(ValueError, match="backend 'cuda'"):
        with kernels.use_backend("cuda"):
            pass
    with pytest.raises(ValueError, match="key -1"):
        reference.split_key(-1)


TRITON_CHECK = """
import torch
from zolab import kernels
from zolab.kernels import reference
for law in ("gaussian", "rademacher"):
    for dtype in (torch.float32, torch.float64, torch.float16):
        base = torch.randn(5000).to(dtype)
        outs = {}
        for b in ("triton", "torch", "c"):
            if b == "c" and dtype == torch.float16:
                continue
            out = base.clone()
            with kernels.use_backend(b):
                coefs = [0.5, torch.tensor(-1.0), 2.0, 1e-3, 1.0]
                kernels.axpz(out, [3, 2**62 + 5, 7, 8, 9], coefs, out, 2**32 - 2000, law)
            outs[b] = out
        assert all(torch.equal(o, outs["torch"]) for o in outs.values()), (law, dtype)
from tests.kernels.test_program import assert_same_bits, every_op_program, run_every_op
for dtype in (torch.float32, torch.float64, torch.bfloat16):
    outs = [run_every_op(b, dtype, every_op_program(), n=3001, steps=3) for b in ("triton", "torch")]
    for a, b in zip(*outs):
        assert_same_bits(a, b)
with kernels.use_backend("triton"):
    s = kernels.sumsq(4, torch.empty(3000), 10)
assert abs(s.item() / (reference.draw(4, 3000, 10).double() ** 2).sum().item() - 1) < 1e-12
print("triton ok")
"""


@pytest.mark.slow
def test_triton_kernel_equals_torch_bitwise_under_the_interpreter():
    pytest.importorskip("triton", reason="triton is not installed (it installs on Linux x86-64 only)")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", TRITON_CHECK], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=600)
    assert proc.returncode == 0 and "triton ok" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_cuda_draw_equals_cpu_draw():
    z = torch.empty(1_000_000, device="cuda")
    kernels.fill(z, KEY, 123)
    assert torch.equal(z.cpu(), draw("c", 1_000_000, 123))
