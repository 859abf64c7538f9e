"""Small, pure statistics for comparing transfer strategies over seeds.

Seeds are few (3-5), so intervals use the t-distribution, and gains over the baseline are *paired*
(same seed, same labelled split) to cancel the split-to-split variance that dominates few-shot results.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

from scipy import stats as _st

NAN = float("nan")


def mean_ci(values: Sequence[float], conf: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the two-sided t confidence interval). Half-width is nan below 2 values."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return NAN, NAN
    mean = sum(xs) / n
    if n < 2:
        return mean, NAN
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return mean, float(_st.t.ppf(0.5 + conf / 2, n - 1)) * sd / math.sqrt(n)


@dataclass(frozen=True)
class Gain:
    n: int
    mean: float
    half: float  # CI half-width
    low: float
    high: float
    p: float  # two-sided paired t-test p-value

    @property
    def negative(self) -> bool:
        """Negative transfer: the whole confidence interval of the gain lies below zero."""
        return self.high < 0

    def as_dict(self) -> dict:
        return {**asdict(self), "negative": self.negative}


def paired_gain(a: Sequence[float], b: Sequence[float], conf: float = 0.95) -> Gain:
    """Gain of `a` over `b` from pairs (a[i], b[i]): mean difference, its t CI and the paired t-test p."""
    if len(a) != len(b):
        raise ValueError(f"paired_gain needs equally long sequences, got {len(a)} and {len(b)}")
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    n = len(diffs)
    mean, half = mean_ci(diffs, conf)
    if n < 2:
        return Gain(n, mean, NAN, NAN, NAN, NAN)
    if half == 0:  # identical differences: the t statistic is infinite (or 0/0 when all are zero)
        p = 1.0 if mean == 0 else 0.0
    else:
        sd = half / float(_st.t.ppf(0.5 + conf / 2, n - 1)) * math.sqrt(n)
        t = mean / (sd / math.sqrt(n))
        p = float(2 * _st.t.sf(abs(t), n - 1))
    return Gain(n, mean, half, mean - half, mean + half, p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down), in the input order: a comparison is significant at level α
    among ``m`` when its adjusted p is below α. Controls the family-wise error rate with no assumption on how the
    comparisons depend on each other."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        adjusted[i] = running
    return adjusted
