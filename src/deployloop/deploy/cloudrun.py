"""The `cloudrun` target: each service as a Google Cloud Run service, through the Admin API v2.

A deploy creates the service when GetService says NOT_FOUND and updates it otherwise; either
way Cloud Run makes a new revision, and the service counts as ready only when

  (a) the rollout's terminal condition (`Ready`) succeeded,
  (b) latest_ready_revision == latest_created_revision == the revision this deploy created,
  (c) GET <service uri><health_path> answers 2xx within `ready_timeout_s` (with an ID token
      as Bearer when the service is not public and no emulator is in use).

What the config says is the revision template: every field the config leaves out takes Cloud
Run's default, whatever an earlier revision had. Service-level settings the config does not
name (description, annotations, binary authorization, ...) are kept on update.

Image placeholders: `{iteration}` is the iteration number; `{git_sha}` is the SHA as the
iteration recorded it: 40 hex digits, with `-dirty` appended when tracked files differ from
HEAD (both valid in a tag or a repository path), or `unknown` outside a git checkout. A build
step must tag its images the same way.

Transient API errors (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, ABORTED)
are retried with exponential backoff, a few times; PERMISSION_DENIED, NOT_FOUND (except the
create-if-missing case), INVALID_ARGUMENT and the like fail at once with a one-line message.
Secrets go into the template as Secret Manager references, never as values; ID tokens are
never logged or written.

Google libraries are imported inside the functions that use them (see `gcp`).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from deployloop.config import Config, ServiceConfig, url_env_var
from deployloop.deploy import gcp
from deployloop.deploy.base import DeployContext, DeployError, PlannedDeploy, Rollback
from deployloop.deploy.local import fill
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
    from google.api_core.exceptions import GoogleAPICallError
    from google.api_core.operation import Operation
    from google.cloud import run_v2

T = TypeVar("T")

INVOKER_ROLE = "roles/run.invoker"
PUBLIC_MEMBER = "allUsers"
# Labels and annotations this target adds; Cloud Run rejects only the run.googleapis.com,
# cloud.googleapis.com, serving.knative.dev and autoscaling.knative.dev namespaces.
LABEL_ENV = "deployloop-env"
LABEL_ITERATION = "deployloop-iteration"
ANNOTATION_DEPLOY_ID = "deployloop/deploy-id"  # unique per deploy: always a new revision
ANNOTATION_GIT_SHA = "deployloop/git-sha"

INGRESS = {
    "all": "INGRESS_TRAFFIC_ALL",
    "internal": "INGRESS_TRAFFIC_INTERNAL_ONLY",
    "internal-and-cloud-load-balancing": "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER",
}

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


@dataclass(frozen=True)
class CloudRunSettings:
    """Retries and time bounds; tests shrink them so nothing waits for long."""

    attempts: int = 5  # tries of one API step on transient errors
    first_wait_s: float = 0.5  # backoff between tries: 0.5, 1, 2, 4 s ...
    max_wait_s: float = 8.0
    rpc_timeout_s: float = 30.0  # one API call
    operation_margin_s: float = 120.0  # a rollout may take ready_timeout_s plus this
    poll_slice_s: float = 2.0  # how often a wait looks whether the deploy was abandoned


class _Failed(Exception):
    """A service that cannot be deployed, rolled back or checked; the message is one line."""


class _Abandoned(Exception):
    """The deploy was given up (another service failed, Ctrl-C) while this one waited."""


@dataclass
class _Started:
    operation: Operation
    previous: str | None  # latest created revision before this deploy (short name)


class CloudRunTarget:
    def __init__(
        self,
        settings: CloudRunSettings | None = None,
        client_factory: Callable[[], run_v2.ServicesClient] | None = None,
        id_token: Callable[[str], str] | None = None,
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

        def bring_up(
            service: ServiceConfig, ready: Mapping[str, Deployment], abort: threading.Event
        ) -> Deployment:
            return self._bring_up(client, config, service, ctx, ready, abort, deploy_id)

        return deploy_in_waves(config.deploy.services, bring_up)

    def stop(self) -> None:
        """Services on Cloud Run stay up; only the API connection is closed."""
        with self._lock:
            client, self._client_obj = self._client_obj, None
        if client is not None:
            client.transport.close()  # type: ignore[no-untyped-call]

    def test_env(self, config: Config, deployments: Sequence[Deployment]) -> dict[str, str]:
        """LOOP_<NAME>_ID_TOKEN for each service that is not public, minted now."""
        if gcp.emulator_host() is not None:
            return {}
        private = {s.name for s in config.deploy.services if not s.allow_unauthenticated}
        env: dict[str, str] = {}
        for d in deployments:
            if d.service in private and d.url and d.status is DeployStatus.READY:
                try:
                    env[token_env_var(d.service)] = self._mint_id_token(d.url)
                except gcp.CredentialsError as exc:
                    raise DeployError(f"service {d.service!r}: {exc}", list(deployments)) from None
        return env

    def rollback(self, config: Config, revisions: Mapping[str, str], reason: str) -> list[Rollback]:
        """Pin 100% of each service's traffic on the given revision.

        Services not in the config are skipped. Raises DeployError naming every service that
        could not be rolled back (and those that were) once all have been tried.
        """
        try:
            client = self._client()
        except gcp.CredentialsError as exc:
            raise DeployError(f"rollback: {exc}", []) from None
        services = {s.name: s for s in config.deploy.services}
        done: list[Rollback] = []
        failed: list[str] = []
        for name, revision in revisions.items():
            service = services.get(name)
            if service is None:
                continue
            try:
                done.append(self._roll_back(client, config, service, short_name(revision), reason))
            except _Failed as exc:
                failed.append(f"service {name!r}: {exc}")
        if failed:
            message = "rollback failed: " + "; ".join(failed)
            if done:
                message += " (rolled back: " + ", ".join(
                    f"{r.service} -> {r.to_revision}" for r in done
                ) + ")"
            raise DeployError(message, [])
        return done

    def plan(self, config: Config, ctx: DeployContext) -> list[PlannedDeploy]:
        """Images and changes from what runs now; only GetService and GetIamPolicy calls."""
        services = config.deploy.services
        images = {s.name: image_for(s, ctx) for s in services}
        try:
            client = self._client()
        except gcp.CredentialsError as exc:
            unknown = (f"current state unknown: {exc}",)
            return [PlannedDeploy(s.name, images[s.name], unknown) for s in services]
        current: dict[str, run_v2.Service | None] = {}
        problems: dict[str, str] = {}
        for s in services:
            path = service_path(config, s)

            def get(path: str = path) -> run_v2.Service | None:
                return self._get_or_none(client, path)

            try:
                current[s.name] = self._retrying(get)
            except _api_errors() as exc:
                problems[s.name] = describe_api_error(exc, "get", path)
        urls = {name: svc.uri for name, svc in current.items() if svc is not None and svc.uri}
        planned: list[PlannedDeploy] = []
        for s in services:
            if s.name in problems:
                changes: tuple[str, ...] = (f"current state unknown: {problems[s.name]}",)
            elif current.get(s.name) is None:
                changes = ("new service",)
            else:
                now = current[s.name]
                assert now is not None
                known = {d: urls[d] for d in s.depends_on if d in urls}
                unknown_vars = {url_env_var(d) for d in s.depends_on if d not in urls}
                desired = build_service(s, ctx, images[s.name], known, deploy_id="plan")
                changes = describe_changes(now, desired, s, unknown_vars)
                if s.allow_unauthenticated:
                    changes += self._public_change(client, service_path(config, s))
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
    ) -> Deployment:
        image = image_for(service, ctx)
        record = Deployment(
            service.name, DeployStatus.PENDING, started_at=now_iso(), image=image
        )
        if abort.is_set():
            return failed_or_abandoned(record, ABANDONED, abort)
        path = service_path(config, service)
        urls = {d: ready[d].url or "" for d in service.depends_on if d in ready}
        deadline = time.monotonic() + service.ready_timeout_s + self.settings.operation_margin_s
        try:
            started = self._start_rollout(
                client, config, service,
                lambda: build_service(service, ctx, image, urls, deploy_id), path,
            )
            svc = self._wait_rollout(client, started, path, deadline, abort)
            record.url = svc.uri or None
            # Kept on failure too: the record names the revision that did not become ready.
            record.revision = short_name(svc.latest_created_revision) or None
            check_rollout(svc, started.previous)
            if service.allow_unauthenticated:
                self._make_public(client, path)
            self._check_health(service, svc.uri, abort)
        except _Abandoned:
            return failed_or_abandoned(record, ABANDONED, abort)
        except _Failed as exc:
            return failed_or_abandoned(record, str(exc), abort)
        except _auth_errors() as exc:  # credentials that fail to refresh outside a call
            reason = f"Google credentials failed ({_one_line(str(exc))}): {gcp.LOGIN_HINT}"
            return failed_or_abandoned(record, reason, abort)
        record.status = DeployStatus.READY
        record.ready_at = now_iso()
        return record

    def _start_rollout(
        self,
        client: run_v2.ServicesClient,
        config: Config,
        service: ServiceConfig,
        desired: Callable[[], run_v2.Service],
        path: str,
    ) -> _Started:
        """GetService, then CreateService or UpdateService; retried as one step, so a retry
        after a lost answer re-reads what the last try did."""
        action = "get"

        def attempt() -> _Started:
            nonlocal action
            action = "get"
            current = self._get_or_none(client, path)
            new = desired()
            if current is None:
                action = "create"
                operation = client.create_service(
                    parent=parent_path(config), service=new, service_id=service.cloud_run_name,
                    retry=None, timeout=self.settings.rpc_timeout_s,
                )
                return _Started(operation, None)
            previous = short_name(current.latest_created_revision) or None
            action = "update"
            operation = client.update_service(
                service=merge_for_update(current, new),
                retry=None, timeout=self.settings.rpc_timeout_s,
            )
            return _Started(operation, previous)

        try:
            return self._retrying(attempt, conflicts=True)
        except _api_errors() as exc:
            raise _Failed(describe_api_error(exc, action, path)) from None

    def _wait_rollout(
        self,
        client: run_v2.ServicesClient,
        started: _Started,
        path: str,
        deadline: float,
        abort: threading.Event | None,
    ) -> run_v2.Service:
        """The service once the operation is done; _Failed when it finished with an error."""
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
                if svc.terminal_condition.state == _state("CONDITION_FAILED"):
                    message = condition_message(svc) or message
            message = _strip_redundant(message)
            if revision:
                raise _Failed(f"revision '{revision}' not ready: {message}") from None
            raise _Failed(f"rollout of {path} failed: {message}") from None

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
                raise _Failed(f"rollout of {path} not finished after {total:.0f} s")
            # How one GetOperation poll is retried; bounded, unlike the client's 600 s default.
            poll_retry = gretry.Retry(
                predicate=gretry.if_exception_type(*_transient_types()),
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
                    raise _OperationFailed(_one_line(raw.error.message or str(exc))) from None
                raise _Failed(describe_api_error(exc, "wait", path)) from None
            return _as_service(result)

    def _make_public(self, client: run_v2.ServicesClient, path: str) -> None:
        """Bind roles/run.invoker to allUsers, unless it is bound already."""
        iam_policy_pb2 = _iam_policy_pb2()
        action = "getIamPolicy"

        def attempt() -> None:
            nonlocal action
            action = "getIamPolicy"
            policy = client.get_iam_policy(
                request=iam_policy_pb2.GetIamPolicyRequest(resource=path),
                retry=None, timeout=self.settings.rpc_timeout_s,
            )
            if _is_public(policy):
                return
            for binding in policy.bindings:
                if binding.role == INVOKER_ROLE:
                    binding.members.append(PUBLIC_MEMBER)
                    break
            else:
                policy.bindings.add(role=INVOKER_ROLE, members=[PUBLIC_MEMBER])
            action = "setIamPolicy"
            client.set_iam_policy(
                request=iam_policy_pb2.SetIamPolicyRequest(resource=path, policy=policy),
                retry=None, timeout=self.settings.rpc_timeout_s,
            )

        try:
            self._retrying(attempt, conflicts=True)
        except _api_errors() as exc:
            raise _Failed(describe_api_error(exc, action, path)) from None

    def _public_change(self, client: run_v2.ServicesClient, path: str) -> tuple[str, ...]:
        iam_policy_pb2 = _iam_policy_pb2()

        try:
            policy = self._retrying(
                lambda: client.get_iam_policy(
                    request=iam_policy_pb2.GetIamPolicyRequest(resource=path),
                    retry=None, timeout=self.settings.rpc_timeout_s,
                )
            )
        except _api_errors() as exc:
            return (f"public access unknown: {describe_api_error(exc, 'getIamPolicy', path)}",)
        if _is_public(policy):
            return ()
        return (f"public access added ({PUBLIC_MEMBER}: {INVOKER_ROLE})",)

    def _check_health(self, service: ServiceConfig, uri: str, abort: threading.Event) -> None:
        if not uri:
            raise _Failed("Cloud Run reported no URL for the service")
        alive = aborted_by(abort)
        try:
            if service.allow_unauthenticated or gcp.emulator_host() is not None:
                wait_ready(uri, service.health_path, service.ready_timeout_s, alive=alive)
                return
            try:
                token = self._mint_id_token(uri)
            except gcp.CredentialsError as exc:
                raise _Failed(str(exc)) from None
            wait_ready(
                uri, service.health_path, service.ready_timeout_s, alive=alive,
                bearer_token=token,
            )
        except NotReady as exc:
            if str(exc) == ABANDONED:
                raise _Abandoned() from None
            raise _Failed(str(exc)) from None

    # --- rollback one service ----------------------------------------------------------------

    def _roll_back(
        self,
        client: run_v2.ServicesClient,
        config: Config,
        service: ServiceConfig,
        revision: str,
        reason: str,
    ) -> Rollback:
        from google.cloud import run_v2

        path = service_path(config, service)
        action = "get"

        def attempt() -> _Started:
            nonlocal action
            action = "get"
            current = client.get_service(
                name=path, retry=None, timeout=self.settings.rpc_timeout_s
            )
            previous = short_name(current.latest_created_revision) or None
            current.traffic = [
                run_v2.TrafficTarget(
                    type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
                    revision=revision,
                    percent=100,
                )
            ]
            action = "update"
            operation = client.update_service(
                service=current, retry=None, timeout=self.settings.rpc_timeout_s
            )
            return _Started(operation, previous)

        try:
            started = self._retrying(attempt, conflicts=True)
        except _api_errors() as exc:
            raise _Failed(describe_api_error(exc, action, path)) from None
        deadline = time.monotonic() + service.ready_timeout_s + self.settings.operation_margin_s
        try:
            svc = self._wait_operation(started.operation, deadline, None, path)
        except _OperationFailed as failure:
            # A service whose latest revision failed may report its rollout failed even when
            # the traffic moved; what counts is where the traffic goes now.
            fetched = self._get_quietly(client, path)
            if fetched is None or serving_share(fetched, revision) != 100:
                raise _Failed(f"traffic not moved to '{revision}': {failure.message}") from None
            svc = fetched
        share = serving_share(svc, revision)
        if share is not None and share != 100:
            raise _Failed(f"traffic not moved to '{revision}': it serves {share}%")
        return Rollback(service.name, started.previous, revision, reason)

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
        except _api_errors():
            return None

    def _retrying(self, call: Callable[[], T], conflicts: bool = False) -> T:
        """Run `call`, retrying transient API errors with exponential backoff.

        With `conflicts`, ALREADY_EXISTS is retried too: the step re-reads the service, so a
        create that raced another one (or a retried create that did succeed) turns into an
        update.
        """
        s = self.settings
        retrying = Retrying(
            stop=stop_after_attempt(s.attempts),
            wait=wait_exponential(multiplier=s.first_wait_s, max=s.max_wait_s),
            retry=retry_if_exception(lambda exc: _is_transient(exc, conflicts)),
            reraise=True,
        )
        return retrying(call)


class _OperationFailed(Exception):
    """The long-running operation finished with an error status."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- building and comparing services ---------------------------------------------------------


