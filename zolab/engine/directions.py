"""Directions: how a step's queries become the tensors u_k, tensor by tensor, from a sampler's draws.

A direction is never stored as one d-vector. Query k owns an integer seed; tensor number i of the optimizer
draws its slice with the key ``mix(seed, i)`` (``zolab.engine.seeds``). So the draw for a tensor does not
depend on which other tensors are perturbed (a block-restricted direction is the restriction of the full
one), and any probe can regenerate the exact numbers from the step record (docs/algorithms.md §1).

Two builders turn queries into tensors (points θ + r·u, sums Σ c_k u_k, the rows of a batched step, and the
ĝ of an update program): ``SamplerDirections`` (u is the sampler's z, ``zolab.engine.samplers``; ``sphere``
divides by ‖z‖ over the perturbed set, which only the step knows) and ``RuleDirections`` (u is a rule's own
element-wise function of its noise and state, ZO-AdaMU's, run as a program).
"""

from __future__ import annotations

import torch

from zolab import kernels
from zolab.engine.groups import compute_type
from zolab.engine.ops import Traced, _Scalars
from zolab.engine.samplers import DirectionSampler, Gaussian
from zolab.engine.seeds import mix


def _wide(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 promoted to float32 for reductions; float32/float64 as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class SamplerDirections:
    """u_k = z_k, the sampler's draw for query k on each tensor (for sphere, divided by ‖z_k‖ over the set)."""

    def __init__(self, sampler: DirectionSampler):
        self.sampler = sampler
        self.name = sampler.name
        self.law = sampler.law if sampler.fused else None  # set: perturb.py may draw rows and chunks itself

    @staticmethod
    def key(ref, query) -> int:
        return mix(query.seed, ref.index)

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
        coef = radius if query.inv_norm is None else query.inv_norm * radius
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

    def combine(self, ref, queries, coefs, out=None) -> torch.Tensor:
        """Σ_k coefs[k]·u_k on one tensor, into ``out`` when given (all K draws in one pass when fused)."""
        if self.sampler.fused:
            if out is None:
                out = torch.empty_like(ref.param, memory_format=torch.contiguous_format)
            coefs = [c if q.inv_norm is None else c * q.inv_norm for c, q in zip(coefs, queries)]
            return kernels.axpz(out, [self.key(ref, q) for q in queries], coefs, None, ref.offset, self.sampler.law)
        g = self.point(ref, queries[0], coefs[0], out=out)
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

    # ---------------------------------------------------------------- ĝ inside an update program
    def element(self, views, g):
        """The ``e`` an update program is traced with."""
        return views.element(g=g)

    def noise_inputs(self, program, ref, queries) -> tuple[dict, dict]:
        """(slots, tensors) of the noise an update program reads besides ĝ: none for sampled directions."""
        return {}, {}

    def trace_g(self, views, num_queries: int):
        """ĝ as the update program sees it: a draw slot (fused) or a given tensor."""
        return views.tracer.slot("g") if self.sampler.fused else views.tracer.input("g")

    def g_inputs(self, program, ref, queries, coefs, scratch=None) -> tuple[dict, dict, dict]:
        """(slots, tensors, scalars) that ``trace_g`` made the update ``program`` read for one tensor."""
        if self.sampler.fused:
            coefs = [c if q.inv_norm is None else c * q.inv_norm for c, q in zip(coefs, queries)]
            slot = kernels.Slot(self.sampler.law, [self.key(ref, q) for q in queries], coefs)
            return {"g": slot}, {}, {}
        g = _wide(self.combine(ref, queries, coefs, out=scratch(ref) if scratch else None))
        return {}, {"g": g}, {}


class RuleDirections:
    """u_k = ``rule.direction(e, h)``: a rule's own element-wise function of the query's standard normal noise
    (``e.noise(i)``, drawn from the query's key) and of the rule's state, run as a program (ZO-AdaMU)."""

    law = None  # perturb.py builds whole tensors

    def __init__(self, rule, sampler: DirectionSampler):
        if not isinstance(sampler, Gaussian) or sampler.normalize:
            raise ValueError(f"a rule's own directions take standard normal noise; got {sampler!r}")
        self.rule, self.sampler, self.name = rule, sampler, rule.directions_name
        self._programs: dict = {}

    key = staticmethod(SamplerDirections.key)

    def prepare(self, refs, queries, scratch=None, shard_sum=None) -> None:
        """Nothing to normalise: the rule's function is the direction."""

    def _noise(self, views, tag: str):
        base = views.element(tag=tag)
        fused = self.sampler.fused

        def get(name):
            if name == "noise":
                return lambda i: views.tracer.slot(f"noise{i}{tag}") if fused else views.tracer.input(f"noise{i}{tag}")
            return getattr(base, name)

        return _Scalars(get)

    def trace_sum(self, views, num_queries: int, coef_names: list[str]):
        """Σ_k c_k·u_k traced, c_k the scalar inputs ``coef_names``."""
        h = views.hyper()
        total = None
        for k in range(num_queries):
            term = views.tracer.scalar(coef_names[k]) * self.rule.own_direction(self._noise(views, f"@{k}"), h)
            total = term if total is None else total + term
        return total

    def _program(self, kind: str, num_queries: int):
        key = (kind, num_queries)
        if key not in self._programs:
            views = Traced()
            total = self.trace_sum(views, num_queries, [f"c{k}" for k in range(num_queries)])
            if kind == "point":
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

    def _run(self, kind, ref, queries, coefs, out, base=None) -> torch.Tensor:
        program = self._program(kind, len(queries))
        slots, tensors = self.inputs(program, ref, queries)
        if base is not None:
            tensors["base"] = base
        scalars = self.rule.hyper(ref)
        scalars.update({f"c{k}": c for k, c in enumerate(coefs)})
        kernels.run(program, tensors, {"out": out}, scalars, slots, compute_type(ref.param), ref.offset)
        return out

    def point(self, ref, query, radius, out=None, base=None) -> torch.Tensor:
        if out is None:
            out = torch.empty_like(ref.param, memory_format=torch.contiguous_format)
        return self._run("point" if base is not None else "sum", ref, [query], [radius], out, base)

    def combine(self, ref, queries, coefs, out=None) -> torch.Tensor:
        if out is None:
            out = torch.empty(ref.param.shape, dtype=compute_type(ref.param), device=ref.param.device)
        return self._run("sum", ref, queries, coefs, out)

    def rows(self, ref, queries, out: torch.Tensor) -> torch.Tensor:
        for k, q in enumerate(queries):
            self.combine(ref, [q], [1.0], out=out[k].view(ref.param.shape))
        return out

    def element(self, views, g):
        """The update's ``e``: ĝ, and the noise of the step's first query (``e.noise(i)``)."""
        noise = self._noise(views, "@0")
        return _Scalars(lambda name: g if name == "g" else getattr(noise, name))

    def trace_g(self, views, num_queries: int):
        return self.trace_sum(views, num_queries, [f"c{k}" for k in range(num_queries)])

    def noise_inputs(self, program, ref, queries) -> tuple[dict, dict]:
        return self.inputs(program, ref, queries, with_state=False)

    def g_inputs(self, program, ref, queries, coefs, scratch=None) -> tuple[dict, dict, dict]:
        slots, tensors = self.noise_inputs(program, ref, queries)
        return slots, tensors, {f"c{k}": c for k, c in enumerate(coefs)}
