"""Table-driven checks every rule of the registry must pass: exact restore, resume, non-finite losses, memory,
bad input, param groups, the fused update against the eager one, atomic steps, a short convergence check."""

import io

import pytest
import torch
from torch import nn

import zolab
from zolab.testing import REGISTRY

from ._problem import TinyProblem

ALL = list(REGISTRY)


def make(rule, params, **kw):
    """The rule on ``params``: tensors, or a module (its named parameters; bound when the rule needs its model)."""
    if not isinstance(params, nn.Module):
        return REGISTRY[rule].make(params, **kw)
    opt = REGISTRY[rule].make(list(params.named_parameters()), **kw)
    return opt.bind(params) if REGISTRY[rule].needs_model else opt


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
    opt = make(rule, net, lr=0.0, mu=1e-2, weight_decay=0.1)
    for _ in range(20):
        opt.step(net.loss)
    assert_bitwise(before, snapshot(net))
    assert opt.zo["step"] == 20


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rule", ALL)
def test_closure_that_raises_propagates_and_restores(rule, dtype):
    net = Net(dtype)
    opt = make(rule, net, lr=1e-2, mu=1e-2)
    for _ in range(3):
        opt.step(net.loss)
    before, state_before = snapshot(net), opt.zo["step"]
    calls = {"n": 0}
    at = min(2, opt.grad_estimator.scheme.forwards(opt.num_queries))  # a JVP step makes one call

    def closure():
        calls["n"] += 1
        if calls["n"] == at:  # raise while the parameters are perturbed
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
    opt = make(rule, straight, lr=1e-2, mu=1e-2, seed=7)
    for _ in range(20):
        opt.step(straight.loss)

    first = TinyProblem(torch.float32)
    opt1 = make(rule, first, lr=1e-2, mu=1e-2, seed=7)
    for _ in range(10):
        opt1.step(first.loss)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": opt1.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)  # checkpoints hold tensors and primitives only

    resumed = TinyProblem(torch.float32, seed=99)
    resumed.load_state_dict(ckpt["model"])
    opt2 = make(rule, resumed, lr=1e-2, mu=1e-2, seed=7)
    opt2.load_state_dict(ckpt["optimizer"])
    for _ in range(10):
        opt2.step(resumed.loss)
    assert_bitwise(snapshot(straight), snapshot(resumed))
    assert_same_tree(opt2.zo, opt.zo)
    assert_same_tree(opt2.state_dict()["state"], opt.state_dict()["state"])


