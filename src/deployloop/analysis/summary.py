"""One iteration's summary, computed from the store's records alone.

Every figure a report shows comes from here, from the same rows: the totals are the figures
of all rows, each suite's figures are those of its rows, so the two always add up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from deployloop.analysis.clusters import cluster_failures, mark_outage, suite_key_issue
from deployloop.analysis.context import AnalysisContext
from deployloop.analysis.figures import figures
from deployloop.analysis.insights import build_insights
from deployloop.analysis.known_issues import match_known_issues
from deployloop.analysis.normalize import is_failure
from deployloop.analysis.past import past_of
from deployloop.analysis.progress import estimate_remaining_s
from deployloop.analysis.root_causes import root_causes
from deployloop.analysis.service_logs import cluster_service_logs
from deployloop.analysis.setup_failure import crashed_services, is_setup_failure
from deployloop.models import (
    Cluster,
    Deployment,
    IterationRecord,
    IterationStatus,
    PastResults,
    RunningTest,
    SuiteRecord,
    SuiteStatus,
    SuiteSummary,
    Summary,
    TestRow,
)

if TYPE_CHECKING:  # the config's pydantic models cost ~0.2 s to import
    from deployloop.config import KnownIssue

_RUNNING_SHOWN = 5  # the longest-running tests a summary names
# Suites still to run: not started yet, or left out (--suite) or never reached.
_REMAINING_STATUSES = frozenset({SuiteStatus.NOT_RUN, SuiteStatus.PENDING})


def build_summary(
    iteration: IterationRecord,
    suites: Sequence[SuiteRecord],
    rows: Sequence[TestRow],
    deployments: Sequence[Deployment],
    known_issues: Sequence[KnownIssue],
    today: date,
    elapsed_s: float,
    context: AnalysisContext | None = None,
) -> Summary:
    """Summarize an iteration; `suites` come in config order, `rows` hold every collected test.

    Raises ValueError when a row names a suite that is not in `suites`: its tests would count
    in the totals and in no suite, the disagreement this summary exists to rule out.
    """
    context = context or AnalysisContext()  # no history, no rules: the defaults
    # Rows given by hand become the compact form once, not once per use.
    context = replace(context, history=past_of(context.history))
    by_suite: dict[str, list[TestRow]] = {suite.name: [] for suite in suites}
    unknown = sorted({row.suite for row in rows} - by_suite.keys())
    if unknown:
        raise ValueError(f"test rows name suites that are not recorded: {', '.join(unknown)}")
    for row in rows:
        by_suite[row.suite].append(row)

    # sorted() is stable: within a priority, suites keep their config order.
    ordered = sorted(suites, key=lambda suite: suite.priority)
    position = {suite.name: i for i, suite in enumerate(ordered)}
    totals = figures(rows)
    clusters, outage = _clusters(
        iteration, rows, known_issues, totals.executed, deployments, context
    )
    suite_summaries = tuple(
        SuiteSummary(
            name=suite.name,
            priority=suite.priority,
            status=suite.status,
            selected=suite.selected,
            figures=figures(by_suite[suite.name]),
            key_issue=suite_key_issue(clusters, by_suite[suite.name]),
        )
        for suite in ordered
    )
    matches = match_known_issues(rows, known_issues, today)
    return Summary(
        iteration=iteration,
        totals=totals,
        suites=suite_summaries,
        clusters=clusters,
        known_issues=matches,
        deployments=tuple(deployments),
        remaining_suites=tuple(
            suite.name
            for suite in ordered
            if not suite.selected
            or suite.status in _REMAINING_STATUSES
            # Interrupted (or otherwise cut short) with tests still to run.
            or figures(by_suite[suite.name]).pending > 0
        ),
        elapsed_s=elapsed_s,
        # Nothing will run the pending tests of an iteration that ended before its tests did:
        # no time is "remaining" (a resume is a new run with its own estimate).
        estimated_remaining_s=None
        if is_setup_failure(iteration.status, totals.executed)
        else estimate_remaining_s(rows, iteration.workers, context.history),
        failures=tuple(
            sorted(
                (row for row in rows if is_failure(row)),
                key=lambda row: (position[row.suite], row.nodeid),
            )
        ),
        insights=build_insights(
            iteration, totals, suite_summaries, rows, matches, outage, context
        ),
        running=running_tests(iteration, rows),
        partial=iteration.partial or not all(suite.selected for suite in suites),
        root_causes=root_causes(clusters, rows, context.history)
        if isinstance(context.history, PastResults) and clusters
        else (),
    )


def running_tests(
    iteration: IterationRecord, rows: Sequence[TestRow], now: datetime | None = None
) -> tuple[RunningTest, ...]:
    """Tests started and not finished while the iteration runs, longest first: a test that
    hangs shows here as it happens, not only when its suite times out."""
    if iteration.status is not IterationStatus.RUNNING:
        return ()
    now = now or datetime.now(UTC)
    running = [
        RunningTest(row.nodeid, row.suite, (now - datetime.fromisoformat(row.started_at))
                    .total_seconds())
        for row in rows
        if row.started_at and row.outcome is None
    ]
    return tuple(sorted(running, key=lambda test: -test.running_s)[:_RUNNING_SHOWN])


def _clusters(
    iteration: IterationRecord,
    rows: Sequence[TestRow],
    known_issues: Sequence[KnownIssue],
    executed: int,
    deployments: Sequence[Deployment],
    context: AnalysisContext,
) -> tuple[tuple[Cluster, ...], str | None]:
    """Clusters, and the outage one of them shows."""
    clusters = cluster_failures(
        rows, known_issues, context.categories, context.history, iteration.number
    )
    if context.service_logs:
        by_nodeid = {row.nodeid: row for row in rows if is_failure(row)}
        clusters = tuple(
            replace(cluster, service_logs=cluster_service_logs(
                [by_nodeid[n] for n in cluster.tests if n in by_nodeid], context.service_logs
            ))
            for cluster in clusters
        )
    return mark_outage(
        clusters, executed, context.settings.outage_share, crashed_services(deployments)
    )
