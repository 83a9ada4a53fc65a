"""Step cost probe (MeZO-BCD claim B1; docs/algorithms.md §4 "Cost").

At probe steps it logs

- ``forwards``: forward passes step t used (the optimizer's counter), and ``forwards_total``;
- ``wall_ms``: wall-clock from this probe's ``on_train_batch_start`` to its ``on_train_batch_end`` (the
  module's hooks, the ZO step, logging, other callbacks), minus the time every diagnostics probe spent in
  its own hooks in between, so other probes on the same step do not count; on CUDA the device is
  synchronised at both ends (probe steps only);
- ``peak_cuda_allocated_mib`` on CUDA: ``torch.cuda.max_memory_allocated`` over the step (the peak
  counter is reset at the start of probe steps; probes measuring in the same window are included);
  on CPU ``peak_rss_mib``: the process's peak resident set size so far (``getrusage``, monotone).
"""

from __future__ import annotations

import sys
import time

import torch

from diagnostics.gradients import trainable
from diagnostics.probe import Probe, context

try:
    import resource
except ImportError:  # Windows: no getrusage
    resource = None


class StepCost(Probe):
    """Forwards, wall-clock and peak memory of a step (see module doc).

    Cost class: free (two clock and counter reads a probe step; a device synchronisation on CUDA).

    Args:
        every_n_steps: measure step 1 and every n-th step.

    Example (YAML, under ``trainer:``)::

        callbacks:
          - class_path: diagnostics.StepCost
            init_args: {every_n_steps: 100}
    """

    name = "step_cost"

    def __init__(self, every_n_steps: int = 100):
        super().__init__(every_n_steps)
        self._start: tuple[float, float, int] | None = None

    @staticmethod
    def _device(pl_module) -> torch.device:
        return trainable(pl_module.zo_optimizer)[0].param.device

    def measure(self, trainer, pl_module, batch, t):
        device = self._device(pl_module)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        self._start = (time.perf_counter(), context(pl_module).probe_seconds, pl_module.zo_optimizer.zo["forwards"])

    def collect(self, trainer, pl_module, batch, t):
        device = self._device(pl_module)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        (start, probe_start, forwards_start), self._start = self._start, None
        others = context(pl_module).probe_seconds - probe_start
        forwards = pl_module.zo_optimizer.zo["forwards"]
        metrics = {
            "forwards": float(forwards - forwards_start),
            "forwards_total": float(forwards),
            "wall_ms": 1000.0 * (now - start - others),
        }
        if device.type == "cuda":
            metrics["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        elif resource is not None:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
            metrics["peak_rss_mib"] = rss / (2**20 if sys.platform == "darwin" else 2**10)
        return metrics
