"""What a rule's maths is written with: hyper_values, and the element and scalar views run eagerly on tensors or
traced into a program whose inputs, draw slots and scalars are the names the maths read."""

import pytest
import torch

from zolab import kernels
from zolab.engine.ops import Eager, Traced, hyper_values, maximum, sign, sqrt, where
from zolab.rules import ZOAdaMM


def test_hyper_values_split_betas_keep_numbers_and_add_the_extras():
    group = {"lr": 0.1, "betas": (0.9, 0.99), "decay_1d": True, "params": [], "mu": torch.tensor(0.5),
             "name": "g0", "t": 3}
    out = hyper_values(group, {"bc1": 0.25})
    assert out == {"lr": 0.1, "beta1": 0.9, "beta2": 0.99, "mu": group["mu"], "t": 3, "bc1": 0.25}


def test_the_eager_views_hand_out_the_given_tensors_and_name_what_is_missing():
    g, theta, m = torch.ones(3), torch.zeros(3), torch.full((3,), 2.0)
    e = Eager.element(g=g, theta=theta, state={"m": m}, noise=[theta, g])
    assert e.g is g and e.theta is theta and e.m is m and e.noise(1) is g
    with pytest.raises(AttributeError, match=r"no state 'v' \(state: \['m'\]\)"):
        _ = e.v
    h = Eager.hyper({"lr": 0.1})
    assert h.lr == 0.1
    with pytest.raises(AttributeError, match=r"no hyper-parameter 'beta1'; this step has \['lr'\]"):
        _ = h.beta1


def test_the_traced_views_record_the_names_the_maths_reads():
    views = Traced()
    e, h = views.element(tag="@0"), views.hyper()
    views.tracer.store("out", h.lr * e.g + e.m * e.noise(1) - e.theta)
    program = views.tracer.program
    assert sorted(program.inputs) == ["g", "state:m", "theta"]
    assert program.slots == ["noise1@0"] and program.scalar_inputs == ["lr"]
    assert [name for name, _ in program.stores] == ["out"]


def test_a_traced_update_runs_to_the_eager_bits():
    """ZO-AdaMM's update traced and run by the kernels equals the same function called on torch tensors."""
    opt = ZOAdaMM([torch.nn.Parameter(torch.zeros(4))], amsgrad=True, bias_correction=True)
    gen = torch.Generator().manual_seed(0)
    g, m, v, vmax = (torch.randn(64, generator=gen, dtype=torch.float64) for _ in range(4))
    v, vmax = v.square(), vmax.square()
    hyper = {"beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "bc1": 0.1, "bc2": 0.0199}
    u, new = opt.update(Eager.element(g=g, state={"m": m, "v": v, "v_max": vmax}), Eager.hyper(hyper))
    views = Traced()
    traced_u, traced_new = opt.update(views.element(), views.hyper())
    views.tracer.store("u", traced_u)
    for name, value in traced_new.items():
        views.tracer.store(f"state:{name}", value)
    outputs = {"u": torch.empty_like(g), **{f"state:{k}": torch.empty_like(g) for k in traced_new}}
    kernels.run(views.tracer.program, {"g": g, "state:m": m, "state:v": v, "state:v_max": vmax}, outputs, hyper,
                {}, torch.float64)
    assert torch.equal(outputs["u"], u)
    for k, value in new.items():
        assert torch.equal(outputs[f"state:{k}"], value), k


def test_element_functions_on_tensors_are_torchs():
    x = torch.tensor([-2.0, -0.0, 0.0, 3.0, 9.0], dtype=torch.float64)
    assert torch.equal(sign(x), torch.sign(x))
    assert torch.equal(sqrt(x.abs()), x.abs().sqrt())
    assert torch.equal(maximum(x, 1.0), torch.clamp(x, min=1.0))
    assert torch.equal(where(x > 0, x, -1.0), torch.where(x > 0, x, torch.tensor(-1.0, dtype=torch.float64)))
