"""Samplers: the law of a raw direction z (Gaussian, sphere, Rademacher) and the generator that draws it.

A sampler draws one tensor's z for a key (``zolab.engine.seeds``). Two random number generators (``rng``):

- ``"counter"`` (default): z is a pure function of (key, element index) (``zolab.kernels``): the same
  numbers on CPU and GPU, for any slice, and fused kernels that draw z and use it in one pass without
  storing it. Values are float32 draws cast to the tensor's dtype.
- ``"torch"``: a ``torch.Generator`` seeded with the key, on the tensor's device (device-specific numbers).

A sampler knows nothing of queries or of the perturbed set: ``zolab.engine.directions`` turns its draws into
the directions u_k of a step (sphere's normalisation over the perturbed set included).
"""

from __future__ import annotations

import torch

from zolab import kernels
from zolab.engine.seeds import CounterStream

RNGS = ("counter", "torch")


class DirectionSampler:
    """Draws the raw per-tensor direction for a seed. Subclasses set ``law`` (counter) and ``draw_torch``."""

    name: str = ""
    law: str = "gaussian"  # the counter kernels' distribution
    normalize: bool = False  # sphere: the estimator divides by the norm over the perturbed set

    def __init__(self, rng: str = "counter") -> None:
        if rng not in RNGS:
            raise ValueError(f"unknown rng {rng!r}; allowed: {list(RNGS)}")
        self.rng = rng
        self._generators: dict[torch.device, torch.Generator] = {}

    @property
    def fused(self) -> bool:
        """True when the fused kernels of ``zolab.kernels`` can draw this sampler's numbers."""
        return self.rng == "counter"

    def generator(self, seed: int, device: torch.device):
        """A generator for ``seed``: a ``CounterStream`` (counter rng) or a ``torch.Generator`` on ``device``
        (cached per device, re-seeded on every call)."""
        if self.rng == "counter":
            return CounterStream(seed)
        gen = self._generators.get(device)
        if gen is None:
            gen = self._generators[device] = torch.Generator(device=device)
        return gen.manual_seed(seed)

    def sample(self, seed: int, like: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The raw draw for one tensor (same shape, device and dtype as ``like``), into ``out`` if given
        (a reused buffer saves the allocation and its page faults on every call)."""
        return self.draw(self.generator(seed, like.device), like, out)

    def draw(self, gen, like: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The next ``like``-shaped draw of ``gen`` (advances it)."""
        if isinstance(gen, CounterStream):
            if out is None:
                out = torch.empty_like(like, memory_format=torch.contiguous_format)
            return kernels.fill(out, gen.key, gen.take(like.numel()), self.law)
        return self.draw_torch(gen, like, out)

    def draw_torch(self, gen: torch.Generator, like: torch.Tensor, out: torch.Tensor | None = None):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rng={self.rng!r})"


class Gaussian(DirectionSampler):
    """u ~ N(0, I) (MeZO, ZO-Bench, MEAZO)."""

    name = "gaussian"

    def draw_torch(self, gen, like, out=None):
        if out is not None:
            return torch.randn(like.shape, generator=gen, out=out)
        return torch.randn(like.shape, generator=gen, device=like.device, dtype=like.dtype)


class Sphere(Gaussian):
    """u = z/||z||, z ~ N(0, I): uniform on the unit sphere of the perturbed set (R-AdaZO, ZO-AdaMM)."""

    name = "sphere"
    normalize = True


class Rademacher(DirectionSampler):
    """u_i in {-1, +1} equiprobable."""

    name = "rademacher"
    law = "rademacher"

    def draw_torch(self, gen, like, out=None):
        bits = torch.randint(0, 2, like.shape, generator=gen, device=like.device, dtype=torch.int8)
        out = bits.to(like.dtype) if out is None else out.copy_(bits)
        return out.mul_(2).sub_(1)


SAMPLERS: dict[str, type[DirectionSampler]] = {c.name: c for c in (Gaussian, Sphere, Rademacher)}


def make_sampler(name: str | DirectionSampler, rng: str = "counter") -> DirectionSampler:
    """The sampler named ``name`` (one of ``SAMPLERS``) with ``rng``; a ``DirectionSampler`` passes as it is."""
    if isinstance(name, DirectionSampler):
        return name
    if name not in SAMPLERS:
        raise ValueError(f"unknown directions {name!r}; allowed: {sorted(SAMPLERS)}")
    return SAMPLERS[name](rng)
