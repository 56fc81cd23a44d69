"""How far the iteration got, how long the rest takes, and where it may land — each worked out
from recorded results, and a projection always says it is one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from deployloop.analysis.past import History, by_nodeid, first_attempt_runs, past_of
from deployloop.models import (
    Figures,
    IterationRecord,
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
    rows: Sequence[TestRow], workers: int, history: History
) -> float | None:
    """Each pending test's mean recorded duration (every attempt of every iteration), or the
    mean of all recorded durations for a test never timed, summed, over the workers.

    0.0 when nothing is pending; None when something is and no duration was ever recorded.
    """
    pending = [row.nodeid for row in rows if row.outcome is None]
    if not pending:
        return 0.0
    durations = past_of(history).durations
    count = sum(n for _, n in durations.values())
    if not count:
        return None
    overall = sum(seconds for seconds, _ in durations.values()) / count
    total = sum(_mean(durations[nodeid]) if nodeid in durations else overall for nodeid in pending)
    return total / max(workers, 1)


def _mean(kept: tuple[float, int]) -> float:
    seconds, count = kept
    return seconds / count


def projection(
    rows: Sequence[TestRow], totals: Figures, history: History
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
    kept = by_nodeid(past_of(history), set(pending))
    runs = {nodeid: first_attempt_runs(tests) for nodeid, tests in kept.items()}
    current_rate = totals.passed / totals.executed
    probabilities = [
        (runs[nodeid][0] + 1) / (runs[nodeid][1] + 2) if _ran(runs, nodeid) else current_rate
        for nodeid in pending
    ]
    unknown = sum(1 for nodeid in pending if not _ran(runs, nodeid))
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


def _ran(runs: dict[str, tuple[int, int]], nodeid: str) -> bool:
    return nodeid in runs and runs[nodeid][1] > 0


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
    iterations: Sequence[IterationRecord], history: History, target: float
) -> Trend:
    """Pass rate per iteration (first attempts only) and iterations to `target` at this pace.

    The pace is the least-squares slope of the rate over the last TREND_WINDOW iterations
    with a rate; iterations_to_green is 0 when the latest rate is at the target, else
    (target - latest) / slope while the rate is rising, else None: a drop is never projected
    to green, however it went before.
    """
    counts = past_of(history).counts
    numbers = [r.number for r in iterations] or sorted(counts)
    rates = tuple((n, _rate(*counts.get(n, (0, 0)))) for n in numbers)
    return Trend(
        pass_rates=rates,
        iterations_to_green=iterations_to_green(rates, target),
        pace=pace_of(rates),
    )


def _rate(passed: int, executed: int) -> float | None:
    return 100.0 * passed / executed if executed else None


def iterations_to_green(rates: Sequence[tuple[int, float | None]], target: float) -> float | None:
    window = _window(rates)
    if not window:
        return None
    latest = window[-1][1]
    if latest >= target:
        return 0.0
    slope = least_squares_slope(window)
    if pace_of(rates) != "rising" or slope is None:
        return None
    return (target - latest) / slope


def pace_of(rates: Sequence[tuple[int, float | None]]) -> str:
    """Which way the pass rate goes over the last iterations with a rate (see Trend.pace)."""
    window = _window(rates)
    if len(window) < 2:
        return "unknown"
    if window[-1][1] < window[-2][1]:
        return "falling"
    slope = least_squares_slope(window)
    if not slope:
        return "flat"
    return "rising" if slope > 0 else "falling"


def _window(rates: Sequence[tuple[int, float | None]]) -> list[tuple[int, float]]:
    return [(n, r) for n, r in rates if r is not None][-TREND_WINDOW:]


def least_squares_slope(points: Sequence[tuple[int, float]]) -> float | None:
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
