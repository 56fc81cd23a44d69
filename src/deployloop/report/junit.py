"""One JUnit XML file per iteration: what CI systems (Jenkins, GitLab, GitHub's test reporters)
read to show a run's tests.

A `<testsuite>` per configured suite, in report order, every collected test in it once with
its final outcome (its first attempt, as every figure of loop's):
  - passed: no child element;
  - failed / error: `<failure>` / `<error>` with the message and the traceback;
  - skipped, xfailed, xpassed and not run: `<skipped>`, its message saying which: none of them
    is counted as passed or executed, so a CI's "passed" (tests - failures - errors -
    skipped) is loop's passed, and every count equals summary.json's.
Reruns, the known issue a failure matches and a flaky verdict are `<property>` elements of
the test case. Written with the standard library; no value a test did not report is made up.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from deployloop.models import HistoryRow, Outcome, Summary, TestRow
from deployloop.report._format import suites_in_order

_NOT_EXECUTED = {
    Outcome.SKIPPED: "skipped",
    Outcome.XFAILED: "xfailed (an expected failure; not counted as passed)",
    Outcome.XPASSED: "xpassed (expected to fail, passed; not counted as passed)",
}
_MAX_TEXT = 64 * 1024  # of one traceback: a CI page, not an archive


def summary_to_junit(
    summary: Summary, rows: Sequence[TestRow], reruns: Sequence[HistoryRow] = ()
) -> str:
    iteration = summary.iteration
    totals = summary.totals
    root = ET.Element("testsuites", _attrs({
        "name": f"deployloop {iteration.env} iteration {iteration.number}",
        "tests": str(totals.collected),
        "failures": str(totals.failed),
        "errors": str(totals.errors),
        "skipped": str(totals.collected - totals.executed),
        "time": _seconds(summary.elapsed_s),
        "timestamp": iteration.started_at,
    }))
    by_suite: dict[str, list[TestRow]] = {}
    for row in rows:
        by_suite.setdefault(row.suite, []).append(row)
    again: dict[str, list[HistoryRow]] = {}
    for rerun in reruns:
        again.setdefault(rerun.nodeid, []).append(rerun)
    flaky = {history.test: history.reason for history in summary.insights.flaky}
    known = {test: issue.id for issue in summary.known_issues for test in issue.failures}
    for suite in suites_in_order(summary):
        figures = suite.figures
        tests = sorted(by_suite.get(suite.name, []), key=lambda row: row.nodeid)
        element = ET.SubElement(root, "testsuite", _attrs({
            "name": suite.name,
            "tests": str(figures.collected),
            "failures": str(figures.failed),
            "errors": str(figures.errors),
            "skipped": str(figures.collected - figures.executed),
            "time": _seconds(sum(row.duration_s or 0.0 for row in tests)),
            "timestamp": iteration.started_at,
        }))
        properties = ET.SubElement(element, "properties")
        _property(properties, "priority", str(suite.priority))
        _property(properties, "status", suite.status.value)
        for row in tests:
            _testcase(element, row, again.get(row.nodeid, []), flaky.get(row.nodeid),
                      known.get(row.nodeid))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def _testcase(
    parent: ET.Element,
    row: TestRow,
    reruns: Sequence[HistoryRow],
    flaky: str | None,
    known: str | None,
) -> None:
    path, _, name = row.nodeid.partition("::")
    module = path.removesuffix(".py").replace("/", ".")
    # A parameter's text may hold "::" too (parametrize("x", ["a::b"])): only what comes
    # before its "[" names classes.
    head, bracket, params = name.partition("[")
    parts = head.split("::")
    classname = ".".join([module, *parts[:-1]])
    case = ET.SubElement(parent, "testcase", _attrs({
        "classname": classname,
        "name": (parts[-1] + bracket + params) or row.nodeid,
        "file": row.file,
        "time": _seconds(row.duration_s or 0.0),
    }))
    properties = [("nodeid", row.nodeid)]
    properties += [(f"rerun.{r.attempt}", r.outcome.value) for r in reruns]
    if known:
        properties.append(("known_issue", known))
    if flaky:
        properties.append(("flaky", flaky))
    holder = ET.SubElement(case, "properties")
    for key, value in properties:
        _property(holder, key, value)
    message = _clean(row.message or "")
    if row.outcome is Outcome.FAILED:
        ET.SubElement(case, "failure", {"message": message}).text = _text(row)
    elif row.outcome is Outcome.ERROR:
        ET.SubElement(case, "error", {"message": message}).text = _text(row)
    elif row.outcome is None:
        ET.SubElement(case, "skipped", {"message": "not run in this iteration"})
    elif row.outcome in _NOT_EXECUTED:
        word = _NOT_EXECUTED[row.outcome]
        ET.SubElement(case, "skipped", {"message": f"{word}: {message}" if message else word})


def _attrs(values: dict[str, str]) -> dict[str, str]:
    return {key: _clean(value) for key, value in values.items()}


def _property(parent: ET.Element, name: str, value: str) -> None:
    ET.SubElement(parent, "property", {"name": name, "value": _clean(value)})


def _text(row: TestRow) -> str:
    text = _clean(row.longrepr or row.message or "")
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "\n[... cut]"


def _clean(text: str) -> str:
    """XML 1.0 holds no control characters but tab, newline and carriage return (a test's
    message may carry any; surrogates from undecodable bytes neither)."""
    return "".join(
        c if (c in "\t\n\r" or " " <= c) and not "\ud800" <= c <= "\udfff"
        and c not in "\ufffe\uffff" else "\ufffd"
        for c in text
    )


def _seconds(value: float) -> str:
    return f"{value:.3f}"