def assert_same_tree(a, b):
    """Equal nested dicts/lists of plain values and tensors (tensors bitwise, dtype included)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (a.keys(), b.keys())
        for k in a:
            assert_same_tree(a[k], b[k])
    elif torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    else:
        assert a == b, (a, b)


# ------------------------------------------------------------------ 4. non-finite losses
@pytest.mark.parametrize("rule", ALL)
def test_nonfinite_raise_names_step_and_losses(rule):
    net = Net()
    opt = make(rule, net, lr=1e-2, mu=1e-2)
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
    opt = make(rule, net, lr=1e-2, mu=1e-2, nonfinite="skip")
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
STATELESS = [name for name, info in REGISTRY.items() if not info.state and info.state_shapes is None]


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
        opt = make(rule, net, num_queries=3)
    for _ in range(5):
        opt.step(net.loss)
    assert max(state_numels(opt), default=0) <= 1
    assert all(not s for s in opt.state.values()) or rule == "meazo"


@pytest.mark.parametrize("rule", sorted(set(ALL) - set(STATELESS)))
def test_moment_rules_allocate_only_for_trainable_tensors(rule):
    net = Net()
    net.norm.weight.requires_grad_(False)
    opt = make(rule, net)
    for _ in range(3):
        opt.step(net.loss)
    assert not opt.state.get(net.norm.weight), "a frozen tensor got optimizer state"
    trainable = [p for p in net.parameters() if p.requires_grad]
    info = REGISTRY[rule]
    for p in trainable:
        tensors = {k: tuple(v.shape) for k, v in opt.state[p].items() if torch.is_tensor(v)}
        expected = info.state_shapes(opt, p) if info.state_shapes else {k: p.shape for k in info.state}
        assert tensors == {k: tuple(s) for k, s in expected.items()}


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


BAD_OF_RULES = [pytest.param(name, kw, match, id=f"{name}-{kw}") for name, info in REGISTRY.items()
                for kw, match in info.bad]


@pytest.mark.parametrize("rule,kw,match", BAD_OF_RULES)
def test_bad_rule_options_raise(rule, kw, match):
    net = Net()
    with pytest.raises(ValueError, match=match):
        make(rule, list(net.named_parameters()), **kw)


@pytest.mark.parametrize("rule", ALL)
def test_bad_common_options_raise_for_every_rule(rule):
    net = Net()
    for kw, match in BAD[:4]:
        with pytest.raises(ValueError, match=match):
            make(rule, list(net.named_parameters()), **kw)


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
    assert all(not isinstance(v, zolab.engine.schedules.Schedule) for g in sd["param_groups"] for v in g.values())


# ------------------------------------------------------------------ batched queries
@pytest.mark.parametrize("rule", ALL)
def test_batched_objective_gives_the_same_steps(rule):
    """All K (+1) points in one call of a batched objective: same trajectory as one closure call each."""
    if REGISTRY[rule].unbatched:
        pytest.skip(REGISTRY[rule].unbatched)
    target = torch.linspace(-1, 1, 12, dtype=torch.float64)

    def f(x):  # works on (12,) and on (n, 12)
        return (x - target).square().sum(-1) + 0.1 * x.pow(4).sum(-1)

    runs = []
    for use_batched in (False, True):
        x = nn.Parameter(torch.zeros(12, dtype=torch.float64))
        opt = make(rule, [("x", x)], lr=1e-2, mu=1e-3, num_queries=1 if "num_queries" in REGISTRY[rule].fixed else 3)
        if REGISTRY[rule].needs_model:  # a forward-mode pass differentiates a closure: no batched objective
            with pytest.raises(ValueError, match="cannot use a batched objective"):
                opt.step(batched=f)
            return
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


# ------------------------------------------------------------------ the fused update is the rule's update
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rule", ALL)
def test_fused_update_equals_the_eager_torch_update(rule, dtype):
    """One step of the rule's traced program on the C kernels equals ``rule.update`` called on torch tensors
    (θ − η·U, new state) with the same ĝ, state and hyper-parameters: the same operations, the same bits."""
    from zolab import kernels
    from zolab.engine.ops import Eager

    torch.manual_seed(0)
    holder = nn.Module()
    holder.x = x = nn.Parameter(torch.randn(5000, dtype=dtype))
    opt = make(rule, holder, lr=1e-2, mu=1e-3)
    opt.step(lambda: holder.x.square().sum())  # state exists and is nonzero
    state = {k: v.clone() for k, v in opt.state[x].items() if torch.is_tensor(v)}
    before = x.detach().clone()
    opt.step(lambda: holder.x.square().sum())
    record, ref = opt.record, opt.record.blocks[0].refs[0]
    est = record.blocks[0]
    # the eager update, fed with the ĝ the step used (regenerated from the rule's coefficients: ZO-SGD-Cons'
    # carry its choice s) and the state before the step
    g = opt.grad_estimator.directions.combine(ref, est.queries, opt.coefficients(ref, est))
    g = g.to(state.get("m", before).dtype)
    extra = {}
    if rule == "meazo":
        extra["factor"] = opt._factors[1]["global"]
    if rule == "radazo":
        extra["v_fill"] = 0.0
    if REGISTRY[rule].scalars:  # the step's scalars from the rule's prepare (ZO-Adam's bias corrections)
        extra.update(REGISTRY[rule].scalars(opt, ref))
    hyper = {**opt.hyper(ref), **extra}
    noise = []
    if REGISTRY[rule].own_directions:
        for i in range(2):
            z = torch.empty(5000, dtype=torch.float32)
            kernels.fill(z, opt.grad_estimator.directions.key(ref, est.queries[0]), i * 5000)
            noise.append(z.to(g.dtype))
        g = opt.grad_estimator.directions.combine  # ĝ of ZO-AdaMU is c·p·u(m_{t−1}): rebuild it from the old m
        u = REGISTRY[rule].cls.own_direction(opt, Eager.element(theta=before, state=state, noise=noise),
                                             Eager.hyper(hyper))
        g = u * est.coefficients(ref)[0].to(u.dtype)
    U, new = _returned(opt.update(Eager.element(g=g, theta=before, state=state, noise=noise), Eager.hyper(hyper)))
    expected = before - hyper["lr"] * U
    assert torch.equal(x.detach(), expected.to(dtype))
    for k, v in new.items():
        assert torch.equal(opt.state[x][k], v), k


def _returned(out):
    return out if isinstance(out, tuple) else (out, {})


# ------------------------------------------------------------------ a step is atomic
@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
@pytest.mark.parametrize("rule", ALL)
def test_a_step_of_several_blocks_updates_all_or_none(rule, nonfinite):
    """Each tensor its own block, every block each step (``all_blocks``: one joint estimate of them all for a rule
    that draws its blocks, LeZO): a non-finite loss in the last block leaves the parameters, the state and the
    counters as they were (bug: earlier blocks were already updated)."""
    net = Net()
    opt = make(rule, net, lr=1e-2, mu=1e-2, blocks="tensor", nonfinite=nonfinite, **REGISTRY[rule].all_blocks)
    opt.step(net.loss)
    before, zo_before = snapshot(net), dict(opt.zo)
    state_before = {id(p): {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
                    for p, s in opt.state.items()}
    last = opt.partition()[-1][1][0]
    owner, name = net.get_submodule(last.name.rpartition(".")[0]), last.name.rpartition(".")[2]

    def closure():  # finite for every block but the last one
        seen = getattr(owner, name)  # a point's tensor, or a forward-mode pass's dual tensor in its place
        perturbed = seen is not last.param or seen.data_ptr() != original  # a point is built in fresh memory
        return net.loss() * (float("nan") if perturbed else 1.0)

    original = last.param.data_ptr()
    # the last block's points are perturbed copies of it: its losses are NaN, earlier blocks' are finite
    if nonfinite == "raise":
        with pytest.raises(FloatingPointError, match="parameters are unchanged"):
            opt.step(closure)
        assert opt.zo["step"] == zo_before["step"] and opt.zo["skipped"] == 0
    else:
        opt.step(closure)
        assert opt.record.skipped and opt.zo["step"] == zo_before["step"] + 1 and opt.zo["skipped"] == 1
    assert_bitwise(before, snapshot(net))
    for p, s in opt.state.items():
        for k, v in state_before[id(p)].items():
            assert (torch.equal(s[k], v) if torch.is_tensor(v) else s[k] == v), k
    assert opt.zo["forwards"] > zo_before["forwards"]  # the spent forwards stay counted
    opt.step(net.loss)  # and the next step runs normally
    assert not opt.record.skipped


# ------------------------------------------------------------------ a short convergence check
@pytest.mark.parametrize("rule", ALL)
def test_every_rule_lowers_a_smooth_loss(rule):
    """200 steps at the registry's step size lower the tiny problem's loss by a quarter or more."""
    problem = TinyProblem()
    info = REGISTRY[rule]
    kw = {"total_steps": 200, "t1": 20} if "total_steps" in info.kwargs else {}
    opt = make(rule, problem, lr=info.lr, mu=1e-3, num_queries=1 if "num_queries" in info.fixed else 4, **kw,
               **info.converge)
    start = float(problem.loss())
    for _ in range(200):
        opt.step(problem.loss)
    assert float(problem.loss()) < 0.75 * start, (rule, start, float(problem.loss()))
