"""Every rule of the registry, with its options and the common ones, against a dense float64 transcription of
docs/algorithms.md §1–§3 (agreement 1e-10).

The harness below works on the concatenated vector θ ∈ R^30 and writes out the estimator (§1), the blocks, the
weight decay (§2) and the schedules; it only borrows the public sampler (the same seeds give the same
directions) and the public block selection. Each rule's update is its registry entry's ``reference``.
"""

import pytest
import torch

from zolab.engine.blocks import select
from zolab.engine.samplers import make_sampler
from zolab.engine.schedules import value_at
from zolab.engine.seeds import mix
from zolab.testing import REGISTRY, Dense

from ._problem import TinyProblem

STEPS = 6
SLICES = [slice(0, 24), slice(24, 30)]  # W (4x6, decays by default), b (6,)
BASE = dict(lr=0.05, mu=1e-3)
COMMON = [
    {},
    {"estimator": "forward", "num_queries": 3},
    {"directions": "sphere", "num_queries": 2},
    {"directions": "sphere", "scale": "none", "estimator": "forward"},
    {"directions": "rademacher", "num_queries": 2},
    {"weight_decay": 0.1},
    {"weight_decay": 0.1, "weight_decay_mode": "coupled", "num_queries": 2},
    {"seed": 123, "blocks": ["W", "b"], "block_selection": "uniform"},
    {"granularity": "tensor"},
    {"blocks": ["W", "b"], "blocks_per_step": "all"},
    {"rng": "torch"},
]


def cases():
    out = []
    for name, info in REGISTRY.items():
        for i, opts in enumerate(COMMON):
            if set(opts) & set(info.fixed) or (opts.get("granularity") and "blocks" in _defaults(info)):
                continue  # the rule's maths fixes this option (listed in its registry entry)
            out.append(pytest.param(name, opts, id=f"{name}-common{i}"))
        for i, opts in enumerate(info.variants):
            out.append(pytest.param(name, opts, id=f"{name}-variant{i}"))
    return out


def _defaults(info) -> dict:
    import inspect

    return {k: p.default for k, p in inspect.signature(info.cls).parameters.items()
            if p.default is not inspect.Parameter.empty}


