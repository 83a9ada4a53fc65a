"""Directions: how a step's queries become the tensors u_k, tensor by tensor, and the protocol any builder follows.

A direction is never stored as one d-vector. Query k owns an integer seed; tensor number i of the optimizer
draws its slice with the key ``mix(seed, i)`` (``zolab.engine.seeds``). So the draw for a tensor does not
depend on which other tensors are perturbed (a block-restricted direction is the restriction of the full
one), and any probe can regenerate the exact numbers from the step record (docs/algorithms.md §1).

A builder turns queries into tensors: points base + r·u, sums Σ c_k u_k, the rows of a batched step, the ĝ
an update program reads, and, for module mode, rows of an embedding and row chunks of a large weight. Its
methods are written down in ``Directions``; any object with them can be passed as ``directions=`` (one that
has ``bind(rule)`` gets the rule: its seed, state and hyper-parameters). Built here: ``SamplerDirections``
(u is the sampler's z, ``zolab.engine.samplers``; ``sphere`` divides by ‖z‖ over the perturbed set, which only
the step knows) and ``RuleDirections`` (u is a rule's own element-wise function of its noise, θ and state,
run as a program: ZO-AdaMU's, a mask or a per-element scale); ``zolab.engine.lowrank`` builds low-rank ones.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

import torch

from zolab import kernels
from zolab.engine.groups import compute_type
from zolab.engine.ops import Traced, _Scalars
from zolab.engine.samplers import DirectionSampler, Gaussian, make_sampler
from zolab.engine.seeds import mix


def _wide(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 promoted to float32 for reductions; float32/float64 as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class Directions(Protocol):
    """The protocol of a directions object (``ref``: a ``ParamRef``, its tensor ``ref.param``, its index
    ``ref.index``; ``query``: a ``Query`` with its seed, step ``t``, block ``position`` and index ``k``).

    ``name`` (the record's), ``sampler`` (the ``DirectionSampler`` of its draws: ``sampler.fused`` says whether
    any element can be drawn alone, which module mode needs). u is regenerated whenever it is needed (points,
    update, probes): directions that read θ or state which the update changes give the probes of
    ``grad_estimate()`` the new values, so such a rule overrides ``grad_estimate`` (as ZO-AdaMU does).
    Optional: ``bind(rule)`` (at construction: the rule's seed, ``state_tensor``, ``hyper``), ``check(refs)``
    (at construction: refuse the tensors it cannot perturb), ``config()`` (what the saved state records of it;
    else the sampler's name).
    """

    name: str
    sampler: DirectionSampler

    def variant(self, ref) -> Hashable:
        """A key of how ĝ reaches this tensor's update program (programs are traced and cached per variant:
        a drawn slot on some tensors, a given tensor on others)."""

    def prepare(self, refs, queries, scratch=None, shard_sum=None) -> None:
        """Before a block's points: per-step work over the perturbed set (sphere's norms into the queries)."""

    def point(self, ref, query, radius, out=None, base=None) -> torch.Tensor:
        """``base + radius·u`` on one tensor (``radius·u`` without base), into ``out`` when given."""

    def combine(self, ref, queries, coefs, out=None, base=None) -> torch.Tensor:
        """``base + Σ_k coefs[k]·u_k`` (without base: the sum) on one tensor, into ``out`` (may be ``base``)."""

    def rows(self, ref, queries, out: torch.Tensor) -> torch.Tensor:
        """The K directions of a one-tensor block as the rows of ``out`` (K, n) (the batched path)."""

    def slices(self, ref) -> bool:
        """True when ``embedding_rows`` and ``point_rows`` can build parts of a point of this tensor."""

    def embedding_slices(self, ref) -> bool:
        """Optional (module mode falls back on ``slices``): True when ``embedding_rows`` builds the looked-up rows
        of this tensor's point bit for bit as the whole point, even where ``point_rows``' Linear row chunks are
        not wanted (their matrix products may round differently from the whole weight's)."""

    def embedding_rows(self, ref, query, radius, rows, ids, dim) -> torch.Tensor:
        """``rows + radius·u[ids]``: rows of a perturbed embedding table (``rows`` = θ[ids]), table never built."""

    def point_rows(self, ref, query, radius, r0, r1, out, base) -> torch.Tensor:
        """Rows r0..r1 of ``base + radius·u`` (the tensor viewed as (size(0), rest)) into ``out``."""

    def element(self, views, g):
        """The ``e`` an update program is traced with (ĝ, and noise for directions that have it)."""

    def trace_g(self, views, num_queries: int, ref):
        """ĝ as the update program of ``ref``'s variant reads it: a draw slot, or a given tensor."""

    def g_inputs(self, program, ref, queries, coefs, scratch=None) -> tuple[dict, dict, dict]:
        """(slots, tensors, scalars) that ``trace_g`` made ``program`` read for one tensor."""

    def noise_inputs(self, program, ref, queries) -> tuple[dict, dict]:
        """(slots, tensors) of the noise an update program reads besides ĝ."""


REQUIRED = ("name", "sampler", "variant", "prepare", "point", "combine", "rows", "slices", "embedding_rows",
            "point_rows", "element", "trace_g", "g_inputs", "noise_inputs")


def make_directions(rule, directions, rng: str, own: bool):
    """The directions of ``rule``: a name or ``DirectionSampler`` (``SamplerDirections``, or ``RuleDirections``
    when the rule defines its ``own`` direction) or an object following ``Directions`` (bound to the rule)."""
    if isinstance(directions, str | DirectionSampler):
        sampler = make_sampler(directions, rng)
        dirs = RuleDirections(rule, sampler) if own else SamplerDirections(sampler)
    else:
        missing = [m for m in REQUIRED if not hasattr(directions, m)]
        if missing:
            raise ValueError(f"directions={directions!r} is not a directions object (missing {missing}); allowed: "
                             "'gaussian', 'sphere', 'rademacher', a DirectionSampler, or an object with the "
                             "methods of zolab.engine.directions.Directions")
        dirs = directions
    if hasattr(dirs, "bind"):
        dirs.bind(rule)
    return dirs


class SamplerDirections:
    """u_k = z_k, the sampler's draw for query k on each tensor (for sphere, divided by ‖z_k‖ over the set)."""

    def __init__(self, sampler: DirectionSampler):
        self.sampler = sampler
        self.name = sampler.name
        self.law = sampler.law if sampler.fused else None  # set: any element, row or chunk can be drawn alone

    @staticmethod
    def key(ref, query) -> int:
        return mix(query.seed, ref.index)

    def variant(self, ref) -> Hashable:
        return None  # one update program for every tensor

    def _coef(self, query, radius):
        return radius if query.inv_norm is None else query.inv_norm * radius

    def prepare(self, refs, queries, scratch=None, shard_sum=None) -> None:
        """For sphere, 1/‖z_k‖ over the perturbed set into each query (a draw pass that writes nothing with
        the counter rng; into ``scratch(ref)`` tensors with the torch rng). Shards of tensors add their parts
        with ``shard_sum`` (one all-reduce of the K sums)."""
        if not self.sampler.normalize:
            return
        sums = []
        for q in queries:
            if self.sampler.fused:
                sq = sum(kernels.sumsq(self.key(r, q), r.param, r.offset, self.sampler.law) for r in refs)
            else:
                sq = sum(_wide(self.sampler.sample(self.key(r, q), r.param, out=scratch(r) if scratch else None))
                         .square().sum() for r in refs)
            sums.append(sq)
        sums = torch.stack([s.to(torch.float64) for s in sums])
        if shard_sum is not None and any(r.full_numel is not None for r in refs):
            shard_sum(sums)
        for q, sq in zip(queries, sums.rsqrt()):
            q.inv_norm = sq

    def point(self, ref, query, radius, out=None, base=None) -> torch.Tensor:
        """``base + radius·u`` (``radius·u`` without base) on one tensor, into ``out`` when given."""
        coef = self._coef(query, radius)
        if self.sampler.fused:
            if out is None:
                out = torch.empty_like(ref.param, memory_format=torch.contiguous_format)
            return kernels.axpz(out, [self.key(ref, query)], [coef], base, ref.offset, self.sampler.law)
        u = self.sampler.sample(self.key(ref, query), ref.param, out=out)
        if base is None:
            return u.mul_(coef)
        if isinstance(coef, torch.Tensor):
            return torch.addcmul(base, u, coef, out=u)
        return torch.add(base, u, alpha=coef, out=u)

    def combine(self, ref, queries, coefs, out=None, base=None) -> torch.Tensor:
        """``base`` + Σ_k coefs[k]·u_k on one tensor, into ``out`` when given (all K draws in one pass when
        fused; ``out`` may be ``base``)."""
        if self.sampler.fused:
            if out is None:
                out = torch.empty_like(ref.param, memory_format=torch.contiguous_format)
            coefs = [self._coef(q, c) for c, q in zip(coefs, queries)]
            return kernels.axpz(out, [self.key(ref, q) for q in queries], coefs, base, ref.offset, self.sampler.law)
        if base is not None and out is base:  # the first point would draw into its own base
            for q, c in zip(queries, coefs):
                out.add_(self.point(ref, q, c).to(out.dtype))
            return out
        g = self.point(ref, queries[0], coefs[0], out=out, base=base)
        for q, c in zip(queries[1:], coefs[1:]):
            g.add_(self.point(ref, q, c))
        return g

    def rows(self, ref, queries, out: torch.Tensor) -> torch.Tensor:
        """The K directions of a one-tensor block as the rows of ``out`` (K, n), in the compute type, unit
        rows for sphere (their 1/‖z‖ stored in the queries)."""
        if self.sampler.fused:
            kernels.fill_rows(out, [self.key(ref, q) for q in queries], ref.offset, self.sampler.law)
        else:
            for k, q in enumerate(queries):
                out[k].copy_(self.sampler.sample(self.key(ref, q), ref.param).reshape(-1))
        if self.sampler.normalize:
            inv = torch.linalg.vector_norm(out, dim=1).reciprocal()
            for q, r in zip(queries, inv):
                q.inv_norm = r
            out.mul_(inv[:, None])
        return out

    # ---------------------------------------------------------------- parts of a point, for module mode
    def slices(self, ref) -> bool:
        return self.law is not None

    def embedding_rows(self, ref, query, radius, rows, ids, dim) -> torch.Tensor:
        return kernels.rows(rows, ids, dim, self.key(ref, query), self._coef(query, radius), self.law)

    def point_rows(self, ref, query, radius, r0, r1, out, base) -> torch.Tensor:
        row = ref.param.numel() // ref.param.shape[0]
        return kernels.axpz(out, [self.key(ref, query)], [self._coef(query, radius)], base,
                            ref.offset + r0 * row, self.law)

    # ---------------------------------------------------------------- ĝ inside an update program
    def element(self, views, g):
        """The ``e`` an update program is traced with."""
        return views.element(g=g)

    def noise_inputs(self, program, ref, queries) -> tuple[dict, dict]:
        """(slots, tensors) of the noise an update program reads besides ĝ: none for sampled directions."""
        return {}, {}

    def trace_g(self, views, num_queries: int, ref=None):
        """ĝ as the update program sees it: a draw slot (fused) or a given tensor."""
        return views.tracer.slot("g") if self.sampler.fused else views.tracer.input("g")

    def g_inputs(self, program, ref, queries, coefs, scratch=None) -> tuple[dict, dict, dict]:
        """(slots, tensors, scalars) that ``trace_g`` made the update ``program`` read for one tensor."""
        if self.sampler.fused:
            coefs = [self._coef(q, c) for c, q in zip(coefs, queries)]
            slot = kernels.Slot(self.sampler.law, [self.key(ref, q) for q in queries], coefs)
            return {"g": slot}, {}, {}
        g = _wide(self.combine(ref, queries, coefs, out=scratch(ref) if scratch else None))
        return {}, {"g": g}, {}


class RuleDirections:
    """u_k = ``rule.own_direction(e, h)``: a rule's own element-wise function of the query's standard normal
    noise (``e.noise(i)``, drawn from the query's key), of θ (``e.theta``: the unperturbed tensor, the point's
    base) and of the rule's state, with ``h`` = ``rule.hyper(ref)`` (a rule may add per-tensor scalars there),
    run as a program (ZO-AdaMU's momentum directions, a mask, a per-element scale). Module mode builds rows of
    an embedding and row chunks of a large weight from it when the rule sets ``direction_slices = True`` (the
    chunks' matrix products may round differently from the whole weight's)."""

    law = None

    def __init__(self, rule, sampler: DirectionSampler):
        if not isinstance(sampler, Gaussian) or sampler.normalize:
            raise ValueError(f"a rule's own directions take standard normal noise; got {sampler!r}")
        self.rule, self.sampler, self.name = rule, sampler, rule.directions_name
        self._programs: dict = {}

    key = staticmethod(SamplerDirections.key)

    def variant(self, ref) -> Hashable:
        return None

    def prepare(self, refs, queries, scratch=None, shard_sum=None) -> None:
        """Nothing to normalise: the rule's function is the direction."""

    def _noise(self, views, tag: str, fused: bool):
        base = views.element(tag=tag)

        def get(name):
            if name == "noise":
                return lambda i: views.tracer.slot(f"noise{i}{tag}") if fused else views.tracer.input(f"noise{i}{tag}")
            return getattr(base, name)

        return _Scalars(get)

    def trace_sum(self, views, num_queries: int, coef_names: list[str], fused: bool | None = None):
        """Σ_k c_k·u_k traced, c_k the scalar inputs ``coef_names``."""
        h, fused = views.hyper(), self.sampler.fused if fused is None else fused
        total = None
        for k in range(num_queries):
            term = views.tracer.scalar(coef_names[k]) * self.rule.own_direction(self._noise(views, f"@{k}", fused), h)
            total = term if total is None else total + term
        return total

    def _program(self, kind: str, num_queries: int):
        """``sum`` Σ c_k u_k, ``point`` base + Σ c_k u_k, ``rows``: ``point`` reading its noise as tensors."""
        key = (kind, num_queries)
        if key not in self._programs:
            views = Traced()
            total = self.trace_sum(views, num_queries, [f"c{k}" for k in range(num_queries)],
                                   False if kind == "rows" else None)
            if kind != "sum":
                total = views.tracer.input("base") + total
            views.tracer.store("out", total)
            self._programs[key] = views.tracer.program
        return self._programs[key]

    def inputs(self, program, ref, queries, with_state: bool = True) -> tuple[dict, dict]:
        """(slots, tensors) of a program's noise (and state) on one tensor."""
        p, slots, tensors = ref.param, {}, {}
        for name in program.inputs:
            if with_state and name.startswith("state:"):
                tensors[name] = self.rule.state_tensor(ref, name[6:])
        for k, q in enumerate(queries):
            names = [n for n in (*program.slots, *program.inputs) if n.startswith("noise") and n.endswith(f"@{k}")]
            count = max((int(n[5:n.index("@")]) + 1 for n in names), default=0)
            if self.sampler.fused:
                for i in range(count):
                    slots[f"noise{i}@{k}"] = kernels.Slot("gaussian", [self.key(ref, q)], [1.0], i * ref.numel)
            else:
                gen = self.sampler.generator(self.key(ref, q), p.device)
                for i in range(count):
                    tensors[f"noise{i}@{k}"] = _wide(self.sampler.draw(gen, p))
        return slots, tensors

    def _scalars(self, ref, coefs) -> dict:
        scalars = self.rule.hyper(ref)
        scalars.update({f"c{k}": c for k, c in enumerate(coefs)})
        return scalars

    def _run(self, kind, ref, queries, coefs, out, base=None) -> torch.Tensor:
        program = self._program(kind, len(queries))
        slots, tensors = self.inputs(program, ref, queries)
        if base is not None:
            tensors["base"] = base
        if "theta" in program.inputs:
            tensors["theta"] = ref.param.data if base is None else base
        kernels.run(program, tensors, {"out": out}, self._scalars(ref, coefs), slots, compute_type(ref.param),
                    ref.offset)
        return out

    def point(self, ref, query, radius, out=None, base=None) -> torch.Tensor:
        if out is None:
            out = torch.empty_like(ref.param, memory_format=torch.contiguous_format)
        return self._run("point" if base is not None else "sum", ref, [query], [radius], out, base)

    def combine(self, ref, queries, coefs, out=None, base=None) -> torch.Tensor:
        if out is None:
            out = torch.empty(ref.param.shape, dtype=compute_type(ref.param), device=ref.param.device)
        return self._run("sum" if base is None else "point", ref, queries, coefs, out, base)

    def rows(self, ref, queries, out: torch.Tensor) -> torch.Tensor:
        for k, q in enumerate(queries):
            self.combine(ref, [q], [1.0], out=out[k].view(ref.param.shape))
        return out

    # ---------------------------------------------------------------- parts of a point, for module mode
    def slices(self, ref) -> bool:
        return self.sampler.fused and bool(getattr(self.rule, "direction_slices", False))

    def embedding_slices(self, ref) -> bool:
        # the program is element-wise and its noise is drawn at the rows' own elements: exact for every rule
        return self.sampler.fused

    def embedding_rows(self, ref, query, radius, rows, ids, dim) -> torch.Tensor:
        """The rule's point program on the looked-up rows, its noise drawn at their elements (the same numbers
        and operations as on the whole table, so the same bits)."""
        program, ct = self._program("rows", 1), compute_type(ref.param)
        flat, ids = rows.reshape(-1, dim).contiguous(), ids.reshape(-1).to(torch.int64)
        tensors = {"base": flat}
        for name in program.inputs:
            if name.startswith("state:"):
                tensors[name] = self.rule.state_tensor(ref, name[6:]).reshape(-1, dim)[ids]
            elif name == "theta":
                tensors[name] = flat
            elif name.startswith("noise"):
                i = int(name[5:name.index("@")])
                tensors[name] = kernels.draw_rows(ids, dim, self.key(ref, query), ref.offset + i * ref.numel,
                                                  dtype=ct)
        out = torch.empty_like(flat)
        kernels.run(program, tensors, {"out": out}, self._scalars(ref, [radius]), {}, ct, 0)
        return out.view(rows.shape)

    def point_rows(self, ref, query, radius, r0, r1, out, base) -> torch.Tensor:
        program = self._program("point", 1)
        slots, tensors = self.inputs(program, ref, [query])
        rows = ref.param.shape[0]
        tensors = {k: v.reshape(rows, -1)[r0:r1] for k, v in tensors.items()}
        tensors["base"] = base
        if "theta" in program.inputs:
            tensors["theta"] = base
        row = ref.param.numel() // rows
        kernels.run(program, tensors, {"out": out}, self._scalars(ref, [radius]), slots, compute_type(ref.param),
                    ref.offset + r0 * row)
        return out

    # ---------------------------------------------------------------- ĝ inside an update program
    def element(self, views, g):
        """The update's ``e``: ĝ, and the noise of the step's first query (``e.noise(i)``)."""
        noise = self._noise(views, "@0", self.sampler.fused)
        return _Scalars(lambda name: g if name == "g" else getattr(noise, name))

    def trace_g(self, views, num_queries: int, ref=None):
        return self.trace_sum(views, num_queries, [f"c{k}" for k in range(num_queries)])

    def noise_inputs(self, program, ref, queries) -> tuple[dict, dict]:
        return self.inputs(program, ref, queries, with_state=False)

    def g_inputs(self, program, ref, queries, coefs, scratch=None) -> tuple[dict, dict, dict]:
        slots, tensors = self.noise_inputs(program, ref, queries)
        return slots, tensors, {f"c{k}": c for k, c in enumerate(coefs)}
