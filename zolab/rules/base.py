"""ZOOptimizer: a ``torch.optim.Optimizer`` whose ``step(closure)`` needs only losses; every rule subclasses it.

A rule = directions × estimator × update (docs/algorithms.md §1–§3). A step t, for each block of the step:

    queries = grad_estimator.queries(seed, t, block position)  # K seeds; u_k regenerated from them, never stored
    est     = grad_estimator.estimate(block, ...)              # the points' losses -> δ_k, f(θ)
    updater.apply(est)                                         # the rule's update(e, h), one pass per tensor

A rule writes its maths once, as ``update(self, e, h)`` (``zolab.engine.ops``), traced into an element-wise
program that the C library, a generated Triton kernel or torch ops execute in one pass (ĝ drawn on the fly
from the seeds); its optional hooks are the methods below ``update``. Randomness is a pure function of
(``seed``, t, block position, query k, tensor index), so a ``state_dict()`` round trip continues bitwise.
"""

from __future__ import annotations

import torch

from zolab.engine import groups, resume, storage
from zolab.engine.blocks import BlockPlan
from zolab.engine.checks import check_choice, check_int, check_step
from zolab.engine.directions import make_directions
from zolab.engine.estimator import BlockEstimate, Estimator, Query
from zolab.engine.groups import ParamRef
from zolab.engine.ops import hyper_values
from zolab.engine.perturb import Perturber
from zolab.engine.record import StepRecord
from zolab.engine.samplers import DirectionSampler  # a config's directions (objects also: see make_directions)
from zolab.engine.schedules import current_values, is_scheduled, resolve
from zolab.engine.scratch import Scratch
from zolab.engine.update import NonFiniteLoss, Transaction, Updater, sgd

NONFINITE = ("raise", "skip", "ignore")
WEIGHT_DECAY_MODES = ("decoupled", "coupled")