def image_for(service: ServiceConfig, ctx: DeployContext) -> str:
    """The image with `{git_sha}` and `{iteration}` filled (see the module docstring)."""
    return fill(service.image or "", git_sha=image_sha(ctx.git_sha), iteration=ctx.iteration)


def image_sha(git_sha: str | None) -> str:
    """`{git_sha}` in an image: valid in a tag ([A-Za-z0-9_.-], at most 128) and a path."""
    if not git_sha:
        return "unknown"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", git_sha).lower()[:128]


def service_path(config: Config, service: ServiceConfig) -> str:
    return f"{parent_path(config)}/services/{service.cloud_run_name}"


def parent_path(config: Config) -> str:
    return f"projects/{config.deploy.project}/locations/{config.deploy.region}"


def short_name(resource: str) -> str:
    """`backend-00002-xyz` from `projects/.../services/backend/revisions/backend-00002-xyz`."""
    return resource.rsplit("/", 1)[-1]


def token_env_var(service_name: str) -> str:
    """`LOOP_<NAME>_ID_TOKEN`, next to `LOOP_<NAME>_URL`."""
    return url_env_var(service_name).removesuffix("_URL") + "_ID_TOKEN"


def label_value(value: str) -> str:
    """A Cloud Run label value: lower-case letters, digits, '_' and '-', at most 63."""
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]


