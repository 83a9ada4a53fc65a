"""Probe presets: named sets of probes, each added to a run by one config line (docs/algorithms.md §4).

    zolab fit --config X.yaml --trainer.callbacks+=diagnostics.Economy
    zolab fit --config X.yaml --trainer.callbacks+=diagnostics.Full --trainer.callbacks.hessian_every_n_steps=500

or in YAML, under ``trainer: callbacks:``, ``- class_path: diagnostics.Economy``. A preset is one Lightning
``Callback`` that calls its probes' hooks in turn; the probes are independent of their order (they share the
step's ∇F through ``diagnostics.probe``), so a preset logs exactly what the same probes log when added one by
one. Cost classes (what a probe computes per call, and how often), as in each probe's docstring:

- ``Economy`` — the probes whose cost is a few forwards or one backward per call, every ``every_n_steps``
  (100): ``GradientAlignment`` (∇F, one backward shared by the set, and K direction regenerations),
  ``EstimatorVariance`` with ``variance_samples`` (2) extra estimates (2 × K × (1 or 2) forwards),
  ``BlockOverlap`` without the curvature overlap (no Hessian product: the gradient overlap and the
  stable rank only) and ``StepCost`` (nothing). ``benchmarks/probe_overhead.py`` prints its cost.
- ``Full`` — Economy, ``BlockOverlap`` with the curvature overlap (``curvature_samples`` Hessian-vector
  products a call for block-wise rules), ``HessianSpectrum`` every ``hessian_every_n_steps`` (1,000;
  Lanczos and ``curvature_samples`` Hutchinson products: tens of Hessian-vector products a call), and
  ``SecondMomentError``, which needs ∇F at **every** step (an EMA of (∇F)²: one backward a step, batched
  over windows below a million parameters), whatever its logging interval. Expect a large factor.

Probes that do not apply to the run's rule are left out with a warning naming them: ``EstimatorVariance``
for ZO-AdaMU's momentum-centred directions (no variance theory). ``SecondMomentError`` uses the rule's β2,
or ``beta2`` (0.99) for a rule without one.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from diagnostics.alignment import GradientAlignment
from diagnostics.block_overlap import BlockOverlap
from diagnostics.hessian import HessianSpectrum
from diagnostics.probe import Probe
from diagnostics.second_moment import SecondMomentError, rule_beta2
from diagnostics.step_cost import StepCost
from diagnostics.variance import LAWS, EstimatorVariance


class ProbeSet(Callback):
    """Several probes as one callback (see module doc).

    Args:
        probes: the probes, in any order.

    Example (YAML, under ``trainer: callbacks:``)::

        - class_path: diagnostics.ProbeSet
          init_args:
            probes:
              - {class_path: diagnostics.GradientAlignment, init_args: {every_n_steps: 10}}
              - {class_path: diagnostics.StepCost, init_args: {every_n_steps: 10}}
    """

    def __init__(self, probes: list[Probe]):
        super().__init__()
        if not probes or not all(isinstance(p, Probe) for p in probes):
            raise ValueError(f"ProbeSet needs a non-empty list of diagnostics probes, got {probes!r}")
        keys = [p.state_key for p in probes]
        if len(set(keys)) != len(keys):
            raise ValueError(f"ProbeSet: two probes share a state key {keys}; give them distinct tags/settings")
        self.probes = list(probes)
        self.active = list(probes)  # the probes that apply to the run (set at on_train_start)

    def applies(self, probe: Probe, pl_module) -> str | None:
        """Why ``probe`` does not apply to this run (None: it does). Presets override it."""
        return None

    @override
    def on_train_start(self, trainer, pl_module):
        self.active = []
        for p in self.probes:
            why = self.applies(p, pl_module)
            if why:
                rank_zero_warn(f"{type(self).__name__}: {type(p).__name__} left out: {why}")
            else:
                self.active.append(p)
        for p in self.active:
            p.on_train_start(trainer, pl_module)

    @override
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        for p in self.active:
            p.on_train_batch_start(trainer, pl_module, batch, batch_idx)

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for p in self.active:
            p.on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    @override
    def on_train_end(self, trainer, pl_module):
        for p in self.active:
            p.on_train_end(trainer, pl_module)

    @override
    def state_dict(self) -> dict:
        return {k: v for k, v in ((p.state_key, p.state_dict()) for p in self.probes) if v}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        for p in self.probes:
            if p.state_key in state_dict:
                p.load_state_dict(state_dict[p.state_key])


class Economy(ProbeSet):
    """The cheap probes (see module doc): alignment, variance with few samples, gradient overlap, step cost.

    Args:
        every_n_steps: each probe's interval (100).
        variance_samples: ``EstimatorVariance``'s extra estimates per call (2).
    """

    def __init__(self, every_n_steps: int = 100, variance_samples: int = 2):
        super().__init__(self.economy(every_n_steps, variance_samples, curvature=False))

    @staticmethod
    def economy(every_n_steps: int, variance_samples: int, curvature: bool, curvature_samples: int = 20) -> list:
        return [GradientAlignment(every_n_steps), EstimatorVariance(every_n_steps, num_samples=variance_samples),
                BlockOverlap(every_n_steps, exact_max_dim=1, num_samples=curvature_samples, curvature=curvature),
                StepCost(every_n_steps)]

    def applies(self, probe, pl_module):
        law = pl_module.zo_optimizer.sampler.name
        if isinstance(probe, EstimatorVariance) and law not in LAWS:
            return f"direction law {law!r} has no variance theory (allowed: {list(LAWS)})"
        scheme = pl_module.zo_optimizer.grad_estimator.scheme
        if isinstance(probe, EstimatorVariance) and scheme.evaluators:
            return f"estimator {scheme.name!r} reads {list(scheme.evaluators)} besides the step's batch"
        return None


class Full(Economy):
    """Every probe (see module doc): Economy, the curvature overlap, the Hessian spectrum, the second moment.

    Args:
        every_n_steps: the interval of Economy's probes and of SecondMomentError's logging (100).
        hessian_every_n_steps: HessianSpectrum's interval (1,000).
        variance_samples: ``EstimatorVariance``'s extra estimates per call (2).
        curvature_samples: Hutchinson vectors of the curvature overlap and the Hessian trace (20).
        beta2: v*'s β2 for a rule without one (0.99); rules with a β2 use their own.
    """

    def __init__(self, every_n_steps: int = 100, hessian_every_n_steps: int = 1000, variance_samples: int = 2,
                 curvature_samples: int = 20, beta2: float = 0.99):
        ProbeSet.__init__(self, self.economy(every_n_steps, variance_samples, True, curvature_samples) + [
            HessianSpectrum(hessian_every_n_steps, method="stochastic", num_samples=curvature_samples),
            SecondMomentError(every_n_steps, beta2=beta2)])
        self.beta2 = beta2

    def applies(self, probe, pl_module):
        if isinstance(probe, SecondMomentError):  # the rule's own β2 where it has one
            probe.beta2 = None if rule_beta2(pl_module.zo_optimizer.param_groups[0]) is not None else self.beta2
        return super().applies(probe, pl_module)
