"""Every rule and option against a dense float64 transcription of ALGORITHMS.md §1–§3 (agreement 1e-10).

The reference below works on the concatenated vector θ ∈ R^30 and only borrows the public sampler (the
same seeds give the same directions) and the public block selection; every equation is written out here.
"""

import math

import pytest
import torch

import zolab
from zolab.blocks import select
from zolab.directions import make_sampler, mix
from zolab.schedules import ThreePhase, value_at

from ._problem import TinyProblem

STEPS = 6
SLICES = [slice(0, 24), slice(24, 30)]  # W (4x6, decays by default), b (6,)
NAMES = ["W", "b"]


def dense_direction(sampler, query_seed, shapes, active):
    """u on the active tensors (zero elsewhere), drawn per tensor from mix(query_seed, tensor index)."""
    u = torch.zeros(30, dtype=torch.float64)
    for i in active:
        like = torch.empty(shapes[i], dtype=torch.float64)
        u[SLICES[i]] = sampler.sample(mix(query_seed, i), like).flatten()
    return u


class Reference:
    """Dense transcription of the step: estimator (§1), weight decay (§2), rule update (§3)."""

    def __init__(self, rule, kw):
        self.rule, self.kw = rule, kw
        self.state = {}

    # §1: ĝ = (c/K) Σ p_k u_k over the active block
    def estimate(self, f, theta, t, position, active, mask):
        kw = self.kw
        K, mu = kw.get("num_queries", 1), kw["mu"]
        sampler = make_sampler(kw["directions"], kw.get("rng", "counter"))
        seed = kw.get("seed", 0)
        us, ps, losses = [], [], []
        for k in range(K):
            u = dense_direction(sampler, mix(seed, t, position, k), self.shapes, active)
            if kw["directions"] == "sphere":
                u = u / u.norm()
            if kw["estimator"] == "central":
                fp, fm = f(theta + mu * u), f(theta - mu * u)
                ps.append((fp - fm) / (2 * mu))
                losses += [fp, fm]
            else:
                f0 = f(theta)
                fp = f(theta + mu * u)
                ps.append((fp - f0) / mu)
                losses = [f0]
            us.append(u)
        scale = kw.get("scale") or ("dimension" if kw["directions"] == "sphere" else "none")
        c = float(mask.sum()) if scale == "dimension" else 1.0
        return us, ps, c, sum(losses) / len(losses)

    def step(self, f, theta, t):
        kw = self.kw
        blocks = kw["blocks"]
        chosen = range(len(blocks)) if kw.get("all_blocks") else [select(t, len(blocks), kw["sel"], kw.get("seed", 0))]
        if len(blocks) == 1:
            chosen = [0]
        for position, b in enumerate(chosen):
            active = blocks[b]
            mask = torch.zeros(30, dtype=torch.bool)
            for i in active:
                mask[SLICES[i]] = True
            theta = self.update(f, theta, t, position if kw.get("all_blocks") else 0, active, mask, b)
        return theta

    def update(self, f, theta, t, position, active, mask, block):
        kw, st, rule = self.kw, self.state, self.rule
        lr, wd = kw["lr"], kw.get("weight_decay", 0.0)
        decay = torch.zeros(30, dtype=torch.float64)
        decay[SLICES[0]] = wd  # only the 2-D tensor decays by default
        decay = decay * mask
        eps = kw.get("eps", 1e-8)
        us, ps, c, _ = self.estimate(f, theta, t, position, active, mask)
        K = len(us)
        if rule == "zo_adamu":
            return self.adamu(f, theta, t, us, ps, c, mask, decay)
        g = sum(c / K * p * u for p, u in zip(ps, us))
        coupled = kw.get("weight_decay_mode") == "coupled"
        if coupled:
            g = g + decay * theta
        z = torch.zeros(30, dtype=torch.float64)
        if rule in ("zo_sgd", "mezo_bcd"):
            U = g
        elif rule == "zo_sgd_momentum":
            st["b"] = kw["momentum"] * st.get("b", z) + g
            U = st["b"]
        elif rule == "zo_signsgd":
            if kw.get("sign_of") == "scalar":
                U = sum(torch.sign(p) * u for p, u in zip(ps, us)) / K
            else:
                U = torch.sign(g)
        elif rule in ("zo_adamm", "radazo"):
            b1, b2 = kw["betas"]
            m_new = b1 * st.get("m", z) + (1 - b1) * g
            if rule == "zo_adamm":
                v_new = b2 * st.get("v", z) + (1 - b2) * g**2
            elif st.get("n", z)[mask][0] + 1 <= kw.get("v_warmup_steps", 0):
                v_new = torch.ones(30, dtype=torch.float64)
            else:
                v_new = b2 * st.get("v", z) + (1 - b2) * m_new**2
            st["m"] = torch.where(mask, m_new, st.get("m", z))
            st["v"] = torch.where(mask, v_new, st.get("v", z))
            st["n"] = st.get("n", z) + mask
            m, v = st["m"], st["v"]
            if kw.get("amsgrad"):
                st["vmax"] = torch.where(mask, torch.maximum(st.get("vmax", z), v), st.get("vmax", z))
                v = st["vmax"]
            if kw.get("bias_correction"):
                n = st["n"].clamp(min=1)
                m, v = m / (1 - b1**n), v / (1 - b2**n)
            den = torch.sqrt(v + eps) if kw.get("eps_inside_sqrt") else torch.sqrt(v) + eps
            U = m / den
        elif rule == "zo_rmsprop":
            beta = kw["beta"]
            st["v"] = torch.where(mask, beta * st.get("v", z) + (1 - beta) * g**2, st.get("v", z))
            den = torch.sqrt(st["v"] + eps) if kw.get("eps_inside_sqrt") else torch.sqrt(st["v"]) + eps
            U = g / den
        elif rule == "meazo":
            beta = kw["beta"]
            key = {"global": "g", "group": "g", "block": block}[kw.get("scope", "global")]
            pbar = sum(ps) / K
            s = pbar**2 if kw.get("v_stat", "sq_mean") == "sq_mean" else sum(p**2 for p in ps) / K
            v, n = st.get(("v", key), 0.0), st.get(("n", key), 0) + 1
            v = beta * v + (1 - beta) * s
            st[("v", key)], st[("n", key)] = v, n
            U = g / (math.sqrt(v / (1 - beta**n)) + eps)
        else:
            raise AssertionError(rule)
        U = U * mask
        if not coupled:
            return theta - lr * (U + decay * theta)
        return theta - lr * U

    def adamu(self, f, theta, t, us, ps, c, mask, decay):
        # §3.7, with ε₂ drawn before ε₁ from one generator per tensor (as the public sampler draws them)
        kw, st = self.kw, self.state
        alpha = value_at(kw["alpha"], t)
        b1, b2 = (value_at(b, t) for b in kw["betas"])
        sampler = make_sampler("gaussian")
        e1 = torch.zeros(30, dtype=torch.float64)
        e2 = torch.zeros(30, dtype=torch.float64)
        q = mix(kw.get("seed", 0), t, 0, 0)
        for i in range(2):
            like = torch.empty(self.shapes[i], dtype=torch.float64)
            gen = sampler.generator(mix(q, i), like.device)
            e2[SLICES[i]] = sampler.draw(gen, like).flatten()
            e1[SLICES[i]] = sampler.draw(gen, like).flatten()
        m = st.get("m", torch.zeros(30, dtype=torch.float64))
        zdot = math.sqrt(alpha) * e1
        zddot = m + math.sqrt(1 - alpha) * e2
        u = b1 * zdot + (1 - b1) * zddot
        mu = kw["mu"]
        p = (f(theta + mu * u) - f(theta - mu * u)) / (2 * mu)
        v = b2 * zdot**2 + (1 - b2) * zddot**2
        st["m"] = u
        return theta - kw["lr"] * (c * p * u / (torch.sqrt(v) + kw.get("eps", 1e-8)) + decay * theta)