class Harness:
    """ĝ, blocks, decay and schedules written out; the rule's update is ``info.reference``."""

    def __init__(self, info, opts: dict, shapes):
        self.info, self.shapes = info, shapes
        kw = {"block_selection": "permutation", **_defaults(info), **info.kwargs, **BASE, **opts}
        self.kw = kw
        spec = kw.get("blocks")
        all_blocks = kw.get("blocks_per_step") == "all"
        if kw.get("granularity") == "tensor":
            spec, all_blocks, kw["block_selection"] = "tensor", True, "cyclic"
        self.blocks = [[0, 1]] if spec is None else [[0], [1]]
        self.all_blocks = all_blocks
        self.state: dict = {}
        self.count = torch.zeros(30, dtype=torch.float64)
        self.schedules = info.make(list(TinyProblem().named_parameters()), **{**BASE, **opts}).schedules

    def hyper(self, t):
        h = {k: v for k, v in self.kw.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        if self.kw.get("betas") is not None:
            h["beta1"], h["beta2"] = self.kw["betas"]
        for k, s in self.schedules.items():
            v = tuple(value_at(x, t) for x in s) if isinstance(s, tuple) else value_at(s, t)
            if k == "betas":
                h["beta1"], h["beta2"] = v
            else:
                h[k] = v
        h.setdefault("eps", 1e-8)
        return h

    def direction(self, sampler, qseed, active, h, t):
        u = torch.zeros(30, dtype=torch.float64)
        noise = [torch.zeros(30, dtype=torch.float64), torch.zeros(30, dtype=torch.float64)]
        for i in active:
            like = torch.empty(self.shapes[i], dtype=torch.float64)
            if self.info.own_directions:  # ε₂ then ε₁ from one stream per tensor
                gen = sampler.generator(mix(qseed, i), like.device)
                for j in range(2):
                    noise[j][SLICES[i]] = sampler.draw(gen, like).flatten()
            elif self.info.direction is not None:  # the rule's structured directions, written out
                u[SLICES[i]] = self.info.direction(self.kw, sampler, qseed, i, self.shapes[i], t).flatten()
            else:
                u[SLICES[i]] = sampler.sample(mix(qseed, i), like).flatten()
        return u, noise

    def step(self, f, theta, t):
        kw = self.kw
        n_blocks = len(self.blocks)
        chosen = range(n_blocks) if self.all_blocks else [select(t, n_blocks, kw["block_selection"],
                                                                 kw.get("seed", 0))]
        if n_blocks == 1:
            chosen = [0]
        if self.info.joint is not None:  # the chosen blocks as one joint block (LeZO)
            joint = self.info.joint(t, ["all"] if n_blocks == 1 else ["W", "b"], kw)
            return self.update(f, theta, t, 0, joint[0], self.mask([i for b in joint for i in self.blocks[b]]))
        for position, b in enumerate(chosen):
            theta = self.update(f, theta, t, position if self.all_blocks else 0, b, self.mask(self.blocks[b]))
        return theta

    @staticmethod
    def mask(tensors):
        mask = torch.zeros(30, dtype=torch.bool)
        for i in tensors:
            mask[SLICES[i]] = True
        return mask

    def update(self, f, theta, t, position, block, mask):
        kw, h = self.kw, self.hyper(t)
        K, mu = kw.get("num_queries", 1), kw["mu"]
        sampler = make_sampler(kw.get("directions", "gaussian"), kw.get("rng", "counter"))
        dense = Dense(g=torch.zeros(30, dtype=torch.float64), ps=[], us=[], h=h, mask=mask, count=None,
                      options=kw, state=self.state,
                      scope={"global": "g", "group": "g", "block": block}[kw.get("scope", "global")],
                      t=t, seed=kw.get("seed", 0), shapes=tuple(tuple(s) for s in self.shapes), block=block,
                      theta=theta)
        active = [i for i in range(2) if mask[SLICES[i]].all()]
        self.state["delta"] = []  # Δ = ℓ₊ + ℓ₋ − 2ℓ₀ of each query (HiZOO's curvature)
        seeds = [mix(kw.get("seed", 0), t, position, k) for k in range(K)]
        for k in range(K if self.info.estimate is None else 0):
            u, noise = self.direction(sampler, seeds[k], active, h, t)
            if self.info.own_directions:
                u = self.info.own_direction(dense, noise) * mask
                self.state["noise"] = noise
            if kw.get("directions") == "sphere":
                u = u / u.norm()
            estimator = kw.get("estimator", "central")
            if estimator == "jvp":  # the exact directional derivative
                dense.ps.append(float(torch.func.jvp(f, (theta,), (u,))[1]))
            elif estimator in ("central", "three_point"):
                dense.ps.append(float((f(theta + mu * u) - f(theta - mu * u)) / (2 * mu)))
                self.state["delta"].append(float(f(theta + mu * u) + f(theta - mu * u) - 2 * f(theta)))
            else:
                dense.ps.append(float((f(theta + mu * u) - f(theta)) / mu))
            dense.us.append(u)
        scale = kw.get("scale") or ("dimension" if kw.get("directions") == "sphere" else "none")
        c = float(mask.sum()) if scale == "dimension" else 1.0
        decay = torch.zeros(30, dtype=torch.float64)
        for i, (name, shape) in enumerate(zip(("W", "b"), self.shapes)):  # by default only the 2-D tensor decays
            if self.info.decays(name, shape, kw) if self.info.decays else len(shape) >= 2:
                decay[SLICES[i]] = kw.get("weight_decay", 0.0)
        decay = decay * mask
        if self.info.estimate is not None:  # the rule's own scheme (MeZO-SVRG's anchor, FZOO's spread)

            def draw(s):
                u = self.direction(sampler, s, active, h, t)[0] * mask
                return u / u.norm() if kw.get("directions") == "sphere" else u

            dense.ps, dense.us = self.info.estimate(dense, f, theta, seeds, draw)
        g = sum(c / K * p * u for p, u in zip(dense.ps, dense.us))
        coupled = kw.get("weight_decay_mode") == "coupled"
        dense.g = g + decay * theta if coupled else g
        dense.f, dense.ghat = f, g
        self.count = self.count + mask
        dense.count = self.count
        U = self.info.reference(dense) * mask
        return theta - h["lr"] * (U if coupled else U + decay * theta)  # h["lr"]: the step's η (SVRG's anchors)


@pytest.mark.parametrize("rule,opts", cases())
def test_rule_matches_dense_transcription(rule, opts):
    info = REGISTRY[rule]
    if info.transcription_lr is not None:
        opts = {"lr": info.transcription_lr, **opts}
    problem = TinyProblem()
    opt = info.make(list(problem.named_parameters()), **{**BASE, **opts})
    if info.needs_model:
        opt.bind(problem)
    harness = Harness(info, opts, problem.shapes())
    theta = problem.dense()
    for t in range(1, STEPS + 1):
        opt.step(problem.loss)
        theta = harness.step(problem.f_dense, theta, t)
        torch.testing.assert_close(problem.dense(), theta, rtol=0, atol=1e-10, msg=f"{rule} {opts} step {t}")
    assert not torch.equal(problem.dense(), TinyProblem().dense()), "the rule never moved"


def test_every_rule_has_cases_and_says_which_common_options_it_fixes():
    """No rule silently skips the transcription: each has its defaults and every common option it does not fix."""
    ids = [p.id for p in cases()]
    for name, info in REGISTRY.items():
        assert f"{name}-common0" in ids
        covered = sum(i.startswith(f"{name}-common") for i in ids)
        excluded = [o for o in COMMON if set(o) & set(info.fixed) or (o.get("granularity") and
                                                                       "blocks" in _defaults(info))]
        assert covered + len(excluded) == len(COMMON), name
