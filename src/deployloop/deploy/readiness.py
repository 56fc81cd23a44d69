"""Readiness: a service is up only when its health endpoint answers 2xx.

A deploy script's exit code or a process that merely runs proves nothing, so every target
ends with these checks. Services come up in waves (see `config.deploy_waves`); the services
of one wave are checked at once, and the first failure stops the wave and skips later ones.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential,
)

from deployloop.config import ServiceConfig, deploy_waves
from deployloop.deploy.base import DeployError
from deployloop.models import Deployment, DeployStatus

# Short first waits so a fast service is seen at once; capped so a slow one costs little.
_FIRST_WAIT_S = 0.05
_MAX_WAIT_S = 0.5
_MAX_REQUEST_S = 2.0
_MIN_REQUEST_S = 0.05
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

Alive = Callable[[], str | None]
# Starts (if needed) and checks one service; gets the services of earlier waves, all ready,
# and an event set when the deploy is being abandoned (another failure, Ctrl-C).
BringUp = Callable[[ServiceConfig, Mapping[str, Deployment], threading.Event], Deployment]


class NotReady(Exception):
    """A service that did not become ready; the message is one line."""


class _NotYet(Exception):
    """One probe that did not get a 2xx; retried until the deadline."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# What a private Cloud Run service's refusal of the ID token most likely means.
_TOKEN_HINTS = {
    401: (
        " (the ID token was refused: its audience must be the service's URL; a token from"
        " user credentials carries gcloud's audience instead: set [deploy]"
        " invoker_service_account)"
    ),
    403: (
        " (the ID token was accepted, but its identity may not call the service: grant it"
        " roles/run.invoker on the service)"
    ),
}


def wait_ready(
    url: str,
    health_path: str,
    timeout_s: float,
    alive: Alive | None = None,
    bearer_token: str | None = None,
) -> None:
    """Return once GET url+health_path answers 2xx; raise NotReady after timeout_s.

    `alive()` returns None while the service can still come up, or a reason to give up now
    (the process exited, the deploy was abandoned). `bearer_token` (an ID token for a private
    Cloud Run service) goes in a header only: never in a message, a log or an exception.
    """
    headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else {}
    target = url.rstrip("/") + health_path
    deadline = time.monotonic() + timeout_s
    # A proxy from the environment must not sit between us and a service on this machine.
    trust_env = urlsplit(target).hostname not in _LOOPBACK_HOSTS
    with httpx.Client(trust_env=trust_env, follow_redirects=False, headers=headers) as client:

        def probe() -> None:
            _check_alive(alive)
            request_s = min(_MAX_REQUEST_S, max(deadline - time.monotonic(), _MIN_REQUEST_S))
            try:
                response = client.get(target, timeout=request_s)
            except httpx.HTTPError as exc:
                _check_alive(alive)  # a crash explains a refused connection better
                raise _NotYet(f"GET {target}: {_describe(exc)}") from None
            if not response.is_success:
                _check_alive(alive)
                hint = _TOKEN_HINTS.get(response.status_code, "") if bearer_token else ""
                raise _NotYet(f"GET {target} answered {response.status_code}{hint}")

        retrying = Retrying(
            stop=_past(deadline),
            wait=_within(deadline),
            retry=retry_if_exception_type(_NotYet),
            reraise=True,
        )
        try:
            retrying(probe)
        except _NotYet as exc:
            raise NotReady(f"{exc} after {timeout_s:.1f} s") from None


def _check_alive(alive: Alive | None) -> None:
    reason = alive() if alive is not None else None
    if reason is not None:
        raise NotReady(reason)


def _past(deadline: float) -> Callable[[RetryCallState], bool]:
    # Stop once no request of useful length fits before the deadline.
    return lambda state: deadline - time.monotonic() < _MIN_REQUEST_S