class ZOOptimizer(torch.optim.Optimizer):
    """Base class. Args common to every rule (each rule documents its own):

    lr: step size η (float or ``Schedule``), >= 0.
    mu: perturbation radius μ, > 0 (per group allowed).
    num_queries: K >= 1 directions per step.
    estimator: ``"forward"`` (K + 1 forwards), ``"central"`` (2K), ``"three_point"``, ``"fzoo"``, ``"jvp"`` or a
        ``DifferenceScheme`` (``zolab.engine.schemes``).
    directions: ``"gaussian"``, ``"sphere"``, ``"rademacher"``, a ``DirectionSampler`` or a directions object
        (``zolab.engine.directions.Directions``, e.g. ``zolab.engine.lowrank``'s).
    scale: ``"dimension"`` (c = d), ``"none"`` (c = 1) or None: ``dimension`` for sphere, else ``none``.
    weight_decay: λ >= 0; by default only for tensors with 2+ dims, unless the group sets it explicitly.
    weight_decay_mode: ``"decoupled"`` θ ← θ − η(U + λθ) (MeZO) or ``"coupled"`` (λθ added to ĝ).
    seed: integer seed of every random draw of this optimizer, in [0, 2**64).
    perturb: ``"auto"`` (default: ``"module"`` once ``bind(model)`` gave a model whose submodules own the
        perturbed tensors), ``"copy"`` (one extra copy of them) or ``"module"`` (each built only while its
        module runs), see ``zolab.engine.perturb``; ``chunk_numel``: the largest ``nn.Linear`` weight built whole.
    rng: ``"counter"`` (default: fused one-pass kernels, the same numbers on CPU and GPU) or ``"torch"``
        (a ``torch.Generator`` per tensor); see ``zolab.engine.samplers``.
    nonfinite: ``"raise"`` (error naming the step and losses), ``"skip"`` (no update, counted) or ``"ignore"``
        (no check, as MeZO's code: a non-finite loss reaches the parameters, and a step never waits for the
        device; the check of "raise" and "skip" reads the losses on the host, one synchronisation on CUDA).
    blocks: None (all at once), ``"module"``, ``"tensor"``, an int, or name regexes (see ``zolab.engine.blocks``).
    block_selection: ``"cyclic"``, ``"permutation"``, ``"uniform"`` or ``"uniform_subset"``.
    blocks_per_step: 1 (block-coordinate), ``"all"`` (every block in model order, each estimated then
        updated, as ZO-Bench's block-wise ZO; atomic: updates go to spare tensors until every block has a
        finite loss) or k >= 2 with ``"uniform_subset"`` (k random blocks estimated jointly, LeZO).
    granularity: ``"model"`` or ``"tensor"`` (R-AdaZO's code: each tensor its own block, all per step).
    state_dtype: ``"float32"`` (float64 for float64 parameters), ``"bfloat16"`` or ``"float16"``: the storage of
        d-sized state, maths in float32; ``state_rounding``: ``"stochastic"`` or ``"nearest"`` (zolab.engine.storage).

    Parameters may be given as ``model.named_parameters()`` (needed for ``blocks="module"``/regexes); a param
    group may hold shards of larger tensors (``shards``, FSDP2's DTensors: ``zolab.engine.groups``).
    """

    label = ""  # the rule's display name in tables and figures (e.g. "ZO-SGD"); the class name when empty
    static_options: tuple[str, ...] = ()  # a rule's own options that fix its maths (saved and checked on load)
    directions_name = "custom"  # the record's name for a rule's own directions (``own_direction``)
    squared_state: tuple[str, ...] = ()  # state holding squares of ĝ: float16 cannot (zolab.engine.storage)

    def __init__(self, params, defaults: dict, *, num_queries: int = 1, estimator: str = "central",
                 directions: str | DirectionSampler = "gaussian", scale: str | None = None,
                 weight_decay_mode: str = "decoupled", seed: int = 0, nonfinite: str = "raise", blocks=None,
                 block_selection: str = "permutation", blocks_per_step: int | str = 1, granularity: str = "model",
                 rng: str = "counter", perturb: str = "auto", chunk_numel: int = 1 << 21,
                 state_dtype: str = "float32", state_rounding: str = "stochastic"):
        check_int("seed", seed, 0, 2**64)
        storage.check(self.label or type(self).__name__, state_dtype, state_rounding, self.squared_state)
        self.state_dtype, self.state_rounding = state_dtype, state_rounding
        check_choice("weight_decay_mode", weight_decay_mode, WEIGHT_DECAY_MODES)
        check_choice("nonfinite", nonfinite, NONFINITE)
        self.block_plan = BlockPlan(blocks, block_selection, blocks_per_step, granularity)
        self.perturber = Perturber(perturb, chunk_numel)
        self.seed, self.nonfinite, self.weight_decay_mode = int(seed), nonfinite, weight_decay_mode
        dirs = make_directions(self, directions, rng, type(self).own_direction is not ZOOptimizer.own_direction)
        self.sampler = dirs.sampler
        if perturb == "module" and not self.sampler.fused:
            raise ValueError(f"perturb='module' needs rng='counter' (draws of any element); got rng={rng!r}")
        self.scale = ("dimension" if self.sampler.normalize else "none") if scale is None else scale
        self.grad_estimator = Estimator(dirs, estimator, num_queries, self.scale)
        self.updater = Updater(self)
        # Schedules live on the optimizer, their current values in the groups (state_dict stays plain).
        self.schedules = {k: v for k, v in defaults.items() if is_scheduled(v)}
        defaults = {k: resolve(v, 1) for k, v in defaults.items()}
        self.zo = {"step": 0, "forwards": 0, "skipped": 0}
        self.record: StepRecord | None = None
        self.resume_overrides: tuple[str, ...] = ()  # group hyper-parameters load_state_dict takes from self
        self._partition = None
        self.scratch = Scratch()  # scratch(key, shape, dtype, device): tensors reused between steps
        super().__init__(params, defaults)
        self.partition()  # bad block specs fail here, before any step

    # options held by the engine's objects, under the names the constructor takes
    estimator = property(lambda self: self.grad_estimator.difference, doc='the scheme\'s name, e.g. "central"')
    num_queries = property(lambda self: self.grad_estimator.num_queries, doc="K")
    block_spec = property(lambda self: self.block_plan.spec, doc="blocks (granularity='tensor' resolved)")
    perturb = property(lambda self: self.perturber.mode, doc='"auto", "copy" or "module"')
    chunk_numel = property(lambda self: self.perturber.chunk_numel, doc="the largest Linear weight built whole")

    # ---------------------------------------------------------------- rule hooks
    def update(self, e, h):
        """The rule's maths for one element: returns U (θ ← θ(1 − ηλ) − ηU) or (U, {state name: new value})."""
        raise NotImplementedError(f"{type(self).__name__} must define update(e, h)")

    def prepare(self, ref: ParamRef, state: dict, est: BlockEstimate) -> dict | None:
        """Host-side work before a tensor's update (counters, scalars the update reads as ``h.<name>``)."""

    def coefficients(self, ref: ParamRef, est: BlockEstimate) -> torch.Tensor:
        """ĝ on ``ref`` is Σ_k coef_k u_k; by default coef_k = (c/K) δ_k/μ."""
        return est.coefficients(ref)

    def own_direction(self, e, h):
        """A rule that makes its own directions returns u from ``e.noise(i)``, ``e.theta`` and its state."""
        raise NotImplementedError

    def is_eager(self, ref: ParamRef) -> bool:
        """True for the tensors whose update is ``eager_update`` (torch ops) instead of the traced program."""
        return False

    def eager_update(self, ref: ParamRef, est: BlockEstimate, h, theta, state: dict, out: dict) -> None:
        """Update ``out["theta"]`` and ``out["state:<name>"]`` in place: they hold θ and the state (themselves, or
        copies in a transaction); ``h`` as in ``update`` (``h.wd``: λ). Default: SGD, ĝ by the directions."""
        sgd(self, ref, est, h, theta, out)

    # ---------------------------------------------------------------- groups
    def add_param_group(self, param_group) -> None:
        param_group = groups.prepare(param_group, first=sum(len(g["params"]) for g in self.param_groups))
        if "shards" in param_group:
            groups.check_shards(param_group["params"], param_group["shards"], self.sampler.fused, self.perturb)
        self._check_group({**self.defaults, **param_group})
        super().add_param_group(param_group)
        self._partition = None

    def _check_group(self, g: dict) -> None:
        """A group's hyper-parameters (a rule with its own extends this check)."""
        groups.check_hyper(g)

    def partition(self) -> list[tuple[str, list[ParamRef]]]:
        """The ordered blocks of trainable tensors (tensors with ``requires_grad=False`` are skipped)."""
        if self._partition is None:
            refs = [r for r in groups.refs(self.param_groups) if r.param.requires_grad]
            self._partition = self.block_plan.partition(refs, any("param_names" in g for g in self.param_groups))
            getattr(self.grad_estimator.directions, "check", lambda refs: None)(refs)  # what it cannot perturb
            storage.check_refs(self, refs)  # half state: not for float64 parameters nor eager updates
        return self._partition

    def blocks_of_step(self, t: int) -> list[tuple[str, list[ParamRef]]]:
        """The block(s) step t perturbs and updates (a pure function of t and the seed)."""
        return self.block_plan.of_step(self.partition(), t, self.seed)

    def schedule_values(self) -> dict[str, float]:
        """The scheduled hyper-parameters' current values (``betas`` as betas1, betas2), for logs."""
        return current_values(self.schedules, self.param_groups[0])

    def hyper(self, ref: ParamRef, extra: dict | None = None) -> dict:
        """The scalars ``h`` holds for ``ref`` at this step (its group's current values)."""
        return hyper_values(ref.group, extra)

    def decay_of(self, ref: ParamRef) -> float:
        """λ for this tensor: 0 for 1-D tensors unless their group set weight_decay (docs/algorithms.md §2)."""
        wd = ref.group.get("weight_decay", 0.0)
        return wd if wd and (ref.param.ndim >= 2 or ref.group["decay_1d"]) else 0.0

    # ---------------------------------------------------------------- state and scratch
    def state_spec(self, ref: ParamRef, name: str) -> tuple[tuple, torch.dtype] | None:
        """(shape, dtype) of state ``name`` of this tensor: its shape in ``state_dtype``'s type unless the rule
        says otherwise (then its own dtype); load_state_dict refuses other saved state (None: any)."""
        return tuple(ref.param.shape), storage.dtype_of(self.state_dtype, ref.param)

    def state_tensor(self, ref: ParamRef, name: str, shape=None, dtype=None) -> torch.Tensor:
        """State ``name`` of this tensor, zeros of ``state_spec`` (or ``shape``, ``dtype``) when new."""
        state, p = self.state[ref.param], ref.param
        if name not in state:
            spec = self.state_spec(ref, name) or (p.shape, storage.dtype_of(self.state_dtype, p))
            state[name] = torch.zeros(spec[0] if shape is None else shape, dtype=dtype or spec[1], device=p.device)
        return state[name]

    def release_buffers(self) -> None:
        """Free the scratch and spare tensors; the next step allocates them again."""
        self.scratch.clear()
        self.perturber.pool.clear()

    def state_dict(self):
        return resume.save(self, super().state_dict())

    def load_state_dict(self, state_dict, overrides=None):
        """torch's ``load_state_dict``, plus the ZO counters, after checking that the state was made with this
        optimizer's settings and fits its parameters (``zolab.engine.resume``). ``overrides`` (default
        ``self.resume_overrides``): group hyper-parameters (e.g. ``("lr",)``) that keep this optimizer's values."""
        overrides = tuple(self.resume_overrides if overrides is None else overrides)
        resume.load(self, state_dict, overrides, super().load_state_dict)
        self._partition = None

    # ---------------------------------------------------------------- probes' view of a step
    def bind(self, model: torch.nn.Module) -> ZOOptimizer:
        """The model whose modules own the parameters (``perturb="module"``/``"auto"``); returns self."""
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"bind needs a torch.nn.Module, got {type(model).__name__}")
        self.perturber.model = model
        return self

    @property
    def perturb_mode(self) -> str:
        """The perturbation in use: ``"copy"`` or ``"module"`` (``perturb="auto"`` resolved)."""
        return self.perturber.resolved([r for _, rs in self.partition() for r in rs], self.sampler.fused)

    def direction(self, ref: ParamRef, query: Query) -> torch.Tensor:
        """The direction u of ``query`` on one tensor (unit-normalised for sphere), as the step used it."""
        return self.grad_estimator.directions.point(ref, query, 1.0)

    def grad_estimate(self) -> dict[str, torch.Tensor]:
        """ĝ of the last step, per perturbed tensor name, rebuilt from the record (for probes)."""
        if self.record is None:
            raise RuntimeError("no step taken yet")
        return {k: v for b in self.record.blocks for k, v in b.grad(self.grad_estimator.directions).items()}

    def element_view(self, views, g):
        """The ``e`` an update is traced with (a rule's own directions add their noise)."""
        return self.grad_estimator.directions.element(views, g)

    # ---------------------------------------------------------------- the step
    @torch.no_grad()
    def step(self, closure=None, batched=None, **evaluators):
        """One ZO step. ``closure()`` returns the loss at the current parameters; it must not call backward.

        ``batched`` (optional) is the same objective on stacked points: ``batched(X)``, X of shape (n,
        *param.shape), returns the n losses: all points of a one-tensor problem in one call. ``evaluators``:
        objectives of the same form that the difference scheme evaluates points with, by name (e.g. a full-batch
        closure). Returns the scheme's logged loss (f(θ) for forward, the mean of the ± losses for central);
        ``self.record`` then holds the step record for probes."""
        check_step(type(self).__name__, closure, batched, evaluators, self.grad_estimator.scheme)
        # Under autocast (Lightning's bf16-mixed) only the forwards run in low precision: the optimizer's own
        # arithmetic (ĝ, moments, θ) runs with autocast off, in the parameters' and moments' dtypes.
        device_type = self.param_groups[0]["params"][0].device.type
        if torch.is_autocast_enabled(device_type):
            wrap = torch.autocast(device_type, dtype=torch.get_autocast_dtype(device_type))
            closure, batched = (None if f is None else wrap(f) for f in (closure, batched))
            evaluators = {k: wrap(f) for k, f in evaluators.items()}
            with torch.autocast(device_type, enabled=False):
                return self._step(closure, batched, evaluators)
        return self._step(closure, batched, evaluators)

    def _step(self, closure, batched, evaluators):
        t = self.zo["step"] + 1
        for k, v in self.schedules.items():
            for group in self.param_groups:
                group[k] = resolve(v, t)
        plan = self.blocks_of_step(t)
        tx = Transaction(self.scratch.spares) if len(plan) > 1 else None  # several blocks: all update or none
        zo_before, estimates, skipped = dict(self.zo), [], False
        try:
            for position, (block, refs) in enumerate(plan):
                queries = self.grad_estimator.queries(self.seed, t, position)
                est = self.perturber.estimate(self.grad_estimator, block, refs, queries, closure, batched,
                                              self.scratch, self.perturb_mode, evaluators, self.state_tensor)
                self.zo["forwards"] += est.forwards * getattr(self.grad_estimator.parallel, "data", 1)
                estimates.append(est)
                if self.nonfinite != "ignore" and not bool(torch.isfinite(est.losses).all()):  # the one host sync
                    raise NonFiniteLoss(block, est.losses)
                self.updater.apply(est, tx)
        except BaseException as err:  # put back what the step changed; the spent forwards stay counted
            if tx is not None:
                tx.rollback()
            forwards = self.zo["forwards"]
            self.zo.clear()
            self.zo.update(zo_before, forwards=forwards)
            if not isinstance(err, NonFiniteLoss):
                raise
            if self.nonfinite == "raise":
                raise err.error(t) from None
            skipped = True
            self.zo["skipped"] += 1
        if tx is not None:
            tx.commit()
        self.zo["step"] = t
        self.record = StepRecord.of(self, t, estimates, skipped)
        return self.record.loss

    def __repr__(self) -> str:
        opts = (f"estimator={self.estimator!r}, directions={self.grad_estimator.directions.name!r}, "
                f"num_queries={self.num_queries}, scale={self.scale!r}, seed={self.seed}")
        if self.block_spec is not None:
            opts += f", blocks={self.block_spec!r}, block_selection={self.block_plan.selection!r}"
        return f"{type(self).__name__}({opts}, groups={len(self.param_groups)})"
