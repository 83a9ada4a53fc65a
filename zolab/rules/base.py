"""Shared plumbing of every ZO rule: a ``torch.optim.Optimizer`` whose ``step(closure)`` needs only losses.

A rule = direction sampler × estimator × update. A subclass sets its ``defaults`` and implements
``_update(ref, g, state) -> U``; the base applies θ ← θ(1 − ηλ) − ηU (decoupled decay) to every tensor of
the active block(s), tensor by tensor, regenerating the directions from the step's seeds.

Randomness is a pure function of (``seed``, step t, block position, query k, tensor index), so the random
stream is part of the state by construction: ``state_dict()`` carries t and a resumed run draws the same
directions. Global counters live under ``state_dict()["zo"]`` (plain ints and 0-dim tensors), not under a
parameter, so they are never cast to a parameter's dtype.
"""

from __future__ import annotations

import copy
import math

import torch

from zolab import blocks as _blocks
from zolab import kernels
from zolab.directions import DirectionSampler, make_sampler, mix, mix_each
from zolab.estimator import ESTIMATORS, SCALES, BlockEstimate, ParamRef, Query, StepRecord, estimate
from zolab.perturb import PERTURB_MODES, ModulePerturbation, new_pool
from zolab.schedules import Schedule, value_at

NONFINITE = ("raise", "skip", "ignore")
WEIGHT_DECAY_MODES = ("decoupled", "coupled")
GRANULARITIES = ("model", "tensor")


def _check_range(name: str, value, lo: float, hi: float, hi_open: bool = True, lo_open: bool = False):
    if isinstance(value, Schedule):
        return
    bad = not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value)
    bad = bad or value < lo or (lo_open and value == lo) or value > hi or (hi_open and value == hi)
    if bad:
        lo_s = "(" if lo_open else "["
        hi_s = ")" if hi_open else "]"
        raise ValueError(f"invalid {name}: {value!r}; allowed: a number in {lo_s}{lo}, {hi}{hi_s}")


