"""True gradients by autograd for the probes: ∇f(θ; ξ) at the current θ, at a stored point, or at many at once.

Every gradient is computed under ``guards.untouched`` with ``torch.autograd.grad`` (``p.grad`` is never
written) and returned per trainable tensor name, the names of the optimizer's ``grad_estimate``; a tensor the
loss does not use gets a zero gradient.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

from diagnostics.guards import parameters_at, untouched


def trainable(opt) -> list:
    """The optimizer's trainable tensors as ``ParamRef`` s, in its order (names match ``grad_estimate``)."""
    return [r for _, refs in opt.partition() for r in refs]


def gradient(pl_module, batch) -> dict[str, torch.Tensor]:
    """∇f(θ; ξ) at the current parameters by one backward."""
    refs = trainable(pl_module.zo_optimizer)
    with untouched(pl_module), torch.enable_grad():
        grads = torch.autograd.grad(pl_module.compute_loss(batch), [r.param for r in refs], allow_unused=True)
    return {r.name: torch.zeros_like(r.param) if g is None else g.detach() for r, g in zip(refs, grads)}


def gradient_at(pl_module, point: dict[str, torch.Tensor], batch) -> dict[str, torch.Tensor]:
    """∇f(θ; ξ) at a stored point θ (per trainable tensor name) by one backward."""
    refs = trainable(pl_module.zo_optimizer)
    with parameters_at([(r.param, point[r.name]) for r in refs]):
        return gradient(pl_module, batch)


class _LossOf(nn.Module):
    """``task.loss`` as a forward, for ``torch.func.functional_call``."""

    def __init__(self, task):
        super().__init__()
        self.task = task

    def forward(self, batch):
        return self.task.loss(batch)


def _stack_batches(batches: list):
    """(stacked batch, vmap in_dim): (None, None) when no batch carries a tensor; ValueError when the
    batches differ in structure or shape (the last, smaller batch of an epoch, say)."""
    flat = [tree_flatten(b) for b in batches]
    leaves, spec = flat[0]
    if not any(isinstance(x, torch.Tensor) for x in leaves):
        return None, None
    if any(s != spec for _, s in flat) or not all(isinstance(x, torch.Tensor) for x in leaves):
        raise ValueError("batches of different structure, or with non-tensor leaves")
    if any(x.shape != y.shape for other, _ in flat for x, y in zip(other, leaves)):
        raise ValueError("batches of different shapes")
    return tree_unflatten([torch.stack(col) for col in zip(*(f for f, _ in flat))], spec), 0


def gradients_at(pl_module, points: dict[str, torch.Tensor], batches: list) -> dict[str, torch.Tensor]:
    """∇f(θ_i; ξ_i) for n stored points (per trainable tensor name, shape (n, *shape)) and their batches, in
    one batched call: the task's ``batched_loss`` for a one-tensor batch-free task (its rows are
    independent), else ``torch.func.vmap`` over the gradient of ``task.loss`` (dropout masks drawn per row).
    The task's buffers are read as they are now. Raises what vmap raises for a loss it cannot batch."""
    task, refs = pl_module.task, trainable(pl_module.zo_optimizer)
    with untouched(pl_module), torch.enable_grad():
        if task.supports_batched and task.batch_free and len(refs) == 1:
            x = points[refs[0].name].detach().requires_grad_()
            return {refs[0].name: torch.autograd.grad(task.batched_loss(x, batches[0]).sum(), x)[0]}
        names = {id(p): "task." + n for n, p in task.named_parameters()}
        keys = {r.name: names[id(r.param)] for r in refs}
        module = _LossOf(task)

        def loss(params, batch):
            return functional_call(module, {keys[n]: v for n, v in params.items()}, (batch,))

        stacked, in_dim = _stack_batches(batches)
        return vmap(grad(loss), in_dims=(0, in_dim), randomness="different")(
            {r.name: points[r.name] for r in refs}, stacked)
