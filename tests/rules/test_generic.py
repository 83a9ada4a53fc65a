"""Table-driven checks every rule must pass: exact restore, resume, non-finite losses, memory, bad input,
param groups (issue: engine acceptance 2–7)."""

import io

import pytest
import torch
from torch import nn

import zolab

from ._problem import TinyProblem

ALL = list(zolab.RULES)


def make(rule, params, **kw):
    if rule == "zo_adamu":
        kw.setdefault("total_steps", 40)
        kw.setdefault("t1", 5)
    return zolab.RULES[rule](params, **kw)


class Net(nn.Module):
    def __init__(self, dtype=torch.float32):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(8, 4).to(dtype)
        self.norm = nn.LayerNorm(4).to(dtype)
        self.register_buffer("x", torch.randn(16, 8).to(dtype))

    def loss(self):
        return self.norm(self.lin(self.x)).float().square().mean()


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_bitwise(a, b):
    for k in a:
        assert torch.equal(a[k].view(torch.uint8) if a[k].dtype != torch.float64 else a[k], b[k].view(torch.uint8)
                           if b[k].dtype != torch.float64 else b[k]), k


# ------------------------------------------------------------------ 2. exact restore
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rule", ALL)
def test_lr_zero_leaves_parameters_bitwise_unchanged(rule, dtype):
    net = Net(dtype)
    before = snapshot(net)
    opt = make(rule, list(net.named_parameters()), lr=0.0, mu=1e-2, weight_decay=0.1)
    for _ in range(50):
        opt.step(net.loss)
    assert_bitwise(before, snapshot(net))
    assert opt.zo["step"] == 50


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rule", ALL)
def test_closure_that_raises_propagates_and_restores(rule, dtype):
    net = Net(dtype)
    opt = make(rule, list(net.named_parameters()), lr=1e-2, mu=1e-2)
    for _ in range(3):
        opt.step(net.loss)
    before, state_before = snapshot(net), opt.zo["step"]
    calls = {"n": 0}

    def closure():
        calls["n"] += 1
        if calls["n"] == 2:  # raise while the parameters are perturbed
            raise Boom("mid-step")
        return net.loss()

    with pytest.raises(Boom, match="mid-step"):
        opt.step(closure)
    assert_bitwise(before, snapshot(net))
    assert opt.zo["step"] == state_before


# ------------------------------------------------------------------ 3. resume
@pytest.mark.parametrize("rule", ALL)
def test_resume_from_state_dict_is_bitwise(rule):
    straight = TinyProblem(torch.float32)
    opt = make(rule, list(straight.named_parameters()), lr=1e-2, mu=1e-2, num_queries=1, seed=7)
    for _ in range(20):
        opt.step(straight.loss)

    first = TinyProblem(torch.float32)
    opt1 = make(rule, list(first.named_parameters()), lr=1e-2, mu=1e-2, seed=7)
    for _ in range(10):
        opt1.step(first.loss)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": opt1.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)  # checkpoints hold tensors and primitives only

    resumed = TinyProblem(torch.float32, seed=99)
    resumed.load_state_dict(ckpt["model"])
    opt2 = make(rule, list(resumed.named_parameters()), lr=1e-2, mu=1e-2, seed=7)
    opt2.load_state_dict(ckpt["optimizer"])
    for _ in range(10):
        opt2.step(resumed.loss)
    assert_bitwise(snapshot(straight), snapshot(resumed))
    assert opt2.zo == opt.zo or rule == "meazo"
    if rule == "meazo":
        assert torch.equal(opt2.zo["scopes"]["global"]["v"], opt.zo["scopes"]["global"]["v"])


def test_load_state_dict_rejects_foreign_state():
    p = TinyProblem()
    opt = zolab.ZOSGD(p.parameters())
    with pytest.raises(ValueError, match="zolab"):
        opt.load_state_dict(torch.optim.SGD(p.parameters(), lr=0.1).state_dict())


# ------------------------------------------------------------------ 4. non-finite losses
@pytest.mark.parametrize("rule", ALL)
def test_nonfinite_raise_names_step_and_losses(rule):
    net = Net()
    opt = make(rule, list(net.named_parameters()), lr=1e-2, mu=1e-2)
    opt.step(net.loss)
    before = snapshot(net)
    with pytest.raises(FloatingPointError, match=r"step 2.*nan"):
        opt.step(lambda: net.loss() * float("nan"))
    assert_bitwise(before, snapshot(net))


