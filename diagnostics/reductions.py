"""Float64 reductions over tensors and dicts of tensors, in cache-sized pieces: ‖t‖², ⟨a, b⟩, cosines.

The probes compare d-sized tensors (ĝ, u, ∇F, moments) that may be float16/bfloat16/float32 and large: each
reduction widens to float64 piece by piece (no d-sized float64 copy) and returns a 0-dim tensor on the
tensor's device, so a caller decides when to read it on the host.
"""

from __future__ import annotations

import torch

PIECE = 1 << 16  # float64 copies in cache-sized pieces on a CPU: a whole large tensor's copy is slower


def _pieces(t: torch.Tensor):
    flat = t.reshape(-1)
    return flat.split(PIECE) if flat.device.type == "cpu" else (flat,)


def _zero(t: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), dtype=torch.float64, device=t.device)


def sq_sum(t: torch.Tensor) -> torch.Tensor:
    """‖t‖² in float64 (a 0-dim tensor on t's device)."""
    acc = _zero(t)
    for p in _pieces(t):
        p = p.double()
        acc += torch.dot(p, p)
    return acc


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """⟨a, b⟩ in float64 (a 0-dim tensor on a's device)."""
    acc = _zero(a)
    for x, y in zip(_pieces(a), _pieces(b)):
        acc += torch.dot(x.double(), y.double())
    return acc


def sq_sum_and_dot(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(‖a‖², ⟨a, b⟩) in float64 in one pass over a (each piece of a widened once)."""
    aa, ab = _zero(a), _zero(a)
    for x, y in zip(_pieces(a), _pieces(b)):
        x = x.double()
        aa += torch.dot(x, x)
        ab += torch.dot(x, y.double())
    return aa, ab


def sq_norm(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ ‖t‖² over a dict of tensors, in float64, tensor by tensor (no d-sized concatenation)."""
    return sum((sq_sum(t) for t in tensors.values()), torch.zeros((), dtype=torch.float64))


def inner(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ ⟨a_n, b_n⟩ over the names both hold (a missing tensor counts as zero), in float64."""
    return sum((dot(a[n], b[n]) for n in a if n in b), torch.zeros((), dtype=torch.float64))


def cosine(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], b_sq: float | None = None) -> float:
    """⟨a, b⟩/(‖a‖‖b‖) over all tensors (missing ones are zero), nan when either is zero; ``b_sq``: ‖b‖²
    when the caller has it (``probe.gradient_sq``)."""
    return cosine_from_sums(inner(a, b), sq_norm(a), sq_norm(b) if b_sq is None else b_sq)


def cosine_from_sums(ab, a_sq, b_sq) -> float:
    """⟨a, b⟩/(‖a‖‖b‖) from the three sums, nan when either norm is zero."""
    denom = float(a_sq) * float(b_sq)
    return float(ab) / denom**0.5 if denom > 0 else float("nan")
