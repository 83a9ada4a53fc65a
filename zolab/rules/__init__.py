"""Every ZO rule, one file each; ``RULES`` maps a short name to its class.

The test entries of the rules (references, test arguments) live apart, in ``zolab.testing``.
"""

from zolab.rules.adamm import ZOAdaMM
from zolab.rules.adamu import ZOAdaMU
from zolab.rules.base import ZOOptimizer
from zolab.rules.forward_grad import ForwardGrad
from zolab.rules.fzoo import FZOO
from zolab.rules.hizoo import HiZOO
from zolab.rules.lezo import LeZO
from zolab.rules.lozo import LOZO, LOZOM
from zolab.rules.meazo import MEAZO
from zolab.rules.mezo_bcd import MeZOBCD
from zolab.rules.mezo_svrg import MeZOSVRG
from zolab.rules.momentum import ZOSGDMomentum
from zolab.rules.radazo import RAdaZO
from zolab.rules.rmsprop import ZORMSProp
from zolab.rules.signsgd import ZOSignSGD
from zolab.rules.sparse_mezo import SparseMeZO
from zolab.rules.subzero import SubZero
from zolab.rules.zo_adam import ZOAdam
from zolab.rules.zo_sgd_cons import ZOSGDCons
from zolab.rules.zosgd import ZOSGD

RULES: dict[str, type[ZOOptimizer]] = {
    "zo_sgd": ZOSGD, "zo_sgd_momentum": ZOSGDMomentum, "zo_signsgd": ZOSignSGD, "zo_adamm": ZOAdaMM,
    "zo_rmsprop": ZORMSProp, "radazo": RAdaZO, "zo_adamu": ZOAdaMU, "meazo": MEAZO, "mezo_bcd": MeZOBCD,
}
RULES.update({"lozo": LOZO, "lozo_m": LOZOM, "subzero": SubZero, "mezo_svrg": MeZOSVRG})  # structured rules
RULES.update(hizoo=HiZOO, sparse_mezo=SparseMeZO, forward_grad=ForwardGrad)  # curvature, masks, forward mode
# ZO-Bench's ZO-Adam (§3.11), FZOO (§3.16), ZO-Bench's ZO-SGD-Cons (§3.17), LeZO (§3.20)
RULES.update({"zo_adam": ZOAdam, "fzoo": FZOO, "zo_sgd_cons": ZOSGDCons, "lezo": LeZO})

__all__ = ["RULES", "ZOOptimizer", "ZOSGD", "ZOSGDMomentum", "ZOSignSGD", "ZOAdaMM", "ZORMSProp", "RAdaZO",
           "ZOAdaMU", "MEAZO", "MeZOBCD"]
__all__ += ["LOZO", "LOZOM", "SubZero", "MeZOSVRG"]  # structured rules
__all__ += ["HiZOO", "SparseMeZO", "ForwardGrad"]  # curvature, masks, forward mode
__all__ += ["ZOAdam", "FZOO", "ZOSGDCons", "LeZO"]  # ZO-Bench's ZO-Adam and ZO-SGD-Cons, FZOO, LeZO
