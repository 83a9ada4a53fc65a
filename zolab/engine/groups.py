"""Param groups: the tensors a user passes, checked and named, DTensor shards unwrapped, as ``ParamRef`` s.

A group is given as torch.optim takes it (a tensor, an iterable of tensors or of ``(name, tensor)`` pairs from
``model.named_parameters()``, or a dict with ``params`` and per-group hyper-parameters). ``prepare`` turns it
into the dict torch stores, refusing what no step could use (non-float, meta or repeated tensors) before
training; ``refs`` lists every tensor of the groups as the optimizer sees it.

A group may hold shards of larger tensors (a sharded model: each process holds a part of each tensor):
``shards`` lists per tensor None or (offset, numel of the whole); a shard then draws and updates exactly its
elements of the whole tensor's directions, c counts the whole, and sphere's norms are summed over the
processes by ``grad_estimator.shard_sum`` (e.g. ``torch.distributed.all_reduce``). FSDP2's DTensor
parameters become their local shards with these offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from zolab.engine.checks import check_betas, check_range
from zolab.engine.schedules import is_scheduled

# MeZO's weight-decay name test (kept by LOZO, ZO-Bench): tensors whose names contain these never decay
NO_DECAY = ("bias", "layer_norm", "layernorm")


def compute_type(t: torch.Tensor) -> torch.dtype:
    """float64 for float64 tensors, float32 otherwise (half precision computes in float32)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


@dataclass
class ParamRef:
    """One trainable tensor as the optimizer sees it."""

    index: int  # position in the optimizer's flattened parameter list: keys its directions
    param: torch.Tensor
    name: str
    group: dict
    offset: int = 0  # a shard of a larger tensor: the element index of its first element in the whole
    full_numel: int | None = None  # the whole tensor's size (None: not a shard)

    @property
    def numel(self) -> int:
        """The whole tensor's size (a shard's own size is ``param.numel()``)."""
        return self.param.numel() if self.full_numel is None else self.full_numel


def prepare(param_group, first: int) -> dict:
    """The group dict torch stores for what the user passed; ``first`` is the index of its first tensor in the
    optimizer (unnamed tensors are named ``param<index>``, as ``refs`` names them)."""
    if not isinstance(param_group, dict):
        param_group = {"params": param_group}
    params = param_group["params"]
    params = [params] if isinstance(params, torch.Tensor) else list(params)
    if params and isinstance(params[0], tuple):
        param_group["param_names"] = [n for n, _ in params]
        params = [p for _, p in params]
    names = param_group.get("param_names") or [f"param{first + i}" for i in range(len(params))]
    seen: dict[int, str] = {}
    for p, name in zip(params, names):
        if not isinstance(p, torch.Tensor) or not p.is_floating_point():
            what = p.dtype if isinstance(p, torch.Tensor) else type(p).__name__
            raise ValueError(f"parameter of type {what} is not supported; allowed: real floating-point tensors "
                             "(float16, bfloat16, float32, float64)")
        if p.device.type == "meta":
            raise ValueError(f"parameter {name!r} is on the meta device (a shape, no data); allowed: tensors "
                             "with data (materialise the model first, e.g. model.to_empty(device=...))")
        if id(p) in seen:  # torch only warns: the tensor would draw two directions and update twice
            raise ValueError(f"parameter {name!r} is the same tensor as {seen[id(p)]!r}; allowed: each tensor once")
        seen[id(p)] = name
    if any(is_dtensor(p) for p in params):  # FSDP2's sharded parameters: their local shards, with offsets
        shards = list(param_group.get("shards") or [None] * len(params))
        for i, p in enumerate(params):
            if is_dtensor(p):
                params[i], shards[i] = local_shard(p)
        param_group["shards"] = shards
    param_group["params"] = params
    # Decay applies to 1-D tensors only when the group itself asks for decay (docs/algorithms.md §2).
    param_group.setdefault("decay_1d", "weight_decay" in param_group)
    for k, v in param_group.items():
        if is_scheduled(v):
            raise ValueError(f"param group {k!r}: schedules go to the constructor (they apply to all groups)")
    return param_group


