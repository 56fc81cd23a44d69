"""API errors of the `cloudrun` target: which ones are transient (retried), and the one-line
messages that name the service, what failed and what to do."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from deployloop.deploy import gcp

if TYPE_CHECKING:
    from google.api_core.exceptions import GoogleAPICallError

# What each API call needs, for permission errors: (permission, smallest predefined role).
_NEEDS = {
    "get": ("run.services.get", "roles/run.viewer"),
    "create": ("run.services.create", "roles/run.developer"),
    "update": ("run.services.update", "roles/run.developer"),
    "wait": ("run.operations.get", "roles/run.viewer"),
    "getIamPolicy": ("run.services.getIamPolicy", "roles/run.viewer"),
    "setIamPolicy": ("run.services.setIamPolicy", "roles/run.admin"),
}

_REDUNDANT_PREFIX = re.compile(r"^Revision '[^']*' is not ready and cannot serve traffic\.\s*")


class Failed(Exception):
    """A service that cannot be deployed, rolled back or checked; the message is one line."""


def api_errors() -> type[GoogleAPICallError]:
    from google.api_core.exceptions import GoogleAPICallError

    return GoogleAPICallError


def auth_errors() -> type[Exception]:
    from google.auth.exceptions import GoogleAuthError

    return GoogleAuthError


def transient_types() -> tuple[type[Exception], ...]:
    from google.api_core import exceptions as gexc

    return (
        gexc.ServiceUnavailable,
        gexc.DeadlineExceeded,
        gexc.TooManyRequests,  # RESOURCE_EXHAUSTED: quota of API requests per minute
        gexc.InternalServerError,
        gexc.Aborted,  # a concurrent change of the same service: re-read and try again
    )


def is_transient(exc: BaseException, conflicts: bool = False) -> bool:
    from google.api_core import exceptions as gexc

    if _credentials_refused(exc) or is_revision_conflict(exc):
        return False
    if conflicts and isinstance(exc, gexc.AlreadyExists):
        return True
    return isinstance(exc, transient_types())


def is_quota(exc: BaseException | None) -> bool:
    """RESOURCE_EXHAUSTED: a per-minute quota of the API, which only time restores."""
    from google.api_core import exceptions as gexc

    return isinstance(exc, gexc.TooManyRequests)


def is_revision_conflict(exc: BaseException) -> bool:
    """409 "revision ... with different configuration already exists": a revision name is
    taken by another template. Sending it again can never work."""
    from google.api_core import exceptions as gexc

    text = str(exc).lower()
    return (
        isinstance(exc, gexc.AlreadyExists)
        and "revision" in text
        and "different configuration" in text
    )


def _credentials_refused(exc: BaseException) -> bool:
    """gRPC reports credentials that cannot be refreshed as UNAVAILABLE: never transient."""
    from google.api_core import exceptions as gexc

    return isinstance(exc, gexc.ServiceUnavailable) and "metadata from plugin" in str(exc)


def describe_api_error(exc: GoogleAPICallError, action: str, path: str) -> str:
    """One line naming the service, what failed and what to do."""
    from google.api_core import exceptions as gexc

    said = one_line(exc.message or "")
    if _credentials_refused(exc) or isinstance(exc, gexc.Unauthenticated):
        return f"credentials refused by the Cloud Run API for {path} ({said}): {gcp.LOGIN_HINT}"
    if isinstance(exc, gexc.PermissionDenied):
        permission, role = _NEEDS.get(action, ("run.services.update", "roles/run.developer"))
        text = f"permission denied on {path}: the caller needs {permission} ({role})"
        # Cloud Run's own text matters when it names another permission (iam.serviceAccounts
        # .actAs on the runtime service account, a secret's accessor, ...).
        return f"{text}; Cloud Run said: {said}" if said and permission not in said else text
    if isinstance(exc, gexc.NotFound):
        return f"not found: {path} ({said}); check deploy.project and deploy.region"
    if is_revision_conflict(exc):
        return f"{action} {path} refused: {said}"
    if is_quota(exc):
        return (
            f"Cloud Run API quota still exhausted for {path} after backing off for about two"
            f" minutes: {said}"
        )
    kind = type(exc).__name__
    if is_transient(exc, conflicts=True):
        return f"Cloud Run API still failing for {path} after retries: {kind}: {said}"
    return f"{action} {path}: {kind}: {said}"


def one_line(text: str) -> str:
    return " ".join(text.split())


def strip_redundant(message: str) -> str:
    """Cloud Run starts with "Revision 'x' is not ready and cannot serve traffic."; the
    record says that already."""
    stripped = _REDUNDANT_PREFIX.sub("", message)
    return stripped or message