@pytest.mark.parametrize("rule", ["zo_sgd", "radazo"])
def test_nonfinite_ignore_does_not_check(rule):
    """'ignore' is MeZO's behaviour: no check, no error, nothing counted; the NaN reaches the parameters."""
    net = Net()
    opt = make(rule, list(net.named_parameters()), lr=1e-2, mu=1e-2, nonfinite="ignore")
    opt.step(net.loss)
    opt.step(lambda: net.loss() * float("nan"))
    assert not opt.record.skipped and opt.zo["skipped"] == 0
    assert any(torch.isnan(p).any() for p in net.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
@pytest.mark.parametrize("rule", ["zo_sgd", "radazo", "meazo", "mezo_bcd"])
def test_nonfinite_ignore_steps_without_host_sync_on_cuda(rule):
    net = Net().cuda()
    opt = make(rule, list(net.named_parameters()), lr=1e-2, mu=1e-2, nonfinite="ignore")
    opt.step(net.loss)  # first step: state allocation, kernel compilation
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            opt.step(net.loss)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("rule", ALL)
def test_nonfinite_skip_does_not_update_and_counts(rule):
    net = Net()
    opt = make(rule, list(net.named_parameters()), lr=1e-2, mu=1e-2, nonfinite="skip")
    opt.step(net.loss)
    before = snapshot(net)
    state_before = {k: {n: v.clone() for n, v in s.items() if torch.is_tensor(v)} for k, s in opt.state.items()}
    opt.step(lambda: net.loss() + float("inf"))
    assert_bitwise(before, snapshot(net))
    assert opt.record.skipped and opt.zo["skipped"] == 1
    for p, s in opt.state.items():
        for n, v in state_before.get(p, {}).items():
            assert torch.equal(s[n], v), n
    opt.step(net.loss)
    assert not opt.record.skipped and opt.zo["skipped"] == 1


# ------------------------------------------------------------------ 5. memory
STATELESS = ["zo_sgd", "meazo", "mezo_bcd"]


def state_numels(opt):
    return [v.numel() for s in opt.state.values() for v in s.values() if torch.is_tensor(v)] + [
        v.numel() for scope in opt.zo.get("scopes", {}).values() for v in scope.values() if torch.is_tensor(v)
    ]


@pytest.mark.parametrize("rule", STATELESS + ["zo_signsgd_scalar"])
def test_seed_replay_rules_keep_no_model_sized_state(rule):
    net = Net()
    if rule == "zo_signsgd_scalar":
        opt = zolab.ZOSignSGD(list(net.named_parameters()), sign_of="scalar", num_queries=3)
    else:
        opt = make(rule, list(net.named_parameters()), num_queries=3)
    for _ in range(5):
        opt.step(net.loss)
    assert max(state_numels(opt), default=0) <= 1
    assert all(not s for s in opt.state.values()) or rule == "meazo"


@pytest.mark.parametrize("rule", sorted(set(ALL) - set(STATELESS)))
def test_moment_rules_allocate_only_for_trainable_tensors(rule):
    net = Net()
    net.norm.weight.requires_grad_(False)
    opt = make(rule, list(net.named_parameters()))
    for _ in range(3):
        opt.step(net.loss)
    assert not opt.state.get(net.norm.weight), "a frozen tensor got optimizer state"
    trainable = [p for p in net.parameters() if p.requires_grad]
    sizes = {id(p): sum(v.numel() for v in opt.state[p].values() if torch.is_tensor(v)) for p in trainable}
    n_buffers = {"zo_adamm": 2, "zo_rmsprop": 1, "radazo": 2, "zo_adamu": 1, "zo_sgd_momentum": 1, "zo_signsgd": 0}
    for p in trainable:
        assert sizes[id(p)] == n_buffers[rule] * p.numel()


# ------------------------------------------------------------------ 6. bad input
BAD = [
    (dict(lr=-1.0), "lr.*-1.0.*allowed"),
    (dict(mu=0.0), "mu.*0.0.*allowed"),
    (dict(mu=-1e-3), "mu"),
    (dict(num_queries=0), "num_queries.*0.*allowed"),
    (dict(num_queries=1.5), "num_queries"),
    (dict(estimator="backward"), "estimator 'backward'.*allowed"),
    (dict(directions="uniform"), "directions 'uniform'.*allowed"),
    (dict(block_selection="random"), "block_selection 'random'.*allowed"),
    (dict(nonfinite="drop"), "nonfinite 'drop'.*allowed"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(scale="half"), "scale 'half'"),
    (dict(blocks_per_step=2), "blocks_per_step"),
]


@pytest.mark.parametrize("kw,match", BAD, ids=[str(k) for k, _ in BAD])
def test_bad_common_options_raise(kw, match):
    net = Net()
    with pytest.raises(ValueError, match=match):
        zolab.ZOSGD(list(net.named_parameters()), **kw)


@pytest.mark.parametrize(
    "cls,kw,match",
    [
        (zolab.RAdaZO, dict(betas=(1.0, 0.99)), r"betas\[0\].*1.0.*\[0.0, 1.0\)"),
        (zolab.ZOAdaMM, dict(betas=(0.9, -0.1)), r"betas\[1\]"),
        (zolab.ZORMSProp, dict(beta=1.5), "beta"),
        (zolab.MEAZO, dict(beta=1.0), "beta"),
        (zolab.MEAZO, dict(scope="layer"), "scope 'layer'"),
        (zolab.ZOSGDMomentum, dict(momentum=1.0), "momentum"),
        (zolab.ZOSignSGD, dict(sign_of="both"), "sign_of"),
        (zolab.ZOAdaMU, dict(), "total_steps"),
        (zolab.ZOAdaMU, dict(total_steps=100, t1=10, num_queries=2), "num_queries"),
        (zolab.ZOAdaMU, dict(alpha=1.2, betas=(0.5, 0.5)), "alpha"),
        (zolab.RAdaZO, dict(v_warmup_steps=-1), "v_warmup_steps"),
    ],
)
def test_bad_rule_options_raise(cls, kw, match):
    net = Net()
    with pytest.raises(ValueError, match=match):
        cls(list(net.named_parameters()), **kw)


def test_bad_blocks_raise():
    net = Net()
    named = list(net.named_parameters())
    with pytest.raises(ValueError, match="matches none"):
        zolab.MeZOBCD(named, blocks=["lin"]).step(net.loss)
    with pytest.raises(ValueError, match="several regexes"):
        zolab.MeZOBCD(named, blocks=["lin", "weight", "norm.bias"]).step(net.loss)
    with pytest.raises(ValueError, match="needs parameter names"):
        zolab.MeZOBCD(net.parameters()).step(net.loss)
    with pytest.raises(ValueError, match="equal blocks"):
        zolab.MeZOBCD(named, blocks=9).step(net.loss)


@pytest.mark.parametrize(
    "closure,exc,match",
    [
        (lambda: torch.ones(3), TypeError, r"scalar loss.*\(3,\)"),
        (lambda: "1.0", TypeError, "str"),
    ],
)
def test_bad_closure_raises(closure, exc, match):
    net = Net()
    before = snapshot(net)
    opt = zolab.ZOSGD(net.parameters())
    with pytest.raises(exc, match=match):
        opt.step(closure)
    assert_bitwise(before, snapshot(net))
    with pytest.raises(TypeError, match="closure"):
        opt.step()


# ------------------------------------------------------------------ 7. param groups
def test_per_group_lr_mu_and_weight_decay():
    net = Net()
    groups = [
        {"params": [net.lin.weight], "lr": 0.0},  # frozen by lr
        {"params": [net.lin.bias, net.norm.weight, net.norm.bias], "lr": 1e-2, "mu": 1e-1},
    ]
    opt = zolab.ZOSGD(groups, lr=5e-2, mu=1e-3)
    w = net.lin.weight.detach().clone()
    b = net.lin.bias.detach().clone()
    opt.step(net.loss)
    assert torch.equal(net.lin.weight, w) and not torch.equal(net.lin.bias, b)
    assert opt.param_groups[0]["mu"] == 1e-3 and opt.param_groups[1]["mu"] == 1e-1
    extra = nn.Parameter(torch.ones(3))
    opt.add_param_group({"params": [extra], "lr": 0.1})
    opt.step(lambda: net.loss() + extra.sum())
    assert not torch.equal(extra, torch.ones(3))
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [nn.Parameter(torch.ones(2))], "lr": -2.0})


