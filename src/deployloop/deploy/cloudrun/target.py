"""CloudRunTarget: deploy, check, roll back and plan services on Cloud Run through the Admin
API v2, with retries and bounded waits (the package docstring says what counts as ready)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential

from deployloop.config import Config, ServiceConfig, url_env_var
from deployloop.deploy import gcp, preflight
from deployloop.deploy.base import (
    DeployContext,
    DeployError,
    PlannedDeploy,
    Rollback,
    RollbackError,
)
from deployloop.deploy.cloudrun.changes import describe_changes
from deployloop.deploy.cloudrun.errors import (
    Failed,
    api_errors,
    auth_errors,
    describe_api_error,
    is_quota,
    is_transient,
    one_line,
    strip_redundant,
    transient_types,
)
from deployloop.deploy.cloudrun.merge import copy_of, merge_for_update, tags_kept
from deployloop.deploy.cloudrun.registry import ImageError, ImageRef, used_as_written
from deployloop.deploy.cloudrun.registry import resolve as resolve_image
from deployloop.deploy.cloudrun.revision_logs import (
    console_link,
    revision_entries,
    write_revision_logs,
)
from deployloop.deploy.cloudrun.secrets import check_secrets
from deployloop.deploy.cloudrun.spec import (
    base_url,
    build_service,
    candidate_tag,
    check_rollout,
    condition_message,
    condition_state,
    image_for,
    parent_path,
    service_path,
    serving_share,
    serving_text,
    short_name,
    tag_url,
    token_env_var,
)
from deployloop.deploy.readiness import (
    ABANDONED,
    NotReady,
    aborted_by,
    deploy_in_waves,
    failed_or_abandoned,
    now_iso,
    wait_ready,
)
from deployloop.models import Deployment, DeployStatus

if TYPE_CHECKING:
    from google.api_core.operation import Operation
    from google.cloud import run_v2

T = TypeVar("T")

INVOKER_ROLE = "roles/run.invoker"
PUBLIC_MEMBER = "allUsers"


@dataclass(frozen=True)
class CloudRunSettings:
    """Retries and time bounds; tests shrink them so nothing waits for long."""

    attempts: int = 5  # tries of one API step on transient errors
    first_wait_s: float = 0.5  # backoff between tries: 0.5, 1, 2, 4 s ...
    max_wait_s: float = 8.0
    rpc_timeout_s: float = 30.0  # one API call
    operation_margin_s: float = 120.0  # a rollout may take ready_timeout_s plus this
    poll_slice_s: float = 2.0  # how often a wait looks whether the deploy was abandoned
    # RESOURCE_EXHAUSTED is a per-minute quota: waits of 4, 8, 16, 32 and 60 s (two minutes)
    # let the minute roll over, where the usual backoff would give up within seconds.
    quota_attempts: int = 6
    quota_first_wait_s: float = 4.0
    quota_max_wait_s: float = 60.0


INTERNAL_NOTE = (
    "internal ingress: its URL answers only inside the VPC, so readiness rests on the"
    " revision's conditions (no health check from here), and the tests must run where they"
    " can reach it (from this machine they cannot)"
)


def internal_ingress(svc: run_v2.Service) -> bool:
    from google.cloud import run_v2

    return svc.ingress in (
        run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_ONLY,
        run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER,
    )


@dataclass(frozen=True)
class _Moved:
    replaced: list[run_v2.TrafficTarget]  # the traffic before the move
    latest_before: str | None  # the latest created revision then (short name)


class _Abandoned(Exception):
    """The deploy was given up (another service failed, Ctrl-C) while this one waited."""


@dataclass
class _Started:
    operation: Operation
    previous: str | None  # latest created revision before this deploy (short name)
    created: bool = False  # the service did not exist: its first revision takes the traffic


def id_token_audiences(
    config: Config, deployments: Sequence[Deployment]
) -> dict[str, tuple[str, str]]:
    """service -> (LOOP_<NAME>_ID_TOKEN, the audience its token names) for each private
    service that is ready (or one Cloud Run refused to make public)."""
    private = {s.name for s in config.deploy.services if not s.public} | {
        d.service for d in deployments if (d.warning or "").startswith(PUBLIC_REFUSED)
    }
    return {
        d.service: (token_env_var(d.service), base_url(d.url, d.tag))
        for d in deployments
        if d.service in private and d.url and d.status is DeployStatus.READY
    }


class CloudRunTarget:
    def __init__(
        self,
        settings: CloudRunSettings | None = None,
        client_factory: Callable[[], run_v2.ServicesClient] | None = None,
        id_token: Callable[[str, str | None], str] | None = None,
    ) -> None:
        self.settings = settings or CloudRunSettings()
        self._client_factory = client_factory or gcp.services_client
        self._mint_id_token = id_token or gcp.fetch_id_token
        self._client_obj: run_v2.ServicesClient | None = None
        self._lock = threading.Lock()

    # --- protocol ------------------------------------------------------------------------------

    def deploy(self, config: Config, ctx: DeployContext) -> list[Deployment]:
        try:
            client = self._client()
        except gcp.CredentialsError as exc:
            records = [
                Deployment(s.name, DeployStatus.FAILED, error=str(exc), image=image_for(s, ctx))
                for s in config.deploy.services
            ]
            raise DeployError(str(exc), records) from None
        deploy_id = uuid.uuid4().hex[:12]
        # Every image resolved before any service is touched: a missing one stops the deploy
        # with nothing changed, and what runs is what was there now.
        pinned, missing = self._resolve_images(config, ctx)
        if missing:
            records = [
                Deployment(
                    s.name, DeployStatus.FAILED, image=image_for(s, ctx),
                    error=missing.get(s.name, "not deployed: another service's image is missing"),
                )
                for s in config.deploy.services
            ]
            raise DeployError("; ".join(missing.values()), records)
        secrets = check_secrets(config)
        if secrets.errors:
            records = [
                Deployment(
                    s.name, DeployStatus.FAILED, image=image_for(s, ctx),
                    error="; ".join(e for e in secrets.errors if e.startswith(
                        f"service {s.name}:"
                    )) or "not deployed: another service's secret is missing",
                )
                for s in config.deploy.services
            ]
            raise DeployError("; ".join(secrets.errors), records)

        def bring_up(
            service: ServiceConfig, ready: Mapping[str, Deployment], abort: threading.Event
        ) -> Deployment:
            return self._bring_up(
                client, config, service, ctx, ready, abort, deploy_id, pinned.get(service.name)
            )

        records = deploy_in_waves(config.deploy.services, bring_up)
        for record in records:
            for warning in secrets.warnings.get(record.service, ()):
                record.warning = f"{record.warning}; {warning}" if record.warning else warning
        return records

    def _resolve_images(
        self, config: Config, ctx: DeployContext
    ) -> tuple[dict[str, ImageRef], dict[str, str]]:
        """Each service's image by digest, and what could not be resolved, by service (none
        against the fake without a registry: images are then used as written)."""
        if used_as_written():
            return {}, {}
        pinned: dict[str, ImageRef] = {}
        missing: dict[str, str] = {}
        token: list[str | None] = []

        def access_token() -> str | None:  # asked once, only if a registry is Google's
            if not token:
                token.append(gcp.access_token())
            return token[0]

        for service in config.deploy.services:
            try:
                pinned[service.name] = resolve_image(image_for(service, ctx), access_token)
            except ImageError as exc:
                missing[service.name] = f"image {exc}"
        return pinned, missing

    def collect_logs(
        self,
        config: Config,
        deployments: Sequence[Deployment],
        since: str,
        until: str,
        folder: Path,
    ) -> str | None:
        """Each tested revision's Cloud Logging entries of the iteration (revision_logs)."""
        try:
            return write_revision_logs(config, deployments, since, until, folder)
        except Exception as exc:  # noqa: BLE001 - evidence: an iteration never fails for it
            return f"service logs not read: {type(exc).__name__}: {one_line(str(exc))}"

    def stop(self) -> None:
        """Services on Cloud Run stay up; only the API connection is closed."""
        with self._lock:
            client, self._client_obj = self._client_obj, None
        if client is not None:
            client.transport.close()  # type: ignore[no-untyped-call]

    def crashed(self) -> list[Deployment]:
        """Cloud Run restarts what crashes: a revision is not watched during the tests."""
        return []

    def test_env(self, config: Config, deployments: Sequence[Deployment]) -> dict[str, str]:
        """LOOP_<NAME>_ID_TOKEN for each service that is not public, minted now."""
        if gcp.emulator_host() is not None:
            return {}
        env: dict[str, str] = {}
        for service, (name, audience) in id_token_audiences(config, deployments).items():
            try:
                env[name] = self._mint_id_token(audience, config.deploy.invoker_service_account)
            except gcp.CredentialsError as exc:
                raise DeployError(f"service {service!r}: {exc}", list(deployments)) from None
        return env

    def rollback(self, config: Config, revisions: Mapping[str, str], reason: str) -> list[Rollback]:
        """Pin 100% of each service's traffic on the given revision.

        Services not in the config are skipped. Raises DeployError naming every service that
        could not be rolled back (and those that were) once all have been tried.
        """
        try:
            client = self._client()
        except gcp.CredentialsError as exc:
            raise RollbackError(f"rollback: {exc}", []) from None
        services = {s.name: s for s in config.deploy.services}
        done: list[Rollback] = []
        failed: list[str] = []
        for name, revision in revisions.items():
            service = services.get(name)
            if service is None:
                continue
            try:
                done.append(self._roll_back(client, config, service, short_name(revision), reason))
            except Failed as exc:
                failed.append(f"service {name!r}: {exc}")
        if failed:
            message = "rollback failed: " + "; ".join(failed)
            if done:
                message += " (rolled back: " + ", ".join(
                    f"{r.service} -> {r.to_revision}" for r in done
                ) + ")"
            raise RollbackError(message, done)
        return done

    def promote(self, config: Config, deployments: Sequence[Deployment]) -> list[str]:
        """Move all of each service's traffic to its tested candidate revision, every service
        or none: when one cannot be moved, those moved already get their traffic back, and
        DeployError says what happened. Returns the services promoted. Tags stay."""
        try:
            client = self._client()
        except gcp.CredentialsError as exc:
            raise DeployError(f"promotion: {exc}", list(deployments)) from None
        services = {s.name: s for s in config.deploy.services}
        before: list[tuple[ServiceConfig, list[run_v2.TrafficTarget]]] = []
        for d in deployments:
            service = services.get(d.service)
            if service is None or d.revision is None:
                continue
            try:
                previous = self._move_traffic(client, config, service, d.revision).replaced
            except Failed as exc:
                undone = self._restore_traffic(client, config, before)
                raise DeployError(
                    f"promotion of {d.service!r} failed: {exc}; {undone}", list(deployments)
                ) from None
            before.append((service, previous))
        return [service.name for service, _ in before]

    def _move_traffic(
        self, client: run_v2.ServicesClient, config: Config, service: ServiceConfig,
        revision: str, traffic: list[run_v2.TrafficTarget] | None = None,
    ) -> _Moved:
        """All traffic to `revision` (or exactly `traffic`), tags kept, for a rollback, a
        promotion or putting one back; says what it replaced."""
        from google.cloud import run_v2

        path = service_path(config, service)
        replaced: list[run_v2.TrafficTarget] = []
        action = "get"

        def attempt() -> _Started:
            nonlocal action, replaced
            action = "get"
            current = client.get_service(
                name=path, retry=None, timeout=self.settings.rpc_timeout_s
            )
            replaced = list(current.traffic)
            current.traffic = traffic if traffic is not None else [
                run_v2.TrafficTarget(
                    type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
                    revision=revision, percent=100,
                ),
                *tags_kept(current.traffic),
            ]
            action = "update"
            operation = client.update_service(
                service=current, retry=None, timeout=self.settings.rpc_timeout_s
            )
            return _Started(operation, short_name(current.latest_created_revision) or None)

        try:
            started = self._retrying(attempt, conflicts=True)
        except api_errors() as exc:
            raise Failed(describe_api_error(exc, action, path)) from None
        deadline = time.monotonic() + service.ready_timeout_s + self.settings.operation_margin_s
        try:
            svc = self._wait_operation(started.operation, deadline, None, path)
        except _OperationFailed as failure:
            # A service whose latest revision failed may report its rollout failed even when
            # the traffic moved; what counts is where the traffic goes now.
            fetched = self._get_quietly(client, path)
            if fetched is None or (traffic is None and serving_share(fetched, revision) != 100):
                raise Failed(f"traffic not moved to '{revision}': {failure.message}") from None
            svc = fetched
        share = serving_share(svc, revision)
        if traffic is None and share is not None and share != 100:
            raise Failed(f"traffic not moved to '{revision}': it serves {share}%")
        return _Moved(replaced, started.previous)

    def _restore_traffic(
        self,
        client: run_v2.ServicesClient,
        config: Config,
        moved: list[tuple[ServiceConfig, list[run_v2.TrafficTarget]]],
    ) -> str:
        """Put back the traffic of services already promoted; says how that went."""
        if not moved:
            return "no service was promoted"
        failed = []
        for service, traffic in moved:
            try:
                self._move_traffic(client, config, service, "", traffic)
            except Failed as exc:
                failed.append(f"{service.name} ({exc})")
        names = ", ".join(service.name for service, _ in moved)
        if failed:
            return f"traffic of {names} put back, except: " + "; ".join(failed)
        return f"traffic of {names} put back where it was"

    def plan(self, config: Config, ctx: DeployContext) -> list[PlannedDeploy]:
        """Images and changes from what runs now; only GetService and GetIamPolicy calls."""
        services = config.deploy.services
        preflight(config)
        try:
            client = self._client()
        except gcp.CredentialsError as exc:
            raise DeployError(str(exc), []) from None
        pinned, missing = self._resolve_images(config, ctx)
        if missing:
            raise DeployError("; ".join(missing.values()), [])
        secrets = check_secrets(config)
        if secrets.errors:
            raise DeployError("; ".join(secrets.errors), [])
        images = {
            s.name: pinned[s.name].pinned if s.name in pinned else image_for(s, ctx)
            for s in services
        }
        current: dict[str, run_v2.Service | None] = {}
        problems: dict[str, str] = {}
        for s in services:
            path = service_path(config, s)

            def get(path: str = path) -> run_v2.Service | None:
                return self._get_or_none(client, path)

            try:
                current[s.name] = self._retrying(get)
            except api_errors() as exc:
                problems[s.name] = describe_api_error(exc, "get", path)
        urls = {name: svc.uri for name, svc in current.items() if svc is not None and svc.uri}
        planned: list[PlannedDeploy] = []
        for s in services:
            if s.name in problems:
                changes: tuple[str, ...] = (f"current state unknown: {problems[s.name]}",)
            elif current.get(s.name) is None:
                changes = ("new service",)
                if s.ingress is not None and s.ingress != "all":
                    changes += (INTERNAL_NOTE,)
            else:
                now = current[s.name]
                assert now is not None
                known = {d: urls[d] for d in s.depends_on if d in urls}
                unknown_vars = {url_env_var(d) for d in s.depends_on if d not in urls}
                desired = build_service(
                    s, ctx, images[s.name], known, deploy_id="plan",
                    candidate=config.deploy.traffic == "candidate",
                )
                merged = merge_for_update(copy_of(now), desired, s)
                changes = describe_changes(now, merged, s, unknown_vars)
                if not s.invoker_iam_disabled:
                    changes += self._public_change(
                        client, service_path(config, s), s.allow_unauthenticated
                    )
                if internal_ingress(merged):
                    changes += (INTERNAL_NOTE,)
            changes += tuple(f"warning: {w}" for w in secrets.warnings.get(s.name, ()))
            planned.append(PlannedDeploy(s.name, images[s.name], changes))
        return planned

    # --- deploy one service ----------------------------------------------------------------------

    def _bring_up(
        self,
        client: run_v2.ServicesClient,
        config: Config,
        service: ServiceConfig,
        ctx: DeployContext,
        ready: Mapping[str, Deployment],
        abort: threading.Event,
        deploy_id: str,
        resolved: ImageRef | None = None,
    ) -> Deployment:
        written = image_for(service, ctx)
        image = resolved.pinned if resolved is not None else written
        record = Deployment(
            service.name, DeployStatus.PENDING, started_at=now_iso(), image=written,
            digest=resolved.digest if resolved is not None else None,
        )
        if abort.is_set():
            return failed_or_abandoned(record, ABANDONED, abort)
        path = service_path(config, service)
        urls = {d: ready[d].url or "" for d in service.depends_on if d in ready}
        deadline = time.monotonic() + service.ready_timeout_s + self.settings.operation_margin_s
        candidate = config.deploy.traffic == "candidate"
        try:
            started = self._start_rollout(
                client, config, service,
                lambda: build_service(service, ctx, image, urls, deploy_id, candidate), path,
            )
            svc = self._wait_rollout(client, started, path, deadline, abort)
            svc = self._settled(client, svc, path, deadline, abort)
            record.url = svc.uri or None
            # Kept on failure too: the record names the revision that did not become ready.
            record.revision = short_name(svc.latest_created_revision) or None
            check_rollout(svc, started.previous, deploy_id)
            record.serving = serving_text(svc)
            if candidate:
                # Reached by its tag's URL: the service's own still serves what it served.
                record.tag = candidate_tag(ctx.iteration)
                record.url = tag_url(svc, record.tag)
                if started.created:
                    record.warning = (
                        f"{NEW_SERVICE}: nothing served before, so this first revision takes"
                        " its traffic; later candidates stay beside the serving one"
                    )
            public = service.public
            if not service.invoker_iam_disabled:  # public without a binding otherwise
                try:
                    self._set_public(client, path, service.allow_unauthenticated)
                except _PolicyForbids as refused:
                    # As gcloud does: a warning, and the service stays private.
                    public = False
                    record.warning = (
                        f"{PUBLIC_REFUSED}: {refused}; the service stays private (its"
                        " tests and health checks get ID tokens); `invoker_iam_disabled ="
                        " true` makes it public without an allUsers binding"
                    ) + (f"; {record.warning}" if record.warning else "")
            if not internal_ingress(svc):  # its URL answers only inside the VPC
                self._check_health(
                    service, record.url or "", abort, audience=svc.uri,
                    invoker=config.deploy.invoker_service_account, public=public,
                )
        except _Abandoned:
            return failed_or_abandoned(record, ABANDONED, abort)
        except Failed as exc:
            reason = str(exc)
            if record.revision and record.started_at and "not ready" in reason:
                reason += self._revision_evidence(config, service, record)
            return failed_or_abandoned(record, reason, abort)
        except auth_errors() as exc:  # credentials that fail to refresh outside a call
            reason = f"Google credentials failed ({one_line(str(exc))}): {gcp.LOGIN_HINT}"
            return failed_or_abandoned(record, reason, abort)
        record.status = DeployStatus.READY
        record.ready_at = now_iso()
        return record

    def _revision_evidence(
        self, config: Config, service: ServiceConfig, record: Deployment
    ) -> str:
        """What a revision that did not become ready logged (its first error entries), and
        where to see the rest: said with the failure, since Cloud Run's own message rarely
        says more than "failed to start"."""
        link = f" (console: {console_link(config, service)})"
        try:
            client = gcp.logging_client()
        except gcp.CredentialsError:
            return link
        if client is None:
            return link
        try:
            entries = revision_entries(
                client, config, service, record.revision or "", record.started_at or "",
                limit=200,
            )
        except _logging_failures():
            return link
        finally:
            client.transport.close()  # type: ignore[no-untyped-call]
        serious = [t for _, t in entries if t.split(" ", 1)[0] in _SERIOUS_SEVERITIES]
        shown = (serious or [t for _, t in entries])[:3]
        if not shown:
            return link
        return f"; its log: {' | '.join(one_line(t) for t in shown)}{link}"

    def _start_rollout(
        self,
        client: run_v2.ServicesClient,
        config: Config,
        service: ServiceConfig,
        desired: Callable[[], run_v2.Service],
        path: str,
    ) -> _Started:
        """GetService, then CreateService or UpdateService; retried as one step, so a retry
        after a lost answer re-reads what the last try did.

        The revision to move past is the one seen before the first try: if a lost answer hid
        a call that went through, the retry sends the same template again (no new revision),
        and the revision that call made still counts as this deploy's."""
        action = "get"
        before_first_try: list[str | None] = []

        def attempt() -> _Started:
            nonlocal action
            action = "get"
            current = self._get_or_none(client, path)
            if not before_first_try:
                before_first_try.append(
                    short_name(current.latest_created_revision) or None if current else None
                )
            previous = before_first_try[0]
            new = desired()
            if current is None:
                action = "create"
                operation = client.create_service(
                    parent=parent_path(config), service=new, service_id=service.cloud_run_name,
                    retry=None, timeout=self.settings.rpc_timeout_s,
                )
                return _Started(operation, previous, created=True)
            action = "update"
            operation = client.update_service(
                service=merge_for_update(current, new, service),
                retry=None, timeout=self.settings.rpc_timeout_s,
            )
            return _Started(operation, previous)

        try:
            return self._retrying(attempt, conflicts=True)
        except api_errors() as exc:
            raise Failed(describe_api_error(exc, action, path)) from None

    def _wait_rollout(
        self,
        client: run_v2.ServicesClient,
        started: _Started,
        path: str,
        deadline: float,
        abort: threading.Event | None,
    ) -> run_v2.Service:
        """The service once the operation is done; Failed when it finished with an error."""
        try:
            return self._wait_operation(started.operation, deadline, abort, path)
        except _OperationFailed as failure:
            svc = self._get_quietly(client, path)
            message = failure.message
            revision = None
            if svc is not None:
                created = short_name(svc.latest_created_revision)
                if created and created != started.previous:
                    revision = created
                if svc.terminal_condition.state == condition_state("CONDITION_FAILED"):
                    message = condition_message(svc) or message
            message = strip_redundant(message)
            if revision:
                raise Failed(f"revision '{revision}' not ready: {message}") from None
            raise Failed(f"rollout of {path} failed: {message}") from None

    def _settled(
        self,
        client: run_v2.ServicesClient,
        svc: run_v2.Service,
        path: str,
        deadline: float,
        abort: threading.Event | None,
    ) -> run_v2.Service:
        """The service once Cloud Run has caught up with its last change: an operation may end
        while it still reconciles, its observed_generation behind the generation, and the new
        revision not ready yet."""
        while svc.reconciling or svc.observed_generation < svc.generation:
            if abort is not None and abort.is_set():
                raise _Abandoned()
            if time.monotonic() > deadline:
                raise Failed(
                    f"{path} still reconciling when its ready_timeout_s ran out (generation"
                    f" {svc.generation}, observed {svc.observed_generation})"
                )
            time.sleep(min(self.settings.first_wait_s, max(0.0, deadline - time.monotonic())))
            fetched = self._retrying(lambda: self._get_or_none(client, path))
            if fetched is None:
                raise Failed(f"{path} was deleted while it rolled out")
            svc = fetched
        return svc

    def _wait_operation(
        self, operation: Operation, deadline: float, abort: threading.Event | None, path: str
    ) -> run_v2.Service:
        """Wait in slices (bounded `.result(timeout=...)`), looking at `abort` in between."""
        from google.api_core import exceptions as gexc
        from google.api_core import retry as gretry

        total = deadline - time.monotonic()
        while True:
            if abort is not None and abort.is_set():
                raise _Abandoned()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Failed(
                    f"rollout of {path} not finished after {total:.0f} s: operation"
                    f" {operation.operation.name} is still running"
                )
            # How one GetOperation poll is retried; bounded, unlike the client's 600 s default.
            poll_retry = gretry.Retry(
                predicate=gretry.if_exception_type(*transient_types()),
                initial=self.settings.first_wait_s,
                maximum=self.settings.max_wait_s,
                timeout=remaining,
            )
            try:
                result = operation.result(  # type: ignore[no-untyped-call]
                    timeout=min(self.settings.poll_slice_s, remaining), retry=poll_retry
                )
            except FutureTimeout:
                continue
            except gexc.GoogleAPICallError as exc:
                raw = operation.operation
                if raw.done and raw.HasField("error"):
                    raise _OperationFailed(one_line(raw.error.message or str(exc))) from None
                raise Failed(describe_api_error(exc, "wait", path)) from None
            return _as_service(result)

    def _set_public(self, client: run_v2.ServicesClient, path: str, public: bool) -> None:
        """Make the IAM policy match `allow_unauthenticated`: bind roles/run.invoker to
        allUsers, or take allUsers and allAuthenticatedUsers off it. A config that says private
        must not leave a public service behind; nothing is written when nothing changes."""
        iam_policy_pb2 = _iam_policy_pb2()
        action = "getIamPolicy"

        def attempt() -> None:
            nonlocal action
            action = "getIamPolicy"
            policy = client.get_iam_policy(
                request=iam_policy_pb2.GetIamPolicyRequest(resource=path),
                retry=None, timeout=self.settings.rpc_timeout_s,
            )
            if not _change_access(policy, public):
                return
            action = "setIamPolicy"
            client.set_iam_policy(
                request=iam_policy_pb2.SetIamPolicyRequest(resource=path, policy=policy),
                retry=None, timeout=self.settings.rpc_timeout_s,
            )

        try:
            self._retrying(attempt, conflicts=True)
        except api_errors() as exc:
            if _forbidden_by_policy(exc):
                raise _PolicyForbids(one_line(exc.message or str(exc))) from None
            raise Failed(describe_api_error(exc, action, path)) from None

    def _public_change(
        self, client: run_v2.ServicesClient, path: str, public: bool
    ) -> tuple[str, ...]:
        iam_policy_pb2 = _iam_policy_pb2()

        try:
            policy = self._retrying(
                lambda: client.get_iam_policy(
                    request=iam_policy_pb2.GetIamPolicyRequest(resource=path),
                    retry=None, timeout=self.settings.rpc_timeout_s,
                )
            )
        except api_errors() as exc:
            return (f"public access unknown: {describe_api_error(exc, 'getIamPolicy', path)}",)
        if _is_public(policy) == public:
            return ()
        if public:
            return (f"public access added ({PUBLIC_MEMBER}: {INVOKER_ROLE})",)
        return (f"public access removed ({PUBLIC_MEMBER} off {INVOKER_ROLE})",)

    def _check_health(
        self,
        service: ServiceConfig,
        uri: str,
        abort: threading.Event,
        audience: str,
        invoker: str | None,
        public: bool,
    ) -> None:
        if not uri:
            raise Failed("Cloud Run reported no URL for the service")
        alive = aborted_by(abort)
        try:
            if public or gcp.emulator_host() is not None:
                wait_ready(uri, service.health_path, service.ready_timeout_s, alive=alive)
                return
            try:
                token = self._mint_id_token(audience, invoker)
            except gcp.CredentialsError as exc:
                raise Failed(str(exc)) from None
            wait_ready(
                uri, service.health_path, service.ready_timeout_s, alive=alive,
                bearer_token=token,
            )
        except NotReady as exc:
            if str(exc) == ABANDONED:
                raise _Abandoned() from None
            raise Failed(str(exc)) from None

    # --- rollback one service ----------------------------------------------------------------

    def _roll_back(
        self,
        client: run_v2.ServicesClient,
        config: Config,
        service: ServiceConfig,
        revision: str,
        reason: str,
    ) -> Rollback:
        moved = self._move_traffic(client, config, service, revision)
        return Rollback(service.name, moved.latest_before, revision, reason)

    # --- API plumbing ----------------------------------------------------------------------------

    def _client(self) -> run_v2.ServicesClient:
        with self._lock:
            if self._client_obj is None:
                self._client_obj = self._client_factory()
            return self._client_obj

    def _get_or_none(self, client: run_v2.ServicesClient, path: str) -> run_v2.Service | None:
        """The service, or None when it does not exist (the only NOT_FOUND that is fine)."""
        from google.api_core import exceptions as gexc

        try:
            return client.get_service(name=path, retry=None, timeout=self.settings.rpc_timeout_s)
        except gexc.NotFound:
            return None

    def _get_quietly(self, client: run_v2.ServicesClient, path: str) -> run_v2.Service | None:
        """The service for a better error message; None when even that fails."""
        try:
            return self._retrying(lambda: self._get_or_none(client, path))
        except api_errors():
            return None

    def _retrying(self, call: Callable[[], T], conflicts: bool = False) -> T:
        """Run `call`, retrying transient API errors with exponential backoff.

        With `conflicts`, ALREADY_EXISTS is retried too: the step re-reads the service, so a
        create that raced another one (or a retried create that did succeed) turns into an
        update.
        """
        s = self.settings
        usual = wait_exponential(multiplier=s.first_wait_s, max=s.max_wait_s)
        quota = wait_exponential(multiplier=s.quota_first_wait_s, max=s.quota_max_wait_s)

        def over_quota(state: RetryCallState) -> bool:
            return state.outcome is not None and is_quota(state.outcome.exception())

        def stop(state: RetryCallState) -> bool:
            limit = s.quota_attempts if over_quota(state) else s.attempts
            return state.attempt_number >= limit

        def wait(state: RetryCallState) -> float:
            return quota(state) if over_quota(state) else usual(state)

        retrying = Retrying(
            stop=stop,
            wait=wait,
            retry=retry_if_exception(lambda exc: is_transient(exc, conflicts)),
            reraise=True,
        )
        return retrying(call)


