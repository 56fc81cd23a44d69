"""An iteration that ended before its tests could show anything is a setup failure, not a result.

Its deploy failed, or loop crashed, was stopped or failed itself before pytest executed a test.
Its pending tests are not "still to run" (nothing is running them) and its zero executed tests
are not a false green: the report says what went wrong instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from deployloop.models import Deployment, DeployStatus, IterationStatus

_CUT_SHORT = frozenset(
    {IterationStatus.CRASHED, IterationStatus.INTERRUPTED, IterationStatus.ERROR}
)


def is_setup_failure(status: IterationStatus, executed: int) -> bool:
    # A deploy that failed after some tests ran (an ID token that could not be minted for a
    # retry) still ended the iteration: what is pending will not run in it.
    if status is IterationStatus.DEPLOY_FAILED:
        return True
    return executed == 0 and status in _CUT_SHORT


def crashed_services(deployments: Sequence[Deployment]) -> list[Deployment]:
    """Services that were ready and exited while the tests ran: what failed after that is the
    crash's doing."""
    return [d for d in deployments if d.status is DeployStatus.CRASHED]


def crash_note(crashed: Sequence[Deployment]) -> str:
    """ "service backend crashed during the tests", for one or more services."""
    names = ", ".join(d.service for d in crashed)
    word = "service" if len(crashed) == 1 else "services"
    return f"{word} {names} crashed during the tests"
