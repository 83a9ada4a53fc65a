"""What the table-driven tests of the rules need, kept beside the package (as ``torch.testing``), not in it.

``REGISTRY`` (short name -> ``RuleInfo``): each rule's class, test arguments, state, capabilities and its
dense float64 reference update, called with a ``Dense`` context (``zolab.testing.rules``).
"""

from zolab.testing.rules import REGISTRY, Dense, RuleInfo

__all__ = ["REGISTRY", "Dense", "RuleInfo"]
