"""When a gain may be claimed for a run whose training does not settle: the stability rule.

The default rule (``lit-transfer report``) claims a gain only between runs that had converged: a gain over a
baseline still improving measures the budget. Domain adaptation breaks it on purpose: DANN's min-max game keeps
moving the target predictions (on digits_m 7–14 % of the target val images change their quarter-modal prediction
between the last two quarters of 240 epochs), so the label-free convergence check never passes, even with 10 of
10 seeds better than source-only. The question a user asks there is different: *is the gain there whenever I
stop?* :func:`stable_gain` answers it over tensors of numbers, knowing nothing of runs or files: the paired gain
(run − its baseline, same seed and labelled examples) in target val accuracy is measured at each of the final
evaluation points (the last quarter, :data:`~lit_transfer.convergence.TAIL`), and its confidence interval over
seeds must lie above zero at every one of them (below zero for negative transfer). A gain that flips sign within
the final part, or whose interval touches zero at any point, is not claimed, with that reason.

The target val labels used here never chose a checkpoint or a hyper-parameter (selection stays label-free);
they only judge whether the reported test-set gain is a property of the method or of the stopping point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

from lit_transfer.convergence import TAIL
from lit_transfer.stats import mean_ci

__all__ = ["StableGain", "stable_gain", "STABLE_RULE"]

STABLE_RULE = "stable over the final evaluations"


@dataclass(frozen=True)
class StableGain:
    """The paired gain at each final evaluation point: means, interval bounds (accuracy units), seeds ``n``."""

    n: int
    means: list[float] = field(default_factory=list)
    lows: list[float] = field(default_factory=list)
    highs: list[float] = field(default_factory=list)

    @property
    def points(self) -> int:
        return len(self.means)

    @property
    def claimed(self) -> bool:
        """A gain above zero at every final point, or negative transfer below zero at every one."""
        return self.points > 0 and (all(lo > 0 for lo in self.lows) or all(hi < 0 for hi in self.highs))

    @property
    def negative(self) -> bool:
        return self.claimed and all(hi < 0 for hi in self.highs)

    @property
    def reason(self) -> Optional[str]:
        """Why no gain is claimed (``None`` when it is)."""
        if self.claimed:
            return None
        if self.points == 0:
            return (f"the stability rule needs ≥ 2 paired seeds with ≥ 4 evaluations each (have {self.n} pairs)")
        if min(self.means) < 0 < max(self.means):
            return (f"the paired gain flips sign within the final {self.points} evaluations "
                    f"({100 * min(self.means):+.1f} to {100 * max(self.means):+.1f} pp)")
        crossing = sum(lo <= 0 <= hi for lo, hi in zip(self.lows, self.highs))
        return (f"the paired gain's interval includes 0 at {crossing} of the final {self.points} evaluations")

    def as_dict(self) -> dict:
        return {"rule": STABLE_RULE, "n": self.n, "points": self.points, "claimed": self.claimed,
                "min_low": min(self.lows, default=None), "max_high": max(self.highs, default=None),
                "reason": self.reason}


def stable_gain(runs: Sequence[Sequence[float]], baselines: Sequence[Sequence[float]], conf: float = 0.95,
                tail: float = TAIL) -> StableGain:
    """Paired gain ``runs[i] − baselines[i]`` (one pair per seed: the two runs' target val accuracy curves, same
    schedule) at each of the final ``tail`` of the evaluation points, aligned from the end.

    Curves shorter than 4 points, non-finite values or fewer than 2 pairs give no points (nothing claimed)."""
    if len(runs) != len(baselines):
        raise ValueError(f"{len(runs)} run curves but {len(baselines)} baseline curves: pass one pair per seed")
    pairs = [([float(v) for v in r], [float(v) for v in b]) for r, b in zip(runs, baselines)
             if r is not None and b is not None and len(r) >= 4 and len(b) >= 4]
    pairs = [(r, b) for r, b in pairs if all(math.isfinite(v) for v in (*r, *b))]
    if len(pairs) < 2:
        return StableGain(n=len(pairs))
    length = min(min(len(r), len(b)) for r, b in pairs)
    k = min(max(2, math.ceil(length * tail)), length // 2)
    means, lows, highs = [], [], []
    for t in range(-k, 0):
        mean, half = mean_ci([r[t] - b[t] for r, b in pairs], conf)
        means.append(mean)
        lows.append(mean - half)
        highs.append(mean + half)
    return StableGain(n=len(pairs), means=means, lows=lows, highs=highs)
