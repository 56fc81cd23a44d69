"""`loop summarize --format markdown`: an iteration report a team pastes into a ticket.

Same sections as the reports teams write by hand, but every figure comes from the Summary, so
the verdict, the TOTAL row and the progress line cannot disagree, and a failure that matches a
known issue is listed as a failure with the issue's reason, never as "expected".
"""

from __future__ import annotations

from collections.abc import Sequence

from deployloop.models import Cluster, Figures, SuiteSummary, Summary
from deployloop.report._format import (
    clusters_in_order,
    failing,
    failure_messages,
    figures_disagreement,
    format_duration,
    format_percent,
    format_time,
    known_issue_note,
    label,
    one_line,
    pass_rate,
    percent,
    plural,
    remaining_note,
    remaining_time,
    suites_by_name,
    suites_in_order,
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


def summary_to_markdown(summary: Summary) -> str:
    sections = [
        _title(summary),
        _results(summary),
        _failure_analysis(summary),
        _progress(summary),
        _deployments(summary),
        _key_metrics(summary),
    ]
    return "\n\n".join(sections) + "\n"


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
    return f"# {iteration.env} — iteration {iteration.number}\n\n{verdict}"


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


def _failure_analysis(summary: Summary) -> str:
    parts = ["## Failure analysis"]
    count = failing(summary.totals)
    if count == 0 and not summary.clusters:
        parts.append("No failing tests.")
    else:
        parts.append(
            f"{plural(count, 'failing test')} in {plural(len(summary.clusters), 'pattern')}."
        )
    messages = failure_messages(summary)
    for number, cluster in enumerate(clusters_in_order(summary), start=1):
        parts.append(_cluster(summary, number, cluster, messages))
    loose = unclustered_failures(summary)
    if loose:
        lines = [f"### Other failures ({len(loose)})", ""]
        lines.extend(_test_line(nodeid, messages) for nodeid in loose)
        parts.append("\n".join(lines))
    known = _known_issues(summary)
    if known:
        parts.append(known)
    return "\n\n".join(parts)


def _cluster(summary: Summary, number: int, cluster: Cluster, messages: dict[str, str]) -> str:
    lines = [
        f"### {number}. {one_line(cluster.label)} — {plural(cluster.count, 'failure')}",
        "",
        f"- Suites: {', '.join(cluster.suites) or '-'}",
    ]
    if cluster.known_issue:
        lines.append(f"- {known_issue_note(summary, cluster.known_issue)}")
    lines.append("- Tests:")
    lines.extend("  " + _test_line(nodeid, messages) for nodeid in cluster.tests)
    return "\n".join(lines)


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
    suites = suites_by_name(summary.suites)
    if summary.remaining_suites:
        lines.append(f"- Remaining suites ({len(summary.remaining_suites)}):")
        for name in summary.remaining_suites:
            suite = suites.get(name)
            size = f", {plural(suite.figures.collected, 'test')}" if suite else ""
            lines.append(f"  - {name} ({remaining_note(suite)}{size})")
    else:
        lines.append("- Remaining suites: none.")
    lines.append(f"- Estimated remaining time: {remaining_time(summary)}")
    return "\n".join(lines)


def _deployments(summary: Summary) -> str:
    if not summary.deployments:
        return "## Deployment status\n\nNo services deployed in this iteration."
    rows = [
        [
            d.service,
            label(d.status),
            d.url or "-",
            d.revision or "-",
            one_line(d.error) if d.error else "",
        ]
        for d in summary.deployments
    ]
    headers = ("Service", "Status", "URL", "Revision", "Error")
    return "## Deployment status\n\n" + table(headers, ("left",) * 5, rows)


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
        lines.append(f"- Loop error: {one_line(iteration.error)}")
    return "\n".join(lines)
