"""95% intervals of the quantities that decide a finding (docs/criteria.md), and the verdict rule.

An ``Estimate`` is a value with its interval (``lo``, ``hi``; None when there is none) and how the interval was
computed. A ``Comparison`` of an estimate with a threshold is *met* when the whole interval lies on the right
side, *failed* when it lies wholly on the wrong side, *undecided* otherwise; without an interval, the point
value decides and the comparison says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


@dataclass(frozen=True)
class Estimate:
    value: float
    lo: float | None = None
    hi: float | None = None
    how: str = ""  # "Wilson, n=500", "t over 3 seeds", "bootstrap over 7 models", "point value"

    def text(self, digits: int = 1) -> str:
        if self.lo is None or self.hi is None:
            return f"{self.value:.{digits}f} ({self.how or 'no interval'})"
        return f"{self.value:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}] ({self.how})"


def wilson(p: float, n: int, scale: float = 100.0) -> Estimate:
    """An accuracy ``p`` (a fraction) measured on ``n`` examples, with its Wilson score interval, in % (scale)."""
    if n <= 0:
        return Estimate(scale * p, how="no examples")
    centre = (p + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / (1 + Z95 ** 2 / n)
    return Estimate(scale * p, scale * max(0.0, centre - half), scale * min(1.0, centre + half), f"Wilson, n={n}")


def difference(terms: list[tuple[float, float, int]], scale: float = 100.0) -> Estimate:
    """Σ sign · p over ``terms`` [(sign, p, n)], accuracies as fractions on n examples each, ± 1.96 times the
    standard error of independent binomials (conservative for accuracies measured on the same images)."""
    value = sum(sign * p for sign, p, _ in terms)
    se = math.sqrt(sum(sign * sign * p * (1 - p) / n for sign, p, n in terms if n > 0))
    return Estimate(scale * value, scale * (value - Z95 * se), scale * (value + Z95 * se), "binomial, independent")


def over_seeds(values: list[float]) -> Estimate:
    """The mean of per-seed values with the t interval of the mean (k - 1 degrees of freedom)."""
    v = np.asarray(values, dtype=np.float64)
    k = len(v)
    if k == 0:
        return Estimate(float("nan"), how="no seeds")
    if k == 1:
        return Estimate(float(v[0]), how="one seed")
    mean, sd = float(v.mean()), float(v.std(ddof=1))
    half = float(stats.t.ppf(0.975, k - 1)) * sd / math.sqrt(k)
    return Estimate(mean, mean - half, mean + half, f"t over {k} seeds, std {sd:.2f}")


def bootstrap(statistic, n: int, *, resamples: int = 2000, seed: int = 0, what: str = "examples") -> tuple:
    """Percentile interval of ``statistic(indices)`` over ``resamples`` bootstrap resamples of ``n`` items (NaN
    statistics, e.g. of a resample with one distinct model, are dropped): (lo, hi, how)."""
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(resamples)], dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < resamples // 2:
        return None, None, f"bootstrap over {n} {what}: too few valid resamples"
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi), f"bootstrap over {n} {what}"


def tau_b(a, b) -> float:
    """Kendall's tau-b (scipy; ``memlib.analysis.kendall_tau`` computes the same)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.kendalltau(a, b).statistic)


# --- comparisons and verdicts ------------------------------------------------------------------------

MET, FAILED, UNDECIDED = "met", "failed", "undecided"


@dataclass(frozen=True)
class Comparison:
    label: str  # "TRADES's robust training accuracy"
    estimate: Estimate | None  # None: not measured
    op: str  # ">=", ">", "<=", "<"
    threshold: float
    digits: int = 1  # decimals shown

    @property
    def status(self) -> str:
        e = self.estimate
        if e is None or not math.isfinite(e.value):
            return UNDECIDED
        t = self.threshold
        right = {">=": lambda x: x >= t, ">": lambda x: x > t, "<=": lambda x: x <= t, "<": lambda x: x < t}[self.op]
        if e.lo is None or e.hi is None:
            return MET if right(e.value) else FAILED
        ends = [right(e.lo), right(e.hi)]
        return MET if all(ends) else FAILED if not any(ends) else UNDECIDED

    def text(self) -> str:
        measured = "not measured" if self.estimate is None else self.estimate.text(self.digits)
        return f"{self.label} {self.op} {self.threshold:g}: {measured} → **{self.status}**"


@dataclass(frozen=True)
class AtLeast:
    """At least ``k`` of ``items`` met: met when k are, failed when more than len - k failed."""
    k: int
    items: tuple[Comparison, ...]

    @property
    def status(self) -> str:
        states = [c.status for c in self.items]
        if states.count(MET) >= self.k:
            return MET
        return FAILED if states.count(FAILED) > len(states) - self.k else UNDECIDED

    def text(self) -> str:
        return f"at least {self.k} of ({'; '.join(c.text() for c in self.items)}) → **{self.status}**"


def clause_met(clause: list) -> bool:
    return bool(clause) and all(c.status == MET for c in clause)


def verdict(holds: list, partial: list[list] | None = None) -> str:
    """"holds" when every item of ``holds`` is met; "partial" when, short of that, every item of one of the
    ``partial`` alternatives is; "does not hold" otherwise (docs/criteria.md)."""
    if clause_met(holds):
        return "holds"
    if any(clause_met(alt) for alt in partial or []):
        return "partial"
    return "does not hold"
