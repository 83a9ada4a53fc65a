"""The update: a rule's ``update(e, h)`` traced into one program per tensor and run by ``zolab.kernels.run``.

For each tensor of a block estimate the program computes, element by element and in one pass,

    g  = ĝ (drawn on the fly from the step's seeds, or the batched step's given ĝ)
    g  = g + λθ                        (``weight_decay_mode="coupled"``)
    U, state' = rule.update(e, h)      (the rule's maths, the only rule-specific part)
    θ' = θ·(1 − ηλ) − ηU               (decoupled decay, docs/algorithms.md §2), or θ − ηU

and writes θ' and the new state (half state rounded as ``zolab.engine.storage`` says). The rule's host-side
bookkeeping (update counters, MEAZO's scalar v) runs first, in its ``prepare``; everything a tensor's update
needs is gathered and checked before any tensor is written. What is not element-wise (a low-rank step θ + A Bᵀ,
state of another shape than θ) a rule writes with torch ops in ``eager_update`` for the tensors where
``is_eager(ref)``: its outputs hold θ and the state (themselves, or copies in a transaction), which it updates in
place (``sgd``: θ(1 − ηλ) − ηĝ by the directions); its state stays in the rule's dtype (half ``state_dtype`` is
refused there: ``storage.check_refs``). A ``Transaction`` makes a step of several blocks atomic: updates go to
spare tensors that are swapped in, and swapped back out if a later block's loss is not finite
(``NonFiniteLoss``).
"""

from __future__ import annotations

import torch

from zolab import kernels
from zolab.engine import storage
from zolab.engine.groups import compute_type
from zolab.engine.ops import Eager, Traced


def returned(out) -> tuple:
    """A rule's ``update`` returns U or (U, new state)."""
    return out if isinstance(out, tuple) else (out, {})


class NonFiniteLoss(Exception):
    """A block's loss is not finite: the step puts back what it changed, then skips the step or raises ``error``."""

    def __init__(self, block: str, losses: torch.Tensor):
        self.block, self.losses = block, losses

    def error(self, t: int) -> FloatingPointError:
        return FloatingPointError(
            f"non-finite loss at step {t} (block {self.block!r}): losses {self.losses.tolist()}; parameters are "
            "unchanged; pass nonfinite='skip' to skip such steps")


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


def sgd(opt, ref, est, h, theta: torch.Tensor, out: dict) -> None:
    """θ' = θ(1 − ηλ) − ηĝ in place in ``out["theta"]`` (θ, or its copy in a transaction), ĝ added by the
    directions' ``combine`` (a low-rank ĝ as rank-r products, never a dense ĝ)."""
    new = out["theta"]
    if h.wd:
        new.mul_(1 - h.lr * h.wd)
    coefs = opt.coefficients(ref, est) * -h.lr
    opt.grad_estimator.directions.combine(ref, est.queries, coefs, out=new, base=new)


class Updater:
    """Applies an optimizer's rule to block estimates (see the module doc); programs cached per variant."""

    def __init__(self, optimizer):
        self.opt = optimizer
        self._programs: dict = {}

    def program(self, ref, num_queries: int, coupled: bool, decays: bool, drawn: bool):
        """The update program of ``ref``'s directions variant (one per variant, K and decay mode)."""
        dirs = self.opt.grad_estimator.directions
        key = (None if drawn else dirs.variant(ref), num_queries, coupled, decays, drawn)
        if key not in self._programs:
            opt, views = self.opt, Traced()
            tracer, h = views.tracer, views.hyper()
            g = tracer.input("g") if drawn else dirs.trace_g(views, num_queries, ref)
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
        """Everything one tensor's update needs: (program, inputs, outputs, scalars, slots, compute type,
        written state, offset, rounding keys of half state); program None for an eager update (its scalars, then,
        are ``h``)."""
        opt, p = self.opt, ref.param
        state = opt.state[p]
        extra = opt.prepare(ref, state, est) or {}
        wd = opt.decay_of(ref)
        if opt.is_eager(ref):
            scalars = {**opt.hyper(ref, extra), "wd": wd}
            written = [k for k, v in state.items() if isinstance(v, torch.Tensor)]
            return None, {"theta": p.data}, {}, scalars, {}, compute_type(p), written, ref.offset, {}
        coupled = bool(wd) and opt.weight_decay_mode == "coupled"
        drawn = est.drawn is not None
        program = self.program(ref, len(est.queries), coupled, bool(wd) and not coupled, drawn)
        coefs = opt.coefficients(ref, est)
        if drawn:  # the batched step drew its directions once: ĝ = coefs·U, one (K,)·(K, n) product
            slots, tensors = opt.grad_estimator.directions.noise_inputs(program, ref, est.queries)
            tensors["g"], scalars = (coefs.to(est.drawn.dtype) @ est.drawn).view(p.shape), {}
        else:
            slots, tensors, scalars = opt.grad_estimator.directions.g_inputs(
                program, ref, est.queries, coefs, lambda r: opt.scratch((r.index, "g"), r.param.shape,
                                                                        compute_type(r.param), r.param.device))
        scalars.update(opt.hyper(ref, extra))
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
            state = opt.state[ref.param]
            if transaction is not None:
                outputs = transaction.outputs(ref.param, state, written, before[id(ref.param)])
            if program is None:  # eager: the outputs hold θ and the state (copies in a transaction), updated in place
                if transaction is None:
                    outputs = {"theta": ref.param.data, **{f"state:{k}": state[k] for k in written}}
                else:
                    outputs["theta"].copy_(ref.param.data)
                    for k in written:
                        outputs[f"state:{k}"].copy_(state[k])
                opt.eager_update(ref, est, Eager.hyper(scalars), tensors["theta"],
                                 {k: state[k] for k in written}, outputs)
            else:
                kernels.run(program, tensors, outputs, scalars, slots, ct, offset, rounding)
            if transaction is not None:
                transaction.swap_in(ref.param, state, outputs)
