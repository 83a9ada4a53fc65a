"""ZOStrategy: Lightning's DDP process management for ZO steps, without DDP's gradient reducer.

Lightning starts the processes and the process group exactly as for ``strategy="ddp"`` (gloo on the CPU, nccl
on GPUs), but the module is not wrapped in ``DistributedDataParallel``: a ZO step has no gradients, so
nothing the size of the model is allocated or reduced. ``ZOModule`` gives its optimizer a
``zolab.engine.parallel.ParallelPoints``: each step all-reduces its P losses (and one count) and every process
applies the same update (docs/algorithms.md §2; README "Several processes and GPUs").

Every process reads the same global batches (``use_distributed_sampler=False``: the ``zolab`` CLI sets it) and
``ZOModule`` gives process d its shard d of each, weighted by its size, so a run is the same run whatever the
number of processes (with the same global batch: up to floating-point rounding for data parallel, bitwise for
query parallel) and its checkpoints resume at another world size. At setup the parameters are broadcast from
process 0; every ``verify_every`` steps and at the last step their bits are compared (an error if they differ).
A signal to any process stops all of them at the same step (``zolab.lab.interrupt.InterruptCheckpoint``).

Example::

    trainer = L.Trainer(strategy=ZOStrategy(query=2), devices=2, accelerator="cpu",
                        use_distributed_sampler=False)
    # zolab fit --config X.yaml --trainer.strategy=zo --trainer.devices=2 --trainer.accelerator=cpu
"""

from __future__ import annotations

from datetime import timedelta

from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from zolab.engine.parallel import ParallelPoints, broadcast_from_first


class ZOStrategy(DDPStrategy):
    """Args:
    data: processes that share each batch (data parallel); None: all of them but ``query``'s share.
    query: processes that share each step's points (query parallel); data · query = the process count.
    verify_every: compare the processes' parameters bitwise every n steps (0: never).
    timeout: seconds a collective waits for another process before it fails (a crashed peer is an error).
    start_method: ``"popen"`` (Lightning's default: the script is started again per process) or ``"spawn"``.
    """

    strategy_name = "zo"

    def __init__(self, data: int | None = None, query: int = 1, verify_every: int = 100, timeout: float = 120.0,
                 start_method: str = "popen", **kwargs):
        for name, value in (("query", query), ("verify_every", verify_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "query" else 0):
                raise ValueError(f"invalid {name}: {value!r}; allowed: an integer >= {1 if name == 'query' else 0}")
        if data is not None and (isinstance(data, bool) or not isinstance(data, int) or data < 1):
            raise ValueError(f"invalid data: {data!r}; allowed: an integer >= 1 or None")
        if not timeout > 0:
            raise ValueError(f"invalid timeout: {timeout!r}; allowed: seconds > 0")
        super().__init__(timeout=timedelta(seconds=timeout), start_method=start_method, **kwargs)
        self.data, self.query, self.verify_every = data, query, verify_every
        self.parallel_points: ParallelPoints | None = None

    @override
    def configure_ddp(self) -> None:
        """No ``DistributedDataParallel``: the processes agree through the losses' all-reduce alone."""

    def shape(self) -> tuple[int, int]:
        """(data, query) processes: data · query must be the number of processes."""
        world = self.world_size
        data = self.data if self.data is not None else world // self.query
        if data * self.query != world:
            raise ValueError(f"ZOStrategy(data={self.data}, query={self.query}) needs data · query = {world} "
                             f"processes (trainer.devices × num_nodes); got {data} · {self.query}")
        return data, self.query

    @override
    def setup(self, trainer) -> None:
        data, query = self.shape()  # a bad shape fails before anything is set up
        super().setup(trainer)
        broadcast_from_first(self.model)  # the same start everywhere
        rank_zero_info(f"ZOStrategy: {self.world_size} processes, data parallel {data} × query parallel {query}")

    def points(self) -> ParallelPoints:
        """The optimizer's seam: which points this process evaluates and the all-reduce that combines them (also
        kept as ``parallel_points``: its all-reduce carries a stop to every process)."""
        self.parallel_points = ParallelPoints(*self.shape())
        return self.parallel_points


StrategyRegistry.register(ZOStrategy.strategy_name, ZOStrategy, description="zolab: ZO steps on several processes",
                          override=True)
