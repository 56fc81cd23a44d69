"""What changed between iteration M (compared to) and N (this one), test by test.

fixed: failing (failed or error) in M, passed in N. new_failures: failing in N, not failing in
M (passed, skipped, pending or not there). still_failing: failing in both. added / removed:
collected in N and not M / in M and not N. changed_signatures: failing in both, for a
different cause (see `signatures.same_cause`), shown by the two failures' labels. Node ids are
sorted; a node id in two suites counts once, failing if it fails in either.
"""

from __future__ import annotations

from collections.abc import Sequence

from deployloop.analysis.context import IterationRows
from deployloop.analysis.integrity import collects_now
from deployloop.analysis.normalize import is_failure
from deployloop.analysis.signatures import Failure, failure_of, label, same_cause
from deployloop.models import IterationDiff, Outcome, SignatureChange, TestRow

_FRAME_NOTE = " (in {frame})"


def iteration_diff(rows: Sequence[TestRow], compare: IterationRows) -> IterationDiff:
    now_failing, now_passed, now_ids = _state(rows)
    then_failing, _, then_ids = _state(compare.rows)
    both = sorted(now_failing.keys() & then_failing.keys())
    # A file that failed to collect in M and collects in N: its error was fixed (and if its
    # tests fail now, they show as failures of their own, not as a fixed file).
    now_files = {row.file for row in rows}
    failing_files = {row.file for row in rows if is_failure(row)}
    collected_again = {
        n for n in then_failing.keys() - now_ids if collects_now(n, now_files)
    }
    fixed_files = collected_again - failing_files
    return IterationDiff(
        compared_to=compare.record.number,
        fixed=tuple(sorted((then_failing.keys() & now_passed) | fixed_files)),
        new_failures=tuple(sorted(now_failing.keys() - then_failing.keys())),
        still_failing=tuple(both),
        added=tuple(sorted(now_ids - then_ids)),
        removed=tuple(sorted(then_ids - now_ids - collected_again)),
        changed_signatures=tuple(
            change
            for nodeid in both
            if (change := signature_change(nodeid, then_failing[nodeid], now_failing[nodeid]))
        ),
    )


def _state(rows: Sequence[TestRow]) -> tuple[dict[str, Failure], set[str], set[str]]:
    """(failures by node id, node ids that passed, all node ids)."""
    failing: dict[str, Failure] = {}
    for row in rows:
        if is_failure(row) and row.nodeid not in failing:
            failing[row.nodeid] = failure_of(row)
    passed = {row.nodeid for row in rows if row.outcome == Outcome.PASSED} - failing.keys()
    return failing, passed, {row.nodeid for row in rows}


def signature_change(nodeid: str, before: Failure, after: Failure) -> SignatureChange | None:
    if same_cause(before, after):
        return None
    old, new = label([before]), label([after])
    if old == new:  # the same words, failing in another place: say where
        old += _FRAME_NOTE.format(frame=before.frame or "an unknown place")
        new += _FRAME_NOTE.format(frame=after.frame or "an unknown place")
    return SignatureChange(nodeid, old, new)
