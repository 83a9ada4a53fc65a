"""ZOOptimizer: a ``torch.optim.Optimizer`` whose ``step(closure)`` needs only losses; every rule subclasses it.

A rule = directions × estimator × update (docs/algorithms.md §1–§3). A step t, for each block of the step:

    queries = grad_estimator.queries(seed, t, block position)  # K seeds; u_k regenerated from them, never stored
    est     = grad_estimator.estimate(block, ...)              # the points' losses -> δ_k, f(θ)
    updater.apply(est)                                         # the rule's update(e, h), one pass per tensor

A rule writes its maths once, as ``update(self, e, h)``: ``e`` the element view (``e.g`` the estimate ĝ,
``e.theta``, its state ``e.m``...), ``h`` the step's hyper-parameters (``h.lr``, ``h.beta1``...), with
``zolab.engine.ops``; it returns the direction U of θ ← θ(1 − ηλ) − ηU and its new state. That function is what runs:
traced into an element-wise program that the C library, a generated Triton kernel or torch ops execute in one
pass (ĝ drawn on the fly from the seeds). Optional hooks: ``prepare(ref, state, est)`` (host-side scalars
and counters, e.g. bias-correction factors), ``coefficients(ref, est)`` (ĝ's per-query coefficients, e.g.
signs of p_k), ``own_direction(e, h)`` (a rule that makes its own directions from its noise and state).

Randomness is a pure function of (``seed``, step t, block position, query k, tensor index), so a
``state_dict()`` round trip continues bitwise; the state also records the settings that fix the random stream
and the maths (``zolab.engine.resume``), and loading a state made with others is an error naming them.
"""

from __future__ import annotations

import copy

import torch

from zolab.engine import blocks as _blocks
from zolab.engine import resume
from zolab.engine.checks import check_betas, check_choice, check_int, check_range
from zolab.engine.directions import DirectionSampler, RuleDirections, SamplerDirections, compute_type, make_sampler
from zolab.engine.estimator import ESTIMATORS, SCALES, BlockEstimate, Estimator, ParamRef, Query
from zolab.engine.ops import hyper_values
from zolab.engine.perturb import (
    PERTURB_MODES,
    ModulePerturbation,
    NotPerturbed,
    evaluate_copy,
    new_pool,
    owned_by_submodules,
)
from zolab.engine.record import StepRecord
from zolab.engine.schedules import Schedule, value_at
from zolab.engine.update import Transaction, Updater, new_spares

NONFINITE = ("raise", "skip", "ignore")
WEIGHT_DECAY_MODES = ("decoupled", "coupled")
GRANULARITIES = ("model", "tensor")