PUBLIC_REFUSED = "public access refused"
_SERIOUS_SEVERITIES = frozenset({"ERROR", "CRITICAL", "ALERT", "EMERGENCY", "WARNING"})


def _logging_failures() -> tuple[type[Exception], ...]:
    return (api_errors(), auth_errors(), OSError)
NEW_SERVICE = "new service"  # a candidate deploy that created it


class _PolicyForbids(Exception):
    """An organization policy (iam.allowedPolicyMemberDomains) refused an allUsers binding."""


def _forbidden_by_policy(exc: Exception) -> bool:
    from google.api_core import exceptions as gexc

    return isinstance(exc, gexc.FailedPrecondition) and "permitted customer" in str(exc)


class _OperationFailed(Exception):
    """The long-running operation finished with an error status."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _iam_policy_pb2() -> Any:
    from google.iam.v1 import iam_policy_pb2  # type: ignore[import-untyped]

    return iam_policy_pb2


_PUBLIC_MEMBERS = (PUBLIC_MEMBER, "allAuthenticatedUsers")


def _change_access(policy: Any, public: bool) -> bool:
    """Edit the policy in place to be public or not; whether anything changed."""
    if _is_public(policy) == public and (public or not _any_public(policy)):
        return False
    if public:
        for binding in policy.bindings:
            if binding.role == INVOKER_ROLE:
                binding.members.append(PUBLIC_MEMBER)
                return True
        policy.bindings.add(role=INVOKER_ROLE, members=[PUBLIC_MEMBER])
        return True
    for binding in list(policy.bindings):
        if binding.role == INVOKER_ROLE:
            keep = [m for m in binding.members if m not in _PUBLIC_MEMBERS]
            if keep:
                del binding.members[:]
                binding.members.extend(keep)
            else:  # IAM takes no binding without members
                policy.bindings.remove(binding)
    return True


def _any_public(policy: object) -> bool:
    return any(
        binding.role == INVOKER_ROLE and any(m in binding.members for m in _PUBLIC_MEMBERS)
        for binding in getattr(policy, "bindings", ())
    )


def _is_public(policy: object) -> bool:
    return any(
        binding.role == INVOKER_ROLE and PUBLIC_MEMBER in binding.members
        for binding in getattr(policy, "bindings", ())
    )


def _as_service(result: object) -> run_v2.Service:
    from google.cloud import run_v2

    if not isinstance(result, run_v2.Service):
        raise Failed(f"unexpected operation result {type(result).__name__}")
    return result
