"""Perturbing parameters for one closure call, with an exact restore: whole tensors, or inside their modules.

``perturb="copy"`` (``evaluate_copy``) writes θ + r·u for every perturbed tensor into scratch tensors before
the closure runs, points each parameter's ``.data`` at its scratch tensor and back afterwards (also when the
closure raises): θ is bitwise unchanged, for one extra copy of the perturbed tensors.
``perturb="module"`` (after ``optimizer.bind(model)``; the default ``"auto"`` picks it for a bound model
whose perturbed tensors all belong to submodules) builds a tensor's perturbed value only while the module
that owns it runs:

- a module's own perturbed tensors are written into pooled scratch tensors by a forward pre-hook,
  pointed to by ``.data``, and pointed back at the untouched originals by the forward hook (or, if the
  forward raises, when the closure returns), so θ is bitwise unchanged as in ``copy`` mode;
- an ``nn.Embedding`` looks up θ's rows and adds z for those rows only (the counter rng draws any element);
- an ``nn.Linear`` whose weight exceeds ``chunk_numel`` computes its output in row chunks of θ + αz.

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

from zolab import kernels
from zolab.engine.checks import check_choice, check_int
from zolab.engine.estimator import Query
from zolab.engine.groups import ParamRef
from zolab.engine.seeds import mix

PERTURB_MODES = ("auto", "copy", "module")


class NotPerturbed(RuntimeError):
    """A perturbed tensor was never built during the closure: it is used outside its module's forward."""


def evaluate_copy(refs: list[ParamRef], query: Query | None, sign: float, directions, closure, buffer=None):
    """The closure's value at θ + sign·μ·u (θ itself for ``query=None``), θ bitwise restored afterwards.

    ``buffer(ref)`` (optional) gives a reusable tensor to write the perturbed point into. A shard of a larger
    tensor (``ref.full_numel``) is perturbed in its own storage, where a sharded model's forward gathers it
    from, and copied back from a saved copy afterwards."""
    if query is None:
        return closure()
    originals, saved = [], []
    try:
        for r in refs:
            p = r.param
            if r.full_numel is not None:  # a shard that a gathering forward reads from its own storage:
                copy = buffer(r).copy_(p.data) if buffer else p.data.clone()  # written in place, restored
                saved.append((p, copy))  # from this copy (exact)
                directions.point(r, query, sign * r.group["mu"], out=p.data, base=copy)
                continue
            point = directions.point(r, query, sign * r.group["mu"], out=buffer(r) if buffer else None, base=p.data)
            originals.append((p, p.data))
            p.data = point
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

    def estimate(self, estimator, block: str, refs: list[ParamRef], queries, closure, batched, scratch, mode: str):
        """``estimator.estimate`` of one block, its points evaluated in ``mode`` (or by ``batched``)."""
        dirs = estimator.directions
        if batched is None and mode == "module":
            if self.model is None:
                raise RuntimeError("perturb='module' needs the model: call optimizer.bind(model) first")
            try:
                with ModulePerturbation(self.model, refs, dirs, self.pool, self.chunk_numel) as mp:
                    return estimator.estimate(block, refs, queries, lambda q, s: mp.evaluate(q, s, closure),
                                              scratch=scratch)
            except NotPerturbed:
                if self.mode == "module":
                    raise
                self.copy_only = True

        def buffer(r):
            return scratch((r.index, "point"), r.param.shape, r.param.dtype, r.param.device)

        return estimator.estimate(block, refs, queries,
                                  lambda q, s: evaluate_copy(refs, q, s, dirs, closure, buffer),
                                  batched=batched, scratch=scratch)


def owned_by_submodules(model: nn.Module, refs: list[ParamRef]) -> bool:
    """True when no perturbed tensor is a direct parameter of ``model`` itself (whose ``forward`` the closure
    may never call, e.g. a task's ``loss`` that reads its own tensor): then module mode can build them all."""
    own = {id(p) for _, p in model.named_parameters(recurse=False)}
    return not any(id(r.param) in own for r in refs)


class ModulePerturbation:
    """Installs the hooks for one block of tensors; ``evaluate(query, sign, closure)`` per point."""

    def __init__(self, model: nn.Module, refs: list[ParamRef], directions, pool: dict, chunk_numel: int):
        """``directions.point(ref, query, radius, out=, base=)`` builds a perturbed tensor; ``directions.law``
        is the counter draw when u is the plain z (then embeddings look up rows and large Linears go in
        chunks), None for a rule with its own directions (built whole)."""
        self.directions, self.law, self.pool, self.chunk_numel = directions, directions.law, pool, chunk_numel
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
        self.current: tuple[Query, float] | None = None
        self.swapped: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (param, original, scratch)
        self.built: set[int] = set()
        self.handles, self.overridden = [], []

    # ------------------------------------------------------------ install / remove
    def __enter__(self):
        for module, own in self.owners.items():
            rows_ok = self.law is not None and isinstance(module, nn.Embedding) and module.max_norm is None
            chunk = (self.law is not None and isinstance(module, nn.Linear)
                     and module.weight.numel() > self.chunk_numel and any(r.param is module.weight for r in own))
            if rows_ok and len(own) == 1:
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
            return fn(mod, *args, **kwargs)

        self.overridden.append((module, previous))
        module.forward = types.MethodType(forward, module)

    # ------------------------------------------------------------ the perturbed value of one tensor
    def _coef(self, ref: ParamRef):
        query, sign = self.current
        coef = sign * ref.group["mu"]
        return coef if query.inv_norm is None else query.inv_norm * coef

    def _key(self, ref: ParamRef) -> int:
        return mix(self.current[0].seed, ref.index)

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
            query, sign = self.current
            self.directions.point(ref, query, sign * ref.group["mu"], out=point, base=p.data)
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
        return kernels.rows(rows, input, module.embedding_dim, self._key(ref), self._coef(ref), self.law)

    def _chunked_linear_forward(self, module: nn.Linear, x):
        refs = {id(r.param): r for r in self.owners[module]}
        weight, bias = module.weight, module.bias
        w_ref = refs[id(weight)]
        if bias is not None and id(bias) in refs:
            b_ref = refs[id(bias)]
            bias = kernels.axpz(torch.empty_like(bias), [self._key(b_ref)], [self._coef(b_ref)], bias.data, 0,
                                self.law)
            self.built.add(id(b_ref.param))
        out_f, in_f = weight.shape
        rows = chunk_rows(out_f, in_f, self.chunk_numel)
        x2 = x.reshape(-1, in_f)
        out = torch.empty(x2.shape[0], out_f, dtype=torch.result_type(x, weight), device=x.device)
        buf = self._scratch(weight[:rows])
        # one growing buffer for a chunk's output, kept across calls (fresh ones would page-fault each time)
        tmp = self._grow(("linear_out", out.dtype, out.device), x2.shape[0] * rows)
        key, coef = self._key(w_ref), self._coef(w_ref)
        try:
            for r0 in range(0, out_f, rows):
                r1 = min(r0 + rows, out_f)
                w = buf[: (r1 - r0) * in_f].view(r1 - r0, in_f)
                kernels.axpz(w, [key], [coef], weight.data[r0:r1], r0 * in_f, self.law)
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
    def evaluate(self, query: Query | None, sign: float, closure):
        """f(θ + sign·μ·u) (f(θ) for ``query=None``), each perturbed tensor built only inside its module."""
        if query is None:
            return closure()
        self.current, self.built = (query, sign), set()
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
