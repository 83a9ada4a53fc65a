"""Perturbing parameters for one closure call, with an exact restore: whole tensors, or inside their modules.

A point is a ``zolab.engine.schemes.Point``: base + Σ_j r_j u_{q_j} on every perturbed tensor (θ ± μu for
the forward and central schemes; candidates, anchors and several-query points for others); ``build`` makes
it on one tensor with the directions object. ``perturb="copy"`` (``evaluate_copy``) writes the point for
every perturbed tensor into scratch tensors before
the closure runs, points each parameter's ``.data`` at its scratch tensor and back afterwards (also when the
closure raises): θ is bitwise unchanged, for one extra copy of the perturbed tensors.
``perturb="module"`` (after ``optimizer.bind(model)``; the default ``"auto"`` picks it for a bound model
whose perturbed tensors all belong to submodules) builds a tensor's perturbed value only while the module
that owns it runs:

- a module's own perturbed tensors are written into pooled scratch tensors by a forward pre-hook,
  pointed to by ``.data``, and pointed back at the untouched originals by the forward hook (or, if the
  forward raises, when the closure returns), so θ is bitwise unchanged as in ``copy`` mode;
- an ``nn.Embedding`` looks up θ's rows and adds r·u for those rows only, and an ``nn.Linear`` whose weight
  exceeds ``chunk_numel`` computes its output in row chunks of θ + r·u, for one-query points θ + r·u of
  directions that build parts of a point (``directions.slices(ref)``: the counter rng draws any element, a
  low-rank u has rows A[i]Bᵀ; for the embedding rows alone, ``directions.embedding_slices(ref)`` where the
  directions define it: a rule's own element-wise directions, e.g. ZO-AdaMU's, build exact rows without opting
  into chunks); other points are built whole, one module's tensors at a time.

So the extra memory is one layer's tensors (or one chunk), not the model. The numbers are those of
``copy`` mode (the same kernel builds each perturbed tensor), except that a chunked Linear may round its
matrix product differently. A perturbed tensor that is used outside its module's forward (read as an
attribute by another module) would be seen unperturbed: the closure then fails with an error naming it,
when it was never built during the call, and ``perturb="copy"`` is the way out.
"""

from __future__ import annotations

import types
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn

from zolab.engine.checks import check_choice, check_int
from zolab.engine.groups import ParamRef
from zolab.engine.jvp import forward_gradient
from zolab.engine.schemes import Point, as_point, base_of

PERTURB_MODES = ("auto", "copy", "module")


class NotPerturbed(RuntimeError):
    """A perturbed tensor was never built during the closure: it is used outside its module's forward."""


def build(directions, ref: ParamRef, point: Point, out, theta: torch.Tensor, state=None) -> torch.Tensor:
    """``point`` on one tensor (θ = ``theta``) into ``out`` (a new tensor when None; ``out`` may be ``theta``)."""
    base = base_of(point, ref, state)
    if base is None:
        base = theta
    elif base.dtype != theta.dtype:  # a state of the compute type under a half-precision parameter
        out = (torch.empty_like(theta, memory_format=torch.contiguous_format) if out is None else out).copy_(base)
        base = out
    radii = point.radii(ref)
    if len(point.terms) == 1:
        return directions.point(ref, point.terms[0][0], radii[0], out=out, base=base)
    if not point.terms:
        return (torch.empty_like(theta, memory_format=torch.contiguous_format) if out is None else out).copy_(base)
    return directions.combine(ref, point.queries, radii, out=out, base=base)


