"""An iteration that ended before its tests could show anything is a setup failure, not a result.

Its deploy failed, or loop crashed, was stopped or failed itself before pytest executed a test.
Its pending tests are not "still to run" (nothing is running them) and its zero executed tests
are not a false green: the report says what went wrong instead.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from deployloop.models import Deployment, DeployStatus, IterationStatus, Outcome, TestRow

_CUT_SHORT = frozenset(
    {IterationStatus.CRASHED, IterationStatus.INTERRUPTED, IterationStatus.ERROR}
)
# Never a result, whatever was recorded: the ones after them leave them out
# (IterationRecord.left_out).
LEFT_OUT_STATUSES = frozenset({IterationStatus.DEPLOY_FAILED, IterationStatus.SETUP_FAILED})


def is_setup_failure(status: IterationStatus, executed: int) -> bool:
    # A deploy that failed after some tests ran (an ID token that could not be minted for a
    # retry) still ended the iteration: what is pending will not run in it.
    if status in LEFT_OUT_STATUSES:
        return True
    return executed == 0 and status in _CUT_SHORT


# How loop words a pytest process that failed as a whole (runner/inventory.py, phase.py) or a
# file that failed to collect (reportlog.COLLECTION_ERROR), before pytest's own line.
_LOOP_WORDING = re.compile(
    r"^(?:pytest could not collect this suite |pytest could not start or collect: pytest"
    r" usage error |pytest could not start or collect: pytest crashed )\((exit \d+)[^)]*\): "
)


def _in_pytests_words(message: str) -> str:
    """pytest's own line first: `unrecognized arguments: -x (pytest exit 4)`."""
    match = _LOOP_WORDING.match(message)
    if match:
        return f"{message[match.end():]} (pytest {match[1]})"
    return message.removeprefix("collection error: ")


def pytest_setup_error(rows: Sequence[TestRow]) -> str | None:
    """Why pytest ran no test at all, when it ran none and said why (a usage error, a
    missing plugin, modules that cannot be imported): the most common error message of the
    rows loop recorded for it, with how many suites or files share it. None when a test
    started, or when nothing failed (an empty run is the false-green check's business)."""
    if any(row.started_at for row in rows):
        return None
    errors = Counter(row.message or "" for row in rows if row.outcome is Outcome.ERROR)
    if not errors:
        return None
    message, count = errors.most_common(1)[0]
    others = sum(errors.values()) - count
    text = _in_pytests_words(message.split("\n", 1)[0]) or "no message"
    if others:
        text += f" (and {others} other {'error' if others == 1 else 'errors'})"
    return text


def crashed_services(deployments: Sequence[Deployment]) -> list[Deployment]:
    """Services that were ready and exited while the tests ran: what failed after that is the
    crash's doing."""
    return [d for d in deployments if d.status is DeployStatus.CRASHED]


def crash_note(crashed: Sequence[Deployment]) -> str:
    """ "service backend crashed during the tests", for one or more services."""
    names = ", ".join(d.service for d in crashed)
    word = "service" if len(crashed) == 1 else "services"
    return f"{word} {names} crashed during the tests"
