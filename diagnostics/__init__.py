"""diagnostics: probes that measure, during a zolab run, the quantities the papers' claims are about.

Each probe is a Lightning ``Callback`` (ALGORITHMS.md §4) that logs under ``diagnostics/<probe>/...`` and
never changes the run; ``diagnostics.linalg`` holds the Hessian operator and the estimators they use.
"""

from diagnostics.alignment import GradientAlignment
from diagnostics.block_overlap import BlockOverlap
from diagnostics.hessian import HessianSpectrum
from diagnostics.second_moment import SecondMomentError
from diagnostics.step_cost import StepCost
from diagnostics.variance import EstimatorVariance

__all__ = [
    "GradientAlignment", "SecondMomentError", "EstimatorVariance", "HessianSpectrum", "BlockOverlap", "StepCost",
]
