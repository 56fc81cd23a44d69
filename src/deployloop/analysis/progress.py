"""How far the iteration got, how long the rest takes, and where it may land — each worked out
from recorded results, and a projection always says it is one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from deployloop.analysis.normalize import FAILURE_OUTCOMES
from deployloop.models import (
    Figures,
    HistoryRow,
    IterationRecord,
    Outcome,
    Projection,
    SuiteSummary,
    TestRow,
    Trend,
)

Z_95 = 1.96  # normal approximation: 95 % of the mass within 1.96 sigma
TREND_WINDOW = 5  # iterations the slope is fitted over


def remaining_suite_tests(suites: Sequence[SuiteSummary]) -> tuple[tuple[str, int], ...]:
    """(suite, pending tests) for each suite with tests still to run, in report order."""
    return tuple((s.name, s.figures.pending) for s in suites if s.figures.pending)


def estimate_remaining_s(
    rows: Sequence[TestRow], workers: int, history: Sequence[HistoryRow]
) -> float | None:
    """Each pending test's mean recorded duration (every attempt of every iteration), or the
    mean of all recorded durations for a test never timed, summed, over the workers.

    0.0 when nothing is pending; None when something is and no duration was ever recorded.
    """
    pending = [row.nodeid for row in rows if row.outcome is None]
    if not pending:
        return 0.0
    durations: dict[str, list[float]] = defaultdict(list)
    for point in history:
        if point.duration_s is not None:
            durations[point.nodeid].append(point.duration_s)
    everything = [d for values in durations.values() for d in values]
    if not everything:
        return None
    overall = sum(everything) / len(everything)
    total = sum(
        _mean(durations[nodeid]) if durations.get(nodeid) else overall for nodeid in pending
    )
    return total / max(workers, 1)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def projection(
    rows: Sequence[TestRow], totals: Figures, history: Sequence[HistoryRow]
) -> Projection | None:
    """Where the pass rate would land if the pending tests ran; None when nothing is pending
    or nothing executed yet (no basis).

    Each pending test passes with probability (passes + 1) / (runs + 2) over its first attempts
    in history (Laplace's rule); a test never executed gets this iteration's pass rate. The
    final rate is (passed + sum p) / (executed + pending); the range is 1.96 standard
    deviations of the count of passes (variance sum p(1 - p)), clamped to 0..100.
    """
    pending = [row.nodeid for row in rows if row.outcome is None]
    if not pending or totals.executed == 0:
        return None
    runs: dict[str, list[bool]] = defaultdict(list)
    for point in history:
        if point.attempt == 1 and point.outcome in _EXECUTED:
            runs[point.nodeid].append(point.outcome == Outcome.PASSED)
    current_rate = totals.passed / totals.executed
    probabilities = [
        (sum(runs[nodeid]) + 1) / (len(runs[nodeid]) + 2) if runs.get(nodeid) else current_rate
        for nodeid in pending
    ]
    unknown = sum(1 for nodeid in pending if not runs.get(nodeid))
    total = totals.executed + len(pending)
    final = 100.0 * (totals.passed + sum(probabilities)) / total
    sigma = 100.0 * math.sqrt(sum(p * (1 - p) for p in probabilities)) / total
    return Projection(
        final_pass_rate=final,
        low=max(0.0, final - Z_95 * sigma),
        high=min(100.0, final + Z_95 * sigma),
        remaining_tests=len(pending),
        basis=_basis(len(pending), unknown, 100.0 * current_rate),
    )


_EXECUTED = FAILURE_OUTCOMES | {Outcome.PASSED}


def _basis(pending: int, unknown: int, current_rate: float) -> str:
    known = pending - unknown
    tests = "test" if pending == 1 else "tests"
    if unknown == 0:
        return f"projection from {pending} pending {tests}' pass history; not a result"
    rate = f"this iteration's pass rate ({current_rate:.1f}%)"
    if known == 0:
        return f"projection for {pending} pending {tests} at {rate}, none has history; not a result"
    return (
        f"projection from {known} pending tests' pass history and {rate} for {unknown} "
        f"without history; not a result"
    )


def trend(
    iterations: Sequence[IterationRecord], history: Sequence[HistoryRow], target: float
) -> Trend:
    """Pass rate per iteration (first attempts only) and iterations to `target` at this pace.

    The pace is the least-squares slope of the rate over the last TREND_WINDOW iterations
    with a rate; iterations_to_green is 0 when the latest rate is at the target, else
    (target - latest) / slope when the slope is positive, else None.
    """
    numbers = [r.number for r in iterations] or sorted({p.iteration for p in history})
    passed: dict[int, int] = defaultdict(int)
    executed: dict[int, int] = defaultdict(int)
    for point in history:
        if point.attempt == 1 and point.outcome in _EXECUTED:
            executed[point.iteration] += 1
            passed[point.iteration] += point.outcome == Outcome.PASSED
    rates = tuple((n, 100.0 * passed[n] / executed[n] if executed[n] else None) for n in numbers)
    return Trend(pass_rates=rates, iterations_to_green=iterations_to_green(rates, target))


def iterations_to_green(rates: Sequence[tuple[int, float | None]], target: float) -> float | None:
    window = [(n, r) for n, r in rates[-TREND_WINDOW:] if r is not None]
    if not window:
        return None
    latest = window[-1][1]
    if latest >= target:
        return 0.0
    slope = least_squares_slope(window)
    if slope is None or slope <= 0:
        return None
    return (target - latest) / slope


def least_squares_slope(points: Sequence[tuple[int, float]]) -> float | None:
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
