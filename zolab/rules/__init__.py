"""Every ZO rule, one file each; ``RULES`` maps a short name to its class.

The test entries of the rules (references, test arguments) live apart, in ``zolab.testing``.
"""

from zolab.rules.adamm import ZOAdaMM
from zolab.rules.adamu import ZOAdaMU
from zolab.rules.base import ZOOptimizer
from zolab.rules.forward_grad import ForwardGrad
from zolab.rules.hizoo import HiZOO
from zolab.rules.meazo import MEAZO
from zolab.rules.mezo_bcd import MeZOBCD
from zolab.rules.momentum import ZOSGDMomentum
from zolab.rules.radazo import RAdaZO
from zolab.rules.rmsprop import ZORMSProp
from zolab.rules.signsgd import ZOSignSGD
from zolab.rules.sparse_mezo import SparseMeZO
from zolab.rules.zosgd import ZOSGD

RULES: dict[str, type[ZOOptimizer]] = {
    "zo_sgd": ZOSGD, "zo_sgd_momentum": ZOSGDMomentum, "zo_signsgd": ZOSignSGD, "zo_adamm": ZOAdaMM,
    "zo_rmsprop": ZORMSProp, "radazo": RAdaZO, "zo_adamu": ZOAdaMU, "meazo": MEAZO, "mezo_bcd": MeZOBCD,
}
RULES.update(hizoo=HiZOO, sparse_mezo=SparseMeZO, forward_grad=ForwardGrad)

__all__ = ["RULES", "ZOOptimizer", "ZOSGD", "ZOSGDMomentum", "ZOSignSGD", "ZOAdaMM", "ZORMSProp", "RAdaZO",
           "ZOAdaMU", "MEAZO", "MeZOBCD", "HiZOO", "SparseMeZO", "ForwardGrad"]
