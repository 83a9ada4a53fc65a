"""Every rule with d-sized state, its state in bfloat16/float16 (``state_dtype``): half the memory, the float32
update rounded once (stochastically with the step's keys, or to nearest), the same bits on every backend,
bitwise resume, atomic steps, and the refusals (float16 second moments, float64 parameters, a changed option)."""

import io
import os

import pytest
import torch
from torch import nn

from tests.kernels.test_program import assert_same_bits
from zolab import kernels
from zolab.engine import storage
from zolab.engine.ops import Eager
from zolab.kernels import codegen
from zolab.kernels.reference import round_half
from zolab.testing import REGISTRY

from ._problem import TinyProblem

STATEFUL = [name for name, info in REGISTRY.items() if info.state and getattr(info.cls, "half_state", True)]
KEEPS_FLOAT32 = [name for name, info in REGISTRY.items() if not getattr(info.cls, "half_state", True)]
CASES = [pytest.param(r, d, id=f"{r}-{d}") for r in STATEFUL for d in ("bfloat16", "float16")
         if d == "bfloat16" or not REGISTRY[r].cls.squared_state]
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def make(rule, params, **kw):
    return REGISTRY[rule].make(params, **{"lr": 1e-2, "mu": 1e-2, **kw})


def state_tensors(opt) -> list[torch.Tensor]:
    return [v for s in opt.state.values() for _, v in sorted(s.items()) if torch.is_tensor(v) and v.dim()]


def test_every_stateful_rule_is_covered():
    assert {"radazo", "zo_adamm", "zo_adamu", "zo_rmsprop", "zo_sgd_momentum", "zo_adam", "hizoo"} <= set(STATEFUL)
    assert {r for r in STATEFUL if REGISTRY[r].cls.squared_state} == {"radazo", "zo_adam", "zo_adamm", "zo_rmsprop"}


@pytest.mark.parametrize(("rule", "state_dtype"), CASES)
def test_state_is_stored_half_at_half_the_memory(rule, state_dtype):
    sizes = {}
    for option in ("float32", state_dtype):
        problem = TinyProblem(torch.float32)
        opt = make(rule, list(problem.named_parameters()), state_dtype=option)
        for _ in range(3):
            opt.step(problem.loss)
        tensors = state_tensors(opt)
        assert tensors and {t.dtype for t in tensors} == {DTYPES.get(option, torch.float32)}
        sizes[option] = sum(t.nbytes for t in tensors)
    assert sizes[state_dtype] * 2 == sizes["float32"]


@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
@pytest.mark.parametrize(("rule", "state_dtype"), CASES)
def test_fused_update_is_the_float32_update_rounded_once(rule, state_dtype, rounding):
    """One step equals ``rule.update`` on torch tensors in float32 from the widened state, θ − η·U, and the new
    state rounded by ``reference.round_half`` with the step's keys (``storage.rounding_keys``): bit for bit."""
    torch.manual_seed(0)
    x = nn.Parameter(torch.randn(5000))
    opt = make(rule, [("x", x)], lr=1e-2, mu=1e-3, state_dtype=state_dtype, state_rounding=rounding)
    opt.step(lambda: x.square().sum())  # state exists and is nonzero
    state = {k: v.float() for k, v in opt.state[x].items() if torch.is_tensor(v)}
    before = x.detach().clone()
    opt.step(lambda: x.square().sum())
    est, ref = opt.record.blocks[0], opt.record.blocks[0].refs[0]
    hyper = {**opt.hyper(ref), **({"v_fill": 0.0} if rule == "radazo" else {})}
    if REGISTRY[rule].scalars:  # the step's scalars from the rule's prepare (HiZOO's rate)
        hyper.update(REGISTRY[rule].scalars(opt, ref))
    g, noise = opt.grad_estimate()["x"], []
    if REGISTRY[rule].own_directions:  # ZO-AdaMU: ĝ = c·p·u(m_{t−1}), its noise drawn from the query's key
        for i in range(2):
            noise.append(kernels.fill(torch.empty(5000), opt.grad_estimator.directions.key(ref, est.queries[0]),
                                      i * 5000))
        u = REGISTRY[rule].cls.own_direction(opt, Eager.element(state=state, noise=noise), Eager.hyper(hyper))
        g = u * est.coefficients(ref)[0].to(u.dtype)
    out = opt.update(Eager.element(g=g, theta=before, state=state, noise=noise), Eager.hyper(hyper))
    U, new = out if isinstance(out, tuple) else (out, {})
    assert torch.equal(x.detach(), before - hyper["lr"] * U) and not torch.equal(x.detach(), before)
    keys = storage.rounding_keys(opt.seed, 2, ref.index, {f"state:{k}": opt.state[x][k] for k in new})
    assert len(keys) == len(new) >= 1
    for k, v in new.items():
        key = keys[f"state:{k}"] if rounding == "stochastic" else None
        want = round_half(v, DTYPES[state_dtype], key, torch.arange(5000))
        assert opt.state[x][k].dtype == want.dtype and torch.equal(opt.state[x][k].view(torch.int16),
                                                                   want.view(torch.int16)), k
        assert (want != 0).float().mean() > 0.9 and (rounding == "nearest") == torch.equal(want, v.to(want.dtype))


