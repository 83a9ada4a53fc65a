"""The update: θ' = θ(1 − ηλ) − ηU with the rule's U, state written back, host state restored when planning
fails, a Transaction that swaps spare tensors in and rolls them back bit for bit, and eager updates (torch
ops, state of other shapes) inside the same plan-then-write order and the same transactions."""

from collections import defaultdict

import pytest
import torch
from torch import nn

import zolab
from zolab.engine.estimator import BlockEstimate, Query
from zolab.engine.groups import compute_type
from zolab.engine.update import Transaction, returned


def estimate(opt, diffs, seeds=(11, 12)):
    """A block estimate over all the optimizer's tensors with the given differences δ_k (no closure needed)."""
    refs = opt.partition()[0][1]
    diffs = torch.tensor(diffs, dtype=torch.float64)
    return BlockEstimate("all", refs, [Query(s) for s in seeds], diffs, diffs, diffs[0], 1.0)


def g_hat(opt, est, ref):
    return opt.grad_estimator.directions.combine(ref, est.queries, est.coefficients(ref))


@pytest.mark.parametrize("mode", ["decoupled", "coupled"])
def test_sgd_update_is_theta_minus_lr_times_g_with_weight_decay(mode):
    W = nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    opt = zolab.ZOSGD([("W", W)], lr=0.1, mu=0.01, weight_decay=0.5, weight_decay_mode=mode, num_queries=2)
    before = W.detach().clone()
    est = estimate(opt, [0.02, -0.03])
    g = g_hat(opt, est, est.refs[0])
    opt.updater.apply(est)
    expected = before * (1 - 0.1 * 0.5) - 0.1 * g if mode == "decoupled" else before - 0.1 * (g + 0.5 * before)
    torch.testing.assert_close(W.detach(), expected, rtol=1e-14, atol=1e-15)


def test_a_one_dimensional_tensor_decays_only_when_its_group_asks():
    b, c = nn.Parameter(torch.ones(5, dtype=torch.float64)), nn.Parameter(torch.ones(5, dtype=torch.float64))
    opt = zolab.ZOSGD([{"params": [("b", b)]}, {"params": [("c", c)], "weight_decay": 0.5}], lr=0.1,
                      weight_decay=0.5, num_queries=2)
    est = estimate(opt, [0.0, 0.0])  # ĝ = 0: only decay moves θ
    opt.updater.apply(est)
    assert torch.equal(b.detach(), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(c.detach(), torch.full((5,), 0.95, dtype=torch.float64))


def test_momentum_state_is_written_back_by_the_same_pass():
    x = nn.Parameter(torch.zeros(6, dtype=torch.float64))
    opt = zolab.ZOSGDMomentum([("x", x)], lr=0.1, momentum=0.5, num_queries=2)
    est1, est2 = estimate(opt, [0.01, 0.02]), estimate(opt, [-0.03, 0.01], seeds=(21, 22))
    g1, g2 = g_hat(opt, est1, est1.refs[0]), g_hat(opt, est2, est2.refs[0])
    opt.updater.apply(est1)
    opt.updater.apply(est2)
    b = 0.5 * g1 + g2
    torch.testing.assert_close(opt.state[x]["momentum_buffer"], b, rtol=1e-14, atol=1e-16)
    torch.testing.assert_close(x.detach(), -0.1 * g1 - 0.1 * b, rtol=1e-14, atol=1e-16)


def test_a_plan_that_fails_leaves_state_counters_and_parameters_as_they_were():
    class Failing(zolab.ZOAdaMM):
        def prepare(self, ref, state, est):
            out = super().prepare(ref, state, est)  # counts the update in the host state first
            self.zo["prepared"] = self.zo.get("prepared", 0) + 1
            if ref.name == "b":
                raise RuntimeError("boom in prepare")
            return out

    w, b = nn.Parameter(torch.ones(4, 3)), nn.Parameter(torch.ones(3))
    opt = Failing([("w", w), ("b", b)], lr=0.1)
    with pytest.raises(RuntimeError, match="boom in prepare"):
        opt.updater.apply(estimate(opt, [0.1], seeds=(3,)))
    assert all(not opt.state[p] for p in (w, b)) and "prepared" not in opt.zo
    assert torch.equal(w, torch.ones(4, 3)) and torch.equal(b, torch.ones(3))


def test_programs_are_traced_once_per_variant():
    opt = zolab.ZOSGD([nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2, 2))])
    a, b = opt.partition()[0][1]
    p = opt.updater.program(a, 2, False, True, False)
    assert opt.updater.program(a, 2, False, True, False) is p and opt.updater.program(b, 2, False, True, False) is p
    assert opt.updater.program(a, 2, True, False, False) is not p


def test_an_update_returns_u_or_u_and_its_new_state():
    u = torch.ones(2)
    assert returned(u) == (u, {}) and returned((u, {"m": u}))[1] == {"m": u}