def evaluate_copy(refs: list[ParamRef], query, sign: float, directions, closure, buffer=None, state=None):
    """The closure's value at a point (``as_point(query, sign)``: θ + sign·μ·u for a query, θ for None, a
    ``Point``), θ bitwise restored afterwards.

    ``buffer(ref)`` (optional) gives a reusable tensor to write the perturbed point into; ``state(ref, name)``
    the rule's state tensors (a point's base). A shard of a larger tensor (``ref.full_numel``) is perturbed in
    its own storage, where a sharded model's forward gathers it from, and copied back from a saved copy."""
    point = as_point(query, sign)
    if point.is_theta:
        return closure()
    originals, saved = [], []
    try:
        for r in refs:
            p = r.param
            if r.full_numel is not None:  # a shard that a gathering forward reads from its own storage:
                copy = buffer(r).copy_(p.data) if buffer else p.data.clone()  # written in place, restored
                saved.append((p, copy))  # from this copy (exact)
                build(directions, r, point, p.data, copy, state)
                continue
            built = build(directions, r, point, buffer(r) if buffer else None, p.data, state)
            originals.append((p, p.data))
            p.data = built
        return closure()
    finally:
        for p, data in originals:
            p.data = data
        for p, copy in saved:
            p.data.copy_(copy)


class Perturber:
    """How a step's points are evaluated: ``mode`` ``"copy"``, ``"module"`` or ``"auto"`` (module mode once a
    bound ``model`` owns every perturbed tensor through its submodules and the counter rng draws them), with
    the scratch tensors module mode reuses between steps (``pool``)."""

    def __init__(self, mode: str = "auto", chunk_numel: int = 1 << 21):
        check_choice("perturb", mode, PERTURB_MODES)
        check_int("chunk_numel", chunk_numel, 1)
        self.mode, self.chunk_numel = mode, chunk_numel
        self.model: nn.Module | None = None
        self.pool = new_pool()
        self.copy_only = False  # "auto" met a tensor used outside its module's forward: copy mode from then on

    def resolved(self, refs: list[ParamRef], fused: bool) -> str:
        """The mode in use for these perturbed tensors: ``"copy"`` or ``"module"`` (``"auto"`` resolved)."""
        if self.mode != "auto":
            return self.mode
        ok = (self.model is not None and fused and not self.copy_only
              and all(r.full_numel is None for r in refs) and owned_by_submodules(self.model, refs))
        return "module" if ok else "copy"

    def estimate(self, estimator, block: str, refs: list[ParamRef], queries, closure, batched, scratch, mode: str,
                 evaluators=None, state=None):
        """``estimator.estimate`` of one block, its points evaluated in ``mode`` (or by ``batched``), with the
        step's extra ``evaluators`` (closures, or batched objectives with ``batched``) and the rule's ``state``."""
        dirs, evaluators = estimator.directions, evaluators or {}

        def jvp(query):
            return forward_gradient(self.model, refs, dirs, query, closure)

        if batched is None and mode == "module":
            if self.model is None:
                raise RuntimeError("perturb='module' needs the model: call optimizer.bind(model) first")
            try:
                with ModulePerturbation(self.model, refs, dirs, self.pool, self.chunk_numel, state) as mp:
                    return estimator.estimate(
                        block, refs, queries, lambda q, s: mp.evaluate(q, s, closure), scratch=scratch, jvp=jvp,
                        evaluators={k: (lambda q, s, f=f: mp.evaluate(q, s, f)) for k, f in evaluators.items()},
                        state=state)
            except NotPerturbed:
                if self.mode == "module":
                    raise
                self.copy_only = True

        def buffer(r):
            return scratch((r.index, "point"), r.param.shape, r.param.dtype, r.param.device)

        def copies(f):
            return lambda q, s: evaluate_copy(refs, q, s, dirs, f, buffer, state)

        if batched is None:
            evaluators = {k: copies(f) for k, f in evaluators.items()}
        return estimator.estimate(block, refs, queries, copies(closure), batched=batched, scratch=scratch,
                                  jvp=None if batched is not None else jvp, evaluators=evaluators, state=state)


def owned_by_submodules(model: nn.Module, refs: list[ParamRef]) -> bool:
    """True when no perturbed tensor is a direct parameter of ``model`` itself (whose ``forward`` the closure
    may never call, e.g. a task's ``loss`` that reads its own tensor): then module mode can build them all."""
    own = {id(p) for _, p in model.named_parameters(recurse=False)}
    return not any(id(r.param) in own for r in refs)


