"""zolab: zeroth-order optimization as torch optimizers, run from Lightning, measured by probes."""

from importlib import import_module

__version__ = "0.1.0"
_HOMES = {  # public name -> the module that defines it (imported on first use: `zolab claims` needs no torch)
    **dict.fromkeys(("RULES", "ZOOptimizer", "ZOSGD", "ZOSGDMomentum", "ZOSignSGD", "ZOAdaMM", "ZORMSProp",
                     "RAdaZO", "ZOAdaMU", "MEAZO", "MeZOBCD"), "zolab.rules"),
    **dict.fromkeys(("LOZO", "LOZOM", "SubZero", "MeZOSVRG"), "zolab.rules"),  # structured rules
    **dict.fromkeys(("HiZOO", "SparseMeZO", "ForwardGrad"), "zolab.rules"),
    **dict.fromkeys(("ZOAdam", "FZOO", "ZOSGDCons", "LeZO"), "zolab.rules"),
    **dict.fromkeys(("Gaussian", "Sphere", "Rademacher"), "zolab.engine.samplers"),
    **dict.fromkeys(("Constant", "Linear", "Cosine", "ThreePhase", "adamu_schedules"), "zolab.engine.schedules"),
}
__all__ = list(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'zolab' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