def _within(deadline: float) -> Callable[[RetryCallState], float]:
    """Exponential waits that leave time for one last request before the deadline."""
    grow = wait_exponential(multiplier=_FIRST_WAIT_S, max=_MAX_WAIT_S)

    def wait_s(state: RetryCallState) -> float:
        return max(0.0, min(grow(state), deadline - time.monotonic() - _MIN_REQUEST_S))

    return wait_s


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        text = str(exc).lower()
        if "refused" in text:
            return "connection refused"
        return f"cannot connect ({exc})" if str(exc) else "cannot connect"
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def check_url(service: ServiceConfig, abort: threading.Event) -> Deployment:
    """Readiness of a service someone else deployed, at its configured `url`."""
    url = service.url or ""
    record = Deployment(service.name, DeployStatus.PENDING, url=url, started_at=now_iso())
    try:
        wait_ready(url, service.health_path, service.ready_timeout_s, alive=aborted_by(abort))
    except NotReady as exc:
        return failed_or_abandoned(record, str(exc), abort)
    record.status = DeployStatus.READY
    record.ready_at = now_iso()
    return record


def aborted_by(abort: threading.Event) -> Alive:
    return lambda: ABANDONED if abort.is_set() else None


ABANDONED = "deploy abandoned"


def failed_or_abandoned(record: Deployment, reason: str, abort: threading.Event) -> Deployment:
    """Record a failure; a service given up on because of another one is SKIPPED instead."""
    if reason == ABANDONED and abort.is_set():
        record.status = DeployStatus.SKIPPED
        record.error = "stopped before ready: another service of its wave failed"
    else:
        record.status = DeployStatus.FAILED
        record.error = f"service {record.service!r}: {reason}"
    return record


def deploy_in_waves(services: list[ServiceConfig], bring_up: BringUp) -> list[Deployment]:
    """Run `bring_up` wave by wave; return the records in config order.

    Raises DeployError with every record when a service fails; later services are SKIPPED.
    """
    records = {s.name: Deployment(s.name, DeployStatus.PENDING) for s in services}
    waves = deploy_waves(services)
    for index, wave in enumerate(waves):
        ready = {name: r for name, r in records.items() if r.status is DeployStatus.READY}
        records.update(_run_wave(wave, ready, bring_up))
        failed = [r for r in records.values() if r.status is DeployStatus.FAILED]
        if failed:
            _skip_later(waves[index + 1 :], records)
            message = "; ".join(r.error or f"service {r.service!r} failed" for r in failed)
            raise DeployError(message, list(records.values()))
    return list(records.values())


def _run_wave(
    wave: list[ServiceConfig], ready: Mapping[str, Deployment], bring_up: BringUp
) -> dict[str, Deployment]:
    abort = threading.Event()
    results: dict[str, Deployment] = {}
    with ThreadPoolExecutor(max_workers=len(wave), thread_name_prefix="deploy") as pool:
        try:
            pending: set[Future[Deployment]] = {
                pool.submit(bring_up, service, ready, abort) for service in wave
            }
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    record = future.result()
                    results[record.service] = record
                    if record.status is not DeployStatus.READY:
                        abort.set()  # no point waiting for the others: the deploy failed
        except BaseException:
            abort.set()  # Ctrl-C or a bug: let the workers return before the pool joins them
            raise
    return results


def _skip_later(waves: list[list[ServiceConfig]], records: dict[str, Deployment]) -> None:
    for wave in waves:
        for service in wave:
            records[service.name] = Deployment(
                service.name, DeployStatus.SKIPPED, error=_skip_reason(service, records)
            )


def _skip_reason(service: ServiceConfig, records: Mapping[str, Deployment]) -> str:
    for dep in service.depends_on:
        status = records[dep].status
        if status is DeployStatus.FAILED:
            return f"dependency {dep!r} failed"
        if status is DeployStatus.SKIPPED:
            return f"dependency {dep!r} was not started"
    return "not started: deploy failed"
