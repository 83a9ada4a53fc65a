"""Resume: the state_dict carries the settings that made it; a load names every setting that differs and every
state tensor that does not fit, changes nothing when it refuses, and keeps the saved state's dtypes."""

import pytest
import torch
from torch import nn

import zolab
from zolab.engine import resume

from ..rules._problem import TinyProblem


def named():
    torch.manual_seed(0)
    return [("W", nn.Parameter(torch.randn(4, 3))), ("b", nn.Parameter(torch.randn(3)))]


def test_config_holds_every_setting_that_fixes_the_stream_and_the_maths():
    opt = zolab.ZOAdaMM(named(), amsgrad=True, seed=4, lr=zolab.Linear(1e-2, 0.0, 5), blocks=["W", "b"])
    assert resume.config(opt) == {
        "rule": "ZOAdaMM", "seed": 4, "estimator": "forward", "directions": "sphere", "rng": "counter",
        "num_queries": 1, "scale": "dimension", "weight_decay_mode": "decoupled", "blocks": "['W', 'b']",
        "block_selection": "permutation", "blocks_per_step": 1, "granularity": "model", "state_dtype": "float32",
        "state_rounding": "stochastic", "amsgrad": True,
        "bias_correction": False, "eps_inside_sqrt": False, "schedule.lr": repr(zolab.Linear(1e-2, 0.0, 5))}


CHANGES = [
    ({"seed": 1}, r"seed: 0 \(saved\) -> 1 \(now\)"),
    ({"estimator": "forward"}, r"estimator: 'central' \(saved\) -> 'forward' \(now\)"),
    ({"directions": "rademacher"}, r"directions: 'gaussian' \(saved\) -> 'rademacher' \(now\)"),
    ({"rng": "torch"}, r"rng: 'counter' \(saved\) -> 'torch' \(now\)"),
    ({"num_queries": 2}, r"num_queries: 1 \(saved\) -> 2 \(now\)"),
    ({"scale": "dimension"}, r"scale: 'none' \(saved\) -> 'dimension' \(now\)"),
    ({"weight_decay_mode": "coupled"}, r"weight_decay_mode: 'decoupled' \(saved\) -> 'coupled' \(now\)"),
    ({"blocks": "tensor"}, r"blocks: 'None' \(saved\) -> \"'tensor'\" \(now\)"),
    ({"block_selection": "cyclic"}, r"block_selection: 'permutation' \(saved\) -> 'cyclic' \(now\)"),
    ({"blocks_per_step": "all"}, r"blocks_per_step: 1 \(saved\) -> 'all' \(now\)"),
    ({"granularity": "tensor"}, r"granularity: 'model' \(saved\) -> 'tensor' \(now\)"),
    ({"state_dtype": "bfloat16"}, r"state_dtype: 'float32' \(saved\) -> 'bfloat16' \(now\)"),
    ({"state_rounding": "nearest"}, r"state_rounding: 'stochastic' \(saved\) -> 'nearest' \(now\)"),
    ({"lr": 0.5}, r"param_groups\[0\]\.lr: 0\.001 \(saved\) -> 0\.5 \(now\)"),
    ({"mu": 0.5}, r"param_groups\[0\]\.mu: 0\.001 \(saved\) -> 0\.5 \(now\)"),
    ({"lr": zolab.Linear(1e-3, 0.0, 5)}, r"schedule\.lr: None \(saved\) -> 'Linear"),
]


@pytest.mark.parametrize("change, match", CHANGES, ids=[str(c) for c, _ in CHANGES])
def test_a_load_names_each_changed_setting_and_changes_nothing(change, match):
    sd = zolab.ZOSGD(named(), lr=1e-3).state_dict()
    opt = zolab.ZOSGD(named(), **{"lr": 1e-3, **change})
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(sd)
    assert opt.zo == {"step": 0, "forwards": 0, "skipped": 0}


def test_a_load_names_every_changed_setting_at_once_and_a_rules_own_options():
    sd = zolab.RAdaZO(named(), v_warmup_steps=2, seed=3).state_dict()
    with pytest.raises(ValueError, match=r"seed: 3 \(saved\) -> 0 \(now\); v_warmup_steps: 2 \(saved\) -> 0"):
        zolab.RAdaZO(named()).load_state_dict(sd)


def test_load_state_dict_rejects_foreign_state():
    p = TinyProblem()
    opt = zolab.ZOSGD(p.parameters())
    with pytest.raises(ValueError, match="zolab"):
        opt.load_state_dict(torch.optim.SGD(p.parameters(), lr=0.1).state_dict())


