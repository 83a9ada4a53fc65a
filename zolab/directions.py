"""Direction samplers, regenerated from integer seeds tensor by tensor (ALGORITHMS.md §1).

A direction is never stored as one d-vector. Query k of step t owns an integer seed; tensor number i of
the optimizer draws its slice of the direction from a generator seeded with ``mix(seed, i)``, on the
tensor's own device and in its own dtype. So the draw for a tensor does not depend on which other tensors
are perturbed (a block-restricted direction is the restriction of the full one), and any probe can
regenerate the exact numbers from the step record.

``sphere`` draws a Gaussian here; the estimator divides by the norm over the perturbed set (or per tensor
when that tensor is its own block), since only it knows that set.
"""

from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix(*keys: int) -> int:
    """Hash integers into a 63-bit seed (splitmix64 chain): a pure, platform-independent function."""
    h = 0x243F6A8885A308D3
    for k in keys:
        h = _splitmix64(h ^ (int(k) & _MASK64))
    return h >> 1


class DirectionSampler:
    """Draws the raw per-tensor direction for a seed. Subclasses define ``draw``."""

    name: str = ""
    normalize: bool = False  # sphere: the estimator divides by the norm over the perturbed set

    def __init__(self) -> None:
        self._generators: dict[torch.device, torch.Generator] = {}

    def generator(self, seed: int, device: torch.device) -> torch.Generator:
        """A generator on ``device`` seeded with ``seed``; cached per device, re-seeded on every call."""
        gen = self._generators.get(device)
        if gen is None:
            gen = self._generators[device] = torch.Generator(device=device)
        return gen.manual_seed(seed)

    def sample(self, seed: int, like: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The raw draw for one tensor (same shape, device and dtype as ``like``), into ``out`` if given
        (a reused buffer saves the allocation and its page faults on every call)."""
        return self.draw(self.generator(seed, like.device), like, out)

    def draw(self, gen: torch.Generator, like: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Gaussian(DirectionSampler):
    """u ~ N(0, I) (MeZO, ZO-Bench, MEAZO)."""

    name = "gaussian"

    def draw(self, gen, like, out=None):
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

    def draw(self, gen, like, out=None):
        bits = torch.randint(0, 2, like.shape, generator=gen, device=like.device, dtype=torch.int8)
        out = bits.to(like.dtype) if out is None else out.copy_(bits)
        return out.mul_(2).sub_(1)


SAMPLERS: dict[str, type[DirectionSampler]] = {c.name: c for c in (Gaussian, Sphere, Rademacher)}


def make_sampler(name: str | DirectionSampler) -> DirectionSampler:
    if isinstance(name, DirectionSampler):
        return name
    if name not in SAMPLERS:
        raise ValueError(f"unknown directions {name!r}; allowed: {sorted(SAMPLERS)}")
    return SAMPLERS[name]()