def build_service(
    service: ServiceConfig,
    ctx: DeployContext,
    image: str,
    dependency_urls: Mapping[str, str],
    deploy_id: str,
) -> run_v2.Service:
    """The Service that deploy() sends: the whole revision template comes from the config."""
    from google.cloud import run_v2

    values: dict[str, str] = dict(service.env)
    for dep, url in dependency_urls.items():
        if url:
            values[url_env_var(dep)] = url
    env = [run_v2.EnvVar(name=k, value=v) for k, v in values.items() if k not in service.secrets]
    for var, ref in service.secrets.items():
        secret, version = ref.split(":", 1)
        env.append(
            run_v2.EnvVar(
                name=var,
                value_source=run_v2.EnvVarSource(
                    secret_key_ref=run_v2.SecretKeySelector(secret=secret, version=version)
                ),
            )
        )
    container = run_v2.Container(image=image, env=env)
    limits = {k: v for k, v in (("cpu", service.cpu), ("memory", service.memory)) if v}
    if limits:
        container.resources = run_v2.ResourceRequirements(limits=limits)
    template = run_v2.RevisionTemplate(
        containers=[container],
        labels={**service.labels, LABEL_ITERATION: str(ctx.iteration)},
        annotations={ANNOTATION_DEPLOY_ID: deploy_id, ANNOTATION_GIT_SHA: ctx.git_sha or ""},
    )
    if service.service_account:
        template.service_account = service.service_account
    if service.min_instances is not None or service.max_instances is not None:
        template.scaling = run_v2.RevisionScaling(
            min_instance_count=service.min_instances or 0,
            max_instance_count=service.max_instances or 0,
        )
    if service.concurrency is not None:
        template.max_instance_request_concurrency = service.concurrency
    if service.timeout_s is not None:
        template.timeout = timedelta(seconds=service.timeout_s)  # proto-plus: a Duration
    svc = run_v2.Service(
        template=template,
        labels={**service.labels, LABEL_ENV: label_value(ctx.env)},
        traffic=[
            run_v2.TrafficTarget(
                type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST,
                percent=100,
            )
        ],
    )
    if service.ingress is not None:
        svc.ingress = getattr(run_v2.IngressTraffic, INGRESS[service.ingress])
    return svc


