"""Every ZO rule, one file each; ``RULES`` maps a short name to its class.

The test entries of the rules (references, test arguments) live apart, in ``zolab.testing``.
"""

from zolab.rules.adamm import ZOAdaMM
from zolab.rules.adamu import ZOAdaMU
from zolab.rules.base import ZOOptimizer
from zolab.rules.fzoo import FZOO
from zolab.rules.lezo import LeZO
from zolab.rules.meazo import MEAZO
from zolab.rules.mezo_bcd import MeZOBCD
from zolab.rules.momentum import ZOSGDMomentum
from zolab.rules.radazo import RAdaZO
from zolab.rules.rmsprop import ZORMSProp
from zolab.rules.signsgd import ZOSignSGD
from zolab.rules.zo_adam import ZOAdam
from zolab.rules.zo_sgd_cons import ZOSGDCons
from zolab.rules.zosgd import ZOSGD

RULES: dict[str, type[ZOOptimizer]] = {
    "zo_sgd": ZOSGD, "zo_sgd_momentum": ZOSGDMomentum, "zo_signsgd": ZOSignSGD, "zo_adamm": ZOAdaMM,
    "zo_rmsprop": ZORMSProp, "radazo": RAdaZO, "zo_adamu": ZOAdaMU, "meazo": MEAZO, "mezo_bcd": MeZOBCD,
}
# ZO-Bench's ZO-Adam (§3.11), FZOO (§3.16), ZO-Bench's ZO-SGD-Cons (§3.17), LeZO (§3.20)
RULES.update({"zo_adam": ZOAdam, "fzoo": FZOO, "zo_sgd_cons": ZOSGDCons, "lezo": LeZO})

__all__ = ["RULES", "ZOOptimizer", "ZOSGD", "ZOSGDMomentum", "ZOSignSGD", "ZOAdaMM", "ZORMSProp", "RAdaZO",
           "ZOAdaMU", "MEAZO", "MeZOBCD"]
__all__ += ["ZOAdam", "FZOO", "ZOSGDCons", "LeZO"]