BASE = dict(lr=0.05, mu=1e-3)
SPHERE_FWD = dict(directions="sphere", estimator="forward")
GAUSS_CEN = dict(directions="gaussian", estimator="central")
CASES = [
    ("zo_sgd", {}),
    ("zo_sgd", dict(estimator="forward", num_queries=3)),
    ("zo_sgd", dict(directions="sphere", num_queries=2)),
    ("zo_sgd", dict(directions="sphere", scale="none", estimator="forward")),
    ("zo_sgd", dict(directions="rademacher", num_queries=2)),
    ("zo_sgd", dict(weight_decay=0.1)),
    ("zo_sgd", dict(weight_decay=0.1, weight_decay_mode="coupled", num_queries=2)),
    ("zo_sgd", dict(seed=123, blocks=["W", "b"], block_selection="uniform")),
    ("zo_sgd_momentum", dict(momentum=0.9, num_queries=2)),
    ("zo_sgd_momentum", dict(momentum=0.5, weight_decay=0.1, weight_decay_mode="coupled")),
    ("zo_signsgd", dict(lr=0.01)),
    ("zo_signsgd", dict(lr=0.01, sign_of="scalar", num_queries=3, directions="gaussian")),
    ("zo_adamm", dict(lr=0.01, betas=(0.9, 0.99), num_queries=3)),
    ("zo_adamm", dict(lr=0.01, betas=(0.8, 0.9), amsgrad=True)),
    ("zo_adamm", dict(lr=0.01, betas=(0.9, 0.99), bias_correction=True, eps=1e-3)),
    ("zo_adamm", dict(lr=0.01, betas=(0.9, 0.99), eps_inside_sqrt=True, eps=1e-4, weight_decay=0.1)),
    ("zo_rmsprop", dict(lr=0.01, beta=0.9, num_queries=2)),
    ("zo_rmsprop", dict(lr=0.01, beta=0.99, eps_inside_sqrt=True, eps=1e-3)),
    ("radazo", dict(lr=0.01, betas=(0.9, 0.99), num_queries=3)),
    ("radazo", dict(lr=0.01, betas=(0.9, 0.99), v_warmup_steps=2)),
    ("radazo", dict(lr=0.01, betas=(0.5, 0.9), eps_inside_sqrt=True, eps=1e-3, weight_decay=0.2)),
    ("radazo", dict(lr=0.01, betas=(0.9, 0.99), granularity="tensor", num_queries=2)),
    ("radazo", dict(lr=0.01, betas=(0.9, 0.99), blocks=["W", "b"], block_selection="cyclic")),
    ("radazo", dict(lr=0.01, betas=(0.9, 0.99), blocks=["W", "b"], blocks_per_step="all", **GAUSS_CEN)),
    ("zo_adamu", dict(lr=0.01, alpha=0.6, betas=(0.7, 0.4))),
    ("zo_adamu", dict(lr=0.01, total_steps=10, t1=2, weight_decay=0.1)),
    ("zo_adamu", dict(lr=0.01, total_steps=10, t1=2, final="paper_prose")),
    ("meazo", dict(lr=0.01, beta=0.9)),
    ("meazo", dict(lr=0.01, beta=0.9, num_queries=3, v_stat="mean_sq")),
    ("meazo", dict(lr=0.01, beta=0.9, num_queries=2, scope="block", blocks=["W", "b"], block_selection="cyclic")),
    ("meazo", dict(lr=0.01, beta=0.99, scope="group", weight_decay=0.1)),
    ("mezo_bcd", dict()),
    ("mezo_bcd", dict(block_selection="cyclic", weight_decay=0.1)),
    ("mezo_bcd", dict(block_selection="uniform", num_queries=2, estimator="forward")),
    ("mezo_bcd", dict(blocks=2, block_selection="cyclic")),
    # the torch.Generator directions (the unfused paths)
    ("zo_sgd", dict(rng="torch", num_queries=2)),
    ("zo_adamm", dict(lr=0.01, betas=(0.9, 0.99), rng="torch")),
    ("radazo", dict(lr=0.01, betas=(0.9, 0.99), num_queries=2, rng="torch")),
]

