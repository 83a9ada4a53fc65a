"""Small statistics the claims' readers share: mean and spread over seeds, their printing, rank correlation."""

from __future__ import annotations

import math


def mean_std(xs) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value; nan for none)."""
    xs = [float(x) for x in xs]
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0)


def mean(xs) -> float:
    return mean_std(xs)[0]


def g(x: float, digits: int = 3) -> str:
    """``digits`` significant digits, whole numbers without an exponent below 10⁷."""
    if x != x or abs(x) == math.inf:
        return "nan" if x != x else ("inf" if x > 0 else "-inf")
    return f"{x:.0f}" if 10**digits <= abs(x) < 1e7 else f"{x:.{digits}g}"


def pm(xs, digits: int = 3) -> str:
    """'mean ± std' of several values (the spread over seeds), the value alone for one."""
    xs = list(xs)
    m, s = mean_std(xs)
    return g(m, digits) if len(xs) < 2 else f"{g(m, digits)} ± {g(s, 2)}"


def spearman(x, y) -> float:
    """Spearman's rank correlation (average ranks for ties); nan for fewer than 3 points."""
    import numpy as np

    if len(x) < 3:
        return math.nan

    def ranks(v):
        v = np.asarray(v, dtype=float)
        r = np.empty(len(v))
        r[v.argsort(kind="stable")] = np.arange(len(v))
        for value in np.unique(v):  # ties: their mean rank
            r[v == value] = r[v == value].mean()
        return r

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def loglog_slope(xs, ys) -> float:
    import numpy as np

    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])
