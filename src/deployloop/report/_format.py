"""Figures and wording shared by every report format, so json, markdown and terminal agree."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from deployloop.models import (
    Cluster,
    DeployStatus,
    Figures,
    IterationStatus,
    KnownIssueMatch,
    SuiteStatus,
    SuiteSummary,
    Summary,
)

# Figures fields that the TOTAL row must equal the column sums of.
FIGURE_FIELDS = (
    "collected",
    "executed",
    "passed",
    "failed",
    "errors",
    "skipped",
    "xfailed",
    "xpassed",
)


def percent(part: int, whole: int) -> float | None:
    """`part` of `whole` in percent, one decimal; None when `whole` is 0.

    Rounding never reaches 100.0 unless part == whole: 2499 passed of 2500 would otherwise
    print "100.0%" next to a failing test, the kind of figure that hides a failure.
    """
    if whole == 0:
        return None
    value = round(100.0 * part / whole, 1)
    if value >= 100.0 and part < whole:
        return 99.9
    return value


def pass_rate(figures: Figures) -> float | None:
    return percent(figures.passed, figures.executed)


def format_percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def failing(figures: Figures) -> int:
    """Tests that did not pass among the executed ones: failures and errors alike."""
    return figures.failed + figures.errors


def format_duration(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "unknown"
    if 0 < seconds < 0.5:
        return "<1s"  # "0s" would read as "nothing left" while something is
    total = max(round(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def format_time(value: str | None) -> str:
    parsed = parse_time(value)
    if parsed is None:
        return value or "-"
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


def seconds_between(started: str | None, finished: str | None) -> float | None:
    start, end = parse_time(started), parse_time(finished)
    if start is None or end is None:
        return None
    try:
        return (end - start).total_seconds()
    except TypeError:  # one timestamp has a zone and the other has none
        return None


def short_sha(sha: str | None) -> str:
    return sha[:7] if sha else "-"


def label(status: StrEnum) -> str:
    """A status as a person reads it: "not_run" -> "not run"."""
    return status.value.replace("_", " ")


def suites_in_order(summary: Summary) -> list[SuiteSummary]:
    # sorted() is stable: suites of one priority keep the order the config gave them.
    return sorted(summary.suites, key=lambda suite: suite.priority)


def clusters_in_order(summary: Summary) -> list[Cluster]:
    return sorted(summary.clusters, key=lambda cluster: -cluster.count)


def known_issue(summary: Summary, issue_id: str) -> KnownIssueMatch | None:
    return next((issue for issue in summary.known_issues if issue.id == issue_id), None)


def known_issue_note(summary: Summary, issue_id: str) -> str:
    """Why a cluster is known, worded so nobody reads it as a pass."""
    issue = known_issue(summary, issue_id)
    reason = issue.reason if issue is not None else "no reason recorded"
    expired = " (this known issue has expired: review it)" if issue and issue.expired else ""
    return f"known issue {issue_id}: {reason}{expired} — still counted as failing"


def failure_messages(summary: Summary) -> dict[str, str]:
    """First line of each failing test's message, by node id."""
    messages: dict[str, str] = {}
    for row in summary.failures:
        if row.message:
            messages[row.nodeid] = one_line(row.message)
    return messages


def unclustered_failures(summary: Summary) -> list[str]:
    """Failing tests no cluster holds: listed on their own so that none goes unreported."""
    clustered = {test for cluster in summary.clusters for test in cluster.tests}
    return [row.nodeid for row in summary.failures if row.nodeid not in clustered]


def one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def figures_disagreement(summary: Summary) -> list[str]:
    """Fields where summary.totals differ from the sum of the suite rows.

    The analysis stage computes both from the same rows, so this is empty; if it ever is not,
    the report says so instead of printing a TOTAL row that the table contradicts.
    """
    if not summary.suites:
        return []
    wrong = []
    for name in FIGURE_FIELDS:
        column = sum(getattr(suite.figures, name) for suite in summary.suites)
        total = getattr(summary.totals, name)
        if column != total:
            wrong.append(f"{name}: total {total}, suites sum to {column}")
    return wrong


def verdict_word(status: IterationStatus) -> str:
    return label(status).upper()


def plural(count: int, word: str, many: str | None = None) -> str:
    return f"{count} {word if count == 1 else (many or word + 's')}"


def verdict_detail(summary: Summary) -> str:
    """The sentence after "Verdict: X": every figure a reader checks first, from totals."""
    totals = summary.totals
    target = summary.iteration.target_pass_rate
    if totals.executed == 0:
        parts = ["no tests executed"]
    else:
        rate = format_percent(pass_rate(totals))
        parts = [
            f"{totals.passed}/{totals.executed} executed tests passed "
            f"({rate}, target {target:.1f}%)"
        ]
    parts.extend(_failing_phrase(summary))
    parts.extend(_deploy_phrase(summary))
    text = ", ".join(parts)
    remaining = len(summary.remaining_suites)
    if remaining:
        still = "remaining" if summary.iteration.status is IterationStatus.RUNNING else "not run"
        text += f"; {plural(remaining, 'suite')} {still}"
    return text


def _failing_phrase(summary: Summary) -> list[str]:
    totals = summary.totals
    count = failing(totals)
    if count == 0:
        return []
    phrase = f"{count} failing"
    if totals.errors:
        phrase += f" ({totals.failed} failed, {plural(totals.errors, 'error')})"
    if summary.clusters:
        phrase += f" in {plural(len(summary.clusters), 'pattern')}"
    return [phrase]


def _deploy_phrase(summary: Summary) -> list[str]:
    broken = [
        d for d in summary.deployments if d.status in (DeployStatus.FAILED, DeployStatus.SKIPPED)
    ]
    if not broken:
        return []
    return [f"{plural(len(broken), 'service')} not deployed"]


def remaining_note(suite: SuiteSummary | None) -> str:
    """Why a suite is still to run, from its recorded status."""
    if suite is None:
        return "not run"
    if suite.status is SuiteStatus.NOT_RUN:
        return "not selected this iteration" if not suite.selected else "not reached"
    if suite.status is SuiteStatus.PENDING:
        return "waiting to run"
    return label(suite.status)


def remaining_time(summary: Summary) -> str:
    estimate = summary.estimated_remaining_s
    if estimate is None:
        # The analysis gives no estimate when nothing finished has a duration to go by.
        return "unknown" if summary.remaining_suites or summary.totals.pending else "none"
    return "none" if estimate == 0 else format_duration(estimate)


def suites_by_name(suites: Iterable[SuiteSummary]) -> dict[str, SuiteSummary]:
    return {suite.name: suite for suite in suites}
