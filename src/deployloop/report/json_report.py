"""`loop summarize --format json`: the machine-readable contract of DESIGN.md.

Keys and their order are part of the user interface (scripts and CI parse them), so the dicts
are built field by field rather than from `dataclasses.asdict`, which would follow models.py.
Keys added later go after the ones already there, so a document from an older version is always
a prefix, in the same order, of one from a newer version.

Every string (keys included) is made printable (`safetext.printable`): control characters,
bidi overrides and bytes that were not UTF-8 (lone surrogates, which would make writing the
file fail) become visible escapes, while non-ASCII letters stay as they are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from deployloop.models import (
    Cluster,
    Deployment,
    FalseGreen,
    Figures,
    IntegrityFlag,
    IterationDiff,
    IterationRecord,
    KnownIssueMatch,
    Projection,
    SuiteSummary,
    Summary,
    TestHistory,
    Trend,
)
from deployloop.report._format import (
    pass_rate,
    remaining_tests_by_suite,
    round_rate,
    setup_failure,
    suites_in_order,
)
from deployloop.safetext import printable

# FalseGreen.kind -> the key that names its subject, as DESIGN.md has it: {suite or test, reason}.
FALSE_GREEN_KEYS = {"suite": "suite", "test": "test", "iteration": "iteration"}


def summary_to_dict(summary: Summary) -> dict[str, Any]:
    data: dict[str, Any] = _printable(_summary_dict(summary))
    return data


def _summary_dict(summary: Summary) -> dict[str, Any]:
    iteration = summary.iteration
    insights = summary.insights
    # An iteration that ended before its tests ran has nothing "remaining": nothing will run it.
    remaining_s = None if setup_failure(summary) else summary.estimated_remaining_s
    return {
        "env": iteration.env,
        "iteration": iteration.number,
        "status": iteration.status.value,
        "git_sha": iteration.git_sha,
        "started_at": iteration.started_at,
        "finished_at": iteration.finished_at,
        "totals": _totals(summary.totals),
        "suites": [_suite(suite) for suite in suites_in_order(summary)],
        "clusters": [_cluster(cluster) for cluster in summary.clusters],
        "known_issues": [_known_issue(issue) for issue in summary.known_issues],
        "remaining_suites": list(summary.remaining_suites),
        "deployments": [_deployment(deployment) for deployment in summary.deployments],
        "timing": {
            "elapsed_s": summary.elapsed_s,
            "estimated_remaining_s": remaining_s,
        },
        # The analysis features, after the keys above.
        "known_issue_failures": {
            "with": insights.failures_with_known_issue,
            "without": insights.failures_without_known_issue,
        },
        "remaining_tests": [
            {"suite": name, "tests": tests} for name, tests in remaining_tests_by_suite(summary)
        ],
        "outage": insights.outage,
        "integrity": [_integrity(flag) for flag in insights.integrity],
        "false_greens": [_false_green(green, iteration.number) for green in insights.false_greens],
        "flaky": _Printable(_history(history) for history in insights.flaky),
        "broken": _Printable(_history(history) for history in insights.broken),
        "projection": _projection(insights.projection),
        "trend": _trend(insights.trend),
        "diff": _diff(insights.diff),
        # While the iteration runs: tests started and not finished, longest first.
        "running": [
            {"test": t.nodeid, "suite": t.suite, "running_s": round(t.running_s, 1)}
            for t in summary.running
        ],
        # Only some tests ran (--failed-only, or --suite): the figures are not the inventory's.
        "partial": summary.partial,
        # Why the iterations after this one leave it out of every figure (a setup failure,
        # an outage); null: it counts.
        "left_out": iteration.left_out,
        # Causes that tie several clusters (one endpoint failing several ways, patterns
        # that came and went together), each test with its failing assertion's file:line.
        "root_causes": [
            {
                "label": cause.label,
                "evidence": list(cause.evidence),
                "clusters": list(cause.clusters),
                "tests": [{"test": test, "where": where} for test, where in cause.tests],
            }
            for cause in summary.root_causes
        ],
    }


def summary_to_json(summary: Summary) -> str:
    # ensure_ascii=False keeps non-ASCII suite names and messages readable in the file; every
    # string is printable by then, so the text encodes as UTF-8 whatever the tests wrote.
    return json.dumps(summary_to_dict(summary), indent=2, ensure_ascii=False) + "\n"


class _Printable(list[Any]):
    """A list made printable as it was built: _printable() leaves it as it is. A long
    history's flaky tests hold tens of thousands of points, none of them text to escape."""


def _printable(value: Any) -> Any:
    if isinstance(value, _Printable):
        return value
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {_printable(key): _printable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_printable(item) for item in value]
    return value