def merge_for_update(current: run_v2.Service, desired: run_v2.Service) -> run_v2.Service:
    """`current` with the template, traffic, labels and ingress of `desired`.

    Starting from what is deployed keeps the etag (a concurrent change fails instead of
    being overwritten) and the service-level settings the config does not manage.
    """
    current.template = desired.template
    current.traffic = desired.traffic
    for key, value in desired.labels.items():
        current.labels[key] = value
    if desired.ingress:
        current.ingress = desired.ingress
    return current


def check_rollout(svc: run_v2.Service, previous: str | None) -> str:
    """The short name of the revision this deploy created, or _Failed saying why not ready."""
    created = short_name(svc.latest_created_revision)
    ready = short_name(svc.latest_ready_revision)
    if svc.terminal_condition.state != _state("CONDITION_SUCCEEDED"):
        message = _strip_redundant(condition_message(svc) or "no reason given")
        raise _Failed(f"revision '{created or '?'}' not ready: {message}")
    if not created or created == previous:
        raise _Failed(f"the deploy created no new revision (latest is '{created or '?'}')")
    if ready != created:
        raise _Failed(
            f"revision '{created}' not ready: the latest ready revision is '{ready or 'none'}'"
        )
    return created


def condition_message(svc: run_v2.Service) -> str:
    """What the failing condition says: the terminal one first, then any other that failed."""
    terminal = svc.terminal_condition
    if terminal.message:
        return _one_line(terminal.message)
    for condition in svc.conditions:
        if condition.state == _state("CONDITION_FAILED") and condition.message:
            return _one_line(condition.message)
    if terminal.type_:
        return f"condition {terminal.type_} is {terminal.state.name}"
    return ""


