"""Argument checks: each error names the argument, the bad value and what is allowed."""

import math

import pytest

from zolab.engine.checks import check_betas, check_choice, check_int, check_range
from zolab.engine.schedules import Linear


@pytest.mark.parametrize("value, kw, ok", [
    (0.0, {}, True), (1.0, {}, False), (1.0, {"hi_open": False}, True), (0.0, {"lo_open": True}, False),
    (-1e-9, {}, False), (math.nan, {}, False), (True, {}, False), ("0.5", {}, False), (0.5, {}, True),
    (Linear(5.0, 9.0, 3), {}, True),  # a schedule is checked when it runs
])
def test_check_range_ends(value, kw, ok):
    if ok:
        check_range("beta", value, 0.0, 1.0, **kw)
    else:
        lo, hi = "(" if kw.get("lo_open") else "[", ")" if kw.get("hi_open", True) else "]"
        with pytest.raises(ValueError, match=rf"invalid beta: .*; allowed: a number in \{lo}0.0, 1.0\{hi}"):
            check_range("beta", value, 0.0, 1.0, **kw)


def test_check_int_refuses_bools_floats_and_out_of_range():
    check_int("k", 3, 1)
    check_int("seed", 2**64 - 1, 0, 2**64)
    for value, match in [(0, r"invalid k: 0; allowed: an integer >= 1"), (True, "invalid k: True"),
                         (2.0, "invalid k: 2.0")]:
        with pytest.raises(ValueError, match=match):
            check_int("k", value, 1)
    with pytest.raises(ValueError, match=r"invalid seed: 18446744073709551616; allowed: an integer in \[0, 2\*\*64\)"):
        check_int("seed", 2**64, 0, 2**64)


def test_check_choice_lists_what_is_allowed():
    check_choice("mode", "a", ("a", "b"))
    with pytest.raises(ValueError, match=r"unknown mode 'c'; allowed: \['a', 'b'\]"):
        check_choice("mode", "c", ("a", "b"))


def test_check_betas_needs_two_numbers_in_range():
    check_betas({})  # a rule without betas
    check_betas({"betas": (0.9, Linear(0.9, 0.5, 10))})
    check_betas({"betas": (0.0, 1.0)}, hi_open=False)
    with pytest.raises(ValueError, match=r"invalid betas: \(0\.9,\); allowed: two numbers"):
        check_betas({"betas": (0.9,)})
    with pytest.raises(ValueError, match=r"invalid betas\[1\]: 1\.0"):
        check_betas({"betas": (0.9, 1.0)})
