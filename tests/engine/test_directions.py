import pytest
import torch

from zolab.engine.directions import Gaussian, Rademacher, Sphere, make_sampler, mix


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


def test_mix_is_a_pure_63_bit_hash():
    assert mix(1, 2, 3) == mix(1, 2, 3) and mix(1, 2, 3) != mix(1, 3, 2)
    assert 0 <= mix(2**70, -5) < 2**63


def test_unknown_directions_name():
    with pytest.raises(ValueError, match="unknown directions 'cauchy'.*allowed"):
        make_sampler("cauchy")


def test_mix_each_equals_mix_with_the_common_prefix():
    from zolab.engine.directions import mix, mix_each

    assert mix_each((3, 7, 0), range(5)) == [mix(3, 7, 0, k) for k in range(5)]