class ModulePerturbation:
    """Installs the hooks for one block of tensors; ``evaluate(point, sign, closure)`` per point."""

    def __init__(self, model: nn.Module, refs: list[ParamRef], directions, pool: dict, chunk_numel: int,
                 state=None):
        """``build`` makes a perturbed tensor with ``directions``; where ``directions.slices(ref)``, an
        embedding looks up rows and a large Linear goes in chunks for one-query points; ``state(ref, name)``:
        the rule's state tensors (a point's base)."""
        self.directions, self.pool, self.chunk_numel, self.state = directions, pool, chunk_numel, state
        by_id = {id(r.param): r for r in refs}
        self.refs = refs
        self.owners: dict[nn.Module, list[ParamRef]] = {}
        for module in model.modules():
            own = [by_id[id(p)] for _, p in module.named_parameters(recurse=False) if id(p) in by_id]
            if own:
                self.owners[module] = own
        missing = {id(r.param) for r in refs} - {id(r.param) for own in self.owners.values() for r in own}
        if missing:
            names = [r.name for r in refs if id(r.param) in missing]
            raise ValueError(f"perturb='module': tensors {names[:5]} are not parameters of the bound model; "
                             "bind the model that owns them or use perturb='copy'")
        self.current: Point | None = None
        self.swapped: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (param, original, scratch)
        self.built: set[int] = set()
        self.handles, self.overridden = [], []

    # ------------------------------------------------------------ install / remove
    def __enter__(self):
        dirs = self.directions
        for module, own in self.owners.items():
            rows_ok = (isinstance(module, nn.Embedding) and module.max_norm is None and len(own) == 1
                       and getattr(dirs, "embedding_slices", dirs.slices)(own[0]))  # optional in Directions
            weight = [r for r in own if r.param is getattr(module, "weight", None)]
            chunk = (isinstance(module, nn.Linear) and module.weight.numel() > self.chunk_numel and weight
                     and dirs.slices(weight[0]))
            if rows_ok:
                self._override(module, self._embedding_forward)
            elif chunk:
                self._override(module, self._chunked_linear_forward)
            else:
                self.handles.append(module.register_forward_pre_hook(self._pre_hook))
                self.handles.append(module.register_forward_hook(self._post_hook, always_call=True))
        return self

    def __exit__(self, *exc):
        self._restore_all()
        for h in self.handles:
            h.remove()
        for module, previous in self.overridden:
            if previous is None:
                del module.forward
            else:
                module.forward = previous
        self.handles, self.overridden = [], []
        return False

    def _override(self, module: nn.Module, fn) -> None:
        previous = module.__dict__.get("forward")
        original = previous if previous is not None else module.forward
        owner = self

        def forward(mod, *args, **kwargs):
            if owner.current is None:
                return original(*args, **kwargs)
            if not owner.current.simple:  # a point of several queries or another base: its tensors built whole
                owner._pre_hook(mod, args)
                try:
                    return original(*args, **kwargs)
                finally:
                    owner._post_hook(mod, args, None)
            return fn(mod, *args, **kwargs)

        self.overridden.append((module, previous))
        module.forward = types.MethodType(forward, module)

    # ------------------------------------------------------------ the perturbed value of one tensor
    def _radius(self, ref: ParamRef):
        return self.current.radii(ref)[0]

    def _scratch(self, like: torch.Tensor) -> torch.Tensor:
        free = self.pool[(like.numel(), like.dtype, like.device)]
        return free.pop() if free else torch.empty(like.numel(), dtype=like.dtype, device=like.device)

    def _grow(self, key, numel: int) -> torch.Tensor:
        held = self.pool.get(key)
        if not held or held[0].numel() < numel:
            self.pool[key] = held = [torch.empty(numel, dtype=key[1], device=key[2])]
        return held[0]

    def _release(self, buf: torch.Tensor) -> None:
        self.pool[(buf.numel(), buf.dtype, buf.device)].append(buf)

    def _pre_hook(self, module, args):
        if self.current is None:
            return
        for ref in self.owners[module]:
            p = ref.param
            buf = self._scratch(p)
            point = buf.view(p.shape)
            build(self.directions, ref, self.current, point, p.data, self.state)
            self.swapped.append((p, p.data, buf))
            p.data = point
            self.built.add(id(p))

    def _post_hook(self, module, args, output):
        if self.current is None:
            return
        mine = {id(r.param) for r in self.owners[module]}
        keep = []
        for p, original, buf in self.swapped:
            if id(p) in mine:
                p.data = original
                self._release(buf)
            else:
                keep.append((p, original, buf))
        self.swapped = keep

    def _restore_all(self) -> None:
        for p, original, buf in reversed(self.swapped):
            p.data = original
            self._release(buf)
        self.swapped = []

    def _embedding_forward(self, module: nn.Embedding, input):
        ref = self.owners[module][0]
        rows = F.embedding(input, module.weight, module.padding_idx, None, module.norm_type,
                           module.scale_grad_by_freq, module.sparse)
        self.built.add(id(ref.param))
        return self.directions.embedding_rows(ref, self.current.terms[0][0], self._radius(ref), rows, input,
                                              module.embedding_dim)

    def _chunked_linear_forward(self, module: nn.Linear, x):
        refs = {id(r.param): r for r in self.owners[module]}
        weight, bias = module.weight, module.bias
        w_ref, query = refs[id(weight)], self.current.terms[0][0]
        if bias is not None and id(bias) in refs:
            b_ref = refs[id(bias)]
            bias = self.directions.point(b_ref, query, self._radius(b_ref), out=torch.empty_like(bias),
                                         base=bias.data)
            self.built.add(id(b_ref.param))
        out_f, in_f = weight.shape
        rows = chunk_rows(out_f, in_f, self.chunk_numel)
        x2 = x.reshape(-1, in_f)
        out = torch.empty(x2.shape[0], out_f, dtype=torch.result_type(x, weight), device=x.device)
        buf = self._scratch(weight[:rows])
        # one growing buffer for a chunk's output, kept across calls (fresh ones would page-fault each time)
        tmp = self._grow(("linear_out", out.dtype, out.device), x2.shape[0] * rows)
        radius = self._radius(w_ref)
        try:
            for r0 in range(0, out_f, rows):
                r1 = min(r0 + rows, out_f)
                w = buf[: (r1 - r0) * in_f].view(r1 - r0, in_f)
                self.directions.point_rows(w_ref, query, radius, r0, r1, w, weight.data[r0:r1])
                part = tmp[: x2.shape[0] * (r1 - r0)].view(x2.shape[0], r1 - r0)
                if bias is None:
                    torch.mm(x2, w.t(), out=part)
                else:
                    torch.addmm(bias[r0:r1], x2, w.t(), out=part)
                out[:, r0:r1] = part
        finally:
            self._release(buf)
        self.built.add(id(weight))
        return out.view(*x.shape[:-1], out_f)

    # ------------------------------------------------------------ one point
    def evaluate(self, query, sign: float, closure):
        """The closure's value at ``as_point(query, sign)`` (θ + sign·μ·u for a query, θ for None, a ``Point``),
        each perturbed tensor built only inside its module."""
        point = as_point(query, sign)
        if point.is_theta:
            return closure()
        self.current, self.built = point, set()
        try:
            loss = closure()
        finally:
            self.current = None
            self._restore_all()
        unbuilt = [r.name for r in self.refs if id(r.param) not in self.built]
        if unbuilt:
            raise NotPerturbed(
                f"perturb='module': {unbuilt[:5]} were never perturbed during the closure (used outside their "
                "module's forward, or their module did not run); use perturb='copy'")
        return loss


def chunk_rows(out_f: int, in_f: int, chunk_numel: int) -> int:
    """Rows per chunk: equal chunks of at most ``chunk_numel`` elements, rounded to a multiple of 64 rows
    when that fits (matrix products on ragged widths such as 7,281 rows ran slower here)."""
    n_chunks = -(-out_f * in_f // chunk_numel)
    rows = -(-out_f // n_chunks)
    rounded = -(-rows // 64) * 64
    return rounded if rounded * in_f <= chunk_numel else max(1, rows)


def new_pool() -> dict:
    return defaultdict(list)
