"""The k-th smallest value of one or several tensors, exactly ``torch.kthvalue`` of their concatenation, in chunks.

Sparse-MeZO fixes its thresholds at a percentile of the pre-trained weights. ``kthvalue`` of a flattened
embedding would copy it twice (|θ|, then kthvalue's own work copy): more than the step's whole extra memory in
module mode. Beyond ``chunk`` elements the value is found by bisection over the order-preserving integer keys of
the compute type's numbers, each probe one counting pass over the tensors in chunks (at most 32 passes in
float32, 64 in float64), so the temporary memory is a chunk, whatever the tensors' size. The default chunk,
2²⁰ numbers (one reused buffer of |θ| and a comparison), keeps that under a MiniLM layer's own size: at 2²²,
with a new |θ| per chunk, Sparse-MeZO's peak on MiniLM was +23 MB over inference against ZO-SGD's +3 MB
(``benchmarks/step_cost.py``'s memory column, BENCHMARKS.md).
"""

from __future__ import annotations

import struct

import torch

FORMATS = {torch.float32: ("f", "i", 32), torch.float64: ("d", "q", 64)}


def _key(value: float, dtype: torch.dtype) -> int:
    """An integer that orders like the numbers of ``dtype`` (−0.0 just below +0.0)."""
    f, i, bits = FORMATS[dtype]
    b = struct.unpack(i, struct.pack(f, value))[0]
    return b if b >= 0 else ~(b & ((1 << (bits - 1)) - 1))


def _value(key: int, dtype: torch.dtype) -> float:
    f, i, bits = FORMATS[dtype]
    b = key if key >= 0 else (~key) - (1 << (bits - 1))
    return struct.unpack(f, struct.pack(i, b))[0]


def kth_smallest(tensors: list[torch.Tensor], k: int, absolute: bool = True, chunk: int = 1 << 20) -> torch.Tensor:
    """The k-th smallest (1-based) of |x| (``absolute``) or x over the elements of ``tensors``, as a 0-dim tensor of
    the compute type (float64 if any tensor is float64, else float32), equal to ``kthvalue`` of the concatenation."""
    flat = [t.detach().reshape(-1) for t in tensors]
    n = sum(f.numel() for f in flat)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k={k!r}; allowed: an integer in [1, {n}] (the number of elements)")
    ct = torch.float64 if any(f.dtype == torch.float64 for f in flat) else torch.float32

    if n <= chunk:
        whole = torch.cat([f.to(ct) for f in flat])
        return (whole.abs_() if absolute else whole).kthvalue(k).values
    copied = absolute or any(f.dtype != ct for f in flat)
    buf = torch.empty(chunk, dtype=ct, device=flat[0].device) if copied else None

    def parts():  # each chunk in one reused buffer (a view of the tensor itself when nothing changes it), so the
        for f in flat:  # consumer's last chunk and the next are never alive together
            for c in f.split(chunk):
                if buf is None:
                    yield c
                else:
                    out = buf[:c.numel()].copy_(c)
                    yield out.abs_() if absolute else out
    lo = _key(min(float(c.min()) for c in parts()), ct)
    hi = _key(max(float(c.max()) for c in parts()), ct)
    while lo < hi:  # the smallest key whose number has k elements at or below it
        mid = (lo + hi) // 2
        v = _value(mid, ct)
        if sum(int((c <= v).sum()) for c in parts()) >= k:
            hi = mid
        else:
            lo = mid + 1
    return torch.tensor(_value(lo, ct), dtype=ct, device=flat[0].device)
