"""False greens: results that look fine on paper and show nothing in fact.

- the iteration executed no test at all;
- the iteration's skipped share (skipped / finished tests) rose by `skipped_jump_pct` points or
  more since the iteration before;
- a selected suite that finished without executing a test (every test skipped, or none
  collected);
- a test that passed faster than `min_test_duration_s` (setup, call and teardown together):
  an e2e test that quick did not talk to a deployed service.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from deployloop.analysis.context import IterationRows
from deployloop.analysis.figures import figures
from deployloop.models import FalseGreen, Figures, Outcome, SuiteSummary, TestRow

if TYPE_CHECKING:  # the config's pydantic models cost ~0.2 s to import
    from deployloop.config import AnalysisSection


def false_greens(
    totals: Figures,
    suites: Sequence[SuiteSummary],
    rows: Sequence[TestRow],
    previous: IterationRows | None,
    settings: AnalysisSection,
) -> tuple[FalseGreen, ...]:
    """Iteration-wide findings first, then suites in report order, then tests by node id."""
    return (
        nothing_executed(totals)
        + skipped_jump(totals, previous, settings.skipped_jump_pct)
        + suites_without_execution(suites)
        + too_fast(rows, settings.min_test_duration_s)
    )


def nothing_executed(totals: Figures) -> tuple[FalseGreen, ...]:
    if totals.executed:
        return ()
    return (FalseGreen("iteration", "iteration", "no test executed: nothing was shown to work"),)


def skipped_share(totals: Figures) -> float | None:
    """Percent of the finished tests (not pending) that were skipped; None if none finished."""
    finished = totals.collected - totals.pending
    return None if finished == 0 else 100.0 * totals.skipped / finished


def skipped_jump(
    totals: Figures, previous: IterationRows | None, jump_pct: float
) -> tuple[FalseGreen, ...]:
    if previous is None:
        return ()
    now, before = skipped_share(totals), skipped_share(figures(previous.rows))
    if now is None or before is None or now - before < jump_pct:
        return ()
    reason = (
        f"skipped share rose from {before:.1f}% to {now:.1f}% of finished tests "
        f"(+{now - before:.1f} points since iteration {previous.record.number})"
    )
    return (FalseGreen("iteration", "iteration", reason),)


def suites_without_execution(suites: Sequence[SuiteSummary]) -> tuple[FalseGreen, ...]:
    """Selected suites that finished (nothing pending) without executing one test."""
    found = []
    for suite in suites:
        f = suite.figures
        if not suite.selected or f.executed or f.pending:
            continue
        if f.collected == 0:
            reason = "no tests collected: the suite shows nothing"
        elif f.skipped == f.collected:
            reason = (
                f"all {f.collected} tests skipped" if f.collected > 1 else "its only test skipped"
            )
        else:
            parts = [
                f"{count} {name}"
                for count, name in ((f.skipped, "skipped"), (f.xfailed, "xfailed"),
                                    (f.xpassed, "xpassed"))
                if count
            ]  # fmt: skip
            reason = f"none of its {f.collected} tests executed: {', '.join(parts)}"
        found.append(FalseGreen(suite.name, "suite", reason))
    return tuple(found)


def too_fast(rows: Sequence[TestRow], minimum_s: float) -> tuple[FalseGreen, ...]:
    """Passed in less than `minimum_s` (0 turns the check off)."""
    if minimum_s <= 0:
        return ()
    return tuple(
        FalseGreen(
            row.nodeid,
            "test",
            f"passed in {_duration(row.duration_s)}, under the {minimum_s:g} s minimum "
            f"(min_test_duration_s): too fast to have talked to a deployed service",
        )
        for row in sorted(rows, key=lambda r: r.nodeid)
        if row.outcome == Outcome.PASSED
        and row.duration_s is not None
        and row.duration_s < minimum_s
    )


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"
