"""The order tests run in and how much each worker is handed at once.

Order: the tests that failed or errored last time and those never run first, then by suite
priority, then the longest work first, so the small pieces come last and fill the gaps
while the long ones finish. A piece of work ("unit") is one test, or a whole module when
its tests share a fixture wider than a test (see the worker's "ready" event), so that
fixture is set up once.

Durations come from the store (a recent mean per test); a test never timed gets its suite's
mean, or the mean of all known tests, or DEFAULT_S when nothing is known yet. While the
tests run, what is handed out for a test never timed is costed by what its suite's tests
take in this run (the pool's `cost`): a first run of ten thousand tiny tests is not handed
out one by one, nor one of long tests in a few big pieces.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

DEFAULT_S = 0.1

# How the tests of a suite may be spread over workers (suite key `split`).
SPLIT_AUTO = "auto"  # by test, but a module with module/class-scoped fixtures stays whole
SPLIT_TESTS = "tests"
SPLIT_MODULES = "modules"


@dataclass(frozen=True)
class PendingTest:
    suite: str
    nodeid: str
    priority: int
    first: bool  # failed or errored last time, or never run: runs before the rest
    expected_s: float
    timed: bool = True  # expected_s is this test's own recent mean, not a stand-in


@dataclass(frozen=True)
class Unit:
    tests: tuple[PendingTest, ...]  # in collection order

    @property
    def expected_s(self) -> float:
        return sum(t.expected_s for t in self.tests)

    @property
    def sort_key(self) -> tuple[bool, int, float]:
        head = self.tests[0]
        return (not head.first, head.priority, -self.expected_s)


def expected_durations(
    tests: Iterable[tuple[str, str]], known: Mapping[str, float]
) -> dict[str, float]:
    """Each (suite, node id)'s expected seconds, by node id (`known`: the store's)."""
    tests = list(tests)
    by_suite: dict[str, list[float]] = {}
    for suite, nodeid in tests:
        if nodeid in known:
            by_suite.setdefault(suite, []).append(known[nodeid])
    every = [d for ds in by_suite.values() for d in ds]
    overall = sum(every) / len(every) if every else DEFAULT_S
    suite_mean = {s: sum(ds) / len(ds) for s, ds in by_suite.items()}
    return {
        nodeid: known.get(nodeid, suite_mean.get(suite, overall)) for suite, nodeid in tests
    }


def make_units(
    tests: Iterable[PendingTest], grouped_files: set[str], split: Mapping[str, str]
) -> list[Unit]:
    """Units in run order. `grouped_files`: modules whose tests share a wider fixture;
    `split`: each suite's `split` setting."""
    units: list[Unit] = []
    modules: dict[tuple[str, str, bool], list[PendingTest]] = {}
    for test in tests:
        mode = split.get(test.suite, SPLIT_AUTO)
        file = test.nodeid.split("::")[0]
        whole = mode == SPLIT_MODULES or (mode == SPLIT_AUTO and file in grouped_files)
        if not whole:
            units.append(Unit((test,)))
            continue
        # A module's tests that failed last time may still go first: they form a unit of
        # their own, and the module's fixture is set up twice rather than the fix waiting.
        key = (test.suite, file, test.first)
        if key not in modules:
            modules[key] = []
        modules[key].append(test)
    units += [Unit(tuple(members)) for members in modules.values()]
    return sorted(units, key=lambda u: u.sort_key)


class WorkQueue:
    """Units not handed out yet, in run order."""

    def __init__(self, units: Iterable[Unit] = ()) -> None:
        self._units: deque[Unit] = deque(units)
        self.expected_s = sum(u.expected_s for u in self._units)

    def __len__(self) -> int:
        return len(self._units)

    def take(
        self, budget_s: float, cost: Callable[[PendingTest], float] = lambda t: t.expected_s
    ) -> list[Unit]:
        """Units from the front worth about `budget_s` seconds by `cost`, at least one."""
        out: list[Unit] = []
        total = 0.0
        while self._units:
            price = sum(cost(t) for t in self._units[0].tests)
            if out and total + price > budget_s:
                break
            unit = self._units.popleft()
            out.append(unit)
            total += price
            self.expected_s = max(0.0, self.expected_s - unit.expected_s)
        return out

    def put_back(self, tests: list[PendingTest]) -> None:
        """Tests a worker was handed and did not run: at the front, in their order."""
        for test in reversed(tests):
            self._units.appendleft(Unit((test,)))
            self.expected_s += test.expected_s

    def drop_suite(self, suite: str) -> list[PendingTest]:
        """Take out every test of `suite` (it timed out); return them."""
        kept: deque[Unit] = deque()
        dropped: list[PendingTest] = []
        for unit in self._units:
            if unit.tests[0].suite == suite:
                dropped += unit.tests
            else:
                kept.append(unit)
        self._units = kept
        self.expected_s = sum(u.expected_s for u in kept)
        return dropped

    def drain(self) -> list[PendingTest]:
        out = [t for u in self._units for t in u.tests]
        self._units.clear()
        self.expected_s = 0.0
        return out


def hand_out_budget(queue_s: float, workers: int, ahead_s: float) -> float:
    """How much work to hand a worker at once: a share of what is left (guided
    self-scheduling: big pieces early, small ones at the end, so the workers finish
    together), never more than `ahead_s` (a worker's buffer is lost to the others)."""
    return min(ahead_s, queue_s / max(1, 2 * workers))