def test_loading_a_state_made_with_another_seed_is_an_error():
    """Bug: the seed was not saved, so a seed-7 state loaded into a seed-0 optimizer changed the directions."""
    params = named()
    sd = zolab.ZOSGD(params, seed=7).state_dict()
    assert sd["zo"]["config"]["seed"] == 7
    with pytest.raises(ValueError, match=r"seed: 7 \(saved\) -> 0 \(now\)"):
        zolab.ZOSGD(params, seed=0).load_state_dict(sd)


def test_overrides_must_be_hyper_parameters():
    sd = zolab.ZOSGD(named()).state_dict()
    with pytest.raises(ValueError, match=r"resume overrides \['seed'\] are not hyper-parameters of ZOSGD"):
        zolab.ZOSGD(named()).load_state_dict(sd, overrides=("seed",))


def test_the_saved_counters_are_a_copy():
    params = named()
    opt = zolab.MEAZO(params)
    opt.step(lambda: sum(p.square().sum() for _, p in params))
    sd = opt.state_dict()
    opt.zo["step"] = 99
    opt.zo["scopes"]["global"]["updates"] = 99
    assert sd["zo"]["step"] == 1 and sd["zo"]["scopes"]["global"]["updates"] == 1


def test_a_load_keeps_the_saved_float32_moments_of_half_tensors():
    """torch would cast state to the parameter's dtype; the float32 moments of bfloat16 tensors stay float32."""
    x = nn.Parameter(torch.randn(8, dtype=torch.bfloat16))
    opt = zolab.RAdaZO([x])
    opt.step(lambda: x.float().square().sum())
    resumed = zolab.RAdaZO([x])
    resumed.load_state_dict(opt.state_dict())
    assert resumed.state[x]["m"].dtype == torch.float32
    assert torch.equal(resumed.state[x]["m"], opt.state[x]["m"]) and resumed.state[x]["m"] is not opt.state[x]["m"]
    assert resumed.zo == opt.zo and resumed.state[x]["updates"] == 1


def test_check_state_names_each_misfit_tensor():
    x, y = nn.Parameter(torch.zeros(2, 3)), nn.Parameter(torch.zeros(5, dtype=torch.float64))
    opt = zolab.ZOAdaMM([x, y])
    sd = {"param_groups": [{"params": [0, 1]}],
          "state": {0: {"m": torch.zeros(3, 2), "updates": 1}, 1: {"v": torch.zeros(5, dtype=torch.float32)}}}
    with pytest.raises(ValueError, match=r"state 'm' of 'param0': \(3, 2\) torch.float32; allowed: \(2, 3\) "
                                         r"torch.float32; state 'v' of 'param1': \(5,\) torch.float32; allowed: "
                                         r"\(5,\) torch.float64"):
        resume.check_state(opt, sd)
    resume.check_state(opt, {"param_groups": [{"params": [0, 1]}], "state": {0: {"m": torch.zeros(2, 3)}}})


class Odd(zolab.ZOSGD):
    """State of other shapes than the parameter's: a factor-space M (m × 2) and a 0-dim threshold."""

    def state_spec(self, ref, name):
        return {"M": ((ref.param.shape[0], 2), torch.float32), "h": ((), torch.float64)}.get(
            name, super().state_spec(ref, name))


def test_state_of_any_declared_shape_round_trips_bitwise_and_misfits_are_named():
    W = nn.Parameter(torch.randn(4, 3))
    opt = Odd([("W", W)])
    ref = opt.partition()[0][1][0]
    opt.state_tensor(ref, "M").normal_()
    opt.state_tensor(ref, "h").fill_(0.125)
    assert opt.state[W]["M"].shape == (4, 2) and opt.state[W]["h"].shape == () and opt.state[W]["h"].dtype == \
        torch.float64
    sd = opt.state_dict()
    resumed = Odd([("W", W)])
    resumed.load_state_dict(sd)
    for k in ("M", "h"):
        assert torch.equal(resumed.state[W][k], opt.state[W][k]) and resumed.state[W][k].dtype == opt.state[W][k].dtype
    bad = {**sd, "state": {0: {"M": torch.zeros(4, 3), "h": torch.zeros(1, dtype=torch.float64)}}}
    with pytest.raises(ValueError, match=r"state 'M' of 'W': \(4, 3\) torch.float32; allowed: \(4, 2\) torch.float32; "
                                         r"state 'h' of 'W': \(1,\) torch.float64; allowed: \(\) torch.float64"):
        Odd([("W", W)]).load_state_dict(bad)
