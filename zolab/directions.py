"""Direction samplers, regenerated from integer seeds tensor by tensor (ALGORITHMS.md §1).

A direction is never stored as one d-vector. Query k of step t owns an integer seed; tensor number i of
the optimizer draws its slice of the direction with the key ``mix(seed, i)``. So the draw for a tensor
does not depend on which other tensors are perturbed (a block-restricted direction is the restriction of
the full one), and any probe can regenerate the exact numbers from the step record.

Two random number generators (``rng``):

- ``"counter"`` (default): z is a pure function of (key, element index) (``zolab.kernels``): the same
  numbers on CPU and GPU, for any slice, and fused kernels that draw z and use it in one pass without
  storing it. Values are float32 draws cast to the tensor's dtype.
- ``"torch"``: a ``torch.Generator`` seeded with the key, on the tensor's device (device-specific numbers).

``sphere`` draws a Gaussian here; the estimator divides by the norm over the perturbed set (or per tensor
when that tensor is its own block), since only it knows that set.
"""

from __future__ import annotations

import torch

from zolab import kernels

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


RNGS = ("counter", "torch")


def mix_each(prefix: tuple[int, ...], lasts) -> list[int]:
    """``[mix(*prefix, k) for k in lasts]``, hashing the common prefix once."""
    h = 0x243F6A8885A308D3
    for k in prefix:
        h = _splitmix64(h ^ (int(k) & _MASK64))
    return [_splitmix64(h ^ (int(k) & _MASK64)) >> 1 for k in lasts]


class CounterStream:
    """The counter generator's state: a key and the next element index (successive draws continue)."""

    def __init__(self, key: int, offset: int = 0) -> None:
        self.key, self.offset = int(key), int(offset)

    def take(self, n: int) -> int:
        start, self.offset = self.offset, self.offset + n
        return start


class DirectionSampler:
    """Draws the raw per-tensor direction for a seed. Subclasses set ``kind`` (counter) and ``draw_torch``."""

    name: str = ""
    kind: str = "gaussian"  # the counter kernels' distribution
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
            return kernels.fill(out, gen.key, gen.take(like.numel()), self.kind)
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
    kind = "rademacher"

    def draw_torch(self, gen, like, out=None):
        bits = torch.randint(0, 2, like.shape, generator=gen, device=like.device, dtype=torch.int8)
        out = bits.to(like.dtype) if out is None else out.copy_(bits)
        return out.mul_(2).sub_(1)


SAMPLERS: dict[str, type[DirectionSampler]] = {c.name: c for c in (Gaussian, Sphere, Rademacher)}


def make_sampler(name: str | DirectionSampler, rng: str = "counter") -> DirectionSampler:
    if isinstance(name, DirectionSampler):
        return name
    if name not in SAMPLERS:
        raise ValueError(f"unknown directions {name!r}; allowed: {sorted(SAMPLERS)}")
    return SAMPLERS[name](rng)
