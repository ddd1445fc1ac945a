"""outputs/quick/FINDINGS.md agrees with the committed tables it links (which tests/test_notebooks.py rebuilds
from the run files): every bold number of a result row appears in one of that row's linked tables, and the
summary lists each finding under the verdict its row gives."""

from __future__ import annotations

import re
from pathlib import Path

FINDINGS = Path(__file__).resolve().parent.parent / "outputs" / "quick" / "FINDINGS.md"
NUMBER = re.compile(r"(?<![\w.])[-+−]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
VERDICTS = {"holds": "Holds", "partial": "Partial", "does not hold": "Does not hold"}


def _result_rows() -> list[list[str]]:
    text = FINDINGS.read_text()
    results = text[text.index("## Results"):text.index("### Why")]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in results.splitlines() if line.startswith("| F")]
    assert [r[0] for r in rows] == [f"F{i}" for i in range(1, len(rows) + 1)] and len(rows) >= 11
    return rows


def _matches(printed: str, values: list[float]) -> bool:
    """``printed`` (a number as written, e.g. "0.60") equals one of ``values`` rounded to its decimals."""
    value, decimals = float(printed.replace("−", "-")), len(printed.split(".")[1]) if "." in printed else 0
    return any(abs(value - v) <= 0.5 * 10 ** -decimals + 1e-9 for v in values)


def test_every_bold_number_of_a_finding_is_in_the_tables_it_links():
    for row in _result_rows():
        ours = row[2]
        tables = re.findall(r"\((tables/[\w.]+\.md)\)", ours)
        assert tables, f"{row[0]} links no table"
        values = [float(x.replace("−", "-")) for t in tables for x in NUMBER.findall((FINDINGS.parent / t).read_text())]
        missing = [b for b in re.findall(r"\*\*([-+−]?\d+(?:\.\d+)?)\*\*", ours) if not _matches(b, values)]
        assert not missing, f"{row[0]}: {missing} are in none of {tables}"


def test_the_summary_lists_each_finding_under_its_rows_verdict():
    verdicts = {}
    for row in _result_rows():
        verdict = re.match(r"\*\*(holds|partial|does not hold)\*\*", row[3])
        assert verdict, f"{row[0]}: the verdict cell must start with **holds**, **partial** or **does not hold**"
        verdicts[row[0]] = VERDICTS[verdict.group(1)]
    summary = re.search(r"^Holds: (.*)\. Partial: (.*)\. Does not hold: (.*)\.$", FINDINGS.read_text(), re.M)
    assert summary, "FINDINGS.md has no summary line"
    listed = {name: re.findall(r"F\d+", part) for name, part in zip(VERDICTS.values(), summary.groups())}
    assert {f: v for v, fs in listed.items() for f in fs} == verdicts
