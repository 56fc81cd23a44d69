"""Known issues: configured explanations attached to failures, which stay failures.

A known issue only annotates. Nothing here changes an outcome or a figure: the hand-written
report that counted seven real failures as "expected" is what this module must not allow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import date
from typing import TYPE_CHECKING

from deployloop.analysis.normalize import MATCH_SCOPE, failure_message, is_failure
from deployloop.models import KnownIssueMatch, TestRow

if TYPE_CHECKING:  # the config's pydantic models cost ~0.2 s to import
    from deployloop.config import KnownIssue


def issue_matches(issue: KnownIssue, message: str) -> bool:
    """Whether the issue's `match` regex is found in the message's first MATCH_SCOPE (10,000)
    characters: a message runs to megabytes at times, and a user's pattern must cost the
    same on each failure whatever its size."""
    return re.search(issue.match, message[:MATCH_SCOPE]) is not None


def first_known_issue(message: str, known_issues: Sequence[KnownIssue]) -> KnownIssue | None:
    """The first configured issue whose `match` regex is found in the message."""
    for issue in known_issues:
        if issue_matches(issue, message):
            return issue
    return None


def match_known_issues(
    rows: Iterable[TestRow], known_issues: Sequence[KnownIssue], today: date
) -> tuple[KnownIssueMatch, ...]:
    """One entry per configured issue, in config order, with the failures it explains.

    Each failure belongs to the first issue that matches it, the same rule clusters use, so a
    failure never shows two reasons. An issue past its `expires` date still matches, and says
    it is expired so the report can ask for it to be fixed or renewed.
    """
    failures: dict[str, list[str]] = {issue.id: [] for issue in known_issues}
    for row in rows:
        if not is_failure(row):
            continue
        issue = first_known_issue(failure_message(row), known_issues)
        if issue is not None:
            failures[issue.id].append(row.nodeid)
    return tuple(
        KnownIssueMatch(
            id=issue.id,
            reason=issue.reason,
            expired=issue.expires is not None and issue.expires < today,
            failures=tuple(sorted(failures[issue.id])),
        )
        for issue in known_issues
    )
