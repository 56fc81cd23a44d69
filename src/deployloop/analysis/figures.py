"""Per-suite and total figures, counted from test rows and nothing else.

executed = passed + failed + errors; skipped, xfailed and xpassed are shown but never count as
passed or executed, and a collected test without a result is pending, not dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from deployloop.models import Figures, Outcome, TestRow


def figures(rows: Iterable[TestRow]) -> Figures:
    """Count outcomes; `collected` is every row, so pending tests are in it."""
    counts: Counter[Outcome | None] = Counter(row.outcome for row in rows)
    passed = counts[Outcome.PASSED]
    failed = counts[Outcome.FAILED]
    errors = counts[Outcome.ERROR]
    return Figures(
        collected=counts.total(),
        executed=passed + failed + errors,
        passed=passed,
        failed=failed,
        errors=errors,
        skipped=counts[Outcome.SKIPPED],
        xfailed=counts[Outcome.XFAILED],
        xpassed=counts[Outcome.XPASSED],
    )
