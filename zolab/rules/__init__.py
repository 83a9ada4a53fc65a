"""Every ZO rule, one file each; ``RULES`` maps a short name to its class, ``REGISTRY`` to its test entry."""

from zolab.rules.adamm import ZOAdaMM
from zolab.rules.adamu import ZOAdaMU
from zolab.rules.base import ZOOptimizer
from zolab.rules.meazo import MEAZO
from zolab.rules.mezo_bcd import MeZOBCD
from zolab.rules.momentum import ZOSGDMomentum
from zolab.rules.radazo import RAdaZO
from zolab.rules.registry import REGISTRY, RULES, RuleInfo
from zolab.rules.rmsprop import ZORMSProp
from zolab.rules.signsgd import ZOSignSGD
from zolab.rules.zosgd import ZOSGD

__all__ = ["RULES", "REGISTRY", "RuleInfo", "ZOOptimizer", "ZOSGD", "ZOSGDMomentum", "ZOSignSGD", "ZOAdaMM",
           "ZORMSProp", "RAdaZO", "ZOAdaMU", "MEAZO", "MeZOBCD"]