def serving_share(svc: run_v2.Service, revision: str) -> int | None:
    """Percent of the traffic `revision` serves, from traffic_statuses; None if not reported."""
    if not svc.traffic_statuses:
        return None
    return sum(
        status.percent for status in svc.traffic_statuses
        if short_name(status.revision) == revision
    )


def describe_changes(
    current: run_v2.Service,
    desired: run_v2.Service,
    service: ServiceConfig,
    unknown_vars: set[str],
) -> tuple[str, ...]:
    """What deploying `desired` would change, one short phrase each; values of env vars are
    not shown. Fields the config leaves out count only when they differ from Cloud Run's
    default (which GetService reports filled in)."""
    from google.cloud import run_v2

    changes: list[str] = []
    now = current.template.containers[0] if current.template.containers else run_v2.Container()
    new = desired.template.containers[0]
    if now.image != new.image:
        changes.append(f"image {now.image or '(none)'} -> {new.image}")
    now_env, now_secrets = _split_env(now.env)
    new_env, new_secrets = _split_env(new.env)
    for name in sorted((now_env.keys() | new_env.keys()) - unknown_vars):
        if name not in now_env:
            changes.append(f"env {name} added")
        elif name not in new_env:
            changes.append(f"env {name} removed")
        elif now_env[name] != new_env[name]:
            changes.append(f"env {name} changed")
    for name in sorted(now_secrets.keys() | new_secrets.keys()):
        if name not in now_secrets:
            changes.append(f"secret {name} added ({new_secrets[name]})")
        elif name not in new_secrets:
            changes.append(f"secret {name} removed")
        elif now_secrets[name] != new_secrets[name]:
            changes.append(f"secret {name} {now_secrets[name]} -> {new_secrets[name]}")
    template = current.template
    timeout = int(run_v2.RevisionTemplate.pb(template).timeout.seconds)
    account = template.service_account or None
    if account and account.endswith("-compute@developer.gserviceaccount.com"):
        account = None  # the default compute service account is what "not set" means
    ingress = {getattr(run_v2.IngressTraffic, v): k for k, v in INGRESS.items()}
    fields = [
        ("cpu", _cpu(now.resources.limits.get("cpu")), _cpu(service.cpu), {"1"}),
        ("memory", now.resources.limits.get("memory"), service.memory, {"512Mi"}),
        ("min_instances", _int(template.scaling.min_instance_count),
         _opt(service.min_instances), {"0"}),
        ("max_instances", _int(template.scaling.max_instance_count),
         _opt(service.max_instances), {"100"}),
        ("concurrency", _int(template.max_instance_request_concurrency),
         _opt(service.concurrency), {"80"}),
        ("timeout", f"{timeout}s" if timeout else None,
         f"{service.timeout_s}s" if service.timeout_s else None, {"300s"}),
        ("service_account", account, service.service_account, set()),
        ("ingress", ingress.get(current.ingress), service.ingress, {"all"}),
    ]
    for label, before, after, defaults in fields:
        change = _field_change(label, before, after, defaults)
        if change:
            changes.append(change)
    for key, value in sorted(service.labels.items()):
        if key not in current.labels:
            changes.append(f"label {key} added")
        elif current.labels[key] != value:
            changes.append(f"label {key} {current.labels[key]} -> {value}")
    pinned = [
        t for t in current.traffic
        if t.type_ != run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
        and t.percent
    ]
    if pinned:
        where = ", ".join(f"{t.percent}% on {t.revision}" for t in pinned)
        changes.append(f"traffic {where} -> 100% on the new revision")
    return tuple(changes)


