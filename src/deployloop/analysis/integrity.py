"""Integrity flags: results that may be green because the tests changed, not the product.

Compared with the iteration before (N-1):
- a test that failed in N-1 and passes now while its file's hash changed;
- a test that failed in N-1 and is not collected now ("failing test removed");
- a suite that collects fewer tests than in N-1.
Each is a reason to look before trusting the figures, never a verdict.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from deployloop.analysis.context import IterationRows
from deployloop.analysis.normalize import is_failure
from deployloop.analysis.past import History, by_nodeid, has_result, past_of
from deployloop.models import IntegrityFlag, Outcome, TestRow


def integrity_flags(
    rows: Sequence[TestRow],
    previous: IterationRows | None,
    history: History,
    current: int,
) -> tuple[IntegrityFlag, ...]:
    if previous is None:
        return ()
    return (
        changed_then_passed(rows, previous, history, current)
        + failing_removed(rows, previous)
        + suites_shrunk(rows, previous)
    )


def changed_then_passed(
    rows: Sequence[TestRow],
    previous: IterationRows,
    history: History,
    current: int,
) -> tuple[IntegrityFlag, ...]:
    """Failed in N-1, passes now, and its file's hash differs between the two (both known)."""
    before = previous.record.number
    failed_before = {row.nodeid for row in previous.rows if is_failure(row)}
    past = past_of(history)
    kept = by_nodeid(past, failed_before)

    def file_hash(number: int, nodeid: str) -> str | None:
        # The hash of its file in that iteration, if it has a result there; of the suites
        # holding the node id, the last one's, as a dict keyed by node id keeps it.
        found = [
            past.file_hashes.get((number, test.file))
            for test in kept.get(nodeid, [])
            if has_result(test, number)
        ]
        return found[-1] if found else None

    flags = []
    for row in sorted(rows, key=lambda r: r.nodeid):
        if row.outcome != Outcome.PASSED or row.nodeid not in failed_before:
            continue
        old, new = file_hash(before, row.nodeid), file_hash(current, row.nodeid)
        if old is not None and new is not None and old != new:
            reason = f"passed after its test changed (file hash differs from iteration {before})"
            flags.append(IntegrityFlag(row.nodeid, row.file, reason))
    return tuple(flags)


def failing_removed(rows: Sequence[TestRow], previous: IterationRows) -> tuple[IntegrityFlag, ...]:
    """Failed in N-1 and not collected now: a failure that went away by going away."""
    now = {row.nodeid for row in rows}
    now_files = {row.file for row in rows}
    broken = broken_files(rows)
    before = previous.record.number
    return tuple(
        IntegrityFlag(
            row.nodeid,
            row.file,
            f"failing test removed: it failed in iteration {before} and is not collected now",
        )
        for row in sorted(previous.rows, key=lambda r: r.nodeid)
        if is_failure(row)
        and row.nodeid not in now
        and not collects_now(row.nodeid, now_files)
        # Its file fails to collect now: the test is still there, and fails as that error.
        and row.file not in broken
    )


def broken_files(rows: Sequence[TestRow]) -> set[str]:
    """Files that fail to collect: their one error row is named by the file alone."""
    return {row.nodeid for row in rows if "::" not in row.nodeid and is_failure(row)}


def collects_now(nodeid: str, now_files: set[str]) -> bool:
    """A file that failed to collect (its node id is the file) whose tests collect now: the
    collection error was fixed, not a failing test removed."""
    return "::" not in nodeid and nodeid in now_files


def suites_shrunk(rows: Sequence[TestRow], previous: IterationRows) -> tuple[IntegrityFlag, ...]:
    """Suites collecting fewer tests than in N-1, in N-1's suite order. Tests of a file that
    fails to collect now are not counted as removed: the collection error stands for them."""
    broken = broken_files(rows)
    rows = [row for row in rows if row.file not in broken]
    now_counts = Counter(row.suite for row in rows)
    before_counts = Counter(row.suite for row in previous.rows if row.file not in broken)
    before = previous.record.number
    flags = []
    for suite in dict.fromkeys(row.suite for row in previous.rows):
        now, then = now_counts[suite], before_counts[suite]
        if now >= then:
            continue
        now_ids = {row.nodeid for row in rows if row.suite == suite}
        then_ids = {
            row.nodeid for row in previous.rows if row.suite == suite and row.file not in broken
        }
        removed, added = len(then_ids - now_ids), len(now_ids - then_ids)
        reason = f"suite has {_tests(now)}, {then} in iteration {before}: {removed} removed"
        if added:
            reason += f", {added} added"
        flags.append(IntegrityFlag(suite, None, reason))
    return tuple(flags)


def _tests(count: int) -> str:
    return f"{count} test" if count == 1 else f"{count} tests"
