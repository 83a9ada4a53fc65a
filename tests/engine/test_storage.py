"""zolab/engine/storage.py: the state_dtype/state_rounding options, their refusals, the rounding keys, and why
stochastic rounding: an EMA of bfloat16 state rounded to nearest stalls."""

import pytest
import torch

from zolab import kernels
from zolab.engine import storage
from zolab.kernels.program import Tracer


def test_bad_options_are_refused_naming_the_value():
    with pytest.raises(ValueError, match=r"unknown state_dtype 'half'; allowed: \['float32', 'bfloat16', 'float16'\]"):
        storage.check("R", "half", "stochastic", ())
    with pytest.raises(ValueError, match=r"unknown state_rounding 'up'; allowed: \['stochastic', 'nearest'\]"):
        storage.check("R", "bfloat16", "up", ())
    with pytest.raises(ValueError, match=r"state_dtype='float16' cannot hold R's v \(squares.*allowed for R: "
                                         r"'float32', 'bfloat16'"):
        storage.check("R", "float16", "stochastic", ("v",))
    storage.check("R", "float16", "nearest", ())  # first moments only: float16 is allowed
    with pytest.raises(ValueError, match=r"state_dtype='bfloat16' with the float64 parameter 'w'.*allowed: "
                                         r"state_dtype='float32'"):
        storage.check_param("bfloat16", "w", torch.zeros(2, dtype=torch.float64))
    storage.check_param("float32", "w", torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize(("option", "param", "want"), [
    ("float32", torch.float32, torch.float32), ("float32", torch.bfloat16, torch.float32),
    ("float32", torch.float64, torch.float64), ("bfloat16", torch.float32, torch.bfloat16),
    ("float16", torch.bfloat16, torch.float16)])
def test_state_dtype_of_a_parameter(option, param, want):
    assert storage.dtype_of(option, torch.zeros(1, dtype=param)) == want


def test_rounding_keys_only_for_half_state_and_distinct_per_step_tensor_and_name():
    half, full = torch.zeros(2, dtype=torch.bfloat16), torch.zeros(2)
    outputs = {"theta": half, "state:m": half, "state:v": half, "state:w": full}
    keys = storage.rounding_keys(7, 3, 1, outputs)
    assert sorted(keys) == ["state:m", "state:v"]  # a half parameter rounds to nearest; float32 state is exact
    assert keys == storage.rounding_keys(7, 3, 1, outputs)  # a pure function: a resumed run gets the same
    others = [storage.rounding_keys(*a, outputs)["state:m"] for a in ((8, 3, 1), (7, 4, 1), (7, 3, 2))]
    assert len({keys["state:m"], keys["state:v"], *others}) == 5
    assert all(0 <= k < 2**63 for k in [*keys.values(), *others])


def ema(v0: float, x: float, beta: float, steps: int, dtype, rounding: str) -> torch.Tensor:
    """v ← β v + (1 − β) x, ``steps`` times, with v stored in ``dtype`` (float32 maths), 20,000 elements."""
    tr = Tracer()
    tr.store("state:v", tr.scalar("beta") * tr.input("state:v") + (1 - tr.scalar("beta")) * tr.input("x"))
    v, xs = torch.full((20_000,), v0).to(dtype), torch.full((20_000,), x)
    for t in range(steps):
        keys = storage.rounding_keys(0, t + 1, 0, {"state:v": v}) if rounding == "stochastic" else {}
        kernels.run(tr.program, {"state:v": v, "x": xs}, {"state:v": v}, {"beta": beta}, {}, torch.float32,
                    rounding=keys)
    return v.float()


def test_an_ema_in_bfloat16_stalls_to_nearest_and_tracks_stochastically():
    """β = 0.999 from 0.5 towards 1: each increment (5e-4 at first) is below half a bfloat16 ulp of 0.5 (2^-9)."""
    exact = ema(0.5, 1.0, 0.999, 300, torch.float32, "nearest")
    nearest = ema(0.5, 1.0, 0.999, 300, torch.bfloat16, "nearest")
    stochastic = ema(0.5, 1.0, 0.999, 300, torch.bfloat16, "stochastic")
    assert (nearest == 0.5).all()  # stalled: never moved
    assert exact.mean() == pytest.approx(1 - 0.5 * 0.999**300, rel=1e-5)  # 0.6297
    assert stochastic.mean().item() == pytest.approx(exact.mean().item(), abs=2e-3)  # tracks, in expectation
