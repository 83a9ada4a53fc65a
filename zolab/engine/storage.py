"""State storage: the ``state_dtype`` and ``state_rounding`` options, their checks, and the rounding keys.

A rule's d-sized state (moments, momentum) is stored in ``state_dtype``: ``"float32"`` (the default; float64 for
float64 parameters) or ``"bfloat16"``/``"float16"``, half the memory. The maths stays in float32: the update
program widens the state in registers, and rounds the new state once as it stores it, in the same pass
(``zolab.kernels.run``). This is the state a rule declares by default (``ZOOptimizer.state_spec``: θ's shape):
state a rule declares itself, of another shape (a factor-space momentum, a scalar), keeps the dtype it declares.
Half state is refused for a tensor whose update is eager (``is_eager``: torch ops on the state in place, neither
float32 maths nor these roundings), and for float64 parameters (their maths is float64).

Rounding: ``"stochastic"`` (default) rounds up or down with probability given by the distance, so the stored
state is the float32 state in expectation; ``"nearest"`` rounds to nearest even. Why stochastic: an EMA
v ← β v + (1 − β) x moves by (1 − β)(x − v), below half a bfloat16 ulp of v (at least 2^-9 v) whenever
|x − v| < 0.2 v for β = 0.99 (2 v for β = 0.999): rounded to nearest, v stops moving (stalls) there.
The random bits are a counter hash of (seed, step, tensor index, state name) and the element index, the same on
every backend, so a resumed run rounds with the same bits.

float16 holds 6e-8 … 65504: squares of ĝ (second moments) overflow to infinity above 256² and vanish below
2.4e-4², which stalls or blows up the step; float16 is refused, with this reason, for a rule whose state holds
squares (``ZOOptimizer.squared_state``), rather than scaled: bfloat16 has float32's range.
"""

from __future__ import annotations

import zlib

import torch

from zolab.engine.checks import check_choice
from zolab.engine.seeds import mix

STATE_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
STATE_ROUNDINGS = ("stochastic", "nearest")
_SALT = 0x5354415445  # "STATE": keeps rounding keys apart from the directions' (mix(seed, t, b, k))


def check(rule, state_dtype: str, state_rounding: str, squared: tuple[str, ...]) -> None:
    """The options; float16 refused for state that holds squares (see the module doc)."""
    check_choice("state_dtype", state_dtype, STATE_DTYPES)
    check_choice("state_rounding", state_rounding, STATE_ROUNDINGS)
    if state_dtype == "float16" and squared:
        raise ValueError(
            f"state_dtype='float16' cannot hold {rule}'s {', '.join(squared)} (squares of the estimate: above "
            "65504 they overflow to inf, below 6e-8 they vanish, and the step stalls or blows up); allowed for "
            f"{rule}: 'float32', 'bfloat16' (float32's range)")


def check_param(state_dtype: str, name: str, p: torch.Tensor) -> None:
    """Half state computes in float32: refused for float64 parameters (their maths is float64)."""
    if STATE_DTYPES[state_dtype] is not None and p.dtype == torch.float64:
        raise ValueError(f"state_dtype={state_dtype!r} with the float64 parameter {name!r}: half state is "
                         "widened to float32, and float64 parameters compute in float64; allowed: "
                         "state_dtype='float32' (float64 state for float64 parameters)")


def check_refs(opt, refs) -> None:
    """Before any step: half state refused for float64 parameters and for tensors the rule updates eagerly."""
    if STATE_DTYPES[opt.state_dtype] is None:
        return
    for ref in refs:
        check_param(opt.state_dtype, ref.name, ref.param)
        if opt.is_eager(ref):
            raise ValueError(
                f"state_dtype={opt.state_dtype!r} with the eager update of {ref.name!r} ({type(opt).__name__}"
                ".eager_update: torch ops on its state, not float32 maths rounded once); allowed: "
                "state_dtype='float32', or a rule whose update of this tensor is the traced program")


def dtype_of(state_dtype: str, p: torch.Tensor) -> torch.dtype:
    """The dtype of ``p``'s state: the half type, or the compute type (float64 for float64, else float32)."""
    half = STATE_DTYPES[state_dtype]
    return half if half is not None else (torch.float64 if p.dtype == torch.float64 else torch.float32)


def rounding_keys(seed: int, t: int, index: int, outputs: dict[str, torch.Tensor]) -> dict[str, int]:
    """Output name -> key of its stochastic rounding at step t, for the half state outputs (``state:<name>``) of
    tensor number ``index``; a half parameter rounds to nearest, as torch stores it."""
    return {name: mix(seed, t, _SALT, index, zlib.crc32(name.encode())) for name, out in outputs.items()
            if name.startswith("state:") and out.dtype in (torch.bfloat16, torch.float16)}