def test_a_transaction_rolls_back_to_the_original_tensors_bit_for_bit():
    p = nn.Parameter(torch.randn(5))
    m = torch.randn(5)
    state = {"m": m, "updates": 3}
    data, bits, m_bits = p.data, p.detach().clone(), m.clone()
    tx = Transaction(defaultdict(list))
    outputs = tx.outputs(p, state, ["m"], dict(state))
    outputs["theta"].fill_(7.0)
    outputs["state:m"].fill_(-7.0)
    tx.swap_in(p, state, outputs)
    state["updates"] = 4
    assert torch.equal(p.data, torch.full((5,), 7.0)) and torch.equal(state["m"], torch.full((5,), -7.0))
    assert torch.equal(data, bits) and torch.equal(m, m_bits)  # the originals were never written
    tx.rollback()
    assert p.data_ptr() == data.data_ptr() and torch.equal(p.detach(), bits)  # the original storage is back
    assert state["m"] is m and torch.equal(m, m_bits) and state["updates"] == 3


def test_a_committed_transaction_keeps_the_originals_as_the_next_steps_spares():
    p = nn.Parameter(torch.zeros(4))
    state = {"m": torch.zeros(4)}
    spares = defaultdict(list)
    original, original_m = p.data, state["m"]
    tx = Transaction(spares)
    tx.swap_in(p, state, tx.outputs(p, state, ["m"], dict(state)))
    tx.commit()
    assert p.data_ptr() != original.data_ptr() and tx.saved == []
    free = [t.data_ptr() for t in spares[(torch.Size([4]), torch.float32, torch.device("cpu"))]]
    assert sorted(free) == sorted([original.data_ptr(), original_m.data_ptr()])
    assert Transaction(spares).spare(p.data).data_ptr() in free  # reused, not allocated


# ------------------------------------------------------------------ eager updates, state of any shape
class FactorMomentum(zolab.ZOSGD):
    """LOZO-M's shape, on plain Gaussian directions: each matrix keeps a factor-space momentum M (m × 2) and a
    0-dim count, updated eagerly: M ← ½M + p·1ᵀ/m (p the first projected gradient), θ ← θ − η M·1 broadcast."""

    def is_eager(self, ref):
        return ref.param.ndim == 2

    def state_spec(self, ref, name):
        if name == "M":
            return (ref.param.shape[0], 2), compute_type(ref.param)
        if name == "count":
            return (), torch.float64
        return super().state_spec(ref, name)

    def prepare(self, ref, state, est):
        if self.is_eager(ref):
            self.state_tensor(ref, "M")
            self.state_tensor(ref, "count")

    def eager_update(self, ref, est, h, theta, state, out):
        p = est.coefficients(ref)[0]
        M = out["state:M"].mul_(0.5).add_(p / ref.param.shape[0])
        out["state:count"].add_(1)
        out["theta"].sub_(h.lr * M.sum(1, keepdim=True))


def test_an_eager_update_writes_theta_and_state_of_other_shapes():
    W, b = nn.Parameter(torch.randn(3, 4, dtype=torch.float64)), nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = FactorMomentum([("W", W), ("b", b)], lr=0.1, num_queries=1)
    w0, ptr = W.detach().clone(), W.data_ptr()
    est1, est2 = estimate(opt, [0.02], seeds=(5,)), estimate(opt, [-0.01], seeds=(6,))
    gb = g_hat(opt, est1, est1.refs[1])
    opt.updater.apply(est1)
    opt.updater.apply(est2)
    p1, p2 = [float(e.coefficients(e.refs[0])[0]) for e in (est1, est2)]
    m1, m2 = p1 / 3, 0.5 * p1 / 3 + p2 / 3
    torch.testing.assert_close(opt.state[W]["M"], torch.full((3, 2), m2, dtype=torch.float64))
    assert opt.state[W]["count"].shape == () and float(opt.state[W]["count"]) == 2.0
    torch.testing.assert_close(W.detach(), w0 - 0.1 * 2 * (m1 + m2), rtol=1e-14, atol=1e-15)
    assert W.data_ptr() == ptr  # outside a transaction the eager update writes in place
    assert "M" not in opt.state[b]  # the vector's update is the traced SGD program
    torch.testing.assert_close(b.detach(), -0.1 * gb - 0.1 * g_hat(opt, est2, est2.refs[1]), rtol=1e-14, atol=1e-16)


def test_a_several_block_step_with_eager_updates_is_undone_bit_for_bit():
    """Blocks W then b: W's eager update goes to spare tensors, b's loss is NaN, and W, M and the count are the
    originals again (their storage, their bits)."""
    W, b = nn.Parameter(torch.randn(3, 4)), nn.Parameter(torch.randn(4))
    opt = FactorMomentum([("W", W), ("b", b)], lr=0.1, blocks=["W", "b"], blocks_per_step="all")
    opt.step(lambda: W.sum() + b.sum())
    saved = {k: v.clone() for k, v in opt.state[W].items()}
    data, bits = W.data, W.detach().clone()
    calls = {"n": 0}

    def closure():  # finite while W's block is perturbed, NaN for b's
        calls["n"] += 1
        return W.sum() + b.sum() * (1.0 if calls["n"] <= 2 else float("nan"))

    with pytest.raises(FloatingPointError, match="block 'b'"):
        opt.step(closure)
    assert W.data.data_ptr() == data.data_ptr() and torch.equal(W.detach(), bits)
    assert all(torch.equal(opt.state[W][k], v) for k, v in saved.items())
    opt.step(lambda: W.sum() + b.sum())  # and the next step goes on
    assert float(opt.state[W]["count"]) == 2.0
