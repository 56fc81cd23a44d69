"""Failure clusters: failures grouped by cause, so one cause reads as one line.

Failures with equal signatures (see `signatures`) form a group; groups whose signatures are
near-identical (same exception, status codes and frame, token sets >= 90 % alike) merge. Each
cluster gets a readable label, the suites it spans, a category, and — given the history — the
first iteration that failed the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from deployloop.analysis.categories import categorize
from deployloop.analysis.known_issues import issue_matches
from deployloop.analysis.normalize import (
    FAILURE_OUTCOMES,
    SIGNATURE_SCOPE,
    failure_message,
    head,
    is_failure,
    is_loop_error,
)
from deployloop.analysis.past import History, failing_rows, past_of
from deployloop.analysis.setup_failure import crash_note
from deployloop.analysis.signatures import (
    MAX_LABEL,
    Failure,
    MessageKey,
    failure_of,
    label,
    message_key,
    same_cause,
    similar_messages,
)
from deployloop.models import Category, Cluster, Deployment, TestRow

if TYPE_CHECKING:  # the config's pydantic models cost ~0.2 s to import
    from deployloop.config import CategoryRule, KnownIssue

# An outage is many tests failing one way: below this many, one bug can look like one.
OUTAGE_MIN_TESTS = 3
# Failures of one kind (exception, kept numbers) compared pairwise for similarity at most;
# past this, only identical signatures group, so a run with thousands of distinct messages
# stays fast.
SIMILARITY_LIMIT = 300


def group_failures(rows: Sequence[TestRow]) -> list[tuple[Failure, ...]]:
    """The failed and errored rows, grouped by cause; each group sorted by node id."""
    by_signature: dict[str, list[Failure]] = {}
    for row in rows:
        if is_failure(row):
            failure = failure_of(row)
            by_signature.setdefault(failure.signature, []).append(failure)
    groups = [by_signature[signature] for signature in sorted(by_signature)]
    merged = _merge_similar(groups)
    return [tuple(sorted(group, key=lambda f: (f.row.nodeid, f.row.suite))) for group in merged]


def _merge_similar(groups: list[list[Failure]]) -> list[list[Failure]]:
    """Union of groups whose first failures are the same cause (single linkage).

    `same_cause` requires equal exception, kept numbers and frame, so a merge never joins
    different status codes or exception types, however many steps it takes.
    """
    parent = list(range(len(groups)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    buckets: dict[tuple[str, tuple[str, ...], str | None], list[int]] = {}
    for i, group in enumerate(groups):
        first = group[0]
        buckets.setdefault((first.exception, first.key.numbers, first.frame), []).append(i)
    for members in buckets.values():
        if len(members) > SIMILARITY_LIMIT:
            continue  # pairwise is quadratic: beyond this, only identical signatures group
        for position, i in enumerate(members):
            for j in members[position + 1 :]:
                if same_cause(groups[i][0], groups[j][0]):
                    parent[root(j)] = root(i)
    merged: dict[int, list[Failure]] = {}
    for i, group in enumerate(groups):
        merged.setdefault(root(i), []).extend(group)
    return list(merged.values())


def cluster_failures(
    rows: Sequence[TestRow],
    known_issues: Sequence[KnownIssue] = (),
    categories: Sequence[CategoryRule] = (),
    history: History | None = None,
    current: int | None = None,
) -> tuple[Cluster, ...]:
    """Failed and errored tests grouped by cause, largest cluster first.

    A known issue only labels a cluster: its tests are still failures. `first_iteration` is
    set when `history` is given (and is at most `current`, the iteration analyzed).
    """
    past = None if history is None else past_failures(history)
    clusters = [
        Cluster(
            label=label(group),
            signature=min(f.signature for f in group),
            tests=tuple(f.row.nodeid for f in group),
            suites=tuple(sorted({f.row.suite for f in group})),
            known_issue=_cluster_issue(group, known_issues),
            category=categorize(group, categories),
            first_iteration=None if past is None else first_iteration(group, past, current),
        )
        for group in group_failures(rows)
    ]
    return tuple(sorted(clusters, key=lambda c: (-c.count, c.label, c.signature)))


def suite_key_issue(clusters: Sequence[Cluster], rows: Sequence[TestRow]) -> str | None:
    """The label of the cluster holding most of these rows' failures, so a suite's key issue
    reads exactly like the cluster it belongs to; ties go to the larger cluster."""
    failing = {row.nodeid for row in rows if is_failure(row)}
    best: tuple[int, int] | None = None
    chosen: str | None = None
    for position, cluster in enumerate(clusters):
        count = len(failing.intersection(cluster.tests))
        if count and (best is None or (-count, position) < best):
            best, chosen = (-count, position), cluster.label
    return chosen


def _cluster_issue(members: Sequence[Failure], known_issues: Sequence[KnownIssue]) -> str | None:
    # A cluster carries a known issue only when the issue explains every one of its failures,
    # the same per-failure rule the known-issue counts use; else the report would show a
    # reason next to failures it does not cover.
    for issue in known_issues:
        if all(issue_matches(issue, failure_message(f.row)) for f in members):
            return issue.id
    return None


@dataclass(frozen=True)
class PastFailures:
    """History's failures, indexed once: by message key, and by message key and test."""

    earliest: dict[MessageKey, int]
    earliest_by_test: dict[tuple[MessageKey, str], int]
    buckets: dict[tuple[str, tuple[str, ...]], list[MessageKey]]


