"""Schedules: pure functions of t (linear, cosine, ZO-AdaMU's three phases) and the optimizer's helpers for them."""

import math

import pytest
import torch

from zolab.engine.schedules import (
    Constant,
    Cosine,
    Linear,
    ThreePhase,
    adamu_schedules,
    current_values,
    is_scheduled,
    resolve,
    value_at,
)


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


def test_adamu_schedule_bound_on_step_ratio():
    """|u|/√v <= sqrt(β1²/β2 + (1−β1)²/(1−β2)) along the annealed schedule (§3.8)."""
    total = 2000
    s_alpha, s_b1, s_b2 = adamu_schedules(total, t1=100)
    worst = 0.0
    for t in range(1, total + 1, 7):
        b1, b2 = s_b1(t), s_b2(t)
        assert 0.01 <= b2 <= 1 and 0 <= s_alpha(t) <= 1
        if b2 < 1:
            worst = max(worst, math.sqrt(b1**2 / b2 + (1 - b1) ** 2 / (1 - b2)))
    # 1/sqrt(0.01) = 10 is the floor's bound; the unclamped schedule would reach ~6e3
    assert worst <= math.sqrt(1 / 0.01 + 1 / 0.99) + 1e-9
    # and the same bound holds for actual draws: |u_i| / sqrt(v_i) elementwise
    gen = torch.Generator().manual_seed(0)
    for t in (1, 150, 900, 1599, 1900):
        a, b1, b2 = s_alpha(t), s_b1(t), s_b2(t)
        zd = math.sqrt(a) * torch.randn(10_000, generator=gen, dtype=torch.float64)
        zdd = torch.randn(10_000, generator=gen, dtype=torch.float64)
        u, v = b1 * zd + (1 - b1) * zdd, b2 * zd**2 + (1 - b2) * zdd**2
        bound = math.sqrt(b1**2 / b2 + ((1 - b1) ** 2 / (1 - b2) if b2 < 1 else 0.0))
        assert float((u.abs() / v.sqrt()).max()) <= bound + 1e-9


def test_three_phase_values_and_validation():
    s = ThreePhase(total_steps=20_000, phi=1.0, t1=1024)
    assert s(1) == 1.0 and s(1023) == 1.0 and s(1024) == 1.0
    assert s(16_000) == s(15_999) == s(19_999)  # "hold"
    with pytest.raises(ValueError, match="L_t"):
        ThreePhase(total_steps=100_000, phi=1.5, t1=1024, t2=16_000)
    with pytest.raises(ValueError, match="t2 > t1"):
        ThreePhase(total_steps=1000, t1=1024)


def test_scheduled_values_resolve_at_t_and_flatten_for_logs():
    lin = Linear(1.0, 0.0, 11)
    assert is_scheduled(lin) and is_scheduled((lin, 0.99)) and not is_scheduled((0.9, 0.99)) and not is_scheduled(0.1)
    assert resolve((lin, 0.99), 6) == (pytest.approx(0.5), 0.99) and resolve(lin, 11) == 0.0 and resolve(0.3, 5) == 0.3
    group = {"lr": 0.25, "betas": (0.5, 0.99), "alpha": (0.1, 0.2)}
    assert current_values(["lr", "betas", "alpha"], group) == {"lr": 0.25, "betas1": 0.5, "betas2": 0.99,
                                                               "alpha0": 0.1, "alpha1": 0.2}
    assert current_values([], group) == {}