DEFAULT_LAW = {
    "zo_sgd": GAUSS_CEN, "zo_sgd_momentum": GAUSS_CEN, "meazo": GAUSS_CEN, "mezo_bcd": GAUSS_CEN,
    "zo_adamu": GAUSS_CEN, "zo_signsgd": SPHERE_FWD, "zo_adamm": SPHERE_FWD, "zo_rmsprop": SPHERE_FWD,
    "radazo": SPHERE_FWD,
}


def reference_kwargs(rule, opts):
    kw = {**BASE, **DEFAULT_LAW[rule], **opts}
    spec = opts.get("blocks", "module" if rule == "mezo_bcd" else None)
    if opts.get("granularity") == "tensor":
        spec, kw["all_blocks"], kw["sel"] = "tensor", True, "cyclic"
    kw["blocks"] = [[0, 1]] if spec is None else [[0], [1]]
    kw.setdefault("sel", opts.get("block_selection", "permutation"))
    kw["all_blocks"] = kw.get("all_blocks") or opts.get("blocks_per_step") == "all"
    if rule == "zo_adamu" and "alpha" not in opts:
        s = zolab.adamu_schedules(opts["total_steps"], opts["t1"], final=opts.get("final", "hold"))
        kw["alpha"], kw["betas"] = s[0], (s[1], s[2])
    if rule == "zo_sgd_momentum":
        kw.setdefault("momentum", 0.9)
    return kw