def past_failures(history: History) -> PastFailures:
    """The failures in history (every attempt), each message normalized once."""
    keys: dict[tuple[str, bool], MessageKey] = {}
    earliest: dict[MessageKey, int] = {}
    by_test: dict[tuple[MessageKey, str], int] = {}
    for row in failing_rows(past_of(history)):
        if row.outcome not in FAILURE_OUTCOMES:
            continue
        message = row.message or ""
        # What message_key reads, and no more: hashing a whole message of megabytes would
        # cost what the key itself does not.
        seen = (head(message, SIGNATURE_SCOPE + 1), is_loop_error(message))
        if seen not in keys:
            keys[seen] = message_key(message)
        key = keys[seen]
        earliest[key] = min(earliest.get(key, row.iteration), row.iteration)
        pair = (key, row.nodeid)
        by_test[pair] = min(by_test.get(pair, row.iteration), row.iteration)
    buckets: dict[tuple[str, tuple[str, ...]], list[MessageKey]] = {}
    for key in earliest:
        buckets.setdefault((key.exception, key.numbers), []).append(key)
    return PastFailures(earliest, by_test, buckets)


def first_iteration(
    members: Sequence[Failure], past: PastFailures, current: int | None
) -> int | None:
    """The earliest iteration with a failure of the same cause, any attempt.

    History holds messages, not tracebacks: a failure there is the same cause when its message
    is (see `similar_messages`), and — for a cluster told apart by its frame because its
    message says nothing on its own — when it is also one of the cluster's tests.
    """
    keys = {f.key for f in members}
    by_frame = any(f.frame is not None for f in members)
    tests = {f.row.nodeid for f in members}
    matched: set[MessageKey] = {k for k in keys if k in past.earliest}
    for bucket_id in {(k.exception, k.numbers) for k in keys}:
        bucket = past.buckets.get(bucket_id, [])
        if len(bucket) <= SIMILARITY_LIMIT:
            matched.update(k for k in bucket if any(similar_messages(k, o) for o in keys))
    if by_frame:
        found = [
            past.earliest_by_test[(k, t)]
            for k in matched
            for t in tests
            if (k, t) in past.earliest_by_test
        ]
    else:
        found = [past.earliest[k] for k in matched]
    earlier = [i for i in found if current is None or i < current]
    return min(earlier) if earlier else current


def mark_outage(
    clusters: Sequence[Cluster],
    executed: int,
    share: float,
    crashed: Sequence[Deployment] = (),
) -> tuple[tuple[Cluster, ...], str | None]:
    """When one cluster holds at least `share` of the executed tests (and at least
    OUTAGE_MIN_TESTS of them), it is the environment failing: its category says so, and
    the returned text says why.

    With `crashed` services (ready, then gone during the tests), every environment cluster's
    label names them: those failures are most likely the crash, not the tests.
    """
    marked = list(clusters)
    text = None
    biggest = marked[0] if marked else None  # clusters come largest first
    if (
        biggest is not None
        and executed
        and biggest.count >= OUTAGE_MIN_TESTS
        and biggest.count >= share * executed
    ):
        marked[0] = replace(biggest, category=Category.ENVIRONMENT)
        text = (
            f"environment outage: {biggest.count} of {executed} executed tests failed with "
            f"{biggest.label}"
        )
    if crashed:
        note = f" ({crash_note(crashed)})"
        marked = [
            replace(c, label=_with_note(c.label, note)) if c.category is Category.ENVIRONMENT else c
            for c in marked
        ]
        if text is not None:
            text += f"; {crash_note(crashed)}"
    return tuple(marked), text


def _with_note(label: str, note: str) -> str:
    # The note is what a reader must not miss: the label gives way to it, within MAX_LABEL.
    room = max(MAX_LABEL - len(note), MAX_LABEL // 2)
    if len(label) > room:
        label = label[: room - 1] + "…"
    return label + note
