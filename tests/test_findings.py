"""memlib.stats (the intervals and the verdict rule of docs/criteria.md) and memlib.findings (FINDINGS.md written
from the records): known values of each interval, each status and verdict, and the committed quick tier's
FINDINGS.md is exactly what the code writes from the committed records."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from memlib import findings
from memlib.stats import (
    AtLeast,
    Comparison,
    Estimate,
    bootstrap,
    difference,
    over_seeds,
    tau_b,
    verdict,
    wilson,
)

ROOT = Path(__file__).resolve().parent.parent


def test_wilson_interval_known_values():
    e = wilson(0.5, 100)
    assert (e.value, round(e.lo, 2), round(e.hi, 2)) == (50.0, 40.38, 59.62)
    e = wilson(1.0, 500)  # never past 100%, and below it
    assert e.hi == 100.0 and 99.0 < e.lo < 99.5
    e = wilson(0.15, 500)  # the example: about 1.6 points of standard error
    assert 2 * 1.5 < e.hi - e.lo < 2 * 1.96 * 1.7


def test_interval_over_seeds_is_the_t_interval_of_the_mean():
    e = over_seeds([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) * std 1 / sqrt(3)
    assert e.value == 2.0 and e.lo == pytest.approx(2 - half) and e.hi == pytest.approx(2 + half)
    assert "3 seeds" in e.how
    one = over_seeds([4.0])
    assert one.value == 4.0 and one.lo is None and one.hi is None


def test_difference_of_accuracies_adds_the_binomial_variances():
    e = difference([(1, 0.5, 100), (-1, 0.4, 100)])
    se = math.sqrt(0.25 / 100 + 0.24 / 100)
    assert e.value == pytest.approx(10.0) and e.lo == pytest.approx(100 * (0.1 - 1.959964 * se), abs=1e-4)


def test_bootstrap_tau_of_concordant_scores_is_one_and_of_noise_spans_zero():
    a = np.arange(50.0)
    lo, hi, _ = bootstrap(lambda i: tau_b(a[i], 2 * a[i]), len(a))
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=200), rng.normal(size=200)
    lo, hi, _ = bootstrap(lambda i: tau_b(x[i], y[i]), len(x))
    assert lo < tau_b(x, y) < hi and 0.1 < hi - lo < 0.3  # about 2 x 1.96 x 0.047 for 200 examples


def test_a_comparison_is_met_only_with_its_whole_interval_on_the_right_side():
    assert Comparison("a", Estimate(95, 91, 98), ">=", 90).status == "met"
    assert Comparison("a", Estimate(95, 89, 98), ">=", 90).status == "undecided"
    assert Comparison("a", Estimate(80, 70, 89), ">=", 90).status == "failed"
    assert Comparison("a", Estimate(20, 10, 29), "<=", 30).status == "met"
    assert Comparison("a", Estimate(0.4), "<", 0.5).status == "met"  # no interval: the point value decides
    assert Comparison("a", None, ">", 0).status == "undecided"  # not measured


def test_verdicts_holds_partial_and_at_least():
    met, und, bad = (Comparison("x", Estimate(v, lo, hi), ">=", 0) for v, lo, hi in ((2, 1, 3), (1, -1, 3),
                                                                                   (-2, -3, -1)))
    assert verdict([met, met], [[met]]) == "holds"
    assert verdict([met, und], [[met]]) == "partial"  # an undecided comparison is not met
    assert verdict([met, bad], [[bad], [met]]) == "partial"  # one of the alternatives
    assert verdict([und], [[bad]]) == "does not hold"
    assert AtLeast(2, (met, met, bad)).status == "met"
    assert AtLeast(2, (met, bad, bad)).status == "failed"
    assert AtLeast(2, (met, und, bad)).status == "undecided"


def test_committed_findings_are_what_the_code_writes_from_the_committed_records():
    """The verdicts cannot drift from the records: FINDINGS.md is regenerated and compared byte for byte."""
    committed = (ROOT / "outputs" / "quick" / "FINDINGS.md").read_text()
    assert committed == findings.render(ROOT, "quick")


def test_every_finding_and_attempt_has_its_criterion_and_setting():
    assert set(findings.CRITERIA) == set(findings.PAPER) == set(findings.NOTEBOOK) == {f"F{i}" for i in range(1, 12)}
    assert set(findings.ATTEMPTS) == set(findings.ATTEMPT_OF) == set(findings.ATTEMPT_SETTING)
    criteria = (ROOT / "docs" / "criteria.md").read_text()
    assert all(f"| {a} |" in criteria for a in findings.ATTEMPTS if a not in ("A4", "A6")) and "| A4/A6 |" in criteria


def test_no_verdict_on_part_of_the_data():
    """A finding with one comparison of its "holds" clause not measured yet is "not measured", whatever the
    others say (docs/criteria.md); "at least k of" needs k measured."""
    from memlib.stats import AtLeast, Comparison, Estimate

    met = Comparison("a", Estimate(5.0, 4.0, 6.0), ">=", 1.0)
    missing = Comparison("b", None, ">=", 1.0)
    assert findings.Result("X", [met]).verdict == "holds"
    assert findings.Result("X", [met, missing]).verdict == "not measured"
    assert findings.Result("X", [AtLeast(1, (met, missing))]).verdict == "holds"
    assert findings.Result("X", [AtLeast(2, (met, missing))]).verdict == "not measured"