@pytest.mark.parametrize("rule,opts", CASES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(CASES)])
def test_rule_matches_dense_transcription(rule, opts):
    problem = TinyProblem()
    kwargs = {**BASE, **opts}
    opt = zolab.RULES[rule](list(problem.named_parameters()), **kwargs)
    ref = Reference(rule, reference_kwargs(rule, opts))
    ref.shapes = problem.shapes()
    theta = problem.dense()
    for t in range(1, STEPS + 1):
        opt.step(problem.loss)
        theta = ref.step(problem.f_dense, theta, t)
        torch.testing.assert_close(problem.dense(), theta, rtol=0, atol=1e-10, msg=f"{rule} {opts} step {t}")
    assert not torch.equal(problem.dense(), TinyProblem().dense()), "the rule never moved"


def test_returned_loss_is_the_same_quantity_for_every_rule():
    """forward: f(θ); central: mean of the ± losses (§2), never ℓ₊ alone."""
    problem = TinyProblem()
    f0 = float(problem.loss().detach())
    fwd = zolab.ZOSGD(problem.parameters(), lr=0.0, estimator="forward", num_queries=3)
    assert float(fwd.step(problem.loss)) == f0
    cen = zolab.ZOSGD(problem.parameters(), lr=0.0, num_queries=2)
    loss = cen.step(problem.loss)
    torch.testing.assert_close(loss, cen.record.blocks[0].losses.mean())
    assert len(cen.record.blocks[0].losses) == 4


def test_adamu_schedule_bound_on_step_ratio():
    """|u|/√v <= sqrt(β1²/β2 + (1−β1)²/(1−β2)) along the annealed schedule (§3.8)."""
    total = 2000
    s_alpha, s_b1, s_b2 = zolab.adamu_schedules(total, t1=100)
    worst = 0.0
    for t in range(1, total + 1, 7):
        b1, b2 = s_b1(t), s_b2(t)
        assert 0.01 <= b2 <= 1 and 0 <= s_alpha(t) <= 1
        if b2 < 1:
            worst = max(worst, math.sqrt(b1**2 / b2 + (1 - b1) ** 2 / (1 - b2)))
    # 1/sqrt(0.01) = 10 is the floor's bound; the unclamped schedule would reach ~6e3
    assert worst <= math.sqrt(1 / 0.01 + 1 / 0.99) + 1e-9
    # and the same bound holds for actual draws: |u_i| / sqrt(v_i) elementwise
    gen = torch.Generator().manual_seed(0)
    for t in (1, 150, 900, 1599, 1900):
        a, b1, b2 = s_alpha(t), s_b1(t), s_b2(t)
        zd = math.sqrt(a) * torch.randn(10_000, generator=gen, dtype=torch.float64)
        zdd = torch.randn(10_000, generator=gen, dtype=torch.float64)
        u, v = b1 * zd + (1 - b1) * zdd, b2 * zd**2 + (1 - b2) * zdd**2
        bound = math.sqrt(b1**2 / b2 + ((1 - b1) ** 2 / (1 - b2) if b2 < 1 else 0.0))
        assert float((u.abs() / v.sqrt()).max()) <= bound + 1e-9


def test_three_phase_values_and_validation():
    s = ThreePhase(total_steps=20_000, phi=1.0, t1=1024)
    assert s(1) == 1.0 and s(1023) == 1.0 and s(1024) == 1.0
    assert s(16_000) == s(15_999) == s(19_999)  # "hold"
    with pytest.raises(ValueError, match="L_t"):
        ThreePhase(total_steps=100_000, phi=1.5, t1=1024, t2=16_000)
    with pytest.raises(ValueError, match="t2 > t1"):
        ThreePhase(total_steps=1000, t1=1024)
