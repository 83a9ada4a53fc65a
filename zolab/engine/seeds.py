"""Seeds: every random draw of a step is keyed by a hash of integers, and a counter stream continues draws.

Query k of block position b at step t owns the seed ``mix(seed, t, b, k)``; tensor number i of the optimizer
draws its slice of the query's direction with the key ``mix(query seed, i)`` (docs/algorithms.md §1). The
hash is a splitmix64 chain: a pure, platform-independent function of its integers, so a resumed run and any
probe regenerate the same keys.
"""

from __future__ import annotations

_MASK64 = (1 << 64) - 1
_START = 0x243F6A8885A308D3


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix(*keys: int) -> int:
    """Hash integers into a 63-bit seed (splitmix64 chain): a pure, platform-independent function."""
    h = _START
    for k in keys:
        h = _splitmix64(h ^ (int(k) & _MASK64))
    return h >> 1


def mix_each(prefix: tuple[int, ...], lasts) -> list[int]:
    """``[mix(*prefix, k) for k in lasts]``, hashing the common prefix once."""
    h = _START
    for k in prefix:
        h = _splitmix64(h ^ (int(k) & _MASK64))
    return [_splitmix64(h ^ (int(k) & _MASK64)) >> 1 for k in lasts]


class CounterStream:
    """The counter generator's state: a key and the next element index (successive draws continue)."""

    def __init__(self, key: int, offset: int = 0) -> None:
        self.key, self.offset = int(key), int(offset)

    def take(self, n: int) -> int:
        """The first element index of the next ``n`` draws (and advance past them)."""
        start, self.offset = self.offset, self.offset + n
        return start
