"""`loop summarize --format markdown`: an iteration report a team pastes into a ticket.

Same sections as the reports teams write by hand, but every figure comes from the Summary, so
the verdict, the TOTAL row and the progress line cannot disagree, and a failure that matches a
known issue is listed as a failure with the issue's reason, never as "expected".

It opens with the verdict and the three facts that matter most (an outage, integrity flags, new
failures, ... by priority); integrity flags also get their own section before the results, since
they say whether the results can be trusted at all.

Every string from the records is made safe first (`safe_summary`): escape sequences, carriage
returns, bidi overrides and bytes that were not UTF-8 show as visible escapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from deployloop.models import (
    Cluster,
    Deployment,
    DeployStatus,
    Figures,
    IterationStatus,
    SuiteSummary,
    Summary,
    TestHistory,
)
from deployloop.report._format import (
    PROJECTION_LABEL,
    clusters_in_order,
    diff_counts,
    failing,
    failure_messages,
    false_green_line,
    figures_disagreement,
    first_seen,
    format_duration,
    format_percent,
    format_time,
    history_text,
    integrity_line,
    known_issue_note,
    label,
    one_line,
    partial_note,
    pass_rate,
    percent,
    plural,
    projection_text,
    remaining_note,
    remaining_tests_by_suite,
    remaining_time,
    revision_text,
    safe_summary,
    setup_failure,
    setup_failure_text,
    suites_by_name,
    suites_in_order,
    top_facts,
    trend_text,
    unclustered_failures,
    verdict_detail,
    verdict_word,
)

RESULT_HEADERS = (
    "Suite",
    "Priority",
    "Status",
    "Collected",
    "Executed",
    "Passed",
    "Failed",
    "Errors",
    "Skipped",
    "Pass rate",
    "Key issue",
)
# Text columns left, figures right, so numbers line up where the markdown is rendered.
RESULT_ALIGN = ("left", "right", "left") + ("right",) * 7 + ("left",)


@dataclass(frozen=True)
class _Limits:
    """How much of each list a report shows; None: all of it."""

    tests: int | None = None  # per cluster, root cause, diff group, flaky or broken list
    clusters: int | None = None
    log_lines: int | None = None  # per service, beside a cluster
    logs: int | None = None  # services' logs beside a cluster


FULL = _Limits()
SHORT = _Limits(tests=10, clusters=15, log_lines=8, logs=3)
MAX_SHORT_CHARS = 60_000  # a GitHub comment holds 65,536; a ticket less
FULL_NAME = "report-full.md"


def summary_to_markdown(summary: Summary, short: bool = False) -> str:
    """The report; `short`: lists cut to a few of each (the rest is in report-full.md, said
    where cut), and never more than MAX_SHORT_CHARS, whatever the size of the run."""
    summary = safe_summary(summary)
    limits = SHORT if short else FULL
    sections = [
        _title(summary),
        _top_facts(summary),
        _integrity(summary, limits),
        _results(summary),
        _failure_analysis(summary, limits),
        _flaky_and_broken(summary, limits),
        _false_greens(summary, limits),
        _changes(summary, limits),
        _progress(summary),
        _deployments(summary),
        _key_metrics(summary),
    ]
    text = "\n\n".join(section for section in sections if section) + "\n"
    if short and len(text) > MAX_SHORT_CHARS:
        # Still too long (hundreds of suites, long labels): whole lines up to the limit.
        note = (f"\n\n*Cut here to stay under {MAX_SHORT_CHARS} characters: the rest is in"
                f" {FULL_NAME}.*\n")
        room = MAX_SHORT_CHARS - len(note) - 20  # 20: a code block's closing fence
        cut = text.rfind("\n", 0, room)
        text = text[: cut if cut > 0 else room]
        fence = _open_fence(text)
        if fence:  # cut inside a code block: closed, so the note is read as text
            text += "\n" + fence
        text += note
    return text


def _open_fence(text: str) -> str | None:
    """The fence of a code block `text` leaves open (its last line within it), or None."""
    open_fence: str | None = None
    for line in text.splitlines():
        if open_fence is None and line.startswith("```"):
            open_fence = line[: len(line) - len(line.lstrip("`"))]
        elif open_fence is not None and line == open_fence:
            open_fence = None
    return open_fence


def _listed(lines: Sequence[str], limit: int | None, what: str, indent: str = "") -> list[str]:
    """The first `limit` lines, and one saying how many more there are and where."""
    if limit is None or len(lines) <= limit:
        return list(lines)
    more = len(lines) - limit
    return [*lines[:limit], f"{indent}- ... and {plural(more, what)} more in {FULL_NAME}"]


def cell(text: object) -> str:
    """One table cell: a `|` would end the cell and a newline the row, so neither survives."""
    return " ".join(str(text).split()).replace("|", "\\|")


def code(text: str) -> str:
    """Inline code that holds backticks too (a node id may carry any parameter text)."""
    fence = "`"
    while fence in text:
        fence += "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def table(headers: Sequence[str], align: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    marks = {"left": "---", "right": "---:"}
    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "| " + " | ".join(marks[a] for a in align) + " |",
    ]
    lines.extend("| " + " | ".join(cell(value) for value in row) + " |" for row in rows)
    return "\n".join(lines)


def _title(summary: Summary) -> str:
    iteration = summary.iteration
    verdict = f"**Verdict: {verdict_word(iteration.status)}** — {verdict_detail(summary)}"
    note = partial_note(summary)
    partial = f"\n\n{note}" if note else ""
    return f"# {iteration.env} — iteration {iteration.number}\n\n{verdict}{partial}"


def _top_facts(summary: Summary) -> str:
    return "\n".join(f"- {fact.text}" for fact in top_facts(summary, code))


def _integrity(summary: Summary, limits: _Limits) -> str:
    flags = summary.insights.integrity
    if not flags:
        return ""
    lines = [
        "## Integrity",
        "",
        f"{plural(len(flags), 'flag')}: check these before trusting the pass rate.",
        "",
    ]
    lines += _listed([f"- {integrity_line(flag, code)}" for flag in flags], limits.tests, "flag")
    return "\n".join(lines)


def _history_entry(history: TestHistory) -> str:
    return (
        f"- {code(history.test)} — {one_line(history.reason)}\n  - {history_text(history.history)}"
    )


def _flaky_and_broken(summary: Summary, limits: _Limits) -> str:
    insights = summary.insights
    if not insights.flaky and not insights.broken:
        return ""
    parts = ["## Flaky and broken tests"]
    for title, tests in (("Flaky", insights.flaky), ("Broken", insights.broken)):
        if tests:
            lines = [f"### {title} ({len(tests)})", ""]
            lines += _listed([_history_entry(h) for h in tests], limits.tests, "test")
            parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _false_greens(summary: Summary, limits: _Limits) -> str:
    greens = summary.insights.false_greens
    if not greens:
        return ""
    lines = [
        "## False greens",
        "",
        f"{plural(len(greens), 'result')} that passed on paper but not in fact:",
        "",
    ]
    lines += _listed([f"- {false_green_line(g, code)}" for g in greens], limits.tests, "result")
    return "\n".join(lines)


def _changes(summary: Summary, limits: _Limits) -> str:
    diff = summary.insights.diff
    if diff is None:
        return ""
    parts = [f"## Changes since iteration {diff.compared_to}", diff_counts(diff) + "."]
    groups = (
        ("New failures", diff.new_failures),
        ("Still failing", diff.still_failing),
        ("Fixed", diff.fixed),
        ("Added", diff.added),
        ("Removed", diff.removed),
    )
    for title, tests in groups:
        if tests:
            lines = [f"### {title} ({len(tests)})", ""]
            lines += _listed([f"- {code(test)}" for test in tests], limits.tests, "test")
            parts.append("\n".join(lines))
    if diff.changed_signatures:
        lines = [f"### Changed failure signatures ({len(diff.changed_signatures)})", ""]
        lines += _listed([
            f"- {code(change.test)}: {one_line(change.before)} → {one_line(change.after)}"
            for change in diff.changed_signatures
        ], limits.tests, "test")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _figure_cells(figures: Figures) -> list[str]:
    return [
        str(figures.collected),
        str(figures.executed),
        str(figures.passed),
        str(figures.failed),
        str(figures.errors),
        str(figures.skipped),
        format_percent(pass_rate(figures)),
    ]


def _suite_row(suite: SuiteSummary) -> list[str]:
    return [
        suite.name,
        str(suite.priority),
        label(suite.status),
        *_figure_cells(suite.figures),
        suite.key_issue or "",
    ]


def _results(summary: Summary) -> str:
    rows = [_suite_row(suite) for suite in suites_in_order(summary)]
    total = ["**TOTAL**", "", ""] + [f"**{value}**" for value in _figure_cells(summary.totals)]
    rows.append(total + [""])
    parts = ["## Results", table(RESULT_HEADERS, RESULT_ALIGN, rows)]
    totals = summary.totals
    if totals.xfailed or totals.xpassed:
        parts.append(
            f"Also {totals.xfailed} xfailed and {totals.xpassed} xpassed; "
            "neither is counted as passed."
        )
    wrong = figures_disagreement(summary)
    if wrong:
        parts.append("**Warning: the totals disagree with the suite rows** — " + "; ".join(wrong))
    return "\n\n".join(parts)


def _failure_analysis(summary: Summary, limits: _Limits) -> str:
    parts = ["## Failure analysis"]
    count = failing(summary.totals)
    if count == 0 and not summary.clusters:
        parts.append("No failing tests.")
    else:
        parts.append(
            f"{plural(count, 'failing test')} in {plural(len(summary.clusters), 'pattern')}."
            + _known_issue_counts(summary)
        )
    if summary.root_causes:
        parts.append(_root_causes(summary, limits))
    messages = failure_messages(summary)
    clusters = clusters_in_order(summary)
    shown = clusters if limits.clusters is None else clusters[: limits.clusters]
    for number, cluster in enumerate(shown, start=1):
        parts.append(_cluster(summary, number, cluster, messages, limits))
    if len(shown) < len(clusters):
        hidden = clusters[len(shown):]
        tests = sum(cluster.count for cluster in hidden)
        parts.append(f"*... and {plural(len(hidden), 'more pattern')} ({plural(tests, 'test')})"
                     f" in {FULL_NAME}.*")
    loose = unclustered_failures(summary)
    if loose:
        lines = [f"### Other failures ({len(loose)})", ""]
        lines += _listed([_test_line(n, messages) for n in loose], limits.tests, "test")
        parts.append("\n".join(lines))
    known = _known_issues(summary)
    if known:
        parts.append(known)
    return "\n\n".join(parts)


def _root_causes(summary: Summary, limits: _Limits) -> str:
    lines = ["### Root causes", ""]
    for cause in summary.root_causes:
        lines.append(f"- **{one_line(cause.label)}** — {plural(len(cause.clusters), 'pattern')},"
                     f" {plural(len(cause.tests), 'test')}")
        lines.extend(f"  - {one_line(item)}" for item in cause.evidence)
        lines.extend(f"  - pattern: {one_line(label)}" for label in cause.clusters)
        lines += _listed([
            f"  - {code(test)}" + (f" at {code(where)}" if where else "")
            for test, where in cause.tests
        ], limits.tests, "test", indent="  ")
    return "\n".join(lines)


def _cluster(
    summary: Summary,
    number: int,
    cluster: Cluster,
    messages: dict[str, str],
    limits: _Limits,
) -> str:
    lines = [
        f"### {number}. {one_line(cluster.label)} — {plural(cluster.count, 'failure')}",
        "",
        f"- Suites: {', '.join(cluster.suites) or '-'}",
        f"- Category: {cluster.category.value}",
    ]
    seen = first_seen(cluster, summary.iteration.number)
    if seen:
        lines.append(f"- {seen[0].upper()}{seen[1:]}")
    if cluster.known_issue:
        lines.append(f"- {known_issue_note(summary, cluster.known_issue)}")
    lines.append("- Tests:")
    lines += _listed(
        ["  " + _test_line(nodeid, messages) for nodeid in cluster.tests], limits.tests, "test",
        indent="  ",
    )
    logs = cluster.service_logs if limits.logs is None else cluster.service_logs[: limits.logs]
    if len(logs) < len(cluster.service_logs):
        lines += ["", f"({plural(len(cluster.service_logs) - len(logs), 'more service log')}"
                      f" in {FULL_NAME})"]
    for log in logs:
        lines += ["", f"Service log, `{cell(log.service)}`, while these tests ran:", ""]
        shown = log.lines if limits.log_lines is None else log.lines[: limits.log_lines]
        lines.append(fenced(shown))
        if len(shown) < len(log.lines):
            lines.append(f"({plural(len(log.lines) - len(shown), 'more line')} in {FULL_NAME})")
    return "\n".join(lines)


def fenced(lines: Sequence[str]) -> str:
    """A code block holding `lines` as they are: its fence is longer than any run of
    backticks in them."""
    body = "\n".join(one_line(line) for line in lines)
    fence = "```"
    while fence in body:
        fence += "`"
    return f"{fence}text\n{body}\n{fence}"


def _test_line(nodeid: str, messages: dict[str, str]) -> str:
    message = messages.get(nodeid)
    return f"- {code(nodeid)}" + (f" — {message}" if message else "")


def _known_issues(summary: Summary) -> str:
    if not summary.known_issues:
        return ""
    lines = ["### Known issues", ""]
    for issue in summary.known_issues:
        if issue.failures:
            seen = f"{plural(len(issue.failures), 'failure')} matched, still counted as failing"
        else:
            seen = "not matched this iteration"
        expired = "; **expired**" if issue.expired else ""
        lines.append(f"- {issue.id} — {seen}{expired}: {one_line(issue.reason)}")
    return "\n".join(lines)


def _known_issue_counts(summary: Summary) -> str:
    insights = summary.insights
    known, unknown = insights.failures_with_known_issue, insights.failures_without_known_issue
    if not known and not unknown:
        return ""  # the analysis did not count them
    return (
        f" {known} with a known issue (still counted as failing), {unknown} without a known issue."
    )


def _progress(summary: Summary) -> str:
    totals = summary.totals
    share = format_percent(percent(totals.executed, totals.collected))
    lines = [
        "## Progress",
        "",
        f"- Executed {totals.executed} of {totals.collected} collected tests ({share}); "
        f"{totals.skipped} skipped, {totals.xfailed} xfailed, {totals.xpassed} xpassed, "
        f"{totals.pending} not run yet.",
    ]
    if summary.suites:
        lines.append("- Per suite:")
        for suite in suites_in_order(summary):
            figures = suite.figures
            rate = format_percent(percent(figures.executed, figures.collected))
            lines.append(
                f"  - {suite.name}: executed {figures.executed} of {figures.collected} ({rate})"
            )
    suites = suites_by_name(summary.suites)
    remaining = remaining_tests_by_suite(summary)
    if setup_failure(summary):
        # Its tests are not waiting to run: the iteration is over. No time, no projection.
        lines.append(f"- Not run: {setup_failure_text(summary)}.")
    elif remaining:
        lines.append(f"- Remaining suites ({len(remaining)}):")
        for name, tests in remaining:
            size = f", {plural(tests, 'test')}" if tests is not None else ""
            lines.append(f"  - {name} ({remaining_note(suites.get(name))}{size})")
    else:
        lines.append("- Remaining suites: none.")
    if not setup_failure(summary):
        lines.append(f"- Estimated remaining time: {remaining_time(summary)}")
    insights = summary.insights
    if insights.projection is not None:
        lines.append(f"- **{PROJECTION_LABEL}:** {projection_text(insights.projection)}")
    if insights.trend is not None:
        lines.append(f"- Trend: {trend_text(insights.trend)}")
    return "\n".join(lines)


def _deployments(summary: Summary) -> str:
    if not summary.deployments:
        return "## Deployment status\n\nNo services deployed in this iteration."
    # Image and rollback columns only when some service has them: local deploys have neither.
    images = any(d.image for d in summary.deployments)
    rollbacks = any(d.rolled_back_to for d in summary.deployments)
    headers = ["Service", "Status", "URL"]
    headers += ["Image"] if images else []
    headers += ["Revision"]
    headers += ["Rolled back to"] if rollbacks else []
    headers += ["Error"]
    rows = []
    for d in summary.deployments:
        row = [d.service, _deploy_status(d), d.url or "-"]
        row += [d.image or "-"] if images else []
        row += [revision_text(d)]
        row += [d.rolled_back_to or "-"] if rollbacks else []
        row += [one_line(d.error) if d.error else (f"warning: {one_line(d.warning)}"
                                                     if d.warning else "")]
        rows.append(row)
    return "## Deployment status\n\n" + table(headers, ("left",) * len(headers), rows)


def _deploy_status(deployment: Deployment) -> str:
    if deployment.status is DeployStatus.CRASHED:
        return "crashed during the tests"  # it was ready: the tests ran against it, then not
    return label(deployment.status)


def _key_metrics(summary: Summary) -> str:
    iteration = summary.iteration
    totals = summary.totals
    rate = format_percent(pass_rate(totals))
    lines = [
        "## Key metrics",
        "",
        f"- Elapsed: {format_duration(summary.elapsed_s)}",
        f"- Pass rate: {rate} ({totals.passed}/{totals.executed} executed), "
        f"target {iteration.target_pass_rate:.1f}%",
        f"- Failing: {failing(totals)} ({totals.failed} failed, {plural(totals.errors, 'error')})",
        f"- Git SHA: {code(iteration.git_sha) if iteration.git_sha else 'unknown'}",
        f"- Started: {format_time(iteration.started_at)}; "
        f"finished: {format_time(iteration.finished_at) if iteration.finished_at else 'not yet'}",
    ]
    if iteration.error:
        lines.append(f"- {_ERROR_NAMES.get(iteration.status, 'Loop error')}: "
                     f"{one_line(iteration.error)}")  # fmt: skip
    return "\n".join(lines)


# What the error recorded with an iteration is, by how the iteration ended.
_ERROR_NAMES = {
    IterationStatus.DEPLOY_FAILED: "Deploy error",
    IterationStatus.SETUP_FAILED: "Why pytest ran no test",
    IterationStatus.CRASHED: "Why loop crashed",
    IterationStatus.INTERRUPTED: "Why it stopped",
}
