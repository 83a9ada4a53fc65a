"""What a rule's maths is written with: the element view ``e``, the scalar view ``h`` and element-wise functions.

A rule's ``update(e, h)`` (and a rule's own ``direction(e, h)``) reads

- ``e.g`` (the estimate ĝ), ``e.theta`` (the parameter), ``e.<name>`` (its state, zero before the first
  update: ``e.m``, ``e.v``), ``e.noise(i)`` (the i-th standard normal draw of the query, for a rule that makes
  its own directions);
- ``h.<name>``: the group's hyper-parameters at this step (``h.lr``, ``h.mu``, ``h.eps``, ``h.weight_decay``,
  ``betas`` as ``h.beta1``/``h.beta2``, ...) and the scalars the rule's ``prepare`` returned;

and uses Python's ``+ - * /``, comparisons of element values, and ``sqrt``, ``sign``, ``abs``, ``maximum``,
``minimum``, ``where`` from here. The same function runs eagerly on torch tensors (``Eager``: the plain-torch
update the tests compare against) and is traced into a ``zolab.kernels.program.Program`` that every backend
runs in one pass (``Traced``).
"""

from __future__ import annotations

import torch

from zolab.kernels.program import Tracer, abs, maximum, minimum, sign, sqrt, where  # noqa: A004

__all__ = ["sqrt", "sign", "abs", "maximum", "minimum", "where", "Eager", "Traced", "hyper_values"]


def hyper_values(group: dict, extra: dict | None = None) -> dict:
    """A param group's scalar hyper-parameters by the names ``h`` uses (``betas`` -> ``beta1``, ``beta2``)."""
    out = {}
    for k, v in group.items():
        if k == "betas":
            out["beta1"], out["beta2"] = v
        elif isinstance(v, int | float | torch.Tensor) and not isinstance(v, bool):
            out[k] = v
    if extra:
        out.update(extra)
    return out


class _Scalars:
    __slots__ = ("_get",)

    def __init__(self, get):
        object.__setattr__(self, "_get", get)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._get(name)


class Eager:
    """Views on real tensors: ``Eager.element(g=..., theta=..., state={...}, noise=[...])`` and
    ``Eager.hyper({...})`` give the ``e`` and ``h`` an update reads when it runs eagerly."""

    @staticmethod
    def element(g=None, theta=None, state=None, noise=()):
        state = dict(state or {})

        def get(name):
            if name == "g":
                return g
            if name == "theta":
                return theta
            if name == "noise":
                return lambda i: noise[i]
            if name not in state:
                raise AttributeError(f"the element view has no state {name!r} (state: {sorted(state)})")
            return state[name]

        return _Scalars(get)

    @staticmethod
    def hyper(values: dict):
        def get(name):
            if name not in values:
                raise AttributeError(f"no hyper-parameter {name!r}; this step has {sorted(values)}")
            return values[name]

        return _Scalars(get)


class Traced:
    """Views that record a program: element names become its inputs (``theta``, ``g``, ``state:<name>``),
    ``e.noise(i)`` a draw slot (``noise<i>`` of the view's query tag), ``h.<name>`` a scalar input."""

    def __init__(self, tracer: Tracer | None = None):
        self.tracer = tracer or Tracer()

    def element(self, g=None, tag: str = ""):
        tracer = self.tracer

        def get(name):
            if name == "g":
                return g if g is not None else tracer.input("g")
            if name == "theta":
                return tracer.input("theta")
            if name == "noise":
                return lambda i: tracer.slot(f"noise{i}{tag}")
            return tracer.input(f"state:{name}")

        return _Scalars(get)

    def hyper(self):
        return _Scalars(self.tracer.scalar)
