"""Samplers: the laws of z, the two generators, and the names they are chosen by."""

import pytest
import torch

from zolab import kernels
from zolab.engine.samplers import DirectionSampler, Gaussian, Rademacher, Sphere, make_sampler
from zolab.engine.seeds import CounterStream


@pytest.mark.parametrize("sampler", [Gaussian(), Sphere(), Rademacher()])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_same_seed_same_draw_in_the_tensors_dtype(sampler, dtype):
    like = torch.empty(3, 5, dtype=dtype)
    a, b = sampler.sample(11, like), sampler.sample(11, like)
    assert a.dtype == dtype and a.shape == like.shape and torch.equal(a, b)
    assert not torch.equal(a, sampler.sample(12, like))


def test_gaussian_and_rademacher_laws():
    like = torch.empty(200_000, dtype=torch.float64)
    z = Gaussian().sample(1, like)
    assert abs(z.mean()) < 5 / 200_000**0.5 and abs(z.var() - 1) < 0.02
    r = Rademacher().sample(2, like)
    assert set(r.unique().tolist()) == {-1.0, 1.0} and abs(r.mean()) < 5 / 200_000**0.5


def test_draw_does_not_touch_the_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    Gaussian().sample(5, torch.empty(1000))
    assert torch.equal(torch.rand(3), expected)


def test_counter_draws_are_the_kernels_fill_of_the_key():
    like = torch.empty(4, 6)
    for sampler in (Gaussian(), Rademacher()):
        expected = kernels.fill(torch.empty(24), 99, 0, sampler.law).view(4, 6)
        assert torch.equal(sampler.sample(99, like), expected)


def test_successive_draws_of_one_counter_stream_continue_one_long_draw():
    whole = Gaussian().sample(5, torch.empty(7, dtype=torch.float64))
    gen = Gaussian().generator(5, torch.device("cpu"))
    assert isinstance(gen, CounterStream)
    first = Gaussian().draw(gen, torch.empty(3, dtype=torch.float64))
    second = Gaussian().draw(gen, torch.empty(4, dtype=torch.float64))
    assert torch.equal(torch.cat([first, second]), whole)


def test_torch_rng_draws_what_a_seeded_torch_generator_draws():
    like = torch.empty(20, dtype=torch.float64)
    gen = torch.Generator().manual_seed(31)
    assert torch.equal(Gaussian("torch").sample(31, like), torch.randn(20, generator=gen, dtype=torch.float64))
    gen = torch.Generator().manual_seed(31)
    bits = torch.randint(0, 2, (20,), generator=gen, dtype=torch.int8)
    assert torch.equal(Rademacher("torch").sample(31, like), bits.to(torch.float64) * 2 - 1)
    out = torch.empty(20, dtype=torch.float64)
    assert Gaussian("torch").sample(31, like, out=out) is out and torch.equal(out, Gaussian("torch").sample(31, like))


def test_sphere_draws_the_gaussian_and_marks_it_for_normalisation():
    like = torch.empty(50)
    assert torch.equal(Sphere().sample(4, like), Gaussian().sample(4, like))
    assert Sphere.normalize and not Gaussian.normalize and not Rademacher.normalize
    assert Gaussian().fused and not Gaussian("torch").fused


def test_make_sampler_by_name_or_as_given():
    assert isinstance(make_sampler("sphere", "torch"), Sphere) and make_sampler("sphere", "torch").rng == "torch"
    mine = Rademacher()
    assert make_sampler(mine) is mine


def test_unknown_directions_name():
    with pytest.raises(ValueError, match="unknown directions 'cauchy'.*allowed"):
        make_sampler("cauchy")


def test_unknown_rng_is_named():
    with pytest.raises(ValueError, match=r"unknown rng 'philox'; allowed: \['counter', 'torch'\]"):
        DirectionSampler("philox")