def steps_on(backend, rule, state_dtype, rounding, n):
    torch.manual_seed(0)
    w, b = nn.Parameter(torch.randn(n)), nn.Parameter(torch.randn(5))
    target = torch.randn(n)
    opt = make(rule, [("w", w), ("b", b)], lr=1e-2, mu=1e-3, weight_decay=0.01, state_dtype=state_dtype,
               state_rounding=rounding)
    with kernels.use_backend(backend):
        for _ in range(3):  # the loss in float64: a float32 sum of 70,001 squares would round δ to 0
            opt.step(lambda: ((w.double() - target) ** 2).sum() + (b.double() ** 2).sum())
    return [w.detach(), b.detach(), *state_tensors(opt)]


@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
@pytest.mark.parametrize(("rule", "state_dtype"), CASES)
def test_half_state_is_bitwise_on_every_backend(monkeypatch, rule, state_dtype, rounding):
    """C (the VM, and programs compiled as C) against torch; under TRITON_INTERPRET=1 (test_backends.py), Triton."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        runs = {"triton": lambda: steps_on("triton", rule, state_dtype, rounding, 3001)}
        n = 3001
    else:
        def compiled():
            monkeypatch.setattr(codegen, "MIN_NUMEL", 0)
            return steps_on("c", rule, state_dtype, rounding, 70_001)

        runs = {"vm": lambda: steps_on("c", rule, state_dtype, rounding, 70_001), "compiled": compiled}
        n = 70_001
        monkeypatch.setattr(codegen, "MIN_NUMEL", 1 << 30)  # the VM first
    want = steps_on("torch", rule, state_dtype, rounding, n)
    assert len(want) >= 3 and all(t.dtype == DTYPES[state_dtype] and (t != 0).float().mean() > 0.9 for t in want[2:])
    for name, run in runs.items():
        got = run()
        assert len(got) == len(want), name
        for a, b in zip(want, got):
            assert a.dtype == b.dtype
            assert_same_bits(a.float(), b.float())


@pytest.mark.parametrize(("rule", "state_dtype"), CASES)
def test_resume_of_half_state_is_bitwise(rule, state_dtype):
    def opt_for(problem):
        return make(rule, list(problem.named_parameters()), seed=7, state_dtype=state_dtype)

    straight = TinyProblem(torch.float32)
    opt = opt_for(straight)
    for _ in range(20):
        opt.step(straight.loss)
    first = TinyProblem(torch.float32)
    opt1 = opt_for(first)
    for _ in range(10):
        opt1.step(first.loss)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": opt1.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    resumed = TinyProblem(torch.float32, seed=99)
    resumed.load_state_dict(ckpt["model"])
    opt2 = opt_for(resumed)
    opt2.load_state_dict(ckpt["optimizer"])
    assert {t.dtype for t in state_tensors(opt2)} == {DTYPES[state_dtype]}  # not cast to the parameters' dtype
    for _ in range(10):
        opt2.step(resumed.loss)
    for a, b in zip([*straight.parameters(), *state_tensors(opt)], [*resumed.parameters(), *state_tensors(opt2)]):
        assert a.dtype == b.dtype and torch.equal(a.detach().view(torch.uint8), b.detach().view(torch.uint8))


def test_a_changed_state_dtype_or_rounding_is_refused_on_resume():
    problem = TinyProblem(torch.float32)
    opt = make("radazo", list(problem.named_parameters()), state_dtype="bfloat16")
    opt.step(problem.loss)
    saved = opt.state_dict()
    with pytest.raises(ValueError, match=r"state_dtype: 'bfloat16' \(saved\) -> 'float32' \(now\)"):
        make("radazo", list(problem.named_parameters())).load_state_dict(saved)
    with pytest.raises(ValueError, match=r"state_rounding: 'stochastic' \(saved\) -> 'nearest' \(now\)"):
        make("radazo", list(problem.named_parameters()), state_dtype="bfloat16",
             state_rounding="nearest").load_state_dict(saved)
    # a state saved before these options existed has their defaults: float32 state loads, bfloat16 is named
    old = make("radazo", list(problem.named_parameters()))
    old.step(problem.loss)
    for state, ok in ((old.state_dict(), True), (saved, False)):
        for k in ("state_dtype", "state_rounding"):
            del state["zo"]["config"][k]
        target = make("radazo", list(problem.named_parameters()))
        if ok:
            target.load_state_dict(state)
            assert {t.dtype for t in state_tensors(target)} == {torch.float32}
        else:
            with pytest.raises(ValueError, match=r"state 'm' of 'W': \(4, 6\) torch.bfloat16; allowed: \(4, 6\) "
                                                 r"torch.float32"):
                target.load_state_dict(state)


@pytest.mark.parametrize("rule", STATEFUL)
def test_float16_is_refused_for_second_moments_and_float64_parameters_for_half_state(rule):
    x = nn.Parameter(torch.zeros(3))
    info = REGISTRY[rule]
    if info.cls.squared_state:
        with pytest.raises(ValueError, match=rf"state_dtype='float16' cannot hold {info.cls.label}'s v.*allowed for"):
            make(rule, [x], state_dtype="float16")
    else:
        opt = make(rule, [x], state_dtype="float16")
        assert opt.state_spec(opt.partition()[0][1][0], "m") == ((3,), torch.float16)
    with pytest.raises(ValueError, match=r"state_dtype='bfloat16' with the float64 parameter 'param1'"):
        make(rule, [x, nn.Parameter(torch.zeros(2, dtype=torch.float64))], state_dtype="bfloat16")
    with pytest.raises(ValueError, match=r"unknown state_dtype 'half'"):
        make(rule, [x], state_dtype="half")


@pytest.mark.parametrize(("rule", "state_dtype"), CASES)
def test_a_step_of_several_blocks_with_half_state_updates_all_or_none(rule, state_dtype):
    problem = TinyProblem(torch.float32)
    opt = make(rule, list(problem.named_parameters()), blocks="tensor", blocks_per_step="all", nonfinite="skip",
               state_dtype=state_dtype)
    opt.step(problem.loss)
    params, state = [p.detach().clone() for p in problem.parameters()], [t.clone() for t in state_tensors(opt)]
    last = opt.partition()[-1][1][0].param
    original = last.data
    opt.step(lambda: problem.loss() * (float("nan") if last.data is not original else 1.0))
    assert opt.record.skipped
    for a, b in zip([*params, *state], [*(p.detach() for p in problem.parameters()), *state_tensors(opt)]):
        assert a.dtype == b.dtype and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


class ScaledMomentum(REGISTRY["zo_sgd_momentum"].cls):
    """Momentum on h.scale·ĝ, ``scale`` a 0-dim state the rule declares itself (float32 whatever state_dtype)."""

    def state_spec(self, ref, name):
        return ((), torch.float32) if name == "scale" else super().state_spec(ref, name)

    def prepare(self, ref, state, est):
        if "scale" not in state:
            self.state_tensor(ref, "scale").fill_(0.5)

    def hyper(self, ref, extra=None):
        return {**super().hyper(ref, extra), "scale": self.state_tensor(ref, "scale")}

    def update(self, e, h):
        b = h.momentum * e.momentum_buffer + h.scale * e.g
        return b, {"momentum_buffer": b}


def test_half_state_is_the_d_sized_state_and_refused_for_eager_updates():
    """state_dtype stores the state of θ's shape that ``state_spec`` declares by default; state a rule declares
    of another shape keeps its dtype, and a load checks each against its declaration. A tensor whose update is
    eager (torch ops on its state) is refused half state, naming it, at construction."""
    from tests.engine.test_update import FactorMomentum

    W = nn.Parameter(torch.randn(3, 4))
    opt = ScaledMomentum([("W", W)], lr=0.1, state_dtype="bfloat16")
    opt.step(lambda: (W.detach() ** 2).sum())
    state = opt.state[W]
    assert state["momentum_buffer"].dtype == torch.bfloat16 and state["momentum_buffer"].abs().sum() > 0
    assert state["scale"].dtype == torch.float32 and state["scale"].shape == () and float(state["scale"]) == 0.5
    again = ScaledMomentum([("W", nn.Parameter(W.detach().clone()))], lr=0.1, state_dtype="bfloat16")
    again.load_state_dict(opt.state_dict())
    assert again.state[again.param_groups[0]["params"][0]]["scale"].dtype == torch.float32
    with pytest.raises(ValueError, match=r"state_dtype='bfloat16' with the eager update of 'W' \(FactorMomentum\."
                                         r"eager_update.*allowed: state_dtype='float32'"):
        FactorMomentum([("W", nn.Parameter(torch.randn(3, 4)))], lr=0.1, state_dtype="bfloat16")
    FactorMomentum([("W", nn.Parameter(torch.randn(3, 4)))], lr=0.1)  # float32 state: allowed


@pytest.mark.parametrize("rule", KEEPS_FLOAT32)
def test_a_rule_whose_state_is_a_point_refuses_half_state(rule):
    """MeZO-SVRG's state is the anchor θ̄, where losses are taken: stored in bfloat16 it would be another point."""
    with pytest.raises(ValueError, match="state_dtype='bfloat16'; allowed: 'float32'"):
        make(rule, [("x", nn.Parameter(torch.zeros(3)))], state_dtype="bfloat16")