def test_weight_decay_skips_bias_and_norm_by_default():
    net = Net()
    opt = zolab.ZOSGD(list(net.named_parameters()), lr=0.1, weight_decay=0.5)
    before = snapshot(net)
    opt.step(lambda: torch.zeros(()))  # zero loss: every change is weight decay
    after = snapshot(net)
    torch.testing.assert_close(after["lin.weight"], before["lin.weight"] * (1 - 0.1 * 0.5))
    for name in ("lin.bias", "norm.weight", "norm.bias"):
        assert torch.equal(after[name], before[name]), name
    # a group that sets weight_decay itself decays all of its tensors
    opt = zolab.ZOSGD([{"params": [net.norm.weight], "weight_decay": 0.5}], lr=0.1)
    w = net.norm.weight.detach().clone()
    opt.step(lambda: torch.zeros(()))
    torch.testing.assert_close(net.norm.weight.detach(), w * 0.95)


def test_schedules_drive_lr_and_betas():
    net = Net()
    opt = zolab.RAdaZO(net.parameters(), lr=zolab.Linear(1e-2, 0.0, 5), betas=(zolab.Cosine(0.9, 0.5, 5), 0.99))
    lrs, b1s = [], []
    for _ in range(6):
        opt.step(net.loss)
        lrs.append(opt.param_groups[0]["lr"])
        b1s.append(opt.record.schedule["betas1"])
    assert lrs[0] == 1e-2 and lrs[4] == 0.0 and lrs[5] == 0.0
    assert b1s[0] == pytest.approx(0.9) and b1s[4] == pytest.approx(0.5)
    sd = opt.state_dict()
    assert all(not isinstance(v, zolab.schedules.Schedule) for g in sd["param_groups"] for v in g.values())


