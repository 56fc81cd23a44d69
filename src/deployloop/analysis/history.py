"""Flaky and broken tests, from every recorded result of the env (reruns included).

flaky: the test passed and failed (failed or error) against the same code — within one
iteration across its attempts (reruns run the same deployment and test files), or in two
iterations with the same, known `code_key` and the same test file hash. The first attempt stays
the test's outcome in every figure; a pass on rerun only puts it here.

broken: failed in each of its last `broken_after` runs (every attempt is a run; skips are not),
and not flaky.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from itertools import groupby

from deployloop.analysis.normalize import FAILURE_OUTCOMES
from deployloop.analysis.past import (
    History,
    SameCode,
    by_nodeid,
    may_be_flaky_or_broken,
    past_of,
    rows_of,
)
from deployloop.models import HistoryPoint, HistoryRow, Outcome, PastResults, TestHistory

_EXECUTED = FAILURE_OUTCOMES | {Outcome.PASSED}
_SHOWN_EVIDENCE = 2


def flaky_and_broken(
    history: History, tests: Collection[str], broken_after: int
) -> tuple[tuple[TestHistory, ...], tuple[TestHistory, ...]]:
    """(flaky, broken) among `tests` (the node ids collected now), each sorted by node id."""
    flaky: list[TestHistory] = []
    broken: list[TestHistory] = []
    for nodeid, rows in _by_test(past_of(history), tests, broken_after):
        points = tuple(HistoryPoint(r.iteration, r.outcome, r.attempt) for r in rows)
        evidence = flaky_evidence(rows)
        if evidence:
            flaky.append(TestHistory(nodeid, points, _flaky_reason(evidence)))
            continue
        reason = broken_reason(rows, broken_after)
        if reason:
            broken.append(TestHistory(nodeid, points, reason))
    return tuple(flaky), tuple(broken)


def _by_test(
    past: PastResults, tests: Collection[str], broken_after: int
) -> list[tuple[str, list[HistoryRow]]]:
    """Each collected test that may be flaky or broken, with its results oldest first; the
    others (nearly all, in a long history) are told apart without building their rows."""
    kept = by_nodeid(past, tests)
    same = SameCode(past)
    reruns: dict[str, list[HistoryRow]] = {}
    for rerun in past.reruns:
        if rerun.nodeid in tests:
            reruns.setdefault(rerun.nodeid, []).append(rerun)
    return [
        (nodeid, rows_of(past, nodeid, kept.get(nodeid, []), reruns.get(nodeid, [])))
        for nodeid in sorted(kept.keys() | reruns.keys())
        if may_be_flaky_or_broken(kept.get(nodeid, []), reruns.get(nodeid, []), broken_after, same)
    ]


def flaky_evidence(rows: Sequence[HistoryRow]) -> list[str]:
    """Why these results (one test's, oldest first) show it flaky, in words; [] if they do not."""
    evidence: list[str] = []
    for iteration, group in groupby(rows, key=lambda r: r.iteration):
        attempts = list(group)
        failed = [r.attempt for r in attempts if r.outcome in FAILURE_OUTCOMES]
        passed = [r.attempt for r in attempts if r.outcome == Outcome.PASSED]
        if failed and passed:
            evidence.append(
                f"in iteration {iteration} it failed on attempt {failed[0]} and passed on "
                f"attempt {passed[0]} (a rerun of the same code)"
            )
    same_code: dict[tuple[str, str | None], list[HistoryRow]] = {}
    for row in rows:
        if row.code_key is not None:
            same_code.setdefault((row.code_key, row.file_hash), []).append(row)
    for group_rows in same_code.values():
        failed_in = sorted({r.iteration for r in group_rows if r.outcome in FAILURE_OUTCOMES})
        passed_in = sorted({r.iteration for r in group_rows if r.outcome == Outcome.PASSED})
        pairs = [(f, p) for f in failed_in for p in passed_in if f != p]
        if pairs:
            f, p = min(pairs, key=lambda pair: (max(pair), min(pair)))
            evidence.append(
                f"it failed in iteration {f} and passed in iteration {p} with the same code "
                f"and test file"
            )
    return evidence


def _flaky_reason(evidence: Sequence[str]) -> str:
    text = "; ".join(evidence[:_SHOWN_EVIDENCE])
    more = len(evidence) - _SHOWN_EVIDENCE
    return text + (f"; and {more} more" if more > 0 else "")


def broken_reason(rows: Sequence[HistoryRow], broken_after: int) -> str | None:
    """Why these results (one test's, oldest first) show it broken; None if they do not."""
    runs = [r for r in rows if r.outcome in _EXECUTED]
    last = runs[-broken_after:]
    if len(last) < broken_after or any(r.outcome not in FAILURE_OUTCOMES for r in last):
        return None
    iterations = sorted({r.iteration for r in last})
    where = (
        f"iteration {iterations[0]}"
        if len(iterations) == 1
        else "iterations " + ", ".join(str(i) for i in iterations)
    )
    return f"failed in each of its last {broken_after} runs ({where})"
