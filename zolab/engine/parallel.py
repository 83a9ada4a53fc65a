"""Several processes on one ZO step: each evaluates a share of the step's points, one all-reduce combines them.

Every process holds the same parameters and regenerates the same directions from the shared seed, so only
losses cross the wire: one all-reduce of the step's P = K + 1 (forward) or 2K (central) losses plus one count,
whatever the model's size, and every process then applies the same update. With D × Q processes (process
r = d·Q + q):

- **data parallel** (D): process d evaluates its points on shard d of the step's global batch; the losses are
  averaged with the shards' sizes as weights, so an uneven last batch gives the global batch's mean loss;
- **query parallel** (Q): the P points of a step are dealt round-robin to the Q processes of a data group,
  which evaluate them on the same batch; the others contribute zeros, so the sum is each loss exactly.

``ParallelPoints`` is the estimator's ``parallel`` seam (``zolab.engine.estimator.Local`` is the one-process case).
A failed collective (another process raised, died, or timed out) raises an error that names this process.
``check_in_step`` compares the parameters' bits across processes: a divergence is an error.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


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

    def owned(self, num_points: int) -> range:
        points = range(self.query_index, num_points, self.query)
        self.evaluated += len(points)
        return points

    def combine(self, losses: torch.Tensor, owned) -> torch.Tensor:
        """Every point's loss, the same on every process: one all-reduce of P (+ 1) numbers."""
        n = losses.numel()
        if self.data == 1:  # query parallel only: a sum of one loss and zeros is that loss, exactly
            buf = torch.zeros(n, dtype=losses.dtype, device=losses.device)
            buf[list(owned)] = losses[list(owned)]
            self._all_reduce(buf)
            return buf
        buf = torch.zeros(n + 1, dtype=torch.float64, device=losses.device)
        buf[list(owned)] = losses[list(owned)].double() * self.weight
        if self.query_index == 0:  # each data shard's size counted once
            buf[n] = self.weight
        self._all_reduce(buf)
        return (buf[:n] / buf[n]).to(losses.dtype)

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
    """Part ``index`` of ``count`` of a batch: tensors split along their first dimension, lists and tuples of
    examples sliced, mappings and tuples of tensors split field by field (``torch.tensor_split``'s sizes: they
    differ by at most one). ``None`` and other leaves are shared."""
    if count == 1:
        return batch
    if isinstance(batch, torch.Tensor):
        return torch.tensor_split(batch, count)[index] if batch.dim() else batch
    if isinstance(batch, dict):
        return type(batch)({k: shard(v, index, count) for k, v in batch.items()})
    if isinstance(batch, tuple) and hasattr(batch, "_fields") and not _is_examples(batch):  # a NamedTuple record
        return type(batch)(*(shard(v, index, count) for v in batch))
    if isinstance(batch, list | tuple):
        if _is_examples(batch):
            bounds = torch.tensor_split(torch.arange(len(batch)), count)[index]
            part = [batch[i] for i in bounds.tolist()]
            return type(batch)(part) if isinstance(batch, list) else tuple(part)
        return type(batch)(shard(v, index, count) for v in batch)
    return batch


def _is_examples(seq) -> bool:
    """A list of examples (records, strings, numbers) rather than a tuple of batched fields."""
    return isinstance(seq, list) or not any(isinstance(v, torch.Tensor | list | dict) for v in seq)


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