def figures_to_dict(figures: Figures) -> dict[str, Any]:
    return {
        "collected": figures.collected,
        "executed": figures.executed,
        "passed": figures.passed,
        "failed": figures.failed,
        "errors": figures.errors,
        "skipped": figures.skipped,
        "pass_rate": pass_rate(figures),
    }


def _totals(figures: Figures) -> dict[str, Any]:
    # xfailed/xpassed/pending come after the contract keys: shown, never counted as passed.
    return {
        **figures_to_dict(figures),
        "xfailed": figures.xfailed,
        "xpassed": figures.xpassed,
        "pending": figures.pending,
    }


def _suite(suite: SuiteSummary) -> dict[str, Any]:
    return {
        "name": suite.name,
        "priority": suite.priority,
        "status": suite.status.value,
        **figures_to_dict(suite.figures),
        "key_issue": suite.key_issue,
    }


def _cluster(cluster: Cluster) -> dict[str, Any]:
    return {
        "label": cluster.label,
        "count": cluster.count,
        "tests": list(cluster.tests),
        "known_issue": cluster.known_issue,
        "suites": list(cluster.suites),
        "category": cluster.category.value,
        "first_iteration": cluster.first_iteration,
        # What the services logged while its tests ran (the evidence; see README).
        "service_logs": [
            {"service": log.service, "lines": list(log.lines)} for log in cluster.service_logs
        ],
    }


def _known_issue(issue: KnownIssueMatch) -> dict[str, Any]:
    return {
        "id": issue.id,
        "reason": issue.reason,
        "failures": list(issue.failures),
        "expired": issue.expired,
        "matched": bool(issue.failures),
    }


def _deployment(deployment: Deployment) -> dict[str, Any]:
    return {
        "service": deployment.service,
        "status": deployment.status.value,
        "url": deployment.url,
        "revision": deployment.revision,
        "started_at": deployment.started_at,
        "ready_at": deployment.ready_at,
        "error": deployment.error,
        "image": deployment.image,
        "digest": deployment.digest,
        "rolled_back_to": deployment.rolled_back_to,
        "tag": deployment.tag,
        "promoted": deployment.promoted,
        "warning": deployment.warning,
        "serving": deployment.serving,
    }


def _history(history: TestHistory) -> dict[str, Any]:
    # Made printable here, in a _Printable list: its points are numbers and loop's own words.
    return {
        "test": printable(history.test),
        "history": [
            {"iteration": point.iteration, "outcome": point.outcome.value, "attempt": point.attempt}
            for point in history.history
        ],
        "reason": printable(history.reason),
    }


def _integrity(flag: IntegrityFlag) -> dict[str, Any]:
    return {"test": flag.test, "file": flag.file, "reason": flag.reason}


def _false_green(green: FalseGreen, iteration: int) -> dict[str, Any]:
    key = FALSE_GREEN_KEYS.get(green.kind)
    if key is None:  # a kind this version does not know: keep both rather than guess
        return {"subject": green.subject, "kind": green.kind, "reason": green.reason}
    # A false green of the whole iteration names the iteration by its number.
    subject: str | int = iteration if key == "iteration" else green.subject
    return {key: subject, "reason": green.reason}


def _projection(projection: Projection | None) -> dict[str, Any] | None:
    if projection is None:
        return None
    return {
        "final_pass_rate": round_rate(projection.final_pass_rate),
        "low": round_rate(projection.low),
        "high": round_rate(projection.high),
        "remaining_tests": projection.remaining_tests,
        "basis": projection.basis,
    }


def _trend(trend: Trend | None) -> dict[str, Any] | None:
    if trend is None:
        return None
    steps = trend.iterations_to_green
    return {
        "pass_rates": [
            {"iteration": number, "pass_rate": round_rate(rate)}
            for number, rate in trend.pass_rates
        ],
        "iterations_to_green": None if steps is None else round(steps, 1),
        "pace": trend.pace,
    }


def _diff(diff: IterationDiff | None) -> dict[str, Any] | None:
    if diff is None:
        return None
    return {
        "compared_to": diff.compared_to,
        "fixed": list(diff.fixed),
        "new_failures": list(diff.new_failures),
        "still_failing": list(diff.still_failing),
        "added": list(diff.added),
        "removed": list(diff.removed),
        "changed_signatures": [
            {"test": change.test, "before": change.before, "after": change.after}
            for change in diff.changed_signatures
        ],
    }


def history_to_list(rows: Sequence[tuple[IterationRecord, Figures]]) -> list[dict[str, Any]]:
    """`loop history --format json`: every iteration with its totals."""
    history: list[dict[str, Any]] = _printable(
        [
            {
                "iteration": record.number,
                "status": record.status.value,
                "git_sha": record.git_sha,
                "started_at": record.started_at,
                "finished_at": record.finished_at,
                "totals": figures_to_dict(figures),
                "left_out": record.left_out,
            }
            for record, figures in rows
        ]
    )
    return history