def test_record_regenerates_the_estimate():
    """grad_estimate() equals (c/K) Σ p_k u_k built by hand from the record's seeds and p_k."""
    p = TinyProblem()
    opt = zolab.ZOSGD(list(p.named_parameters()), lr=0.0, num_queries=3, directions="rademacher")
    opt.step(p.loss)
    rec = opt.record
    assert rec.step == 1 and rec.num_queries == 3 and len(rec.seeds) == 3 and rec.names == ["W", "b"]
    sampler = zolab.Rademacher()
    from zolab.directions import mix

    for i, (name, param) in enumerate(p.named_parameters()):
        manual = sum(pk * sampler.sample(mix(s, i), param) for s, pk in zip(rec.seeds, rec.projected_grads)) / 3
        torch.testing.assert_close(opt.grad_estimate()[name], manual)
    assert rec.forwards == 6


# ------------------------------------------------------------------ batched queries
@pytest.mark.parametrize("rule", ALL)
def test_batched_objective_gives_the_same_steps(rule):
    """All K (+1) points in one call of a batched objective: same trajectory as one closure call each."""
    target = torch.linspace(-1, 1, 12, dtype=torch.float64)

    def f(x):  # works on (12,) and on (n, 12)
        return (x - target).square().sum(-1) + 0.1 * x.pow(4).sum(-1)

    runs = []
    for use_batched in (False, True):
        x = nn.Parameter(torch.zeros(12, dtype=torch.float64))
        opt = make(rule, [("x", x)], lr=1e-2, mu=1e-3, num_queries=1 if rule == "zo_adamu" else 3)
        for _ in range(8):
            if use_batched:
                opt.step(batched=f)
            else:
                opt.step(lambda x=x: f(x))
        runs.append((x.detach().clone(), opt.zo["forwards"]))
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=0, atol=1e-12)
    assert runs[0][1] == runs[1][1]


def test_batched_objective_errors():
    net = Net()
    with pytest.raises(ValueError, match="one tensor"):
        zolab.ZOSGD(list(net.named_parameters())).step(batched=lambda X: X.sum(-1))
    x = nn.Parameter(torch.zeros(4))
    with pytest.raises(TypeError, match="one loss per point"):
        zolab.ZOSGD([x]).step(batched=lambda X: X.sum())
