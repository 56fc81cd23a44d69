"""`loop summarize --format json`: the machine-readable contract of DESIGN.md.

Keys and their order are part of the user interface (scripts and CI parse them), so the dicts
are built field by field rather than from `dataclasses.asdict`, which would follow models.py.
"""

from __future__ import annotations

import json
from typing import Any

from deployloop.models import (
    Cluster,
    Deployment,
    Figures,
    KnownIssueMatch,
    SuiteSummary,
    Summary,
)
from deployloop.report._format import pass_rate, suites_in_order


def summary_to_dict(summary: Summary) -> dict[str, Any]:
    iteration = summary.iteration
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
            "estimated_remaining_s": summary.estimated_remaining_s,
        },
    }


def summary_to_json(summary: Summary) -> str:
    # ensure_ascii=False keeps non-ASCII suite names and messages readable in the file.
    return json.dumps(summary_to_dict(summary), indent=2, ensure_ascii=False) + "\n"


def _counts(figures: Figures) -> dict[str, Any]:
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
        **_counts(figures),
        "xfailed": figures.xfailed,
        "xpassed": figures.xpassed,
        "pending": figures.pending,
    }


def _suite(suite: SuiteSummary) -> dict[str, Any]:
    return {
        "name": suite.name,
        "priority": suite.priority,
        "status": suite.status.value,
        **_counts(suite.figures),
        "key_issue": suite.key_issue,
    }


def _cluster(cluster: Cluster) -> dict[str, Any]:
    return {
        "label": cluster.label,
        "count": cluster.count,
        "tests": list(cluster.tests),
        "known_issue": cluster.known_issue,
        "suites": list(cluster.suites),
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
    }
