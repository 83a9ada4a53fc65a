"""zolab: zeroth-order optimization as torch optimizers, run from Lightning, measured by probes."""

from zolab.directions import Gaussian, Rademacher, Sphere
from zolab.rules import (
    MEAZO,
    RULES,
    ZOSGD,
    MeZOBCD,
    RAdaZO,
    ZOAdaMM,
    ZOAdaMU,
    ZOOptimizer,
    ZORMSProp,
    ZOSGDMomentum,
    ZOSignSGD,
)
from zolab.schedules import Constant, Cosine, Linear, ThreePhase, adamu_schedules

__version__ = "0.1.0"
__all__ = [
    "RULES", "ZOOptimizer", "ZOSGD", "ZOSGDMomentum", "ZOSignSGD", "ZOAdaMM", "ZORMSProp", "RAdaZO",
    "ZOAdaMU", "MEAZO", "MeZOBCD", "Gaussian", "Sphere", "Rademacher",
    "Constant", "Linear", "Cosine", "ThreePhase", "adamu_schedules",
]