class _NonFinite(Exception):
    def __init__(self, block: str, losses: torch.Tensor):
        self.block, self.losses = block, losses


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
    seed: integer seed of every random draw of this optimizer, in [0, 2**64).
    perturb: ``"auto"`` (default: ``"module"`` once ``bind(model)`` gave a model whose perturbed tensors all
        belong to submodules, else ``"copy"``), ``"copy"`` (every perturbed tensor built before the closure
        runs: one extra copy of them) or ``"module"`` (each built only while its module runs: about
        inference memory; see ``zolab.engine.perturb``). ``chunk_numel``: the largest ``nn.Linear`` weight built
        whole in module mode (larger ones are computed in row chunks).
    rng: ``"counter"`` (default: z a pure function of (key, element), fused one-pass kernels, the same
        numbers on CPU and GPU) or ``"torch"`` (a ``torch.Generator`` per tensor); see ``zolab.engine.directions``.
    nonfinite: ``"raise"`` (error naming the step and losses), ``"skip"`` (no update, counted) or
        ``"ignore"`` (no check, as MeZO's code: a non-finite loss reaches the parameters). The check reads
        the losses on the host, so on CUDA "raise" and "skip" cost one synchronisation a step; with
        "ignore" a step never waits for the device.
    blocks: None (all at once), ``"module"``, ``"tensor"``, an int, or name regexes (see ``zolab.engine.blocks``).
    block_selection: ``"cyclic"``, ``"permutation"`` or ``"uniform"``.
    blocks_per_step: 1 (block-coordinate) or ``"all"`` (every block in model order, each estimated then
        updated, as ZO-Bench's block-wise ZO). A step of several blocks is atomic: it writes into spare
        tensors (one more copy of the parameters and state) until every block has a finite loss.
    granularity: ``"model"`` or ``"tensor"`` (R-AdaZO's code: each tensor its own block, all per step).

    Parameters may be given as ``model.named_parameters()`` (needed for ``blocks="module"``/regexes). A param
    group may hold shards of larger tensors (a sharded model: each process holds a part of each tensor):
    ``shards`` lists per tensor None or (offset, numel of the whole); a shard then draws and updates exactly its
    elements of the whole tensor's directions, c counts the whole, and sphere's norms are summed over the
    processes by ``grad_estimator.shard_sum`` (e.g. ``torch.distributed.all_reduce``).
    """

    label = ""  # the rule's display name in tables and figures (e.g. "ZO-SGD"); the class name when empty
    static_options: tuple[str, ...] = ()  # a rule's own options that fix its maths (saved and checked on load)
    directions_name = "custom"  # the record's name for a rule's own directions (``own_direction``)

    def __init__(self, params, defaults: dict, *, num_queries: int = 1, estimator: str = "central",
                 directions: str | DirectionSampler = "gaussian", scale: str | None = None,
                 weight_decay_mode: str = "decoupled", seed: int = 0, nonfinite: str = "raise", blocks=None,
                 block_selection: str = "permutation", blocks_per_step: int | str = 1, granularity: str = "model",
                 rng: str = "counter", perturb: str = "auto", chunk_numel: int = 1 << 21):
        check_int("num_queries", num_queries, 1)
        check_int("seed", seed, 0, 2**64)
        check_int("chunk_numel", chunk_numel, 1)
        for name, value, allowed in (("estimator", estimator, ESTIMATORS), ("weight_decay_mode", weight_decay_mode,
                                     WEIGHT_DECAY_MODES), ("nonfinite", nonfinite, NONFINITE),
                                     ("block_selection", block_selection, _blocks.SELECTIONS),
                                     ("granularity", granularity, GRANULARITIES), ("perturb", perturb, PERTURB_MODES)):
            check_choice(name, value, allowed)
        if scale is not None:
            check_choice("scale", scale, SCALES)
        if blocks_per_step not in (1, "all"):
            raise ValueError(f"invalid blocks_per_step {blocks_per_step!r}; allowed: 1 or 'all'")
        if granularity == "tensor":
            if blocks is not None:
                raise ValueError(f"granularity='tensor' makes each tensor a block; got blocks={blocks!r} too")
            blocks, blocks_per_step, block_selection = "tensor", "all", "cyclic"
        self.sampler = make_sampler(directions, rng)
        own = type(self).own_direction is not ZOOptimizer.own_direction
        dirs = RuleDirections(self, self.sampler) if own else SamplerDirections(self.sampler)
        if perturb == "module" and not self.sampler.fused:
            raise ValueError(f"perturb='module' needs rng='counter' (draws of any element); got rng={rng!r}")
        self.seed, self.nonfinite, self.weight_decay_mode = int(seed), nonfinite, weight_decay_mode
        self.scale = scale or ("dimension" if self.sampler.normalize else "none")
        self.grad_estimator = Estimator(dirs, estimator, num_queries, self.scale)
        self.updater = Updater(self)
        self.perturb, self.chunk_numel, self._model, self._copy_only = perturb, chunk_numel, None, False
        self.block_spec, self.block_selection, self.blocks_per_step = blocks, block_selection, blocks_per_step
        self.granularity = granularity
        # Schedules live on the optimizer, their current values in the groups (state_dict stays plain).
        self.schedules = {k: v for k, v in defaults.items() if _has_schedule(v)}
        defaults = {k: _resolve(v, 1) for k, v in defaults.items()}
        self.zo = {"step": 0, "forwards": 0, "skipped": 0}
        self.record: StepRecord | None = None
        self.resume_overrides: tuple[str, ...] = ()  # group hyper-parameters load_state_dict takes from self
        self._partition = None
        self._pool, self._buffers, self._spares = new_pool(), {}, new_spares()
        super().__init__(params, defaults)
        self.partition()  # bad block specs fail here, before any step

    # the estimator's options, under the names the constructor takes
    estimator = property(lambda self: self.grad_estimator.difference, doc='"forward" or "central"')
    num_queries = property(lambda self: self.grad_estimator.num_queries, doc="K")

    # ---------------------------------------------------------------- rule hooks
    def update(self, e, h):
        """The rule's maths for one element: returns U (θ ← θ(1 − ηλ) − ηU) or (U, {state name: new value})."""
        raise NotImplementedError(f"{type(self).__name__} must define update(e, h)")

    def prepare(self, ref: ParamRef, state: dict, est: BlockEstimate) -> dict | None:
        """Host-side work before a tensor's update (counters, scalars the update reads as ``h.<name>``)."""
        return None

    def coefficients(self, ref: ParamRef, est: BlockEstimate) -> torch.Tensor:
        """ĝ on ``ref`` is Σ_k coef_k u_k; by default coef_k = (c/K) δ_k/μ."""
        return est.coefficients(ref)

    def own_direction(self, e, h):
        """A rule that makes its own directions returns u from ``e.noise(i)`` and its state (ZO-AdaMU)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- groups
    def add_param_group(self, param_group: dict) -> None:
        if not isinstance(param_group, dict):
            param_group = {"params": param_group}
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        if params and isinstance(params[0], tuple):
            param_group["param_names"] = [n for n, _ in params]
            params = [p for _, p in params]
        first = sum(len(g["params"]) for g in self.param_groups)  # unnamed tensors are named as ParamRef names them
        names = param_group.get("param_names") or [f"param{first + i}" for i in range(len(params))]
        seen = {}
        for p, name in zip(params, names):
            if not isinstance(p, torch.Tensor) or not p.is_floating_point():
                what = p.dtype if isinstance(p, torch.Tensor) else type(p).__name__
                raise ValueError(f"parameter of type {what} is not supported; allowed: real floating-point tensors "
                                 "(float16, bfloat16, float32, float64)")
            if p.device.type == "meta":
                raise ValueError(f"parameter {name!r} is on the meta device (a shape, no data); allowed: tensors "
                                 "with data (materialise the model first, e.g. model.to_empty(device=...))")
            if id(p) in seen:  # torch only warns: the tensor would draw two directions and update twice
                raise ValueError(f"parameter {name!r} is the same tensor as {seen[id(p)]!r}; allowed: each tensor "
                                 "once")
            seen[id(p)] = name
        if any(_is_dtensor(p) for p in params):  # FSDP2's sharded parameters: their local shards, with offsets
            shards = list(param_group.get("shards") or [None] * len(params))
            for i, p in enumerate(params):
                if _is_dtensor(p):
                    params[i], shards[i] = _local_shard(p)
            param_group["shards"] = shards
        param_group["params"] = params
        if "shards" in param_group:
            self._check_shards(params, param_group["shards"])
        # Decay applies to 1-D tensors only when the group itself asks for decay (docs/algorithms.md §2).
        param_group.setdefault("decay_1d", "weight_decay" in param_group)
        for k, v in list(param_group.items()):
            if _has_schedule(v):
                raise ValueError(f"param group {k!r}: schedules go to the constructor (they apply to all groups)")
        self._check_group({**self.defaults, **param_group})
        super().add_param_group(param_group)
        self._partition = None

    def _check_shards(self, params, shards) -> None:
        """A group's ``shards``: per tensor None or (offset, full numel) of the whole tensor it is a part of."""
        if not isinstance(shards, list | tuple) or len(shards) != len(params):
            raise ValueError(f"shards must list one (offset, full numel) or None per tensor ({len(params)}), "
                             f"got {shards!r}")
        for p, part in zip(params, shards):
            if part is None:
                continue
            ok = (isinstance(part, list | tuple) and len(part) == 2 and all(isinstance(x, int) for x in part)
                  and 0 <= part[0] and part[0] + p.numel() <= part[1])
            if not ok:
                raise ValueError(f"shard {part!r} of a tensor of {p.numel()} elements; allowed: (offset, full "
                                 "numel) with 0 <= offset and offset + its numel <= full numel")
        if any(s is not None for s in shards) and not self.sampler.fused:
            raise ValueError("shards need rng='counter' (each shard draws its own part of the whole tensor)")
        if any(s is not None for s in shards) and self.perturb == "module":
            raise ValueError("shards are perturbed whole, in place (perturb='copy' or 'auto'): the forward "
                             "gathers them")

    def _check_group(self, g: dict) -> None:
        check_range("lr", g["lr"], 0.0, float("inf"))
        check_range("mu", g["mu"], 0.0, float("inf"), lo_open=True)
        check_range("weight_decay", g.get("weight_decay", 0.0), 0.0, float("inf"))
        check_range("eps", g.get("eps", 0.0), 0.0, float("inf"))
        check_betas(g)

    def _refs(self) -> list[ParamRef]:
        refs, i = [], 0
        for group in self.param_groups:
            names = group.get("param_names") or [None] * len(group["params"])
            shards = group.get("shards") or [None] * len(group["params"])
            for p, name, part in zip(group["params"], names, shards):
                offset, full = part if part is not None else (0, None)
                refs.append(ParamRef(i, p, name or f"param{i}", group, offset, full))
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
                raise ValueError(f"blocks={self.block_spec!r} needs parameter names: pass model.named_parameters()")
            parts = _blocks.partition([r.name for r in refs], [r.numel for r in refs], self.block_spec)
            self._partition = [(name, [refs[i] for i in idx]) for name, idx in parts]
        return self._partition

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

    def hyper(self, ref: ParamRef, extra: dict | None = None) -> dict:
        """The scalars ``h`` holds for ``ref`` at this step (its group's current values)."""
        return hyper_values(ref.group, extra)

    def decay_of(self, ref: ParamRef) -> float:
        """λ for this tensor: 0 for 1-D tensors unless their group set weight_decay (docs/algorithms.md §2)."""
        wd = ref.group.get("weight_decay", 0.0)
        return wd if wd and (ref.param.ndim >= 2 or ref.group["decay_1d"]) else 0.0

    # ---------------------------------------------------------------- state and scratch
    def state_tensor(self, ref: ParamRef, name: str) -> torch.Tensor:
        """State ``name`` of this tensor, zeros in the compute type (float32 for half tensors) when new."""
        state = self.state[ref.param]
        if name not in state:
            p = ref.param
            state[name] = torch.zeros(p.shape, dtype=compute_type(p), device=p.device)
        return state[name]

    def scratch(self, key, shape, dtype, device) -> torch.Tensor:
        """A reusable tensor (reallocated only when its shape, dtype or device changes)."""
        buf = self._buffers.get(key)
        if buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != device:
            buf = self._buffers[key] = torch.empty(shape, dtype=dtype, device=device)
        return buf

    def release_buffers(self) -> None:
        """Free the scratch and spare tensors; the next step allocates them again."""
        self._buffers.clear()
        self._pool.clear()
        self._spares.clear()

    def state_dict(self):
        sd = super().state_dict()
        sd["zo"] = copy.deepcopy(self.zo)
        sd["zo"]["config"] = resume.config(self)
        return sd

    def load_state_dict(self, state_dict, overrides=None):
        """torch's ``load_state_dict``, plus the ZO counters, after checking that the state was made with this
        optimizer's settings (``zolab.engine.resume``). ``overrides`` (default ``self.resume_overrides``): group
        hyper-parameters (e.g. ``("lr",)``) that keep this optimizer's values instead of the saved ones."""
        state_dict = dict(state_dict)
        zo = state_dict.pop("zo", None)
        if zo is None:
            raise ValueError("this state_dict has no 'zo' entry: it was not saved by a zolab optimizer")
        zo = dict(zo)
        saved = zo.pop("config", None)
        overrides = tuple(self.resume_overrides if overrides is None else overrides)
        resume.check(self, state_dict, saved, overrides)
        resume.check_state(self, state_dict)
        kept = [{k: g[k] for k in overrides if k in g} for g in self.param_groups]
        super().load_state_dict(state_dict)
        for g, values in zip(self.param_groups, kept):
            g.update(values)
        # torch casts every state tensor to its parameter's dtype; zolab keeps the saved dtypes (float32
        # moments of half-precision tensors), so that a resumed run continues bitwise.
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        by_id = dict(zip(saved_ids, [p for g in self.param_groups for p in g["params"]]))
        for i, values in state_dict["state"].items():
            p = by_id[i]
            for k, v in values.items():
                if torch.is_tensor(v) and k != "step":
                    self.state[p][k] = v.to(device=p.device, copy=True)
        self.zo = copy.deepcopy(zo)
        self._partition = None

    # ---------------------------------------------------------------- probes' view of a step
    def bind(self, model: torch.nn.Module) -> ZOOptimizer:
        """The model whose modules own the parameters (``perturb="module"``/``"auto"``); returns self."""
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"bind needs a torch.nn.Module, got {type(model).__name__}")
        self._model = model
        return self

    @property
    def perturb_mode(self) -> str:
        """The perturbation in use: ``"copy"`` or ``"module"`` (``perturb="auto"`` resolved)."""
        if self.perturb != "auto":
            return self.perturb
        refs = [r for _, rs in self.partition() for r in rs]
        ok = (self._model is not None and self.sampler.fused and not self._copy_only
              and all(r.full_numel is None for r in refs) and owned_by_submodules(self._model, refs))
        return "module" if ok else "copy"

    def direction(self, ref: ParamRef, query: Query) -> torch.Tensor:
        """The direction u of ``query`` on one tensor (unit-normalised for sphere), as the step used it."""
        return self.grad_estimator.directions.point(ref, query, 1.0)

    def grad_estimate(self) -> dict[str, torch.Tensor]:
        """ĝ of the last step, per perturbed tensor name, rebuilt from the record (for probes)."""
        if self.record is None:
            raise RuntimeError("no step taken yet")
        out = {}
        for b in self.record.blocks:
            for r in b.refs:
                coefs = b.coefficients(r)
                if b.drawn is not None:  # the batched step's own rows: one product, no redraw
                    out[r.name] = (coefs.to(b.drawn.dtype) @ b.drawn).view(r.param.shape)
                else:
                    out[r.name] = self.grad_estimator.directions.combine(r, b.queries, coefs)
        return out

    def element_view(self, views, g):
        """The ``e`` an update is traced with (a rule's own directions add their noise)."""
        return self.grad_estimator.directions.element(views, g)

    # ---------------------------------------------------------------- the step
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
            closure, batched = (_under_autocast(f, device_type, dtype) for f in (closure, batched))
            with torch.autocast(device_type, enabled=False):
                return self._step(closure, batched)
        return self._step(closure, batched)

    def _step(self, closure, batched):
        t = self.zo["step"] + 1
        for k, v in self.schedules.items():
            for group in self.param_groups:
                group[k] = _resolve(v, t)
        plan = self.blocks_of_step(t)
        tx = Transaction(self._spares) if len(plan) > 1 else None  # several blocks: all update or none
        zo_before, estimates, skipped = dict(self.zo), [], False
        try:
            for position, (block, refs) in enumerate(plan):
                est = self._estimate(block, refs, self.grad_estimator.queries(self.seed, t, position), closure, batched)
                self.zo["forwards"] += len(est.losses) * getattr(self.grad_estimator.parallel, "data", 1)
                estimates.append(est)
                if self.nonfinite != "ignore" and not bool(torch.isfinite(est.losses).all()):  # the one host sync
                    raise _NonFinite(block, est.losses)
                self.updater.apply(est, tx)
        except _NonFinite as err:
            self._undo(tx, zo_before)
            if self.nonfinite == "raise":
                raise FloatingPointError(
                    f"non-finite loss at step {t} (block {err.block!r}): losses {err.losses.tolist()}; parameters "
                    "are unchanged; pass nonfinite='skip' to skip such steps") from None
            skipped = True
            self.zo["skipped"] += 1
        except BaseException:
            self._undo(tx, zo_before)
            raise
        if tx is not None:
            tx.commit()
        self.zo["step"] = t
        loss = estimates[0].loss if len(estimates) == 1 else torch.stack(
            [e.loss.to(estimates[0].loss.dtype) for e in estimates]).mean()
        self.record = StepRecord(
            step=t, estimator=self.grad_estimator.difference, directions=self.grad_estimator.directions.name,
            num_queries=self.num_queries, blocks=estimates, schedule=self.schedule_values(), loss=loss,
            skipped=skipped, forwards=self.zo["forwards"],
            moments={r.name: self.state[r.param] for e in estimates for r in e.refs})
        return loss

    def _undo(self, tx: Transaction | None, zo_before: dict) -> None:
        """Put back what an unfinished step changed (forward passes stay counted: they were spent)."""
        if tx is not None:
            tx.rollback()
        forwards = self.zo["forwards"]
        self.zo.clear()
        self.zo.update(zo_before, forwards=forwards)

    def _estimate(self, block, refs, queries, closure, batched) -> BlockEstimate:
        est, dirs = self.grad_estimator, self.grad_estimator.directions
        if batched is None and self.perturb_mode == "module":
            if self._model is None:
                raise RuntimeError("perturb='module' needs the model: call optimizer.bind(model) first")
            try:
                with ModulePerturbation(self._model, refs, dirs, self._pool, self.chunk_numel) as mp:
                    return est.estimate(block, refs, queries, lambda q, s: mp.evaluate(q, s, closure),
                                        scratch=self.scratch)
            except NotPerturbed:
                if self.perturb == "module":
                    raise
                self._copy_only = True  # a tensor is used outside its module's forward: copy mode from now on

        def buffer(r):
            return self.scratch((r.index, "point"), r.param.shape, r.param.dtype, r.param.device)

        return est.estimate(block, refs, queries, lambda q, s: evaluate_copy(refs, q, s, dirs, closure, buffer),
                            batched=batched, scratch=self.scratch)

    def __repr__(self) -> str:
        opts = (f"estimator={self.grad_estimator.difference!r}, directions={self.grad_estimator.directions.name!r}, "
                f"num_queries={self.num_queries}, scale={self.scale!r}, seed={self.seed}")
        if self.block_spec is not None:
            opts += f", blocks={self.block_spec!r}, block_selection={self.block_selection!r}"
        return f"{type(self).__name__}({opts}, groups={len(self.param_groups)})"


def _is_dtensor(p) -> bool:
    return type(p).__name__ == "DTensor" or any(c.__name__ == "DTensor" for c in type(p).__mro__)


def _local_shard(p) -> tuple[torch.Tensor, tuple[int, int]]:
    """(local tensor, (offset, whole numel)) of a DTensor sharded by rows on a 1-D mesh (FSDP2's layout:
    ``torch.chunk`` rows per process); the local tensor shares the DTensor's storage, so writes reach it."""
    from torch.distributed.tensor import Shard

    mesh, placements = p.device_mesh, tuple(p.placements)
    if mesh.ndim != 1 or placements != (Shard(0),):
        raise ValueError(f"a DTensor parameter sharded as {placements} on a {mesh.ndim}-D mesh; allowed: "
                         "Shard(0) on a 1-D mesh (FSDP2's fully_shard)")
    local = p.to_local().detach().requires_grad_(p.requires_grad)  # a leaf that shares the shard's storage
    rows, world, rank = p.shape[0], mesh.size(), mesh.get_local_rank()
    chunk = -(-rows // world)
    start = min(rank * chunk, rows)
    if local.shape[0] != max(0, min(start + chunk, rows) - start) or not local.is_contiguous():
        raise ValueError(f"DTensor shard of shape {tuple(local.shape)} on process {rank} of {world} is not "
                         f"torch.chunk's rows {start}..{min(start + chunk, rows)} of {tuple(p.shape)}")
    return local, (start * (p.numel() // rows if rows else 0), p.numel())


def _has_schedule(v) -> bool:
    return isinstance(v, Schedule) or (isinstance(v, tuple) and any(isinstance(x, Schedule) for x in v))


def _resolve(v, t: int):
    return tuple(value_at(x, t) for x in v) if isinstance(v, tuple) else value_at(v, t)


def _under_autocast(fn, device_type: str, dtype):
    if fn is None:
        return None

    def run(*args, **kwargs):
        with torch.autocast(device_type, dtype=dtype):
            return fn(*args, **kwargs)

    return run
