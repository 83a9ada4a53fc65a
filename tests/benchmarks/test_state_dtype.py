"""benchmarks/state_dtype.py: every task, rule and state is a row with one final loss per seed."""

import math

from benchmarks import state_dtype


def test_a_tiny_run_gives_every_row(capsys):
    results = state_dtype.main(["--steps", "3", "--seeds", "2"])
    assert len(results) == len(state_dtype.TASKS) * len(state_dtype.RULES) * len(state_dtype.STATES) == 18
    assert all(len(v) == 2 and all(math.isfinite(x) for x in v) for v in results.values())
    out = capsys.readouterr().out
    assert "| digits MLP | R-AdaZO | bfloat16 stochastic |" in out
    assert "| Quadratic d=10,000 | ZO-AdaMU | float32 |" in out
