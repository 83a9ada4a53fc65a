"""The update: a rule's ``update(e, h)`` traced into one program per tensor and run by ``zolab.kernels.run``.

For each tensor of a block estimate the program computes, element by element and in one pass,

    g  = ĝ (drawn on the fly from the step's seeds, or the batched step's given ĝ)
    g  = g + λθ                        (``weight_decay_mode="coupled"``)
    U, state' = rule.update(e, h)      (the rule's maths, the only rule-specific part)
    θ' = θ·(1 − ηλ) − ηU               (decoupled decay, docs/algorithms.md §2), or θ − ηU

and writes θ' and the new state (half state rounded as ``zolab.engine.storage`` says). The rule's host-side
bookkeeping (update counters, MEAZO's scalar v) runs first, in its ``prepare``; everything a tensor's update
needs is gathered and checked before any tensor is written. A ``Transaction`` makes a step of several blocks
atomic: updates go to spare tensors that are swapped in, and swapped back out if a later block's loss is not
finite.
"""

from __future__ import annotations

import torch

from zolab import kernels
from zolab.engine import storage
from zolab.engine.groups import compute_type
from zolab.engine.ops import Traced, hyper_values


def returned(out) -> tuple:
    """A rule's ``update`` returns U or (U, new state)."""
    return out if isinstance(out, tuple) else (out, {})


class Transaction:
    """Writes of a step of several blocks, undoable until ``commit``: each updated tensor (parameter data and
    state) is written into a spare tensor that takes its place; ``rollback`` puts the originals back. Spares
    are kept between steps (the originals of one step are the spares of the next)."""

    def __init__(self, spares: dict):
        self.spares = spares
        self.saved: list[tuple[torch.Tensor, torch.Tensor, dict, dict]] = []  # (param, data, state, state copy)

    def spare(self, like: torch.Tensor) -> torch.Tensor:
        free = self.spares[(like.shape, like.dtype, like.device)]
        return free.pop() if free else torch.empty_like(like, memory_format=torch.contiguous_format)

    def outputs(self, p: torch.Tensor, state: dict, names: list[str], before: dict) -> dict[str, torch.Tensor]:
        """Spare outputs for one tensor's update; ``before``: its state dict as it was before the step."""
        self.saved.append((p, p.data, state, before))
        out = {"theta": self.spare(p.data)}
        out.update({f"state:{k}": self.spare(state[k]) for k in names})
        return out

    def swap_in(self, p: torch.Tensor, state: dict, outputs: dict) -> None:
        p.data = outputs["theta"]
        for name, t in outputs.items():
            if name.startswith("state:"):
                state[name[6:]] = t

    def commit(self) -> None:
        for _, data, _, before in self.saved:
            for t in (data, *(v for v in before.values() if isinstance(v, torch.Tensor))):
                self.spares[(t.shape, t.dtype, t.device)].append(t)
        self.saved = []

    def rollback(self) -> None:
        for p, data, state, before in reversed(self.saved):
            p.data = data
            state.clear()
            state.update(before)
        self.saved = []


class Updater:
    """Applies an optimizer's rule to block estimates (see the module doc); programs cached per variant."""

    def __init__(self, optimizer):
        self.opt = optimizer
        self._programs: dict = {}

    def program(self, num_queries: int, coupled: bool, decays: bool, drawn: bool):
        key = (num_queries, coupled, decays, drawn)
        if key not in self._programs:
            opt, views = self.opt, Traced()
            tracer, h = views.tracer, views.hyper()
            g = tracer.input("g") if drawn else opt.grad_estimator.directions.trace_g(views, num_queries)
            theta = tracer.input("theta")
            if coupled:
                g = g + h.wd * theta
            update, new_state = returned(opt.update(opt.element_view(views, g), h))
            tracer.store("theta", (theta * (1 - h.lr * h.wd) if decays else theta) - h.lr * update)
            for name, value in new_state.items():
                tracer.store(f"state:{name}", value)
            self._programs[key] = tracer.program
        return self._programs[key]

    def plan(self, est, ref):
        """Everything one tensor's update needs: (program, inputs, outputs, scalars, slots, compute type)."""
        opt, p = self.opt, ref.param
        state = opt.state[p]
        extra = opt.prepare(ref, state, est) or {}
        wd = opt.decay_of(ref)
        coupled = bool(wd) and opt.weight_decay_mode == "coupled"
        drawn = est.drawn is not None
        program = self.program(len(est.queries), coupled, bool(wd) and not coupled, drawn)
        coefs = opt.coefficients(ref, est)
        if drawn:  # the batched step drew its directions once: ĝ = coefs·U, one (K,)·(K, n) product
            slots, tensors = opt.grad_estimator.directions.noise_inputs(program, ref, est.queries)
            tensors["g"], scalars = (coefs.to(est.drawn.dtype) @ est.drawn).view(p.shape), {}
        else:
            slots, tensors, scalars = opt.grad_estimator.directions.g_inputs(
                program, ref, est.queries, coefs, lambda r: opt.scratch((r.index, "g"), r.param.shape,
                                                                        compute_type(r.param), r.param.device))
        scalars.update(hyper_values(ref.group, extra))
        scalars["wd"] = wd
        tensors["theta"] = p.data
        written = [name[6:] for name, _ in program.stores if name.startswith("state:")]
        for name in {*written, *(n[6:] for n in program.inputs if n.startswith("state:"))}:
            t = opt.state_tensor(ref, name)
            if f"state:{name}" in program.inputs:
                tensors[f"state:{name}"] = t
        outputs = {"theta": p.data, **{f"state:{k}": state[k] for k in written}}
        rounding = {} if opt.state_rounding == "nearest" else storage.rounding_keys(
            opt.seed, opt.zo["step"] + 1, ref.index, outputs)  # half state: bits keyed by this step
        return program, tensors, outputs, scalars, slots, compute_type(p), written, ref.offset, rounding

    def apply(self, est, transaction: Transaction | None = None) -> None:
        """Update every tensor of ``est``: all plans first (host state restored if one fails), then the writes."""
        opt = self.opt
        before = {id(r.param): dict(opt.state[r.param]) for r in est.refs}
        zo_before = {k: v for k, v in opt.zo.items()}
        try:
            plans = [(r, self.plan(est, r)) for r in est.refs]
        except Exception:
            for r in est.refs:
                opt.state[r.param].clear()
                opt.state[r.param].update(before[id(r.param)])
            opt.zo.clear()
            opt.zo.update(zo_before)
            raise
        for ref, (program, tensors, outputs, scalars, slots, ct, written, offset, rounding) in plans:
            if transaction is not None:
                outputs = transaction.outputs(ref.param, opt.state[ref.param], written, before[id(ref.param)])
            kernels.run(program, tensors, outputs, scalars, slots, ct, offset, rounding)
            if transaction is not None:
                transaction.swap_in(ref.param, opt.state[ref.param], outputs)