def check_shards(params, shards, fused: bool, perturb: str) -> None:
    """A group's ``shards``: per tensor None or (offset, full numel) of the whole tensor it is a part of."""
    if not isinstance(shards, list | tuple) or len(shards) != len(params):
        raise ValueError(f"shards must list one (offset, full numel) or None per tensor ({len(params)}), "
                         f"got {shards!r}")
    for p, part in zip(params, shards):
        if part is None:
            continue
        ok = (isinstance(part, list | tuple) and len(part) == 2 and all(isinstance(x, int) for x in part)
              and 0 <= part[0] and part[0] + p.numel() <= part[1])
        if not ok:
            raise ValueError(f"shard {part!r} of a tensor of {p.numel()} elements; allowed: (offset, full "
                             "numel) with 0 <= offset and offset + its numel <= full numel")
    if any(s is not None for s in shards) and not fused:
        raise ValueError("shards need rng='counter' (each shard draws its own part of the whole tensor)")
    if any(s is not None for s in shards) and perturb == "module":
        raise ValueError("shards are perturbed whole, in place (perturb='copy' or 'auto'): the forward "
                         "gathers them")


def check_hyper(g: dict) -> None:
    """The hyper-parameters every rule shares: lr >= 0, mu > 0, weight_decay >= 0, eps >= 0, betas in [0, 1)."""
    check_range("lr", g["lr"], 0.0, float("inf"))
    check_range("mu", g["mu"], 0.0, float("inf"), lo_open=True)
    check_range("weight_decay", g.get("weight_decay", 0.0), 0.0, float("inf"))
    check_range("eps", g.get("eps", 0.0), 0.0, float("inf"))
    check_betas(g)


def refs(param_groups: list[dict]) -> list[ParamRef]:
    """Every tensor of the groups, in order, with its name (``param<index>`` when unnamed) and shard offsets."""
    out, i = [], 0
    for group in param_groups:
        names = group.get("param_names") or [None] * len(group["params"])
        shards = group.get("shards") or [None] * len(group["params"])
        for p, name, part in zip(group["params"], names, shards):
            offset, full = part if part is not None else (0, None)
            out.append(ParamRef(i, p, name or f"param{i}", group, offset, full))
            i += 1
    return out


def is_dtensor(p) -> bool:
    return type(p).__name__ == "DTensor" or any(c.__name__ == "DTensor" for c in type(p).__mro__)


def local_shard(p) -> tuple[torch.Tensor, tuple[int, int]]:
    """(local tensor, (offset, whole numel)) of a DTensor sharded by rows on a 1-D mesh (FSDP2's layout:
    ``torch.chunk`` rows per process); the local tensor shares the DTensor's storage, so writes reach it."""
    from torch.distributed.tensor import Shard

    mesh, placements = p.device_mesh, tuple(p.placements)
    if mesh.ndim != 1 or placements != (Shard(0),):
        raise ValueError(f"a DTensor parameter sharded as {placements} on a {mesh.ndim}-D mesh; allowed: "
                         "Shard(0) on a 1-D mesh (FSDP2's fully_shard)")
    local = p.to_local().detach().requires_grad_(p.requires_grad)  # a leaf that shares the shard's storage
    rows, world, rank = p.shape[0], mesh.size(), mesh.get_local_rank()
    chunk = -(-rows // world)
    start = min(rank * chunk, rows)
    if local.shape[0] != max(0, min(start + chunk, rows) - start) or not local.is_contiguous():
        raise ValueError(f"DTensor shard of shape {tuple(local.shape)} on process {rank} of {world} is not "
                         f"torch.chunk's rows {start}..{min(start + chunk, rows)} of {tuple(p.shape)}")
    return local, (start * (p.numel() // rows if rows else 0), p.numel())
