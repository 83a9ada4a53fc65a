"""Several processes on one ZO step: each evaluates a share of the step's points, one all-reduce combines them.

Every process holds the same parameters and regenerates the same directions from the shared seed, so only
losses cross the wire: one all-reduce of the step's P = K + 1 (forward) or 2K (central) losses plus one count,
whatever the model's size, and every process then applies the same update. With D × Q processes (process
r = d·Q + q):

- **data parallel** (D): process d evaluates its points on shard d of the step's global batch; the losses are
  averaged with the shards' real sizes as weights (``batch_length``), so an uneven batch gives the global
  batch's mean loss up to rounding; an empty shard (a last batch smaller than D) carries weight 0 and is not
  evaluated;
- **query parallel** (Q): the P points of a step are dealt round-robin to the Q processes of a data group,
  which evaluate them on the same batch; the others contribute zeros, so the sum is each loss exactly.

The same all-reduce carries a stop request (``request_stop``: a signal one process received), so that every
process learns it at the same step (``stop``) and they all stop there.

``ParallelPoints`` is the estimator's ``parallel`` seam (``zolab.engine.estimator.Local`` is the one-process case).
A failed collective (another process raised, died, or timed out) raises an error that names this process.
``check_in_step`` compares the parameters' bits across processes: a divergence is an error.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping

import torch
import torch.distributed as dist

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # narrowest first
_STOPS = (int(signal.SIGINT), int(signal.SIGTERM))  # stop requests, the later one wins


class ParallelPoints:
    """Which of a step's points this process evaluates, and the all-reduce that makes every loss global.

    Args: data (D), query (Q) with D·Q the group's size; group (default: the world). ``weight`` is the
    number of examples in this process's shard of the current batch (set before each step; 1 for a task
    without data)."""

    def __init__(self, data: int = 1, query: int = 1, group=None):
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("ParallelPoints needs an initialised torch.distributed process group")
        self.group = group
        self.world, self.rank = dist.get_world_size(group), dist.get_rank(group)
        for name, value in (("data", data), ("query", query)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"invalid {name}: {value!r}; allowed: an integer >= 1")
        if data * query != self.world:
            raise ValueError(f"data × query = {data} × {query} = {data * query} processes, but the group has "
                             f"{self.world}; allowed: data · query = {self.world}")
        self.data, self.query = data, query
        self.data_index, self.query_index = divmod(self.rank, query)
        self.weight = 1.0
        self.evaluated = 0  # points this process evaluated so far (its forwards)
        self.stop_request: int | None = None  # a signal number this process asks every process to stop for
        self.stop: int | None = None  # the stop every process agreed on, at the same combine (sticky)

    def owned(self, num_points: int) -> range:
        """The points this process evaluates: none for an empty shard (weight 0)."""
        points = range(self.query_index, num_points, self.query) if self.weight else range(0)
        self.evaluated += len(points)
        return points

    def request_stop(self, signum: int) -> None:
        """Ask every process to stop: sent with the next combine's all-reduce (safe inside a signal handler)."""
        self.stop_request = int(signum)

    def combine(self, losses: torch.Tensor, owned) -> torch.Tensor:
        """Every point's loss, the same on every process: one all-reduce of the P losses in float64 (exact for
        query parallel: one loss and zeros), the shards' weights, the evaluating processes' loss dtypes and the
        stop requests. ``losses`` holds this process's owned points (zeros elsewhere; any float dtype when it owns
        none: the evaluating processes' dtype is returned)."""
        n, owned = losses.numel(), list(owned)
        votes, stops = n + 1, n + 1 + len(_DTYPES)
        buf = torch.zeros(stops + len(_STOPS), dtype=torch.float64, device=losses.device)
        weight = self.weight if self.data > 1 else 1.0
        buf[owned] = losses[owned].double() * weight
        if self.query_index == 0:  # each data shard's size counted once
            buf[n] = weight
        if owned:
            if losses.dtype not in _DTYPES:
                raise TypeError(f"losses of dtype {losses.dtype}; allowed: {list(_DTYPES)}")
            buf[votes + _DTYPES.index(losses.dtype)] = 1.0
        if self.stop_request is not None:
            buf[stops + (_STOPS.index(self.stop_request) if self.stop_request in _STOPS else 0)] = 1.0
        self._all_reduce(buf)
        if self.stop is None and buf[stops:].any():
            self.stop = _STOPS[int(torch.nonzero(buf[stops:])[-1])]  # SIGTERM over SIGINT
        voted = [d for d, v in zip(_DTYPES, buf[votes:stops].tolist()) if v]
        if not voted or not buf[n] > 0:
            raise RuntimeError(f"process {self.rank} of {self.world}: no process evaluated the step's points (every "
                               "shard of the batch is empty)")
        values = buf[:n] if self.data == 1 else buf[:n] / buf[n]
        return values.to(voted[-1])  # every process the same dtype: the widest any evaluating process used

    def _all_reduce(self, buf: torch.Tensor) -> None:
        try:
            dist.all_reduce(buf, group=self.group)
        except Exception as err:  # noqa: BLE001 - whatever the backend raises: say which process and why
            raise RuntimeError(f"process {self.rank} of {self.world}: the step's all-reduce of the losses failed "
                               f"(another process raised, died or timed out): {err}") from err

    def total_forwards(self, device=None) -> int:
        """Forward passes of all processes so far (one all-reduce: call it at logging steps only)."""
        t = torch.tensor([float(self.evaluated)], dtype=torch.float64, device=device)
        self._all_reduce(t)
        return int(t.item())


