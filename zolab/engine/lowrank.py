"""Low-rank directions: u = A Bᵀ on every tensor of two or more dimensions, factors kept across steps (LOZO, SubZero).

A tensor with ndim >= 2 is viewed as (m, n) = (size(0), numel/size(0)); its direction is u = A Bᵀ with
A (m × r) and B (n × r) in the compute type, so a point θ + r·u is one ``addmm`` into the point's tensor, ĝ is
Σ_k c_k A_k Bᵀ, and a plain SGD step is ``θ.addmm_`` in place (``zolab.engine.update.sgd``): no dense direction
is ever drawn, and in module mode an embedding adds (r·A[ids]) Bᵀ to its looked-up rows and a large Linear
builds its weight in row chunks (whose products may round differently from the whole weight's). Tensors
of fewer dimensions get the sampler's dense draw, as ``SamplerDirections``.

- ``LowRank`` (LOZO, Chen et al., ICLR 2025, arXiv 2410.07698): u = U Vᵀ, U ~ N(0, 1) (m × r) fresh from the
  query's seed, V ~ N(0, 1) (n × r) from its own stream keyed by (seed, tensor index, ⌊(t − 1)/ν⌋): the same
  V for ν steps, and probe and update always use the same V (unlike the authors' code).
- ``Subspace`` (SubZero, Yu et al., ICCV 2025, arXiv 2410.08989): u = √(mn)/r · U Z Vᵀ with U (m × r), V (n × r)
  orthonormal, the Q factors of Gaussians keyed by (seed, tensor index, ⌊(t − 1)/T₀⌋), and Z ~ N(0, 1) (r × r)
  from the query's seed: E‖u‖²_F = mn, as a dense Gaussian's. r = min(rank, m, n) on each tensor.

The factors are pure functions of the seeds and the step, so they are cached (one window per tensor), never
saved: a resumed run regenerates them.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

import torch

from zolab.engine.checks import check_int
from zolab.engine.directions import SamplerDirections
from zolab.engine.groups import compute_type
from zolab.engine.samplers import make_sampler
from zolab.engine.seeds import mix

V_STREAM, BASIS_STREAM = 0x10E0, 0x5B20


class Factored:
    """The directions protocol (``zolab.engine.directions.Directions``) for u = A Bᵀ on matrices; a subclass
    gives ``factors(ref, query) -> (A, B)``. Args: rank r >= 1, refresh (steps a window of kept factors
    lasts) >= 1, sampler (the law of the drawn numbers: ``"gaussian"`` or ``"rademacher"``), rng."""

    law = None
    name = "factored"

    def __init__(self, rank: int = 1, refresh: int = 1, sampler="gaussian", rng: str = "counter"):
        check_int("rank", rank, 1)
        check_int("refresh", refresh, 1)
        self.sampler = make_sampler(sampler, rng)
        if self.sampler.normalize:
            raise ValueError(f"{type(self).__name__}: sampler {self.sampler.name!r} normalises over the perturbed "
                             "set; allowed: 'gaussian' or 'rademacher'")
        self.rank, self.refresh, self.seed = rank, refresh, 0
        self.dense = SamplerDirections(self.sampler)
        self._cache: dict = {}

    def bind(self, rule) -> None:
        """Take the rule's seed (the kept factors' streams)."""
        self.seed = rule.seed
        self._cache.clear()

    def config(self) -> str:
        return f"{self.name}(rank={self.rank}, refresh={self.refresh}, {self.sampler.name})"

    def structured(self, ref) -> bool:
        """True for the tensors that get u = A Bᵀ (two or more dimensions)."""
        return ref.param.dim() >= 2

    @staticmethod
    def shape2(ref) -> tuple[int, int]:
        m = ref.param.shape[0]
        return m, ref.param.numel() // m

    def window(self, t: int) -> int:
        """The index of the window of kept factors that step t (1, 2, ...) is in."""
        return (t - 1) // self.refresh

    def draw(self, key: int, shape: tuple, like: torch.Tensor) -> torch.Tensor:
        """``shape`` numbers of the sampler's law for ``key``, in ``like``'s compute type and device."""
        out = torch.empty(shape, dtype=compute_type(like), device=like.device)
        return self.sampler.sample(key, out, out=out)

    def kept(self, ref, index: int, make):
        """The factors of window ``index`` of this tensor (``make(index)`` when not cached)."""
        held = self._cache.get(ref.index)
        if held is None or held[0] != index:
            held = self._cache[ref.index] = (index, make(index))
        return held[1]

    def factors(self, ref, query) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    # ---------------------------------------------------------------- the protocol
    def variant(self, ref) -> Hashable:
        return "lowrank" if self.structured(ref) else self.dense.variant(ref)

    def check(self, refs) -> None:
        """At construction: the tensors these directions cannot perturb (shards of larger matrices)."""
        shards = [r.name for r in refs if r.full_numel is not None and self.structured(r)]
        if shards:
            raise ValueError(f"{type(self).__name__}: {shards[:5]} are shards of larger tensors; allowed: whole "
                             "tensors (a low-rank direction has no per-element draw to shard)")

    def prepare(self, refs, queries, scratch=None, shard_sum=None) -> None:
        """Nothing to normalise (a normalising sampler is refused)."""

    def point(self, ref, query, radius, out=None, base=None) -> torch.Tensor:
        if not self.structured(ref):
            return self.dense.point(ref, query, radius, out, base)
        return self.combine(ref, [query], [radius], out, base)

    def combine(self, ref, queries, coefs, out=None, base=None) -> torch.Tensor:
        """``base`` + Σ_k coefs[k]·A_k B_kᵀ, one ``addmm_`` per query into ``out`` (in place when it is ``base``)."""
        if not self.structured(ref):
            return self.dense.combine(ref, queries, coefs, out, base)
        if out is None:
            out = torch.empty_like(ref.param, memory_format=torch.contiguous_format)
        o = out.view(self.shape2(ref))
        if base is None:
            o.zero_()
        elif base is not out:
            o.copy_(base.reshape(o.shape))
        for q, c in zip(queries, coefs):
            a, b = self.factors(ref, q)
            o.addmm_((a * c).to(o.dtype), b.to(o.dtype).t())
        return out

    def rows(self, ref, queries, out: torch.Tensor) -> torch.Tensor:
        if not self.structured(ref):
            return self.dense.rows(ref, queries, out)
        for k, q in enumerate(queries):
            self.combine(ref, [q], [1.0], out=out[k].view(ref.param.shape))
        return out

    def slices(self, ref) -> bool:
        return self.structured(ref) or self.dense.slices(ref)

    def embedding_slices(self, ref) -> bool:
        return self.structured(ref) or getattr(self.dense, "embedding_slices", self.dense.slices)(ref)

    def embedding_rows(self, ref, query, radius, rows, ids, dim) -> torch.Tensor:
        a, b = self.factors(ref, query)
        flat = rows.reshape(-1, dim)
        return torch.addmm(flat, (a[ids.reshape(-1)] * radius).to(flat.dtype), b.to(flat.dtype).t()).view(rows.shape)

    def point_rows(self, ref, query, radius, r0, r1, out, base) -> torch.Tensor:
        if not self.structured(ref):
            return self.dense.point_rows(ref, query, radius, r0, r1, out, base)
        a, b = self.factors(ref, query)
        return torch.addmm(base.reshape(r1 - r0, -1), (a[r0:r1] * radius).to(out.dtype), b.to(out.dtype).t(),
                           out=out.view(r1 - r0, -1))

    def element(self, views, g):
        return views.element(g=g)

    def trace_g(self, views, num_queries: int, ref):
        """A matrix's ĝ is a given tensor (built from the factors: only a fused update reads it); others draw."""
        return views.tracer.input("g") if self.structured(ref) else self.dense.trace_g(views, num_queries, ref)

    def g_inputs(self, program, ref, queries, coefs, scratch=None) -> tuple[dict, dict, dict]:
        if not self.structured(ref):
            return self.dense.g_inputs(program, ref, queries, coefs, scratch)
        p = ref.param
        out = scratch(ref) if scratch else torch.empty(p.shape, dtype=compute_type(p), device=p.device)
        return {}, {"g": self.combine(ref, queries, coefs, out)}, {}

    def noise_inputs(self, program, ref, queries) -> tuple[dict, dict]:
        return {}, {}


