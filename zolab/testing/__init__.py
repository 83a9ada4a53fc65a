"""What the table-driven tests of the rules need, kept beside the package (as ``torch.testing``), not in it.

``REGISTRY`` (short name -> ``RuleInfo``): each rule's class, test arguments, state, capabilities and its
dense float64 reference update, called with a ``Dense`` context (``zolab.testing.rules``; the entries of the
rules that are not element-wise given ĝ in ``zolab.testing.rules_structured``,
``zolab.testing.rules_curvature_mask_jvp`` and ``zolab.testing.rules_adam_fzoo_cons_lezo``, registered on import).
"""

from zolab.testing import (  # noqa: F401  (each adds its rules to REGISTRY)
    rules_adam_fzoo_cons_lezo,  # ZO-Adam, FZOO, ZO-SGD-Cons, LeZO
    rules_curvature_mask_jvp,  # HiZOO, Sparse-MeZO, Forward-Grad
    rules_structured,  # LOZO, LOZO-M, SubZero, MeZO-SVRG
)
from zolab.testing.rules import REGISTRY, Dense, RuleInfo

__all__ = ["REGISTRY", "Dense", "RuleInfo"]
