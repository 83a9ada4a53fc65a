"""What the optimizer refuses, and when: kernel inputs under autocast (trust issue item 1), changed settings on
resume (8), config errors before the first step (9), complex parameters and seeds (10), duplicate or meta
parameters and optimizer state of another shape or dtype. Each test failed before its fix."""

import pytest
import torch
from torch import nn

import zolab
from zolab import kernels


def _named(n=6, dtype=torch.float32):
    torch.manual_seed(0)
    return [("a.weight", nn.Parameter(torch.randn(n, n, dtype=dtype))),
            ("b.bias", nn.Parameter(torch.randn(n, dtype=dtype)))]


# ---------------------------------------------------------------- item 1: autocast never reaches the update
@pytest.mark.parametrize("rule", ["radazo", "zo_rmsprop", "zo_adamm", "zo_sgd"])
def test_bf16_autocast_changes_nothing_but_the_forwards(rule):
    """ĝ of a batched step was made in bfloat16 under autocast (the matrix product of the drawn directions)
    and read by the C kernel as float32: NaN parameters or silently other ones. The objective below computes
    in float32 under autocast too, so the run must equal the run without autocast bitwise."""
    runs = []
    for autocast in (False, True):
        x = nn.Parameter(torch.linspace(-2, 2, 1000))
        opt = zolab.RULES[rule]([x], lr=1e-3, mu=0.05, num_queries=4)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            for _ in range(100):
                opt.step(batched=lambda X: 0.5 * X.square().sum(-1))
        assert x.dtype == torch.float32 and torch.isfinite(x).all() and opt.zo["skipped"] == 0
        runs.append(x.detach().clone())
    assert torch.equal(runs[0], runs[1])


def test_fused_programs_refuse_tensors_of_the_wrong_dtype_size_or_device():
    """The kernels' entry checks every tensor before any pointer reaches C (a bfloat16 ĝ read as float32
    overran its buffer)."""
    from zolab.kernels.program import Tracer

    tr = Tracer()
    tr.store("theta", tr.input("theta") - tr.scalar("lr") * tr.input("g"))
    p = torch.zeros(2000)
    for g, match in [(torch.zeros(1000), r"input 'g': torch.float32, 1000 elements"),
                     (torch.zeros(2000, dtype=torch.float64), r"input 'g': torch.float64"),
                     (torch.zeros(2000, device="meta"), r"input 'g'.* on meta")]:
        with pytest.raises(ValueError, match=match):
            kernels.run(tr.program, {"theta": p, "g": g}, {"theta": p}, {"lr": 0.1}, {}, torch.float32)
    # A half-precision input beside a float32 compute type is widened on load (half-precision state), never read
    # as float32: the update equals the float32 one on the widened values.
    g = torch.linspace(-3, 3, 2000).to(torch.bfloat16)
    kernels.run(tr.program, {"theta": p, "g": g}, {"theta": p}, {"lr": 0.1}, {}, torch.float32)
    assert torch.equal(p, torch.zeros(2000) - 0.1 * g.float())


# ---------------------------------------------------------------- item 8: resume with changed settings
def test_resume_with_a_changed_seed_or_lr_is_an_error_naming_them():
    sd = zolab.RAdaZO(_named(), lr=1e-3, seed=1).state_dict()
    with pytest.raises(ValueError, match=r"seed: 1 \(saved\) -> 7 \(now\).*lr: 0\.001 \(saved\) -> 0\.5 \(now\)"):
        zolab.RAdaZO(_named(), lr=0.5, seed=7).load_state_dict(sd)


def test_resume_with_another_rule_or_estimator_is_an_error():
    sd = zolab.RAdaZO(_named()).state_dict()
    with pytest.raises(ValueError, match=r"rule: 'RAdaZO' \(saved\) -> 'ZOAdaMM' \(now\)"):
        zolab.ZOAdaMM(_named()).load_state_dict(sd)
    with pytest.raises(ValueError, match=r"estimator: 'forward' \(saved\) -> 'central' \(now\)"):
        zolab.RAdaZO(_named(), estimator="central").load_state_dict(sd)
    with pytest.raises(ValueError, match=r"num_queries: 1 \(saved\) -> 4 \(now\)"):
        zolab.RAdaZO(_named(), num_queries=4).load_state_dict(sd)


