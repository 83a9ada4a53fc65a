import math

import pytest

from zolab.engine.schedules import Constant, Cosine, Linear, ThreePhase, adamu_schedules, value_at


def test_basic_schedules():
    assert Constant(0.3)(10) == 0.3 and value_at(0.5, 3) == 0.5 and value_at(Constant(2.0), 3) == 2.0
    lin = Linear(1.0, 0.0, 11)
    assert lin(1) == 1.0 and lin(6) == pytest.approx(0.5) and lin(11) == 0.0 and lin(50) == 0.0
    cos = Cosine(1.0, 0.0, 11)
    assert cos(1) == 1.0 and cos(6) == pytest.approx(0.5) and cos(11) == pytest.approx(0.0)
    warm = Cosine(1.0, 0.1, 20, warmup=4)
    assert warm(2) == 0.5 and warm(4) == 1.0 and warm(5) == 1.0 and warm(20) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="steps"):
        Linear(1.0, 0.0, 0)


def test_three_phase_matches_eq7_reading():
    T, t1 = 20_000, 1024
    t2 = int(0.8 * T)
    s = ThreePhase(T, phi=0.1, t1=t1)
    t = 8000
    length = T - 0.1 * (T - t2) * (t - t1) / (t2 - t1)
    assert s(t) == pytest.approx(0.5 + 0.5 * math.cos(math.pi * (t - t1) / length))
    alpha, beta1, beta2 = adamu_schedules(T)
    finals = (alpha(T), beta1(T), beta2(T))
    assert finals == pytest.approx((0.0101, 0.131, 0.0100), abs=1e-3)  # the values the docstring quotes
    prose = adamu_schedules(T, final="paper_prose")
    assert [p(T) for p in prose] == [0.5, 0.9, 0.01]
    assert all(0.01 <= beta2(t) <= 1 for t in range(1, T, 97))
