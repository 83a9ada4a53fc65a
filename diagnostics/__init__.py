"""diagnostics: probes that measure, during a zolab run, the quantities the papers' claims are about.

Each probe is a Lightning ``Callback`` (docs/algorithms.md §4) that logs under ``diagnostics/<probe>/...``
and never changes the run; ``Economy`` and ``Full`` (``diagnostics.presets``) add named sets of them in one
config line; ``diagnostics.linalg`` holds the Hessian operator and the estimators they use.
"""

from diagnostics.alignment import GradientAlignment
from diagnostics.block_overlap import BlockOverlap
from diagnostics.hessian import HessianSpectrum
from diagnostics.presets import Economy, Full, ProbeSet
from diagnostics.second_moment import SecondMomentError
from diagnostics.step_cost import StepCost
from diagnostics.variance import EstimatorVariance

__all__ = [
    "GradientAlignment", "SecondMomentError", "EstimatorVariance", "HessianSpectrum", "BlockOverlap", "StepCost",
    "ProbeSet", "Economy", "Full",
]
