"""Resume: an optimizer's state_dict with the settings that made it, and a load that refuses a state that does not fit.

``config(opt)`` is saved in ``state_dict()["zo"]["config"]``: the rule, the seed, the estimator, the
directions and the block options, the rule's own options and the schedules, which together fix the random
stream and the maths. ``check`` raises naming every setting that differs (and every group hyper-parameter,
e.g. lr), except the hyper-parameters the caller overrides on purpose, which keep the new values;
``check_state`` raises naming every state tensor of another shape or dtype than ``state_spec`` declares. ``load``
runs both before anything changes, then torch's load, keeping the saved state's dtypes.
"""

from __future__ import annotations

import copy

import torch

from zolab.engine.groups import refs

BEFORE_STATE_DTYPE = {"state_dtype": "float32", "state_rounding": "stochastic"}


def config(opt) -> dict:
    dirs = opt.grad_estimator.directions
    out = {"rule": type(opt).__name__, "seed": opt.seed, "estimator": opt.grad_estimator.scheme.config(),
           "directions": dirs.config() if hasattr(dirs, "config") else opt.sampler.name, "rng": opt.sampler.rng,
           "num_queries": opt.num_queries,
           "scale": opt.scale, "weight_decay_mode": opt.weight_decay_mode, "blocks": repr(opt.block_plan.spec),
           "block_selection": opt.block_plan.selection, "blocks_per_step": opt.block_plan.per_step,
           "granularity": opt.block_plan.granularity, "state_dtype": opt.state_dtype,
           "state_rounding": opt.state_rounding}
    out.update({k: getattr(opt, k) for k in opt.static_options})
    out.update({f"schedule.{k}": repr(v) for k, v in opt.schedules.items()})
    return out


def save(opt, state_dict: dict) -> dict:
    """torch's ``state_dict`` plus ``"zo"``: the step counters and ``config(opt)``."""
    state_dict["zo"] = copy.deepcopy(opt.zo)
    state_dict["zo"]["config"] = config(opt)
    return state_dict


def check(opt, state_dict: dict, saved: dict | None, overrides) -> None:
    unknown = set(overrides) - {k for g in opt.param_groups for k in g} - {"params", "param_names"}
    if unknown:
        raise ValueError(f"resume overrides {sorted(unknown)} are not hyper-parameters of {type(opt).__name__}; "
                         f"allowed: {sorted(opt.defaults)}")
    changed = []
    if saved is not None:
        saved = {**BEFORE_STATE_DTYPE, **saved}  # a state saved before these options had their defaults
        mine = config(opt)
        changed += [f"{k}: {saved.get(k)!r} (saved) -> {v!r} (now)" for k, v in mine.items() if saved.get(k) != v]
        changed += [f"{k}: {v!r} (saved) -> missing (now)" for k, v in saved.items() if k not in mine]
    saved_groups = state_dict.get("param_groups", [])
    if len(saved_groups) == len(opt.param_groups):
        for i, (old, now) in enumerate(zip(saved_groups, opt.param_groups)):
            for k, v in now.items():
                if k in ("params", "param_names") or k in overrides or k in opt.schedules or k not in old:
                    continue
                if old[k] != v and not (isinstance(v, tuple) and tuple(old[k]) == v):
                    changed.append(f"param_groups[{i}].{k}: {old[k]!r} (saved) -> {v!r} (now)")
    if changed:
        raise ValueError(
            "the saved optimizer state was made with other settings: " + "; ".join(changed) +
            ". Resume with the saved settings, or name the hyper-parameters you change on purpose in "
            "resume_overrides (e.g. ['lr']); the rule, seed, estimator and block options cannot change")


def check_state(opt, state_dict: dict) -> None:
    """Each saved state tensor has the shape and dtype that ``opt.state_spec`` gives it (by default its
    parameter's shape, in ``state_dtype``'s type); raises naming every one that does not, before anything is
    loaded."""
    saved_groups = state_dict.get("param_groups", [])
    if [len(g["params"]) for g in saved_groups] != [len(g["params"]) for g in opt.param_groups]:
        return  # torch's load_state_dict names this mismatch
    by_id = dict(zip([i for g in saved_groups for i in g["params"]], refs(opt.param_groups)))
    wrong = []
    for i, values in state_dict.get("state", {}).items():
        if i not in by_id:
            continue  # torch's load ignores state of no parameter
        ref = by_id[i]
        for k, v in values.items():
            want = opt.state_spec(ref, k) if torch.is_tensor(v) else None
            if want is not None and (tuple(v.shape), v.dtype) != (tuple(want[0]), want[1]):
                wrong.append(f"state {k!r} of {ref.name!r}: {tuple(v.shape)} {v.dtype}; allowed: {tuple(want[0])} "
                             f"{want[1]}")
    if wrong:
        raise ValueError("the saved optimizer state does not fit these parameters: " + "; ".join(wrong))


def load(opt, state_dict: dict, overrides, torch_load) -> None:
    """Check ``state_dict`` against ``opt``, then load it with ``torch_load`` (torch's ``load_state_dict``), the
    group hyper-parameters named in ``overrides`` keeping ``opt``'s values, and the ZO counters."""
    state_dict = dict(state_dict)
    zo = state_dict.pop("zo", None)
    if zo is None:
        raise ValueError("this state_dict has no 'zo' entry: it was not saved by a zolab optimizer")
    zo = dict(zo)
    saved = zo.pop("config", None)
    check(opt, state_dict, saved, overrides)
    check_state(opt, state_dict)
    kept = [{k: g[k] for k in overrides if k in g} for g in opt.param_groups]
    torch_load(state_dict)
    for g, values in zip(opt.param_groups, kept):
        g.update(values)
    # torch casts every state tensor to its parameter's dtype; zolab keeps the saved dtypes (float32
    # moments of half-precision tensors), so that a resumed run continues bitwise.
    saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
    by_id = dict(zip(saved_ids, [p for g in opt.param_groups for p in g["params"]]))
    for i, values in state_dict["state"].items():
        p = by_id[i]
        for k, v in values.items():
            if torch.is_tensor(v) and k != "step":
                opt.state[p][k] = v.to(device=p.device, copy=True)
    opt.zo = copy.deepcopy(zo)