class LowRank(Factored):
    """LOZO's directions (see the module doc): u = U Vᵀ, U fresh each query, V kept for ``refresh`` = ν steps.
    Args: rank r (1), refresh ν (50), sampler ("gaussian"), rng ("counter")."""

    name = "lowrank"

    def __init__(self, rank: int = 1, refresh: int = 50, sampler="gaussian", rng: str = "counter"):
        super().__init__(rank, refresh, sampler, rng)

    def v(self, ref, index: int) -> torch.Tensor:
        """V (n × r) of window ``index`` of this tensor."""
        n = self.shape2(ref)[1]
        return self.kept(ref, index, lambda i: self.draw(mix(self.seed, V_STREAM, ref.index, i), (n, self.rank),
                                                          ref.param))

    def factors(self, ref, query):
        m = self.shape2(ref)[0]
        return self.draw(self.dense.key(ref, query), (m, self.rank), ref.param), self.v(ref, self.window(query.t))


class Subspace(Factored):
    """SubZero's directions (see the module doc): u = √(mn)/r · U Z Vᵀ, orthonormal U, V kept for ``refresh`` = T₀
    steps, Z fresh each query. Args: rank r (8), refresh T₀ (1000), sampler ("gaussian"), rng ("counter")."""

    name = "subspace"

    def __init__(self, rank: int = 8, refresh: int = 1000, sampler="gaussian", rng: str = "counter"):
        super().__init__(rank, refresh, sampler, rng)

    def rank_of(self, ref) -> int:
        return min(self.rank, *self.shape2(ref))

    def basis(self, ref, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, V) of window ``index``: the Q factors of (m × r) and (n × r) draws."""
        (m, n), r = self.shape2(ref), self.rank_of(ref)

        def make(i):
            return tuple(torch.linalg.qr(self.draw(mix(self.seed, BASIS_STREAM, ref.index, i, side), (rows, r),
                                                   ref.param)).Q for side, rows in enumerate((m, n)))

        return self.kept(ref, index, make)

    def factors(self, ref, query):
        (m, n), r = self.shape2(ref), self.rank_of(ref)
        u, v = self.basis(ref, self.window(query.t))
        z = self.draw(self.dense.key(ref, query), (r, r), ref.param)
        return (u @ z) * (math.sqrt(m * n) / r), v
