"""Rich output for `loop run`, `loop status`, `loop summarize` and `loop history`.

Every string from the records (suite names, node ids such as ``test_x[param]``, error text) is
made safe to show first (`safe_summary`: no escape sequence, carriage return or bidi override
reaches the terminal) and goes into a `Text`, never through console markup, so square brackets
print as they were recorded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from rich import box
from rich.console import Console, Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from deployloop.analysis.setup_failure import crashed_services
from deployloop.models import (
    Cluster,
    DeployStatus,
    Figures,
    IterationRecord,
    IterationStatus,
    SuiteStatus,
    Summary,
)
from deployloop.report._format import (
    PROJECTION_LABEL,
    Fact,
    cluster_facets,
    clusters_in_order,
    crash_line,
    deploy_error,
    diff_counts,
    failing,
    false_green_line,
    figures_disagreement,
    format_duration,
    format_percent,
    format_time,
    integrity_line,
    known_issue_note,
    label,
    listing,
    make_safe,
    one_line,
    partial_note,
    pass_rate,
    percent,
    plural,
    projection_text,
    pytest_error,
    remaining_time,
    revision_text,
    safe_summary,
    seconds_between,
    setup_failure,
    short_sha,
    suites_in_order,
    top_facts,
    trend_text,
    verdict_detail,
    verdict_word,
)

TOP_CLUSTERS = 5
LOG_LINES_PER_SERVICE = 6  # of a cluster's evidence; report.md and summary.json hold all
TESTS_PER_CLUSTER = 3
ATTENTION_LINES = 5  # per kind: integrity flags, false greens

_FACT_STYLES = {"error": "bold red", "warning": "yellow", "info": ""}

_ITERATION_STYLES = {
    IterationStatus.PASSED: "bold green",
    IterationStatus.RUNNING: "bold yellow",
    IterationStatus.INTERRUPTED: "bold yellow",
    IterationStatus.FAILED: "bold red",
    IterationStatus.DEPLOY_FAILED: "bold red",
    IterationStatus.SETUP_FAILED: "bold red",
    IterationStatus.ERROR: "bold red",
    IterationStatus.CRASHED: "bold red",
}
_SUITE_STYLES = {
    SuiteStatus.PASSED: "green",
    SuiteStatus.RUNNING: "yellow",
    SuiteStatus.PENDING: "dim",
    SuiteStatus.NOT_RUN: "dim",
    SuiteStatus.INTERRUPTED: "yellow",
}
_DEPLOY_STYLES = {
    DeployStatus.READY: "green",
    DeployStatus.PENDING: "yellow",
    DeployStatus.FAILED: "bold red",
    DeployStatus.SKIPPED: "red",
    DeployStatus.CRASHED: "bold red",
}


def render_summary(summary: Summary, console: Console) -> None:
    summary = safe_summary(summary)
    iteration = summary.iteration
    console.print(Text(f"{iteration.env} — iteration {iteration.number}", style="bold"))
    _print_partial(summary, console)
    attention = _attention(summary)
    if attention is not None:
        console.print(attention)
        console.print()
    console.print(_suite_table(summary, console.width))
    for problem in figures_disagreement(summary):
        console.print(Text(f"Totals disagree with the suite rows: {problem}", style="bold red"))
    if summary.root_causes:
        console.print(_root_causes(summary))
        console.print()
    if summary.clusters:
        console.print(_clusters(summary))
        console.print()
    lines = _insight_lines(summary)
    for line in lines:
        console.print(line)
    if lines:
        console.print()
    if summary.deployments:
        console.print(_deployment_table(summary, console.width))
    # A setup failure has tests left that nothing will run: no time to wait for them.
    remaining = "" if setup_failure(summary) else f"estimated remaining {remaining_time(summary)}, "
    console.print(
        Text(
            f"Elapsed {format_duration(summary.elapsed_s)}, {remaining}"
            f"git {short_sha(iteration.git_sha)}"
        )
    )
    projection = summary.insights.projection
    if projection is not None:
        line = Text()
        line.append(f"{PROJECTION_LABEL}: ", style="bold")
        line.append(projection_text(projection))
        console.print(line)
    console.print(_verdict(summary))


def _print_partial(summary: Summary, console: Console) -> None:
    note = partial_note(summary)
    if note:
        console.print(Text(note, style="yellow"))


def render_status(summary: Summary, console: Console) -> None:
    summary = safe_summary(summary)
    iteration = summary.iteration
    totals = summary.totals
    done = totals.collected - totals.pending
    header = Text(f"Iteration {iteration.number} ({iteration.env}): ")
    header.append(label(iteration.status), style=_iteration_style(iteration.status))
    console.print(header)
    _print_partial(summary, console)
    if totals.collected:
        # The bar fills with every finished test, skipped ones too; the text says how many ran.
        bar = ProgressBar(total=totals.collected, completed=done, width=40)
        share = format_percent(percent(totals.executed, totals.collected))
        counts = Text(
            f" executed {totals.executed} of {totals.collected} ({share}); "
            f"{totals.skipped} skipped, {totals.pending} pending"
        )
        console.print(_grid(bar, counts))
    for test in summary.running[:3]:
        line = Text("  running ", style="cyan")
        line.append(f"{test.nodeid} ({test.suite}) for {format_duration(test.running_s)}")
        console.print(line)
    if summary.suites:
        console.print(_status_table(summary, console.width))
    else:
        console.print(Text("No suites collected yet."))
    console.print(_verdict(summary))
    console.print(Text("Top facts", style="bold"))
    console.print(_facts(top_facts(summary)))


def render_history(rows: Sequence[tuple[IterationRecord, Figures]], console: Console) -> None:
    table = Table(title=Text("Iterations"), box=box.SIMPLE_HEAVY, collapse_padding=True)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    # Started may wrap at its space, date over time, so that the figures stay whole.
    table.add_column("Started", min_width=10)
    table.add_column("Duration", no_wrap=True)
    headers = ("Executed", "Passed", "Failed", "Errors", "Pass rate")
    if console.width < _NARROW + 5:
        headers = ("Exec", "Pass", "Fail", "Err", "Rate")
    for name in headers:
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("Git SHA", no_wrap=True)
    for record, figures in rows:
        record = make_safe(record)
        table.add_row(
            Text(str(record.number)),
            Text(label(record.status), style=_iteration_style(record.status)),
            Text(format_time(record.started_at)[:16]),  # to the minute: seconds are noise here
            Text(_duration(record)),
            Text(str(figures.executed)),
            Text(str(figures.passed)),
            _bad(figures.failed),
            _bad(figures.errors),
            # Not a result: no rate to read across iterations (`--format json` says why).
            Text("left out", style="dim") if record.left_out else _rate(figures),
            Text(short_sha(record.git_sha)),
        )
    console.print(table)


def _duration(record: IterationRecord) -> str:
    if record.finished_at is None:
        # No end time and not running: the process died without recording one.
        return "running" if record.status is IterationStatus.RUNNING else "-"
    return format_duration(seconds_between(record.started_at, record.finished_at))


def verdict(summary: Summary) -> Text:
    return _verdict(safe_summary(summary))


def _verdict(summary: Summary) -> Text:
    status = summary.iteration.status
    text = Text(f"Verdict: {verdict_word(status)}", style=_iteration_style(status))
    text.append(f" — {verdict_detail(summary)}")
    return text


def _attention(summary: Summary) -> Group | None:
    """What must be read before the tables: a service that crashed during the tests (failures
    after it are the crash's), a failed deploy, an outage, integrity flags, false greens."""
    insights = summary.insights
    crashed = crashed_services(summary.deployments)
    deploy_failed = summary.iteration.status is IterationStatus.DEPLOY_FAILED
    setup_failed = summary.iteration.status is IterationStatus.SETUP_FAILED
    if not (
        crashed or deploy_failed or setup_failed or insights.outage or insights.integrity
        or insights.false_greens
    ):
        return None
    rows: list[tuple[str, str, str]] = []  # (label, text, style)
    rows += [("Crashed", crash_line(d), "red") for d in crashed]
    if deploy_failed:
        ran = "" if summary.totals.executed else "; no test ran"
        rows.append(("Deploy failed", f"{deploy_error(summary)}{ran}", "red"))
    if setup_failed:
        rows.append(("Setup failed", pytest_error(summary), "red"))
    if insights.outage:
        rows.append(("Outage", one_line(insights.outage), "red"))
    rows += [("Integrity", integrity_line(f), "red") for f in insights.integrity[:ATTENTION_LINES]]
    rows += _more(len(insights.integrity), "integrity flag")
    greens = insights.false_greens[:ATTENTION_LINES]
    rows += [("False green", false_green_line(g), "yellow") for g in greens]
    rows += _more(len(insights.false_greens), "false green")
    grid = Table.grid(padding=0)
    grid.add_column(no_wrap=True)
    grid.add_column()
    for name, body, style in rows:
        text = Text()
        if name:
            text.append(f"{name}: ", style=f"bold {style}")
        text.append(body, style=style)
        grid.add_row(Text("  ! " if name else "    ", style=f"bold {style}"), text)
    return Group(Text("Attention", style="bold red"), grid)


def _more(count: int, word: str) -> list[tuple[str, str, str]]:
    hidden = count - ATTENTION_LINES
    return [("", f"... and {plural(hidden, 'more ' + word)}", "dim")] if hidden > 0 else []


def _insight_lines(summary: Summary) -> list[Text]:
    """Known-issue counts, flaky and broken tests, the diff and the trend: a line each."""
    insights = summary.insights
    lines = []
    if insights.failures_with_known_issue:
        lines.append(
            Text(
                f"Known issues: {plural(insights.failures_with_known_issue, 'failure')} with a "
                f"known issue (still counted as failing), "
                f"{insights.failures_without_known_issue} without",
                style="yellow",
            )
        )
    for word, histories, style in (
        ("Flaky", insights.flaky, "yellow"),
        ("Broken", insights.broken, "red"),
    ):
        if histories:
            names = listing([history.test for history in histories])
            lines.append(Text(f"{word}: {len(histories)} — {names}", style=style))
    if insights.diff is not None:
        style = "red" if insights.diff.new_failures else ""
        lines.append(Text(diff_counts(insights.diff), style=style))
    if insights.trend is not None and len(insights.trend.pass_rates) > 1:  # a trend needs two
        lines.append(Text(f"Trend: {trend_text(insights.trend)}"))
    return lines


def _facts(facts: Sequence[Fact]) -> Table:
    """Top facts as bullets; a long fact wraps under its own text, not under the bullet."""
    grid = Table.grid(padding=0)
    grid.add_column(no_wrap=True)
    grid.add_column()
    for fact in facts:
        grid.add_row(Text("  • "), Text(fact.text, style=_FACT_STYLES.get(fact.severity, "")))
    return grid


def _grid(*cells: Text | ProgressBar) -> Table:
    grid = Table.grid(padding=0)
    grid.add_row(*cells)
    return grid


def _iteration_style(status: IterationStatus) -> str:
    return _ITERATION_STYLES.get(status, "bold red")


def _bad(count: int) -> Text:
    """A failure or error count: red as soon as it is not zero."""
    return Text(str(count), style="bold red" if count else "")


def _rate(figures: Figures) -> Text:
    style = "" if figures.executed == 0 else ("green" if failing(figures) == 0 else "red")
    return Text(format_percent(pass_rate(figures)), style=style)


def _figure_cells(figures: Figures) -> list[Text]:
    return [
        Text(str(figures.collected)),
        Text(str(figures.executed)),
        Text(str(figures.passed)),
        _bad(figures.failed),
        _bad(figures.errors),
        Text(str(figures.skipped)),
        _rate(figures),
    ]


# The full table needs ~125 columns. Narrower, short headers keep every figure readable instead
# of letting rich cut them to "Coll…"; below 100 the key issue column goes (the failure
# patterns below the table say the same), and long suite names wrap rather than figures.
_FIGURE_HEADERS = ("Collected", "Executed", "Passed", "Failed", "Errors", "Skipped", "Pass rate")
_SHORT_HEADERS = ("Coll", "Exec", "Pass", "Fail", "Err", "Skip", "Rate")
_WIDE = 125
_NARROW = 100


def _cap(width: int, cells: int) -> int | None:
    """A column's cap on a terminal; none when output goes to a file or a pipe (the CLI then
    gives the console a width no line reaches): a log keeps every id and error whole."""
    return None if width >= _UNBOUNDED else cells


# Console widths from here on are not a screen's (see cli._console).
_UNBOUNDED = 1_000


def _suite_table(summary: Summary, width: int) -> Table:
    table = Table(title=Text("Results"), box=box.SIMPLE_HEAVY, collapse_padding=True)
    wide, narrow = width >= _WIDE, width < _NARROW
    table.add_column("Suite", min_width=10)
    if not narrow:  # rows are in priority order already
        table.add_column("Prio", justify="right", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    for name in _FIGURE_HEADERS if wide else _SHORT_HEADERS:
        table.add_column(name, justify="right", no_wrap=True)
    if not narrow:
        table.add_column("Key issue", overflow="fold", max_width=_cap(width, 40))
    suites = suites_in_order(summary)
    for index, suite in enumerate(suites):
        cells = [Text(suite.name, style="red" if failing(suite.figures) else "")]
        if not narrow:
            cells.append(Text(str(suite.priority)))
        cells.append(Text(label(suite.status), style=_SUITE_STYLES.get(suite.status, "red")))
        cells.extend(_figure_cells(suite.figures))
        if not narrow:
            cells.append(Text(one_line(suite.key_issue) if suite.key_issue else ""))
        # end_section on the last suite draws a rule above TOTAL: it is not one more suite.
        table.add_row(*cells, end_section=index == len(suites) - 1)
    blanks = [Text("")] * (1 if narrow else 2)
    table.add_row(Text("TOTAL"), *blanks, *_figure_cells(summary.totals), style="bold")
    return table


def _clusters(summary: Summary) -> Text:
    """Top failure patterns as a list: node ids stay on one line, ready to copy into pytest."""
    clusters = clusters_in_order(summary)
    shown = clusters[:TOP_CLUSTERS]
    text = Text(f"Failure patterns ({len(shown)} of {len(clusters)})", style="bold")
    for cluster in shown:
        text.append("\n")
        text.append(f"{cluster.count:>4} ", style="bold red")
        text.append(one_line(cluster.label))
        text.append(f"  [{', '.join(cluster.suites)}]", style="dim")
        text.append(f"  {cluster_facets(summary, cluster)}", style="dim")
        if cluster.known_issue:
            text.append("\n     " + known_issue_note(summary, cluster.known_issue), style="yellow")
        for test in _first_tests(cluster):
            text.append(f"\n     {test}")
        for log in cluster.service_logs:
            text.append(f"\n     {one_line(log.service)} log:", style="cyan")
            for line in log.lines[:LOG_LINES_PER_SERVICE]:
                text.append(f"\n       {one_line(line)}", style="dim")
            more = len(log.lines) - LOG_LINES_PER_SERVICE
            if more > 0:
                text.append(f"\n       ... and {plural(more, 'more line')} in report.md",
                            style="dim")
    hidden = len(clusters) - len(shown)
    if hidden:
        text.append(f"\n     ... and {plural(hidden, 'more pattern')}", style="dim")
    return text


def _root_causes(summary: Summary) -> Text:
    """Causes that tie several patterns, above the patterns: read these first."""
    text = Text("Root causes", style="bold")
    for cause in summary.root_causes:
        text.append("\n")
        text.append(f"{len(cause.tests):>4} ", style="bold red")
        text.append(one_line(cause.label), style="bold")
        text.append(f"  ({plural(len(cause.clusters), 'pattern')} below)", style="dim")
        for item in cause.evidence:
            text.append(f"\n     {one_line(item)}")
        for test, where in cause.tests[:TESTS_PER_CLUSTER]:
            text.append(f"\n     {test}" + (f"  at {where}" if where else ""), style="dim")
        hidden = len(cause.tests) - TESTS_PER_CLUSTER
        if hidden > 0:
            text.append(f"\n     ... and {plural(hidden, 'more test')}", style="dim")
    return text


def _first_tests(cluster: Cluster) -> list[str]:
    tests = list(cluster.tests[:TESTS_PER_CLUSTER])
    hidden = cluster.count - len(tests)
    if hidden > 0:
        tests.append(f"... and {plural(hidden, 'more test')}")
    return tests


def _deployment_table(summary: Summary, width: int) -> Group:
    table = Table(title=Text("Deployments"), box=box.SIMPLE_HEAVY)
    # Image and rollback columns only when some service has them: local deploys have neither.
    # Below 100 columns they go under the table instead, one line per service.
    narrow = width < _NARROW
    images = any(d.image for d in summary.deployments)
    rollbacks = any(d.rolled_back_to for d in summary.deployments)
    names = ["Service", "Status", "URL"]
    names += ["Image"] if images and not narrow else []
    names += ["Revision"]
    names += ["Rolled back to"] if rollbacks and not narrow else []
    longest = max((len(d.image or "") for d in summary.deployments), default=0)
    for name in names:
        # On a wide terminal an image reference stays whole: it gets copied into commands.
        whole = min(longest, 60) if name == "Image" and width >= _WIDE else None
        table.add_column(name, overflow="fold", min_width=whole)
    table.add_column("Error", overflow="fold", max_width=_cap(width, 60))
    notes = Text()
    for d in summary.deployments:
        cells = [
            Text(d.service),
            Text(label(d.status), style=_DEPLOY_STYLES.get(d.status, "bold red")),
            Text(d.url or "-"),
        ]
        cells += [Text(d.image or "-")] if "Image" in names else []
        cells += [Text(revision_text(d))]
        cells += (
            [Text(d.rolled_back_to or "-", style="yellow")] if "Rolled back to" in names else []
        )
        if d.error or not d.warning:
            cells += [Text(one_line(d.error) if d.error else "", style="red")]
        else:
            cells += [Text(f"warning: {one_line(d.warning)}", style="yellow")]
        table.add_row(*cells)
        if narrow and (d.image or d.rolled_back_to):
            notes.append("\n" if notes else "")
            notes.append(f"  {d.service}: ")
            if d.image:
                notes.append(f"image {d.image}")
            if d.image and d.rolled_back_to:
                notes.append("; ")
            if d.rolled_back_to:
                notes.append(f"rolled back to {d.rolled_back_to}", style="yellow")
    return Group(table, notes) if notes else Group(table)


def _status_table(summary: Summary, width: int) -> Table:
    table = Table(box=box.SIMPLE)
    table.add_column("Suite", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    headers = ("Done", "Passed", "Failed", "Errors", "Pass rate")
    if width < _NARROW:  # short headers rather than "Fail…" and "Pass ra…"
        headers = ("Done", "Pass", "Fail", "Err", "Rate")
    for name in headers:
        table.add_column(name, justify="right", no_wrap=True)
    suites = suites_in_order(summary)
    shown = suites
    if len(suites) > _STATUS_ROWS:
        # One screen: the suites that need a look; passed and waiting ones as a count.
        shown = [s for s in suites if s.status not in _QUIET_STATUSES][:_STATUS_ROWS]
    for suite in shown:
        figures = suite.figures
        table.add_row(
            Text(suite.name),
            Text(label(suite.status), style=_SUITE_STYLES.get(suite.status, "red")),
            Text(f"{figures.collected - figures.pending}/{figures.collected}"),
            Text(str(figures.passed)),
            _bad(figures.failed),
            _bad(figures.errors),
            _rate(figures),
        )
    hidden = [s for s in suites if s not in shown]
    if hidden:
        counts = Counter(label(s.status) for s in hidden)
        text = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        table.add_row(Text(f"... {len(hidden)} more suites: {text}", style="dim"))
    return table


_STATUS_ROWS = 12
_QUIET_STATUSES = frozenset({SuiteStatus.PASSED, SuiteStatus.PENDING, SuiteStatus.NOT_RUN})
