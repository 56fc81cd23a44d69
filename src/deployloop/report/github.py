"""GitHub Actions, when `GITHUB_ACTIONS=true`: the iteration in the job's step summary, and one
error annotation per failure pattern, at its first test's failing line.

Workflow commands are lines on stdout (`::error file=F,line=L,title=T::message`); their text
is escaped the way the runner reads it (`%`, CR and LF in the message; also `:` and `,` in a
property), so a test's message cannot end the command early or start another. The step
summary ($GITHUB_STEP_SUMMARY, markdown, at most 1 MiB per step) gets the verdict, the totals,
the suite table and the top patterns, kept well under that.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from deployloop.analysis.root_causes import failing_line
from deployloop.models import Summary, TestRow
from deployloop.report._format import (
    clusters_in_order,
    one_line,
    plural,
    safe_summary,
    verdict_detail,
    verdict_word,
)
from deployloop.report.markdown import code

TOP_PATTERNS = 10
TESTS_PER_PATTERN = 5
MAX_SUMMARY_CHARS = 60_000  # of the 1 MiB GitHub allows a step: plenty left for other steps


def in_actions(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get("GITHUB_ACTIONS") == "true"


def error_annotations(summary: Summary, rows: Sequence[TestRow]) -> list[str]:
    """One `::error` line per failure pattern, at the file:line where its first test failed
    (the pattern's file alone when the line is not known)."""
    summary = safe_summary(summary)
    # The summary's node ids were made safe to show: the rows are looked up the same way.
    by_nodeid = {one_line(row.nodeid): row for row in rows}
    lines = []
    for cluster in clusters_in_order(summary):
        first = by_nodeid.get(cluster.tests[0]) if cluster.tests else None
        where = failing_line(first) if first is not None else None
        properties = {"title": f"{cluster.count} failing: {one_line(cluster.label)}"[:200]}
        if where is not None:
            path, _, line = where.rpartition(":")
            properties = {"file": one_line(path), "line": line, **properties}
        elif first is not None:
            properties = {"file": one_line(first.file), **properties}
        message = "\n".join(
            [one_line(cluster.label), *cluster.tests[:TESTS_PER_PATTERN]]
            + ([f"... and {cluster.count - TESTS_PER_PATTERN} more"]
               if cluster.count > TESTS_PER_PATTERN else [])
        )
        props = ",".join(f"{key}={_property(value)}" for key, value in properties.items())
        lines.append(f"::error {props}::{_data(message)}")
    return lines


def step_summary(summary: Summary) -> str:
    summary = safe_summary(summary)
    iteration = summary.iteration
    totals = summary.totals
    lines = [
        "",  # apart from what an earlier step wrote
        f"### deployloop: {iteration.env} iteration {iteration.number}:"
        f" {verdict_word(iteration.status)}",
        "",
        one_line(verdict_detail(summary)),
        "",
        "| Suite | Collected | Executed | Passed | Failed | Errors | Skipped |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for suite in summary.suites:
        f = suite.figures
        lines.append(f"| {_cell(suite.name)} | {f.collected} | {f.executed} | {f.passed} |"
                     f" {f.failed} | {f.errors} | {f.skipped} |")
    lines.append(f"| **TOTAL** | {totals.collected} | {totals.executed} | {totals.passed} |"
                 f" {totals.failed} | {totals.errors} | {totals.skipped} |")
    clusters = clusters_in_order(summary)
    if clusters:
        lines += ["", f"#### Failure patterns ({len(clusters)})", ""]
        for cluster in clusters[:TOP_PATTERNS]:
            lines.append(f"- **{cluster.count}** {_text(one_line(cluster.label))}")
            lines += [f"  - {code(t)}" for t in cluster.tests[:TESTS_PER_PATTERN]]
            if cluster.count > TESTS_PER_PATTERN:
                more = cluster.count - TESTS_PER_PATTERN
                lines.append(f"  - ... and {plural(more, 'more test')}")
        if len(clusters) > TOP_PATTERNS:
            lines.append(f"- ... and {plural(len(clusters) - TOP_PATTERNS, 'more pattern')}"
                         " in report.md")
    text = "\n".join(lines) + "\n\n"
    if len(text) > MAX_SUMMARY_CHARS:
        cut = text.rfind("\n", 0, MAX_SUMMARY_CHARS - 40)
        text = text[:cut] + "\n\n*(cut: see report.md)*\n\n"
    return text


def append_step_summary(summary: Summary, environ: Mapping[str, str] = os.environ) -> None:
    """Append to $GITHUB_STEP_SUMMARY when it is set; a file that cannot be written is left
    alone (the job's log has the same)."""
    target = environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return
    try:
        with Path(target).open("a", encoding="utf-8") as out:
            out.write(step_summary(summary))
    except OSError:
        pass


def group(title: str) -> str:
    return f"::group::{_data(title)}"


END_GROUP = "::endgroup::"


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def _cell(text: str) -> str:
    return _text(" ".join(text.split())).replace("|", "\\|")


def _text(text: str) -> str:
    """Markdown text that GitHub shows as written: no HTML tag (a message quoting
    `<details>` would fold the rest away), no emphasis or link read into it."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_\[\]])", r"\\\1", text)