def test_an_explicit_override_keeps_the_new_lr_and_only_it():
    params = _named()
    opt = zolab.RAdaZO(params, lr=1e-3)
    opt.step(lambda: sum(p.square().sum() for _, p in params))
    sd = opt.state_dict()
    resumed = zolab.RAdaZO(params, lr=0.5)
    resumed.load_state_dict(sd, overrides=("lr",))
    assert resumed.param_groups[0]["lr"] == 0.5 and resumed.zo["step"] == 1
    resumed = zolab.RAdaZO(params, lr=0.5)
    resumed.resume_overrides = ("lr",)  # what Lightning's load goes through
    resumed.load_state_dict(sd)
    assert resumed.param_groups[0]["lr"] == 0.5
    with pytest.raises(ValueError, match=r"resume overrides \['seed'\] are not hyper-parameters"):
        zolab.RAdaZO(params, lr=0.5).load_state_dict(sd, overrides=("seed",))


# ---------------------------------------------------------------- item 9: config errors before the first step
@pytest.mark.parametrize("blocks, match", [
    (["nomatch"], "matches none of the regexes"),
    (["("], r"regex '\(' is invalid"),
    (5, r"blocks=5.*\[1, 2\]"),
])
def test_bad_blocks_fail_at_construction(blocks, match):
    with pytest.raises(ValueError, match=match):
        zolab.MeZOBCD(_named(), blocks=blocks)


@pytest.mark.parametrize("cls", [zolab.RAdaZO, zolab.ZOAdaMM])
def test_three_betas_fail_at_construction(cls):
    with pytest.raises(ValueError, match=r"invalid betas: \(0\.9, 0\.99, 0\.5\); allowed: two numbers"):
        cls(_named(), betas=(0.9, 0.99, 0.5))


# ---------------------------------------------------------------- item 10: complex parameters, seeds
def test_complex_parameters_are_refused():
    z = nn.Parameter(torch.randn(4, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"torch.complex64 is not supported.*real floating-point"):
        zolab.ZOSGD([z])


@pytest.mark.parametrize("seed", [-1, 2**64, 2**70, True, 1.5])
def test_seeds_outside_the_range_are_refused(seed):
    with pytest.raises(ValueError, match=r"invalid seed.*\[0, 2\*\*64\)"):
        zolab.ZOSGD(_named(), seed=seed)


# ---------------------------------------------------------------- item 16: duplicates, meta tensors, foreign state
def test_a_tensor_listed_twice_is_refused_at_construction():
    """``ZOSGD([a, a])`` drew two directions for one tensor and updated it three times as much as one listing."""
    a = nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match=r"'param1' is the same tensor as 'param0'; allowed: each tensor once"):
        zolab.ZOSGD([a, a])
    with pytest.raises(ValueError, match=r"'w2' is the same tensor as 'w'"):
        zolab.ZOSGD([("w", a), ("w2", a)])
    opt = zolab.ZOSGD([a])
    with pytest.raises(ValueError, match="more than one parameter group"):  # across groups: torch's own check
        opt.add_param_group({"params": [a]})


def test_a_meta_parameter_is_refused_at_construction():
    """A meta tensor (shape only) was accepted, then ``step`` failed with "unknown device type for autocast"."""
    m = nn.Parameter(torch.ones(3, device="meta"))
    with pytest.raises(ValueError, match=r"'m.weight' is on the meta device.*allowed: tensors with data"):
        zolab.ZOSGD([("m.weight", m)])
    with pytest.raises(ValueError, match=r"'param1' is on the meta device"):
        zolab.ZOSGD([nn.Parameter(torch.ones(2)), m])


@pytest.mark.parametrize("shape, dtype, match", [
    ((4, 5), torch.float64, r"state 'm' of 'w': \(4, 4\) torch.float64; allowed: \(4, 5\) torch.float64"),
    ((2, 8), torch.float64, r"state 'm' of 'w': \(4, 4\) torch.float64; allowed: \(2, 8\) torch.float64"),
    ((4, 4), torch.float32, r"state 'm' of 'w': \(4, 4\) torch.float64; allowed: \(4, 4\) torch.float32"),
], ids=["other-shape", "same-size-other-shape", "other-dtype"])
def test_state_of_another_shape_or_dtype_is_refused_at_load(shape, dtype, match):
    """Moments saved for a (4, 4) float64 tensor were loaded onto another tensor and refused only by ``step``;
    a refused load leaves the optimizer as it was."""
    x = nn.Parameter(torch.ones(4, 4, dtype=torch.float64))
    saver = zolab.RAdaZO([("w", x)])
    saver.step(lambda: x.square().sum())
    y = nn.Parameter(torch.ones(shape, dtype=dtype))
    opt = zolab.RAdaZO([("w", y)])
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(saver.state_dict())
    assert not opt.state and opt.zo["step"] == 0
    opt.step(lambda: y.square().sum())  # and it still steps from scratch
    assert opt.zo["step"] == 1