def shard(batch, index: int, count: int):
    """Part ``index`` of ``count`` of a batch, in ``torch.tensor_split``'s sizes (they differ by at most one; a
    part may be empty): tensors split along their first dimension; mappings, named tuples and lists or tuples
    holding tensors (what PyTorch's default collate makes: ``[x, y]`` from a ``TensorDataset``) split field by
    field; other lists and tuples (strings, records) are lists of examples, sliced. ``None``, numbers and other
    leaves are shared."""
    if count == 1:
        return batch
    if isinstance(batch, torch.Tensor):
        return torch.tensor_split(batch, count)[index] if batch.dim() else batch
    if isinstance(batch, Mapping):
        return type(batch)({k: shard(v, index, count) for k, v in batch.items()})
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a NamedTuple record
        return type(batch)(*(shard(v, index, count) for v in batch))
    if isinstance(batch, list | tuple):
        if not _is_fields(batch):
            bounds = torch.tensor_split(torch.arange(len(batch)), count)[index]
            part = [batch[i] for i in bounds.tolist()]
            return type(batch)(part) if isinstance(batch, list) else tuple(part)
        return type(batch)(shard(v, index, count) for v in batch)
    return batch


def shard_size(n: int, index: int, count: int) -> int:
    """Examples in part ``index`` of ``count`` of a batch of ``n`` (``shard``'s sizes: the first n mod count parts
    hold one more)."""
    return n // count + (index < n % count)


def batch_length(batch) -> int | None:
    """The examples in a batch, as ``shard`` counts them (a shard's weight): a tensor's first dimension, a list of
    examples' length, the common length of a record's fields; None for a batch without examples (``None``, a
    number: every process evaluates all of it). A ValueError when fields differ in length: they cannot be split
    into aligned shards."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() else None
    if isinstance(batch, list | tuple) and not hasattr(batch, "_fields") and not _is_fields(batch):
        return len(batch)
    if not isinstance(batch, Mapping | list | tuple):
        return None
    lengths = {n for n in map(batch_length, batch.values() if isinstance(batch, Mapping) else batch) if n is not None}
    if len(lengths) > 1:
        raise ValueError(f"a batch whose fields hold {sorted(lengths)} examples: its shards would not line up; "
                         "allowed: fields of one length (the batch's examples along their first dimension)")
    return lengths.pop() if lengths else None


def _is_fields(seq) -> bool:
    """A list or tuple of a collated batch's fields (tensors of one first dimension, mappings, lists and tuples of
    such fields, or lists of as many examples; ``None`` shared), not a list of examples."""
    n = _common_length(seq) if seq else None
    return n is not None and n >= 0


def _common_length(fields) -> int | None:
    """The common first dimension of the fields' tensors (lists of examples must agree with it); None when no
    field holds a tensor; -1 when the fields cannot be a collated record (a 0-dim tensor, a string or a number
    among them, or lengths that differ)."""
    tensors, examples = set(), set()
    for v in fields:
        if v is None:
            continue
        if isinstance(v, torch.Tensor):
            if not v.dim():
                return -1
            tensors.add(v.shape[0])
        elif isinstance(v, Mapping) or (isinstance(v, list | tuple) and (hasattr(v, "_fields") or _is_fields(v))):
            n = _common_length(v.values() if isinstance(v, Mapping) else v)
            if n == -1:
                return -1
            if n is not None:
                tensors.add(n)
        elif isinstance(v, list | tuple) and not any(isinstance(x, torch.Tensor) for x in v):
            examples.add(len(v))
        else:
            return -1
    if not tensors:
        return None
    return tensors.pop() if len(tensors | examples) == 1 else -1


_BITS = {8: torch.int64, 4: torch.int32, 2: torch.int16}


def checksum(params) -> torch.Tensor:
    """An int64 checksum of the parameters' bits: exact and independent of summation order and threads."""
    total = torch.zeros((), dtype=torch.int64)
    for p in params:
        bits = p.detach().contiguous().view(_BITS[p.element_size()])
        total = total + bits.sum(dtype=torch.int64).cpu()
    return total


def check_in_step(params, group=None) -> None:
    """Raise unless every process holds bitwise the same parameters (their checksums' max and min agree)."""
    total = checksum(params)
    both = torch.stack([total, -total])
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    if both[0].item() != -both[1].item():
        raise RuntimeError(f"process {dist.get_rank(group)}: the processes' parameters differ (checksums from "
                           f"{-both[1].item()} to {both[0].item()}): they are no longer in step")


def broadcast_from_first(module: torch.nn.Module, group=None) -> None:
    """Every parameter and buffer of ``module`` set to process 0's values (one broadcast each)."""
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group)
