"""One share of the pending tests per task, balanced by recorded duration.

The tasks of an execution start together and cannot take work from each other, so the
split is decided up front: the longest pieces first, each to the task with the least work so
far (longest processing time first), then each share in the local runner's order (failed
last time first, then priority, then longest). A suite with `split = "modules"` keeps each
module in one task, so its module-scoped fixtures are set up once.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from deployloop.runner.schedule import PendingTest, Unit, make_units


@dataclass(frozen=True)
class Share:
    task: int
    tests: tuple[PendingTest, ...]  # in run order

    @property
    def expected_s(self) -> float:
        return sum(t.expected_s for t in self.tests)


def split_into_shares(
    tests: Sequence[PendingTest],
    tasks: int,
    split: Mapping[str, str],
    whole_suites: AbstractSet[str] = frozenset(),
) -> list[Share]:
    """At most `tasks` shares, none empty (fewer tests than tasks: fewer shares). The tests
    of a suite in `whole_suites` all go to one task."""
    units = make_units([t for t in tests if t.suite not in whole_suites], set(), split)
    for suite in sorted(whole_suites):
        whole = tuple(t for t in tests if t.suite == suite)
        if whole:
            units.append(Unit(whole))
    count = max(1, min(tasks, len(units)))
    # (expected seconds, tests, task): with nothing timed yet, the count of tests balances.
    loads: list[tuple[float, int, int]] = [(0.0, 0, i) for i in range(count)]
    assigned: list[list[Unit]] = [[] for _ in range(count)]
    for unit in sorted(units, key=lambda u: -u.expected_s):
        load, size, task = heapq.heappop(loads)
        assigned[task].append(unit)
        heapq.heappush(loads, (load + unit.expected_s, size + len(unit.tests), task))
    shares = []
    for task, members in enumerate(assigned):
        ordered = sorted(members, key=lambda u: u.sort_key)
        shares.append(Share(task, tuple(t for u in ordered for t in u.tests)))
    return [s for s in shares if s.tests]
