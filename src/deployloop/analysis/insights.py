"""Everything the analysis finds beyond one iteration's own figures, gathered in one record."""

from __future__ import annotations

from collections.abc import Sequence

from deployloop.analysis.context import AnalysisContext
from deployloop.analysis.diff import iteration_diff
from deployloop.analysis.false_greens import false_greens
from deployloop.analysis.history import flaky_and_broken
from deployloop.analysis.integrity import integrity_flags
from deployloop.analysis.progress import projection, remaining_suite_tests, trend
from deployloop.analysis.setup_failure import is_setup_failure
from deployloop.models import (
    Figures,
    Insights,
    IterationRecord,
    IterationStatus,
    KnownIssueMatch,
    SuiteSummary,
    TestRow,
)


def build_insights(
    iteration: IterationRecord,
    totals: Figures,
    suites: Sequence[SuiteSummary],
    rows: Sequence[TestRow],
    known_issues: Sequence[KnownIssueMatch],
    outage: str | None,
    context: AnalysisContext,
) -> Insights:
    """`suites` in report order; `known_issues` as matched against `rows`."""
    if not rows and iteration.status in (IterationStatus.INTERRUPTED, IterationStatus.RUNNING):
        # Stopped (or still) before its tests were collected: there is nothing to compare
        # yet, and "every test removed" would be a false alarm.
        return Insights(
            trend=trend(context.iterations, context.history, iteration.target_pass_rate)
        )
    flaky, broken = flaky_and_broken(
        context.history, {row.nodeid for row in rows}, context.settings.broken_after
    )
    explained = sum(len(match.failures) for match in known_issues)
    # An iteration that ended before its tests ran is no result: "no test executed" is not a
    # false green but the deploy (or loop) failing, which the report says instead; and where
    # the rest would land, or what changed since the last one, it cannot tell.
    setup_failed = is_setup_failure(iteration.status, totals.executed)
    return Insights(
        flaky=flaky,
        broken=broken,
        # Collection itself failed: what it collected says nothing of the suites.
        integrity=()
        if iteration.status is IterationStatus.SETUP_FAILED
        else integrity_flags(rows, context.previous, context.history, iteration.number),
        false_greens=()
        if setup_failed
        else false_greens(totals, suites, rows, context.previous, context.settings),
        outage=outage,
        failures_with_known_issue=explained,
        failures_without_known_issue=totals.failed + totals.errors - explained,
        projection=None if setup_failed else projection(rows, totals, context.history),
        trend=trend(context.iterations, context.history, iteration.target_pass_rate),
        diff=None
        if context.compare is None or setup_failed
        else iteration_diff(rows, context.compare),
        remaining_suite_tests=remaining_suite_tests(suites),
    )
