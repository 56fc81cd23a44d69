"""Figures and wording shared by every report format, so json, markdown and terminal agree.

Every string in a Summary came from somewhere loop does not control: test names and messages,
service logs, the config, the environment. The terminal and markdown renderers start from
`safe_summary`, so nothing they show can hold an escape sequence, a carriage return, a bidi
override or a lone surrogate, and names stay on one line; the json renderer escapes its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, is_dataclass, replace
from datetime import datetime
from enum import Enum, StrEnum
from typing import TypeVar, cast

from deployloop.analysis.setup_failure import crashed_services, is_setup_failure
from deployloop.models import (
    Category,
    Cluster,
    Deployment,
    DeployStatus,
    FalseGreen,
    Figures,
    HistoryPoint,
    IntegrityFlag,
    IterationDiff,
    IterationStatus,
    KnownIssueMatch,
    Projection,
    SuiteStatus,
    SuiteSummary,
    Summary,
    TestRow,
    Trend,
)
from deployloop.record_types import text_fields
from deployloop.safetext import one_line as inline
from deployloop.safetext import printable

T = TypeVar("T")

# Fields whose text may span lines (a service's last log lines, a reason, a failure message):
# made printable with their newlines, for the places that show them whole or flatten them with
# one_line(). Every other string (suite names, node ids, labels, URLs) gets its newlines
# escaped too: a node id must never start a line of its own in a report.
_MULTILINE_FIELDS = frozenset({"error", "reason", "basis", "outage", "message"})


def safe_summary(summary: Summary) -> Summary:
    """The summary with every string made safe to show (see the module's docstring)."""
    return make_safe(summary)


def make_safe(value: T) -> T:
    """`value` (a record, or a tuple of them) with every string in it made safe to show."""
    return cast(T, _safe(value, ""))


def partial_note(summary: Summary) -> str | None:
    """The line a report shows for a partial iteration (`partial` in the json), or None."""
    if not summary.partial:
        return None
    parts = []
    if summary.iteration.partial:
        parts.append("only the tests that failed before were run (--failed-only)")
    left_out = sum(1 for suite in summary.suites if not suite.selected)
    if left_out:
        parts.append(
            f"{left_out} of {len(summary.suites)} suites not selected (--suite), shown as"
            " remaining"
        )
    return "partial iteration: " + ("; ".join(parts) or "only some tests were run")


def _safe(value: object, field: str) -> object:
    # What holds no unsafe text comes back as the same object (printable() and one_line()
    # return their argument then), so that a summary of safe text is not rebuilt record by
    # record; and only the fields whose type may hold text are looked at: a long history has
    # tens of thousands of points of no text.
    if value is None or isinstance(value, Enum | int | float):
        return value  # a status is one of loop's own words
    if isinstance(value, str):
        return printable(value) if field in _MULTILINE_FIELDS else inline(value)
    if isinstance(value, tuple):
        items = tuple(_safe(item, field) for item in value)
        return value if _same(items, value) else items
    if isinstance(value, TestRow):
        # Its message is only ever shown through one_line(), which escapes only the part it
        # shows: a message of megabytes is not scanned whole. Its traceback is never shown.
        return replace(
            value,
            nodeid=inline(value.nodeid),
            suite=inline(value.suite),
            file=inline(value.file),
            longrepr=None,
        )
    if is_dataclass(value) and not isinstance(value, type):
        kind = type(value)
        names = text_fields(kind)
        if names is None:
            names = tuple(f.name for f in fields(value))
        before = [getattr(value, name) for name in names]
        after = [_safe(item, name) for item, name in zip(before, names, strict=True)]
        if _same(after, before):
            return value
        return replace(value, **dict(zip(names, after, strict=True)))
    return value


def revision_text(deployment: Deployment) -> str:
    """A deployment's revision, with its image's digest, its candidate tag, whether it was
    promoted, and what served the traffic when that was another revision."""
    text = deployment.revision or "-"
    if deployment.digest:
        text += f" ({deployment.digest[:19]})"  # sha256: and 12 hex digits, as docker shows
    elsewhere = deployment.serving and deployment.serving != deployment.revision
    traffic = f"traffic on {deployment.serving}" if elsewhere else ""
    if deployment.tag:
        promoted = "promoted" if deployment.promoted else "not promoted"
        text += f" (candidate {deployment.tag}, {promoted}{'; ' + traffic if traffic else ''})"
    elif traffic:
        text += f" ({traffic})"
    return text


def _same(after: Sequence[object], before: Sequence[object]) -> bool:
    return all(a is b for a, b in zip(after, before, strict=True))


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
    reason = one_line(issue.reason) if issue is not None else "no reason recorded"
    expired = " (this known issue has expired: review it)" if issue and issue.expired else ""
    return f"known issue {issue_id}: {reason}{expired} — still counted as failing"


def failure_messages(summary: Summary) -> dict[str, str]:
    """The beginning of each failing test's message on one line, by node id."""
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
    """The beginning of `text` for a table cell or a sentence: runs of whitespace (newlines
    included) as one space, at most `limit` characters, anything unsafe to show escaped."""
    # A few times the limit is plenty to fill it: a message of megabytes is not split whole.
    window = text[: limit * 8]
    flat = " ".join(window.split())
    if len(flat) > limit:
        flat = flat[: limit - 3] + "..."
    elif len(window) < len(text):
        flat += "..."
    return inline(flat)


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
    setup_failed = setup_failure(summary)
    if setup_failed:
        # Not a result: say what went wrong before the figures, which only show what is left.
        parts = [setup_failure_text(summary)]
        if totals.executed and summary.iteration.status is not IterationStatus.SETUP_FAILED:
            parts.append(f"{totals.passed}/{totals.executed} executed tests passed before that")
    elif totals.executed == 0:
        parts = ["no tests executed"]
    else:
        rate = format_percent(pass_rate(totals))
        parts = [
            f"{totals.passed}/{totals.executed} executed tests passed "
            f"({rate}, target {target:.1f}%)"
        ]
    if summary.iteration.status is not IterationStatus.SETUP_FAILED:  # errors of no test
        parts.extend(_failing_phrase(summary))
    if not setup_failed:
        parts.extend(_deploy_phrase(summary))
    text = ", ".join(parts)
    remaining = len(summary.remaining_suites)
    if summary.iteration.partial and summary.iteration.status is not IterationStatus.RUNNING:
        # Only the tests that failed before ran: the others are not run by design.
        pending = summary.totals.pending
        text += f"; {plural(pending, 'test')} not run (--failed-only)" if pending else ""
    elif remaining:
        still = "remaining" if summary.iteration.status is IterationStatus.RUNNING else "not run"
        text += f"; {plural(remaining, 'suite')} {still}"
    resume = resume_hint(summary)
    if resume:
        text += f"; {resume}"
    return text


def setup_failure(summary: Summary) -> bool:
    """The iteration ended before its tests could show anything: a setup failure, no result."""
    return is_setup_failure(summary.iteration.status, summary.totals.executed)


def setup_failure_text(summary: Summary) -> str:
    """What ended an iteration before its tests ran, with the error recorded for it."""
    iteration = summary.iteration
    status = iteration.status
    if status is IterationStatus.DEPLOY_FAILED:
        return f"the deploy failed: {deploy_error(summary)}; no test ran, so there is no result"
    if status is IterationStatus.SETUP_FAILED:
        return f"{pytest_error(summary)}; no test ran, so there is no result"
    error = f" ({one_line(iteration.error)})" if iteration.error else ""
    if status is IterationStatus.CRASHED:
        return f"loop crashed before any test ran{error}"
    if status is IterationStatus.INTERRUPTED:
        return f"interrupted before any test ran{error}"
    return f"loop could not go on before any test ran{error}"


def pytest_error(summary: Summary) -> str:
    """Why pytest ran no test, in its own words (the error recorded with the iteration)."""
    error = one_line(summary.iteration.error) if summary.iteration.error else "no error recorded"
    return f"pytest could not run a test: {error}"


def deploy_error(summary: Summary) -> str:
    """Why the deploy failed: the error the iteration recorded (it names the services), else
    the failed services' own errors."""
    if summary.iteration.error:
        return one_line(summary.iteration.error)
    failed = [d for d in summary.deployments if d.status is DeployStatus.FAILED]
    reasons = [f"service {d.service}: {d.error}" if d.error else f"service {d.service}"
               for d in failed]  # fmt: skip
    return one_line("; ".join(reasons)) if reasons else "no error was recorded"


def resume_hint(summary: Summary) -> str | None:
    """How to finish an iteration that stopped with tests still to run."""
    iteration = summary.iteration
    command = f"`loop run --env {iteration.env} --resume` finishes it"
    if iteration.status is IterationStatus.CRASHED:
        if setup_failure(summary):
            return command  # the sentence before says loop crashed, and why
        error = f" ({one_line(iteration.error)})" if iteration.error else ""
        return f"loop crashed mid-iteration{error}: {command}"
    if iteration.status is IterationStatus.INTERRUPTED and summary.totals.pending:
        return command
    return None


def crash_line(deployment: Deployment) -> str:
    """ "service backend crashed during the tests: exited with code 1 at ...: RuntimeError"."""
    text = f"service {deployment.service} crashed during the tests"
    return f"{text}: {one_line(deployment.error)}" if deployment.error else text


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
    crashed = crashed_services(summary.deployments)
    phrases = [f"service {d.service} crashed during the tests" for d in crashed]
    broken = [
        d for d in summary.deployments if d.status in (DeployStatus.FAILED, DeployStatus.SKIPPED)
    ]
    if broken:
        phrases.append(f"{plural(len(broken), 'service')} not deployed")
    return phrases


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
    """How long the tests still to run take; callers leave it out for a setup failure, whose
    pending tests nothing will run."""
    estimate = summary.estimated_remaining_s
    if estimate is None:
        # The analysis gives no estimate when nothing finished has a duration to go by.
        return "unknown" if summary.remaining_suites or summary.totals.pending else "none"
    return "none" if estimate == 0 else format_duration(estimate)


def suites_by_name(suites: Iterable[SuiteSummary]) -> dict[str, SuiteSummary]:
    return {suite.name: suite for suite in suites}


# --- insights: wording shared by the three formats ---------------------------------------------

# How a format shows a node id or a suite name: as is in the terminal, as inline code in markdown.
Namer = Callable[[str], str]

TOP_FACTS = 3
NAMES_SHOWN = 3


def as_is(text: str) -> str:
    return text


def listing(items: Sequence[str], name: Namer = as_is, limit: int = NAMES_SHOWN) -> str:
    """The first few names, then how many more: "a, b, c and 2 more"."""
    shown = [name(item) for item in items[:limit]]
    hidden = len(items) - len(shown)
    text = ", ".join(shown)
    return f"{text} and {hidden} more" if hidden > 0 else text


def history_point(point: HistoryPoint) -> str:
    when = f"it{point.iteration}"
    if point.attempt > 1:
        when += f" rerun {point.attempt - 1}"
    return f"{when}: {label(point.outcome)}"


def history_text(history: Sequence[HistoryPoint]) -> str:
    """Oldest first: "it3: failed → it3 rerun 1: passed"."""
    return " → ".join(history_point(point) for point in history) or "no history recorded"


def integrity_subject(flag: IntegrityFlag, name: Namer = as_is) -> str:
    """The flagged test, with its file when the node id does not already say it."""
    subject = name(flag.test)
    if flag.file and not flag.test.startswith(flag.file):
        subject += f" (file {name(flag.file)})"
    return subject


def integrity_line(flag: IntegrityFlag, name: Namer = as_is) -> str:
    return f"{integrity_subject(flag, name)}: {one_line(flag.reason)}"


def false_green_subject(green: FalseGreen, name: Namer = as_is) -> str:
    if green.kind == "iteration":
        return "the iteration"
    if green.kind in ("suite", "test"):
        return f"{green.kind} {name(green.subject)}"
    return name(green.subject)


def false_green_line(green: FalseGreen, name: Namer = as_is) -> str:
    return f"{false_green_subject(green, name)}: {one_line(green.reason)}"


def diff_counts(diff: IterationDiff) -> str:
    """ "vs iteration 3: 4 fixed, 1 new failure, 2 still failing", then what else changed."""
    parts = [
        f"{len(diff.fixed)} fixed",
        plural(len(diff.new_failures), "new failure"),
        f"{len(diff.still_failing)} still failing",
    ]
    if diff.added:
        parts.append(f"{len(diff.added)} added")
    if diff.removed:
        parts.append(f"{len(diff.removed)} removed")
    if diff.changed_signatures:
        parts.append(plural(len(diff.changed_signatures), "changed failure signature"))
    return f"vs iteration {diff.compared_to}: " + ", ".join(parts)


def first_seen(cluster: Cluster, current: int) -> str | None:
    if cluster.first_iteration is None:
        return None
    text = f"first seen in iteration {cluster.first_iteration}"
    return text + " (this one)" if cluster.first_iteration == current else text


def cluster_facets(summary: Summary, cluster: Cluster) -> str:
    """ "environment, first seen in iteration 2": what kind of failure, and since when."""
    category = cluster.category
    parts = ["category unknown" if category is Category.UNKNOWN else category.value]
    seen = first_seen(cluster, summary.iteration.number)
    if seen:
        parts.append(seen)
    return ", ".join(parts)


PROJECTION_LABEL = "Projection (not a result)"


def projection_text(projection: Projection) -> str:
    """Worded as a projection, never as a figure: it says what has not been run yet."""
    return (
        f"final pass rate {format_percent(round_rate(projection.final_pass_rate))} "
        f"(range {format_percent(round_rate(projection.low))}"
        f"–{format_percent(round_rate(projection.high))}) "
        f"if the {plural(projection.remaining_tests, 'remaining test')} "
        f"{'runs' if projection.remaining_tests == 1 else 'run'}; "
        f"basis: {one_line(projection.basis)}"
    )


def round_rate(value: float | None) -> float | None:
    """A rate the analysis computed, to the one decimal every other rate has."""
    if value is None or math.isnan(value):
        return None
    return round(value, 1)


def to_green_text(trend: Trend) -> str:
    steps = trend.iterations_to_green
    if steps is not None and steps <= 0:
        return "the target is reached"
    if steps is not None:
        return f"about {plural(math.ceil(steps), 'more iteration')} to green at this pace"
    if trend.pace == "falling":
        return "the pass rate is falling: no estimate of iterations to green"
    if trend.pace == "flat":
        return "the pass rate is flat: no estimate of iterations to green"
    return "too little history for an estimate of iterations to green"


def trend_text(trend: Trend) -> str:
    rates = " → ".join(
        f"it{number} {format_percent(round_rate(rate))}" for number, rate in trend.pass_rates
    )
    return f"{rates or 'no pass rates yet'}; {to_green_text(trend)}"


def remaining_tests_by_suite(summary: Summary) -> list[tuple[str, int | None]]:
    """Each remaining suite with its tests still to run: the analysis's count where it gave one,
    else the suite's collected tests; None when neither is known."""
    counts = dict(summary.insights.remaining_suite_tests)
    suites = suites_by_name(summary.suites)
    result: list[tuple[str, int | None]] = []
    for name in summary.remaining_suites:
        suite = suites.get(name)
        result.append((name, counts.get(name, suite.figures.collected if suite else None)))
    return result


@dataclass(frozen=True)
class Fact:
    """One of the few facts a reader must see first; `severity` picks the terminal colour."""

    kind: str
    severity: str  # "error", "warning" or "info"
    text: str


def top_facts(summary: Summary, name: Namer = as_is, limit: int = TOP_FACTS) -> list[Fact]:
    """The most important facts, by priority: a service that crashed during the tests (what
    failed after it is the crash's), a failed deploy, an outage, integrity, new failures, false
    greens, the biggest failure pattern, flaky tests, known-issue failures, progress.

    Integrity flags come right after an outage, so they are always among the first facts.
    """
    facts = [fact for build in _FACT_BUILDERS if (fact := build(summary, name)) is not None]
    return facts[:limit]


def _crash_fact(summary: Summary, name: Namer) -> Fact | None:
    crashed = crashed_services(summary.deployments)
    if not crashed:
        return None
    text = "; ".join(crash_line(d) for d in crashed)
    return Fact("crashed_service", "error", f"{text} — failures after that are the crash's")


def _deploy_failed_fact(summary: Summary, name: Namer) -> Fact | None:
    if summary.iteration.status is not IterationStatus.DEPLOY_FAILED:
        return None
    return Fact("deploy_failed", "error", f"Deploy failed: {deploy_error(summary)}")


def _setup_failed_fact(summary: Summary, name: Namer) -> Fact | None:
    if summary.iteration.status is not IterationStatus.SETUP_FAILED:
        return None
    return Fact(
        "setup_failed", "error",
        f"Setup failed: {pytest_error(summary)}. No test ran: this iteration counts in no"
        " flaky, fixed, diff or trend figure.",
    )


def _outage_fact(summary: Summary, name: Namer) -> Fact | None:
    outage = summary.insights.outage
    if not outage:
        return None
    return Fact("outage", "error", f"Outage: {one_line(outage)}")


def _integrity_fact(summary: Summary, name: Namer) -> Fact | None:
    flags = summary.insights.integrity
    if not flags:
        return None
    shown = _first_two([integrity_line(flag, name) for flag in flags])
    return Fact(
        "integrity",
        "error",
        f"Integrity: {plural(len(flags), 'flag')} to check before trusting these results — "
        f"{shown}",
    )


def _new_failures_fact(summary: Summary, name: Namer) -> Fact | None:
    diff = summary.insights.diff
    if diff is None or not diff.new_failures:
        return None
    return Fact(
        "new_failures",
        "error",
        f"{plural(len(diff.new_failures), 'new failure')} since iteration {diff.compared_to}: "
        f"{listing(diff.new_failures, name)} "
        f"({len(diff.fixed)} fixed, {len(diff.still_failing)} still failing)",
    )


def _false_greens_fact(summary: Summary, name: Namer) -> Fact | None:
    greens = summary.insights.false_greens
    if not greens:
        return None
    shown = _first_two([false_green_line(green, name) for green in greens])
    return Fact(
        "false_greens",
        "warning",
        f"{plural(len(greens), 'false green')} (passing on paper, not in fact): {shown}",
    )


def _first_two(lines: list[str]) -> str:
    more = f"; and {len(lines) - 2} more" if len(lines) > 2 else ""
    return "; ".join(lines[:2]) + more


def _cluster_fact(summary: Summary, name: Namer) -> Fact | None:
    clusters = clusters_in_order(summary)
    if not clusters:
        return None
    biggest = clusters[0]
    text = (
        f"Biggest failure pattern: {one_line(biggest.label)} — "
        f"{plural(biggest.count, 'failure')} in {plural(len(biggest.suites), 'suite')} "
        f"({cluster_facets(summary, biggest)})"
    )
    if biggest.known_issue:
        text += f"; {known_issue_note(summary, biggest.known_issue)}"
    return Fact("cluster", "warning", text)


def _flaky_fact(summary: Summary, name: Namer) -> Fact | None:
    flaky = summary.insights.flaky
    if not flaky:
        return None
    tests = [history.test for history in flaky]
    return Fact(
        "flaky",
        "warning",
        f"{plural(len(flaky), 'flaky test')} (passed and failed without a change): "
        f"{listing(tests, name)}",
    )


def _known_issue_fact(summary: Summary, name: Namer) -> Fact | None:
    insights = summary.insights
    if not insights.failures_with_known_issue:
        return None
    count = insights.failures_with_known_issue
    verbs = (
        "matches a known issue and still counts"
        if count == 1
        else ("match a known issue and still count")
    )
    return Fact(
        "known_issues",
        "warning",
        f"{plural(count, 'failure')} {verbs} as failing; "
        f"{insights.failures_without_known_issue} without a known issue",
    )


def _progress_fact(summary: Summary, name: Namer) -> Fact:
    totals = summary.totals
    share = format_percent(percent(totals.executed, totals.collected))
    parts = [
        f"Progress: executed {totals.executed} of {totals.collected} collected tests ({share})"
    ]
    if setup_failure(summary):
        # Nothing will run them in this iteration: not "remaining", and no time to wait for.
        if totals.pending:
            parts.append(f"{plural(totals.pending, 'test')} not run")
        return Fact("progress", "info", "; ".join(parts))
    remaining = remaining_tests_by_suite(summary)
    if remaining:
        parts.append(f"{plural(len(remaining), 'suite')} remaining")
    if totals.pending:
        parts.append(f"{plural(totals.pending, 'test')} not run yet")
        parts.append(f"estimated remaining time {remaining_time(summary)}")
    return Fact("progress", "info", "; ".join(parts))


_FACT_BUILDERS: tuple[Callable[[Summary, Namer], Fact | None], ...] = (
    _crash_fact,
    _deploy_failed_fact,
    _setup_failed_fact,
    _outage_fact,
    _integrity_fact,
    _new_failures_fact,
    _false_greens_fact,
    _cluster_fact,
    _flaky_fact,
    _known_issue_fact,
    _progress_fact,
)
