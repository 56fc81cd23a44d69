"""After an iteration: stop (with which exit code, and why), or go again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from deployloop.config import LoopSection
from deployloop.models import IterationStatus

EXIT_TARGET_REACHED = 0
EXIT_BELOW_TARGET = 1
EXIT_USAGE = 2
EXIT_DEPLOY_FAILED = 3
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class IterationResult:
    number: int
    status: IterationStatus
    pass_rate: float | None  # None when nothing executed
    partial: bool = False  # --failed-only: the tests that passed before did not run


@dataclass(frozen=True)
class Decision:
    stop: bool
    exit_code: int
    reason: str


def decide(results: Sequence[IterationResult], loop: LoopSection, max_iterations: int) -> Decision:
    """`results` are this run's iterations, oldest first."""
    last = results[-1]
    if last.status == IterationStatus.INTERRUPTED:
        return Decision(True, EXIT_INTERRUPTED, "interrupted")
    if last.status == IterationStatus.DEPLOY_FAILED:
        return Decision(True, EXIT_DEPLOY_FAILED, "deploy failed")
    if last.status == IterationStatus.SETUP_FAILED:
        # Another iteration would fail the same way: the fix is in the config or the tests'
        # environment, which a person (or the fix step's next run) has to change first.
        return Decision(True, EXIT_USAGE, "pytest could not run a test")
    if last.status == IterationStatus.PASSED and last.partial:
        # Only the tests that failed before ran: the others are confirmed by a full
        # iteration, when there is one left.
        if len(results) >= max_iterations:
            return Decision(
                True, EXIT_TARGET_REACHED, "target pass rate reached by the tests that failed"
                " before (a partial iteration: the others were not run)"
            )
        return Decision(False, EXIT_BELOW_TARGET, "partial iteration passed: confirm the rest")
    if last.status == IterationStatus.PASSED:
        return Decision(True, EXIT_TARGET_REACHED, "target pass rate reached")
    if len(results) >= max_iterations:
        return Decision(True, EXIT_BELOW_TARGET, f"max iterations ({max_iterations}) reached")
    stalled = stalled_for(results)
    if loop.stall_iterations and stalled >= loop.stall_iterations:
        return Decision(
            True, EXIT_BELOW_TARGET, "no improvement in the last iteration"
            if stalled == 1
            else f"no improvement in the last {stalled} iterations"
        )
    return Decision(False, EXIT_BELOW_TARGET, "below target")


def stalled_for(results: Sequence[IterationResult]) -> int:
    """How many of the latest iterations did not beat the best pass rate before them."""
    count = 0
    for i in range(len(results) - 1, 0, -1):
        earlier = [r.pass_rate for r in results[:i] if r.pass_rate is not None]
        best = max(earlier) if earlier else None
        rate = results[i].pass_rate
        if best is not None and (rate is None or rate <= best):
            count += 1
        else:
            break
    return count
