"""Failure clusters: failures grouped by signature, so one cause reads as one line."""

from __future__ import annotations

import re
from collections.abc import Sequence

from deployloop.analysis.normalize import failure_message, is_failure, normalize
from deployloop.config import KnownIssue
from deployloop.models import Cluster, TestRow

_MAX_LABEL = 160
_NO_MESSAGE = "(no failure message)"


def cluster_failures(
    rows: Sequence[TestRow], known_issues: Sequence[KnownIssue] = ()
) -> tuple[Cluster, ...]:
    """Failed and errored tests grouped by signature, largest cluster first.

    The signature is the normalized message, which starts with the exception name, so
    different exception types or status codes never share a cluster. A known issue only
    labels a cluster: its tests are still failures.
    """
    groups: dict[str, list[TestRow]] = {}
    for row in rows:
        if is_failure(row):
            groups.setdefault(normalize(failure_message(row)), []).append(row)
    clusters = [_cluster(signature, members, known_issues) for signature, members in groups.items()]
    return tuple(sorted(clusters, key=lambda c: (-c.count, c.label, c.signature)))


def key_issue(rows: Sequence[TestRow]) -> str | None:
    """The label of the most common failure pattern in these rows; None without failures."""
    clusters = cluster_failures(rows)
    return clusters[0].label if clusters else None


def _cluster(
    signature: str, members: Sequence[TestRow], known_issues: Sequence[KnownIssue]
) -> Cluster:
    return Cluster(
        label=_label(signature),
        signature=signature,
        tests=tuple(sorted(row.nodeid for row in members)),
        suites=tuple(sorted({row.suite for row in members})),
        known_issue=_cluster_issue(members, known_issues),
    )


def _label(signature: str) -> str:
    if not signature:
        return _NO_MESSAGE
    if len(signature) <= _MAX_LABEL:
        return signature
    return signature[: _MAX_LABEL - 1] + "…"


def _cluster_issue(members: Sequence[TestRow], known_issues: Sequence[KnownIssue]) -> str | None:
    # Members differ only in what normalize removed (ids, numbers), which a regex may still
    # look at, so the first configured issue matching any member wins.
    for issue in known_issues:
        if any(re.search(issue.match, failure_message(row)) for row in members):
            return issue.id
    return None
