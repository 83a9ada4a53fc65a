"""Forward-mode passes: f(θ) and the exact directional derivative ∇f(θ)·u in one pass, for the ``jvp`` scheme.

The closure calls the bound model; ``torch.func.functional_call`` swaps the perturbed tensors for dual tensors
inside that model (a ``.data`` swap would lose the tangent), so ``torch.func.jvp`` differentiates the closure
along u = the query's direction (materialised: every tangent is an input of the one call). θ is not written.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel


class _Closure(nn.Module):
    """The bound model as a submodule, and a forward that calls the step's closure."""

    def __init__(self, model: nn.Module, closure):
        super().__init__()
        self.model = model
        self.closure = closure

    def forward(self):
        return self.closure()


def forward_gradient(model: nn.Module | None, refs, directions, query, closure) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(θ), ∇f(θ)·u) for the direction u of ``query`` on the tensors ``refs`` of ``model``."""
    if model is None:
        raise ValueError("estimator='jvp' differentiates the closure through the model that owns the parameters: "
                         "call optimizer.bind(model) first")
    if any(r.full_numel is not None for r in refs):
        raise ValueError("estimator='jvp' needs whole tensors; shards of a sharded model are not supported")
    wrapper = _Closure(model, closure)
    names = {id(p): name for name, p in wrapper.named_parameters()}
    missing = [r.name for r in refs if id(r.param) not in names]
    if missing:
        raise ValueError(f"estimator='jvp': tensors {missing[:5]} are not parameters of the bound model; bind the "
                         "model that owns them (optimizer.bind(model))")
    keys = [names[id(r.param)] for r in refs]
    primals = tuple(r.param.detach() for r in refs)
    tangents = tuple(directions.point(r, query, 1.0).to(r.param.dtype) for r in refs)

    def f(*values):
        return torch.func.functional_call(wrapper, dict(zip(keys, values)), ())

    with sdpa_kernel(SDPBackend.MATH):  # the fused attention kernels have no forward-mode derivative; math has
        loss, slope = torch.func.jvp(f, primals, tangents)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError(f"the closure must return a scalar loss tensor for estimator='jvp', got {loss!r}")
    return loss.detach().reshape(()), slope.detach().reshape(())
