"""The no-side-effect guards of every probe's extra work: forked RNG, train/eval mode, buffers, parameter swaps.

A probe's measurements must never change the run (tests/diagnostics/test_no_side_effects.py proves it bitwise):

- ``untouched``: the CPU RNG and the CUDA RNG of the parameters' devices are forked and restored
  (``torch.random.fork_rng``); the task is put in the train/eval mode the ZO forwards use
  (``pl_module.zo_dropout``) and every submodule's mode is restored afterwards; buffers (BatchNorm statistics)
  are restored when it ran in train mode;
- ``parameters_at``: a perturbed or stored point is made by pointing ``p.data`` at a new tensor and back (a
  bitwise restore), never by writing into θ;
- gradients come from ``torch.autograd.grad`` (``diagnostics.gradients``): ``p.grad`` is never written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def untouched(pl_module) -> Iterator[None]:
    """Run extra forwards/backwards on ``pl_module.task`` with no effect on the run (see module doc)."""
    task = pl_module.task
    modes = [(m, m.training) for m in task.modules()]
    zo_mode = bool(getattr(pl_module, "zo_dropout", False))
    buffers = [(b, b.detach().clone()) for b in task.buffers()] if zo_mode else []
    devices = sorted({p.device.index or 0 for p in task.parameters() if p.device.type == "cuda"})
    try:
        task.train(zo_mode)
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for m, mode in modes:
            m.training = mode


@contextmanager
def parameters_at(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """Each parameter's ``data`` pointed at its given tensor, and back: a bitwise restore, also on error."""
    saved = [(p, p.data) for p, _ in pairs]
    try:
        for p, data in pairs:
            p.data = data
        yield
    finally:
        for p, data in saved:
            p.data = data