def _wide(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 promoted to float32 for reductions; float32/float64 as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class ZOOptimizer(torch.optim.Optimizer):
    """Base class. Args common to every rule (each rule documents its own):

    lr: step size η (float or ``Schedule``), >= 0.
    mu: perturbation radius μ, > 0 (per group allowed).
    num_queries: K >= 1 directions per step.
    estimator: ``"forward"`` (K + 1 forwards) or ``"central"`` (2K forwards).
    directions: ``"gaussian"``, ``"sphere"``, ``"rademacher"`` or a ``DirectionSampler``.
    scale: ``"dimension"`` (c = d), ``"none"`` (c = 1) or None: ``dimension`` for sphere, else ``none``.
    weight_decay: λ >= 0; by default only for tensors with 2+ dims, unless the group sets it explicitly.
    weight_decay_mode: ``"decoupled"`` θ ← θ − η(U + λθ) (MeZO) or ``"coupled"`` (λθ added to ĝ).
    seed: integer seed of every random draw of this optimizer.
    perturb: ``"copy"`` (default: every perturbed tensor is built before the closure runs, one extra copy
        of them) or ``"module"`` (after ``bind(model)``: each is built only while its module runs, so a
        step needs about inference memory; see ``zolab.perturb``). ``chunk_numel``: the largest
        ``nn.Linear`` weight built whole in ``module`` mode (larger ones are computed in row chunks).
    rng: ``"counter"`` (default: z a pure function of (key, element), fused one-pass kernels, the same
        numbers on CPU and GPU) or ``"torch"`` (a ``torch.Generator`` per tensor); see ``zolab.directions``.
    nonfinite: ``"raise"`` (error naming the step and losses), ``"skip"`` (no update, counted) or
        ``"ignore"`` (no check, as MeZO's code: a non-finite loss reaches the parameters). The check reads
        the losses on the host, so on CUDA "raise" and "skip" cost one synchronisation a step; with
        "ignore" a step never waits for the device.
    blocks: None (all at once), ``"module"``, ``"tensor"``, an int, or name regexes (see ``zolab.blocks``).
    block_selection: ``"cyclic"``, ``"permutation"`` or ``"uniform"``.
    blocks_per_step: 1 (block-coordinate) or ``"all"`` (every block in model order, each estimated then
        updated, as ZO-Bench's block-wise ZO).
    granularity: ``"model"`` or ``"tensor"`` (R-AdaZO's code: each tensor its own block, all per step).

    Parameters may be given as ``model.named_parameters()`` (needed for ``blocks="module"``/regexes).
    """

    elementwise_linear = False  # U = g·s for a scalar s: allows the fused path that never materializes g

    def __init__(
        self,
        params,
        defaults: dict,
        *,
        num_queries: int = 1,
        estimator: str = "central",
        directions: str | DirectionSampler = "gaussian",
        scale: str | None = None,
        weight_decay_mode: str = "decoupled",
        seed: int = 0,
        nonfinite: str = "raise",
        blocks=None,
        block_selection: str = "permutation",
        blocks_per_step: int | str = 1,
        granularity: str = "model",
        rng: str = "counter",
        perturb: str = "copy",
        chunk_numel: int = 1 << 21,
    ):
        if isinstance(num_queries, bool) or not isinstance(num_queries, int) or num_queries < 1:
            raise ValueError(f"invalid num_queries: {num_queries!r}; allowed: an integer >= 1")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
            raise ValueError(f"invalid seed: {seed!r}; allowed: an integer in [0, 2**64)")
        for name, value, allowed in (
            ("estimator", estimator, ESTIMATORS),
            ("weight_decay_mode", weight_decay_mode, WEIGHT_DECAY_MODES),
            ("nonfinite", nonfinite, NONFINITE),
            ("block_selection", block_selection, _blocks.SELECTIONS),
            ("granularity", granularity, GRANULARITIES),
            ("perturb", perturb, PERTURB_MODES),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; allowed: {list(allowed)}")
        if scale is not None and scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; allowed: {list(SCALES)} or None (auto)")
        if blocks_per_step not in (1, "all"):
            raise ValueError(f"invalid blocks_per_step {blocks_per_step!r}; allowed: 1 or 'all'")
        if granularity == "tensor":
            if blocks is not None:
                raise ValueError(f"granularity='tensor' makes each tensor a block; got blocks={blocks!r} too")
            blocks, blocks_per_step, block_selection = "tensor", "all", "cyclic"
        self.sampler = make_sampler(directions, rng)
        if perturb == "module" and not self.sampler.fused:
            raise ValueError(f"perturb='module' needs rng='counter' (draws of any element); got rng={rng!r}")
        if isinstance(chunk_numel, bool) or not isinstance(chunk_numel, int) or chunk_numel < 1:
            raise ValueError(f"invalid chunk_numel: {chunk_numel!r}; allowed: an integer >= 1")
        self.perturb, self.chunk_numel = perturb, chunk_numel
        self._model = None
        self._pool = new_pool()
        self.num_queries, self.estimator, self.seed = num_queries, estimator, int(seed)
        self.scale = scale or ("dimension" if self.sampler.normalize else "none")
        self.weight_decay_mode, self.nonfinite = weight_decay_mode, nonfinite
        self.block_spec, self.block_selection, self.blocks_per_step = blocks, block_selection, blocks_per_step
        self.granularity = granularity
        # Schedules live on the optimizer, their current values in the groups (state_dict stays plain).
        self.schedules = {k: v for k, v in defaults.items() if self._has_schedule(v)}
        defaults = {k: self._resolve(v, 1) for k, v in defaults.items()}
        self.zo = {"step": 0, "forwards": 0, "skipped": 0}
        self.record: StepRecord | None = None
        self._partition = None
        self._buffers: dict = {}  # scratch tensors: per tensor index, and (index, "U"|"points") for drawn steps
        self.resume_overrides: tuple[str, ...] = ()  # group hyper-parameters load_state_dict takes from self
        super().__init__(params, defaults)
        self.partition()  # bad block specs fail here, before any step

    # ---------------------------------------------------------------- groups and validation
    @staticmethod
    def _has_schedule(v) -> bool:
        return isinstance(v, Schedule) or (isinstance(v, tuple) and any(isinstance(x, Schedule) for x in v))

    @staticmethod
    def _resolve(v, t: int):
        return tuple(value_at(x, t) for x in v) if isinstance(v, tuple) else value_at(v, t)

    def add_param_group(self, param_group: dict) -> None:
        if not isinstance(param_group, dict):
            param_group = {"params": param_group}
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        if params and isinstance(params[0], tuple):
            param_group["param_names"] = [n for n, _ in params]
            params = [p for _, p in params]
        param_group["params"] = params
        for p in params:
            if not isinstance(p, torch.Tensor) or not (p.is_floating_point()):
                what = p.dtype if isinstance(p, torch.Tensor) else type(p).__name__
                raise ValueError(f"parameter of type {what} is not supported; allowed: real floating-point tensors "
                                 "(float16, bfloat16, float32, float64)")
        # Decay applies to 1-D tensors only when the group itself asks for decay (ALGORITHMS.md §2).
        param_group.setdefault("decay_1d", "weight_decay" in param_group)
        for k, v in list(param_group.items()):
            if self._has_schedule(v):
                raise ValueError(f"param group {k!r}: schedules go to the constructor (they apply to all groups)")
        merged = {**self.defaults, **param_group}
        self._check_group(merged)
        super().add_param_group(param_group)
        self._partition = None

    def _check_group(self, g: dict) -> None:
        _check_range("lr", g["lr"], 0.0, math.inf)
        _check_range("mu", g["mu"], 0.0, math.inf, lo_open=True)
        _check_range("weight_decay", g.get("weight_decay", 0.0), 0.0, math.inf)
        _check_range("eps", g.get("eps", 0.0), 0.0, math.inf)
        self._check_betas(g, hi_open=True)

    @staticmethod
    def _check_betas(g: dict, hi_open: bool) -> None:
        if "betas" not in g:
            return
        betas = g["betas"]
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            raise ValueError(f"invalid betas: {betas!r}; allowed: two numbers (beta1, beta2)")
        for i, b in enumerate(betas):
            _check_range(f"betas[{i}]", b, 0.0, 1.0, hi_open=hi_open)

    def _refs(self) -> list[ParamRef]:
        refs, i = [], 0
        for group in self.param_groups:
            names = group.get("param_names") or [None] * len(group["params"])
            for p, name in zip(group["params"], names):
                refs.append(ParamRef(i, p, name or f"param{i}", group))
                i += 1
        return refs

    def partition(self) -> list[tuple[str, list[ParamRef]]]:
        """The ordered blocks of trainable tensors (tensors with ``requires_grad=False`` are skipped)."""
        if self._partition is None:
            refs = [r for r in self._refs() if r.param.requires_grad]
            if not refs:
                raise ValueError("no trainable parameter (all have requires_grad=False)")
            named = any("param_names" in g for g in self.param_groups)
            if self.block_spec not in (None, "tensor") and not named and not isinstance(self.block_spec, int):
                raise ValueError(
                    f"blocks={self.block_spec!r} needs parameter names: pass model.named_parameters()"
                )
            parts = _blocks.partition([r.name for r in refs], [r.param.numel() for r in refs], self.block_spec)
            self._partition = [(name, [refs[i] for i in idx]) for name, idx in parts]
        return self._partition

    # ---------------------------------------------------------------- state
    static_options: tuple[str, ...] = ()  # a rule's own options that fix its maths (saved and checked)

    def config(self) -> dict:
        """What fixes this optimizer's random stream and maths besides the group hyper-parameters: the rule,
        the seed, the estimator and block options, the rule's own options, and the schedules. Saved in
        ``state_dict()["zo"]["config"]``; ``load_state_dict`` refuses a state made with another."""
        out = {"rule": type(self).__name__, "seed": self.seed, "estimator": self.estimator,
               "directions": self.sampler.name, "rng": self.sampler.rng, "num_queries": self.num_queries,
               "scale": self.scale, "weight_decay_mode": self.weight_decay_mode, "blocks": repr(self.block_spec),
               "block_selection": self.block_selection, "blocks_per_step": self.blocks_per_step,
               "granularity": self.granularity}
        out.update({k: getattr(self, k) for k in self.static_options})
        out.update({f"schedule.{k}": repr(v) for k, v in self.schedules.items()})
        return out

    def state_dict(self):
        sd = super().state_dict()
        sd["zo"] = copy.deepcopy(self.zo)
        sd["zo"]["config"] = self.config()
        return sd

    def _check_resume(self, state_dict: dict, config: dict | None, overrides) -> None:
        """Raise naming every setting that differs between the saved state and this optimizer, except the group
        hyper-parameters in ``overrides``, which keep this optimizer's values."""
        unknown = set(overrides) - {k for g in self.param_groups for k in g} - {"params", "param_names"}
        if unknown:
            raise ValueError(f"resume overrides {sorted(unknown)} are not hyper-parameters of "
                             f"{type(self).__name__}; allowed: {sorted(k for k in self.defaults)}")
        changed = []
        if config is not None:
            mine = self.config()
            changed += [f"{k}: {config.get(k)!r} (saved) -> {v!r} (now)" for k, v in mine.items() if config.get(k) != v]
            changed += [f"{k}: {v!r} (saved) -> missing (now)" for k, v in config.items() if k not in mine]
        saved_groups = state_dict.get("param_groups", [])
        if len(saved_groups) == len(self.param_groups):
            for i, (saved, now) in enumerate(zip(saved_groups, self.param_groups)):
                for k, v in now.items():
                    if k in ("params", "param_names") or k in overrides or k in self.schedules:
                        continue
                    if k in saved and saved[k] != v and not (isinstance(v, tuple) and tuple(saved[k]) == v):
                        changed.append(f"param_groups[{i}].{k}: {saved[k]!r} (saved) -> {v!r} (now)")
        if changed:
            raise ValueError(
                "the saved optimizer state was made with other settings: " + "; ".join(changed) +
                ". Resume with the saved settings, or name the hyper-parameters you change on purpose in "
                "resume_overrides (e.g. ['lr']); the rule, seed, estimator and block options cannot change")

    def load_state_dict(self, state_dict, overrides=None):
        """torch's ``load_state_dict``, plus the ZO counters, and a check that the state was made with this
        optimizer's settings (see ``config``). ``overrides`` (default ``self.resume_overrides``): group
        hyper-parameters (e.g. ``("lr",)``) that keep this optimizer's values instead of the saved ones."""
        state_dict = dict(state_dict)
        zo = state_dict.pop("zo", None)
        if zo is None:
            raise ValueError("this state_dict has no 'zo' entry: it was not saved by a zolab optimizer")
        zo = dict(zo)
        config = zo.pop("config", None)
        overrides = tuple(self.resume_overrides if overrides is None else overrides)
        self._check_resume(state_dict, config, overrides)
        kept = [{k: g[k] for k in overrides if k in g} for g in self.param_groups]
        super().load_state_dict(state_dict)
        for g, values in zip(self.param_groups, kept):
            g.update(values)
        # torch casts every state tensor to its parameter's dtype; zolab keeps the saved dtypes (float32
        # moments of half-precision tensors), so that a resumed run continues bitwise.
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        by_id = dict(zip(saved_ids, params))
        for i, saved in state_dict["state"].items():
            p = by_id[i]
            for k, v in saved.items():
                if torch.is_tensor(v) and k != "step":
                    self.state[p][k] = v.to(device=p.device, copy=True)
        self.zo = copy.deepcopy(zo)
        self._partition = None

    # ---------------------------------------------------------------- directions
    def _direction(self, ref: ParamRef, query: Query, alpha, out=None, base=None) -> torch.Tensor:
        """``base + alpha·u`` (``alpha·u`` without base) for this tensor, written into ``out`` when given,
        else into a fresh tensor the caller owns. One pass with the counter rng (z is never stored), two
        with the torch rng (the draw, then a multiply-add)."""
        if query.inv_norm is not None:
            alpha = query.inv_norm * alpha
        if self.sampler.fused:
            if out is None:
                out = torch.empty_like(ref.param, memory_format=torch.contiguous_format)
            return kernels.axpz(out, [mix(query.seed, ref.index)], [alpha], base, 0, self.sampler.kind)
        u = self.sampler.sample(mix(query.seed, ref.index), ref.param, out=out)
        if base is None:
            return u.mul_(alpha)
        if isinstance(alpha, torch.Tensor):
            return torch.addcmul(base, u, alpha, out=u)
        return torch.add(base, u, alpha=alpha, out=u)

    def direction(self, ref: ParamRef, query: Query) -> torch.Tensor:
        """The direction u of ``query`` on one tensor (unit-normalised for sphere), as the step used it."""
        return self._direction(ref, query, 1.0)

    def _buffer(self, ref: ParamRef) -> torch.Tensor:
        """A scratch tensor shaped like ``ref``'s parameter, kept across steps: drawing into it avoids a
        fresh allocation (and its page faults) per perturbation. ``release_buffers()`` frees them."""
        p = ref.param
        return self._scratch(ref.index, p.shape, p.dtype, p.device)

    def _scratch(self, key, shape, dtype, device) -> torch.Tensor:
        """A contiguous scratch tensor kept under ``key`` across steps (reallocated when its shape changes)."""
        buf = self._buffers.get(key)
        if buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != device:
            buf = self._buffers[key] = torch.empty(shape, dtype=dtype, device=device)
        return buf

    def release_buffers(self) -> None:
        """Free the scratch tensors (one per perturbed tensor); the next step allocates them again."""
        self._buffers.clear()
        self._pool.clear()

    def bind(self, model: torch.nn.Module) -> ZOOptimizer:
        """The model whose modules own the parameters (needed by ``perturb="module"``); returns self."""
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"bind needs a torch.nn.Module, got {type(model).__name__}")
        self._model = model
        return self

    def _estimate(self, refs, block, queries, scale, closure, batched):
        if self.perturb == "copy" or batched is not None:
            return estimate(refs, block, queries, self.estimator, scale, self._direction, closure, batched,
                            self._buffer)
        if self._model is None:
            raise RuntimeError("perturb='module' needs the model: call optimizer.bind(model) first")
        # plain z (the base class's direction): embeddings draw their rows only, big Linears go in chunks
        plain = type(self)._direction is ZOOptimizer._direction
        kind = self.sampler.kind if plain else None
        with ModulePerturbation(self._model, refs, self._direction, self._pool, self.chunk_numel, kind) as mp:
            return estimate(refs, block, queries, self.estimator, scale, self._direction, closure,
                            evaluate=mp.evaluate)

    def _queries(self, refs: list[ParamRef], t: int, position: int, norms: bool = True) -> list[Query]:
        queries = [Query(s) for s in mix_each((self.seed, t, position), range(self.num_queries))]
        if not norms:
            return queries
        if self.sampler.normalize and self.sampler.fused:  # sphere: ||z|| over the set, nothing written
            for q in queries:
                q.inv_norm = sum(kernels.sumsq(mix(q.seed, r.index), r.param, 0, self.sampler.kind)
                                 for r in refs).rsqrt()
        elif self.sampler.normalize:  # sphere: one pass to get ||z|| over the perturbed set
            for q in queries:
                sq = sum(_wide(self.sampler.sample(mix(q.seed, r.index), r.param, out=self._buffer(r))).square().sum()
                         for r in refs)
                q.inv_norm = sq.rsqrt()
        return queries

    def _draws_once(self, refs, batched) -> bool:
        """A batched one-tensor block with plain counter directions: draw the K directions once, into a
        (K, n) tensor that makes the points and then ĝ (small problems, where per-call costs dominate)."""
        return (batched is not None and len(refs) == 1 and self.sampler.fused
                and type(self)._direction is ZOOptimizer._direction)

    def _estimate_drawn(self, ref: ParamRef, block: str, queries: list[Query], scale: float, batched):
        p, mu = ref.param, ref.group["mu"]
        ct = torch.float64 if p.dtype == torch.float64 else torch.float32
        # U and the points reuse scratch tensors: a fresh allocation of this size a step can cost as much
        # as the draw (the allocator may hand it out as new pages); U stays valid until the next step
        K, n = len(queries), p.numel()
        u = self._scratch((ref.index, "U"), (K, n), ct, p.device)
        kernels.fill_rows(u, [mix(q.seed, ref.index) for q in queries], 0, self.sampler.kind)
        if self.sampler.normalize:
            inv = torch.linalg.vector_norm(u, dim=1).reciprocal()  # in the compute type (float64 costs more)
            for q, r in zip(queries, inv):
                q.inv_norm = r
            u.mul_(inv[:, None].to(ct))
        theta = p.detach().reshape(-1).to(ct)
        if self.estimator == "forward":
            points = self._scratch((ref.index, "points"), (K + 1, n), ct, p.device)
            points[0] = theta
            torch.add(theta, u, alpha=mu, out=points[1:])
        else:
            points = self._scratch((ref.index, "points"), (K, 2, n), ct, p.device)
            torch.add(theta, u, alpha=mu, out=points[:, 0])
            torch.add(theta, u, alpha=-mu, out=points[:, 1])
            points = points.view(-1, p.numel())
        values = batched(points.to(p.dtype).view(-1, *p.shape))
        if not isinstance(values, torch.Tensor) or values.shape != (len(points),):
            got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise TypeError(f"the batched objective must return one loss per point, shape ({len(points)},); got {got}")
        losses = values.detach()
        if self.estimator == "forward":
            diffs, loss = losses[1:] - losses[0], losses[0]
        else:
            diffs, loss = (losses[0::2] - losses[1::2]) / 2, losses.mean()
        return BlockEstimate(block, [ref], queries, diffs, losses, loss, scale, directions=u)

    def _grad(self, ref: ParamRef, est: BlockEstimate, coefs: torch.Tensor, out=None) -> torch.Tensor:
        """Σ_k coef_k u_k on one tensor (into ``out`` when given)."""
        if est.directions is not None:  # drawn once for the batched points: one (K,)·(K, n) product, no redraw
            g = (coefs.to(est.directions.dtype) @ est.directions).view(ref.param.shape)
            return g if out is None else out.copy_(g)
        if self.sampler.fused:  # all K draws in one pass
            if out is None:
                out = torch.empty_like(ref.param, memory_format=torch.contiguous_format)
            keys = [mix(q.seed, ref.index) for q in est.queries]
            alphas = [c if q.inv_norm is None else c * q.inv_norm for c, q in zip(coefs, est.queries)]
            return kernels.axpz(out, keys, alphas, None, 0, self.sampler.kind)
        g = self._direction(ref, est.queries[0], coefs[0], out=out)
        for k in range(1, len(est.queries)):
            g.add_(self._direction(ref, est.queries[k], coefs[k]))
        return g

    def grad_estimate(self) -> dict[str, torch.Tensor]:
        """ĝ of the last step, per perturbed tensor name, rebuilt from the record (for probes)."""
        if self.record is None:
            raise RuntimeError("no step taken yet")
        return {r.name: self._grad(r, b, b.coefficients(r)) for b in self.record.blocks for r in b.refs}

    # ---------------------------------------------------------------- the step
    def _coefs(self, ref: ParamRef, est: BlockEstimate) -> torch.Tensor:
        """Per-query coefficients the update uses (a rule may transform them, e.g. sign of p)."""
        return est.coefficients(ref)

    def _begin_update(self, block: str, est: BlockEstimate) -> None:
        """Hook before a block's tensors are updated (scalar state of MEAZO, say)."""

    def _update(self, ref: ParamRef, g: torch.Tensor, state: dict) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _moment_zeros(ref: ParamRef) -> torch.Tensor:
        """A zero moment for ``ref``: float64 for float64 tensors, float32 otherwise (half included)."""
        p = ref.param
        return torch.zeros(p.shape, dtype=torch.float64 if p.dtype == torch.float64 else torch.float32,
                           device=p.device)

    def _fused_moments(self, ref: ParamRef, state: dict) -> dict | None:
        """For adaptive rules whose update ``zolab.kernels.moments`` computes: its arguments (and the state
        initialised, counters advanced), or None for the generic path (the default)."""
        return None

    def _update_scale(self, ref: ParamRef, state: dict):
        """For ``elementwise_linear`` rules: U = g·scale."""
        return 1.0

    def _decays(self, ref: ParamRef) -> float:
        wd = ref.group.get("weight_decay", 0.0)
        return wd if wd and (ref.param.ndim >= 2 or ref.group["decay_1d"]) else 0.0

    def _apply(self, ref: ParamRef, est: BlockEstimate) -> None:
        p, group = ref.param, ref.group
        state = self.state[p]
        lr, wd = group["lr"], self._decays(ref)
        coefs = self._coefs(ref, est)
        coupled = wd and self.weight_decay_mode == "coupled"
        if est.directions is not None:  # drawn once for the batched points: ĝ = coefs·U, one product
            g = self._grad(ref, est, coefs)
            spec = None if coupled else self._fused_moments(ref, state)
            if spec is not None:  # moments and θ in one pass from the given ĝ
                kernels.moments(p.data, keys=[], alphas=[], lr=lr, decay=1 - lr * wd if wd else 1.0, g=g, **spec)
                return
            self._apply_grad(ref, g, state, lr, wd, coupled)
            return
        if self.elementwise_linear and not coupled:
            # θ ← θ(1 − ηλ) − η s Σ_k coef_k u_k, one fused pass per query, g never materialized
            s = self._update_scale(ref, state)
            if wd:
                p.mul_(1 - lr * wd)
            cs = [coefs[k] * s * -lr if q.inv_norm is None else coefs[k] * s * -lr * q.inv_norm
                  for k, q in enumerate(est.queries)]
            if self.sampler.fused:  # θ += Σ_k c_k z_k in one pass, in place
                keys = [mix(q.seed, ref.index) for q in est.queries]
                kernels.axpz(p.data, keys, cs, p.data, 0, self.sampler.kind)
                return
            for k, q in enumerate(est.queries):
                c = cs[k]
                p.addcmul_(self.sampler.sample(mix(q.seed, ref.index), p, out=self._buffer(ref)), c)
            return
        spec = self._fused_moments(ref, state) if self.sampler.fused and not coupled else None
        if spec is not None:  # ĝ redrawn, moments and θ updated in one pass, ĝ never stored
            keys = [mix(q.seed, ref.index) for q in est.queries]
            alphas = [c if q.inv_norm is None else c * q.inv_norm for c, q in zip(coefs, est.queries)]
            kernels.moments(p.data, keys=keys, alphas=alphas, lr=lr, decay=1 - lr * wd if wd else 1.0,
                            kind=self.sampler.kind, **spec)
            return
        g = _wide(self._grad(ref, est, coefs, out=self._buffer(ref)))  # float32 moments for half tensors
        self._apply_grad(ref, g, state, lr, wd, coupled)

    def _apply_grad(self, ref: ParamRef, g: torch.Tensor, state: dict, lr, wd, coupled) -> None:
        p = ref.param
        if coupled:
            g.add_(p, alpha=wd)
        update = self._update(ref, g, state)
        if wd and not coupled:
            p.mul_(1 - lr * wd)
        p.add_(update, alpha=-lr)

    def blocks_of_step(self, t: int) -> list[tuple[str, list[ParamRef]]]:
        """The block(s) step t perturbs and updates (a pure function of t and the seed)."""
        parts = self.partition()
        if self.blocks_per_step == "all" or len(parts) == 1:
            return parts
        return [parts[_blocks.select(t, len(parts), self.block_selection, self.seed)]]

    def schedule_values(self) -> dict[str, float]:
        out = {}
        for k in self.schedules:
            values = self.param_groups[0][k]
            if isinstance(values, tuple):
                out.update({f"{k}{i + 1}" if k == "betas" else f"{k}{i}": x for i, x in enumerate(values)})
            else:
                out[k] = values
        return out

    @torch.no_grad()
    def step(self, closure=None, batched=None):
        """One ZO step. ``closure()`` returns the loss at the current parameters; it must not call backward.

        ``batched`` (optional) is the same objective evaluated on stacked points: ``batched(X)`` with X of
        shape (n, *param.shape) returns the n losses. For a problem whose trainable parameter is one tensor
        (a synthetic function, an attack's perturbation) all K (+1) points of a step then cost one call.
        Returns f(θ) (forward estimator) or the mean of the ± losses (central), the same quantity for
        every rule. After the step, ``self.record`` holds the step record for probes.
        """
        if batched is not None and not callable(batched):
            raise TypeError(f"batched must be a function of the stacked points, got {batched!r}")
        if batched is None and (closure is None or not callable(closure)):
            raise TypeError(f"{type(self).__name__}.step needs a closure that returns the loss, got {closure!r}")
        # Under autocast (Lightning's bf16-mixed) only the forwards run in low precision: the optimizer's own
        # arithmetic (ĝ, moments, θ) runs with autocast off, in the parameters' and moments' dtypes.
        device_type = self.param_groups[0]["params"][0].device.type
        if torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)

            def forward(fn):
                if fn is None:
                    return None

                def run(*args, **kwargs):
                    with torch.autocast(device_type, dtype=dtype):
                        return fn(*args, **kwargs)
                return run

            closure, batched = forward(closure), forward(batched)
            with torch.autocast(device_type, enabled=False):
                return self._step(closure, batched)
        return self._step(closure, batched)

    def _step(self, closure, batched):
        t = self.zo["step"] + 1
        for k, v in self.schedules.items():
            for group in self.param_groups:
                group[k] = self._resolve(v, t)
        estimates, skipped = [], False
        for position, (block, refs) in enumerate(self.blocks_of_step(t)):
            scale = float(sum(r.param.numel() for r in refs)) if self.scale == "dimension" else 1.0
            drawn = self._draws_once(refs, batched)
            queries = self._queries(refs, t, position, norms=not drawn)
            if drawn:
                est = self._estimate_drawn(refs[0], block, queries, scale, batched)
            else:
                est = self._estimate(refs, block, queries, scale, closure, batched)
            self.zo["forwards"] += len(est.losses)
            estimates.append(est)
            if self.nonfinite != "ignore" and not bool(torch.isfinite(est.losses).all()):  # the one host sync
                if self.nonfinite == "raise":
                    raise FloatingPointError(
                        f"non-finite loss at step {t} (block {block!r}): losses {est.losses.tolist()}; "
                        "parameters are unchanged; pass nonfinite='skip' to skip such steps"
                    )
                skipped = True
                break
            self._begin_update(block, est)
            for r in refs:
                self._apply(r, est)
        if skipped:
            self.zo["skipped"] += 1
        self.zo["step"] = t
        loss = estimates[0].loss if len(estimates) == 1 else torch.stack(
            [e.loss.to(estimates[0].loss.dtype) for e in estimates]).mean()
        self.record = StepRecord(
            step=t,
            estimator=self.estimator,
            directions=self.sampler.name,
            num_queries=self.num_queries,
            blocks=estimates,
            schedule=self.schedule_values(),
            loss=loss,
            skipped=skipped,
            forwards=self.zo["forwards"],
            moments={r.name: self.state[r.param] for e in estimates for r in e.refs},
        )
        return loss

    def __repr__(self) -> str:
        opts = (
            f"estimator={self.estimator!r}, directions={self.sampler.name!r}, num_queries={self.num_queries}, "
            f"scale={self.scale!r}, seed={self.seed}"
        )
        if self.block_spec is not None:
            opts += f", blocks={self.block_spec!r}, block_selection={self.block_selection!r}"
        return f"{type(self).__name__}({opts}, groups={len(self.param_groups)})"