def _field_change(label: str, before: str | None, after: str | None, defaults: set[str]) -> str:
    if after is None:  # the config leaves it to Cloud Run
        if before is None or before in defaults:
            return ""
        return f"{label} {before} -> default"
    if before == after or (before is None and after in defaults):
        return ""
    return f"{label} {before or 'default'} -> {after}"


def _split_env(env: Sequence[run_v2.EnvVar]) -> tuple[dict[str, str], dict[str, str]]:
    """(plain name -> value, secret name -> 'secret:version')."""
    plain: dict[str, str] = {}
    secrets: dict[str, str] = {}
    for var in env:
        ref = var.value_source.secret_key_ref
        if ref.secret:
            secrets[var.name] = f"{short_name(ref.secret)}:{ref.version or 'latest'}"
        else:
            plain[var.name] = var.value
    return plain, secrets


def _cpu(value: str | None) -> str | None:
    """`1000m` and `1` are the same CPU limit."""
    if value and value.endswith("m") and value[:-1].isdigit() and int(value[:-1]) % 1000 == 0:
        return str(int(value[:-1]) // 1000)
    return value or None


def _int(value: int) -> str | None:
    return str(value) if value else None


def _opt(value: int | None) -> str | None:
    return None if value is None else str(value)


# --- errors ----------------------------------------------------------------------------------


def _api_errors() -> type[GoogleAPICallError]:
    from google.api_core.exceptions import GoogleAPICallError

    return GoogleAPICallError


def _auth_errors() -> type[Exception]:
    from google.auth.exceptions import GoogleAuthError

    return GoogleAuthError


def _transient_types() -> tuple[type[Exception], ...]:
    from google.api_core import exceptions as gexc

    return (
        gexc.ServiceUnavailable,
        gexc.DeadlineExceeded,
        gexc.TooManyRequests,  # RESOURCE_EXHAUSTED: quota of API requests per minute
        gexc.InternalServerError,
        gexc.Aborted,  # a concurrent change of the same service: re-read and try again
    )


def _is_transient(exc: BaseException, conflicts: bool = False) -> bool:
    from google.api_core import exceptions as gexc

    if _credentials_refused(exc):
        return False
    if conflicts and isinstance(exc, gexc.AlreadyExists):
        return True
    return isinstance(exc, _transient_types())


def _credentials_refused(exc: BaseException) -> bool:
    """gRPC reports credentials that cannot be refreshed as UNAVAILABLE: never transient."""
    from google.api_core import exceptions as gexc

    return isinstance(exc, gexc.ServiceUnavailable) and "metadata from plugin" in str(exc)


def describe_api_error(exc: GoogleAPICallError, action: str, path: str) -> str:
    """One line naming the service, what failed and what to do."""
    from google.api_core import exceptions as gexc

    said = _one_line(exc.message or "")
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
    kind = type(exc).__name__
    if _is_transient(exc, conflicts=True):
        return f"Cloud Run API still failing for {path} after retries: {kind}: {said}"
    return f"{action} {path}: {kind}: {said}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _strip_redundant(message: str) -> str:
    """Cloud Run starts with "Revision 'x' is not ready and cannot serve traffic."; the
    record says that already."""
    stripped = _REDUNDANT_PREFIX.sub("", message)
    return stripped or message


def _state(name: str) -> run_v2.Condition.State:
    from google.cloud import run_v2

    state: run_v2.Condition.State = getattr(run_v2.Condition.State, name)
    return state


def _iam_policy_pb2() -> Any:
    from google.iam.v1 import iam_policy_pb2  # type: ignore[import-untyped]

    return iam_policy_pb2


def _is_public(policy: object) -> bool:
    return any(
        binding.role == INVOKER_ROLE and PUBLIC_MEMBER in binding.members
        for binding in getattr(policy, "bindings", ())
    )


def _as_service(result: object) -> run_v2.Service:
    from google.cloud import run_v2

    if not isinstance(result, run_v2.Service):
        raise _Failed(f"unexpected operation result {type(result).__name__}")
    return result


# --- health check with an ID token ---------------------------------------------------------
