"""An in-process fake of the Cloud Run Admin API v2, for the real google-cloud-run client.

A `grpc.server` on 127.0.0.1:<free port> answers `google.cloud.run.v2.Services`
(GetService, CreateService, UpdateService, DeleteService, GetIamPolicy, SetIamPolicy) and
`google.longrunning.Operations/GetOperation`, with proto-plus `serialize`/`deserialize`.
Point the client at it with `CLOUDRUN_EMULATOR_HOST=<fake.address>`.

Like Cloud Run, every create or update whose revision template changed makes a revision
`<service>-0000N-abc`; traffic follows the service's traffic targets. Create and update
answer with an operation that is done at the first GetOperation, its result packed with
the real type URL (`Any.Pack(run_v2.Service.pb(svc))`), or the client cannot unpack it.

Each fake service's `uri` is a small stdlib HTTP server on 127.0.0.1 that answers for the
revision serving its traffic: `/health` (200, or what `unhealthy` set), `/env` (the env
vars of that revision; secrets as "secret:<name>:<version>", since the fake has no values),
`/revision`. It records the Authorization headers it receives. A service with internal
ingress answers 404 to all of it, as Google's front end does for a request from outside.

Knobs: `fail_next_rollout` (the next new revision of a service fails, as a FAILED terminal
condition or as an operation error), `deny` (PERMISSION_DENIED), `unavailable` (UNAVAILABLE
N times), `lose_answer` (the work is done, the answer lost), `unhealthy`; `seed` and
`set_traffic` put in place what a team deployed some other way. Every RPC is recorded in
`calls`, before any knob answers it.

Like the real UpdateService, an update replaces the whole service with what it is sent:
whatever the client leaves out of it is gone.

It serves Cloud Run jobs too (`self.jobs`, jobs_fake.FakeJobs: Jobs, Executions, Tasks), their
tasks running as local processes from the same image map; the knobs above apply to their
calls (`service` is then the job id).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # no GOAWAY lines when the server stops

import grpc  # noqa: E402
from fake_containers import Containers, Running, read_image_map, read_running  # noqa: E402
from google.cloud import run_v2  # noqa: E402
from google.iam.v1 import iam_policy_pb2, policy_pb2  # noqa: E402
from google.longrunning import operations_pb2  # noqa: E402
from google.protobuf import any_pb2  # noqa: E402
from google.rpc import code_pb2, status_pb2  # noqa: E402
from grpc_fake import GrpcFake, unary  # noqa: E402
from jobs_fake import FakeJobs  # noqa: E402
from logging_fake import FakeLogging  # noqa: E402
from storage_emulator import StorageEmulator  # noqa: E402

MUTATING = frozenset({
    "CreateService", "UpdateService", "DeleteService", "SetIamPolicy",
    "CreateJob", "UpdateJob", "DeleteJob", "RunJob", "CancelExecution", "DeleteExecution",
})
_PERMISSIONS = {
    "GetService": "run.services.get",
    "CreateService": "run.services.create",
    "UpdateService": "run.services.update",
    "DeleteService": "run.services.delete",
    "GetIamPolicy": "run.services.getIamPolicy",
    "SetIamPolicy": "run.services.setIamPolicy",
    "GetOperation": "run.operations.get",
    "CreateJob": "run.jobs.create",
    "GetJob": "run.jobs.get",
    "ListJobs": "run.jobs.list",
    "UpdateJob": "run.jobs.update",
    "DeleteJob": "run.jobs.delete",
    "RunJob": "run.jobs.run",  # with overrides, the real API asks run.jobs.runWithOverrides
    "GetExecution": "run.executions.get",
    "ListExecutions": "run.executions.list",
    "CancelExecution": "run.executions.cancel",
    "DeleteExecution": "run.executions.delete",
    "GetTask": "run.tasks.get",
    "ListTasks": "run.tasks.list",
}
State = run_v2.Condition.State
INTERNAL_INGRESS = (
    run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_ONLY,
    run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER,
)
LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION


@dataclass(frozen=True)
class Call:
    method: str
    resource: str  # the service, job, execution, task (or operation) the call was about

    @property
    def service(self) -> str:
        """The service id: `backend` of `projects/p/locations/r/services/backend`; a job's
        id for a call about a job, its executions or tasks."""
        parts = self.resource.split("/")
        return parts[5] if len(parts) > 5 and parts[4] in ("services", "jobs") else ""


@dataclass
class _Rule:
    code: grpc.StatusCode
    message: str
    method: str | None  # None: every method
    service: str | None  # None: every service
    times: int | None  # None: forever

    def matches(self, call: Call) -> bool:
        return (self.method in (None, call.method)) and (
            self.service in (None, call.service)
        )


@dataclass
class _Failure:
    message: str
    as_operation_error: bool


@dataclass
class FakeService:
    service: run_v2.Service
    http: ThreadingHTTPServer
    revisions: dict[str, run_v2.RevisionTemplate] = field(default_factory=dict)
    count: int = 0
    health_status: int = 200
    policy: policy_pb2.Policy = field(default_factory=policy_pb2.Policy)
    auth_headers: list[str] = field(default_factory=list)
    tag_servers: dict[str, ThreadingHTTPServer] = field(default_factory=dict)


class FakeCloudRun(GrpcFake):
    def __init__(self, containers: Containers | None = None) -> None:
        self.containers = containers  # revisions that run a local command (fake_containers)
        self.calls: list[Call] = []
        self.services: dict[str, FakeService] = {}  # by service id
        self._operations: dict[str, operations_pb2.Operation] = {}
        self._rules: list[_Rule] = []
        self._failures: dict[str, _Failure] = {}
        self._lost: list[tuple[str, str]] = []
        self._lags: dict[str, int] = {}
        self._lagging: dict[str, tuple[int, run_v2.Service]] = {}  # GetServices left, shown
        self._concurrent: dict[str, str] = {}
        self._stuck: set[str] = set()
        self._iam_races: dict[str, str] = {}
        self._no_public: set[str] = set()
        self._never_done: set[str] = set()  # operation names
        self._lock = threading.RLock()
        # Jobs, executions, tasks: the same calls record, knobs, operations and lock.
        self.jobs = FakeJobs(self._enter, self._operations, self._lock, containers, _check_labels)

    # --- lifecycle -------------------------------------------------------------------------------

    def handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        op_out = operations_pb2.Operation.SerializeToString
        services = grpc.method_handlers_generic_handler(
            "google.cloud.run.v2.Services",
            {
                "GetService": unary(
                    self._get, run_v2.GetServiceRequest.deserialize, run_v2.Service.serialize
                ),
                "CreateService": unary(
                    self._create, run_v2.CreateServiceRequest.deserialize, op_out
                ),
                "UpdateService": unary(
                    self._update, run_v2.UpdateServiceRequest.deserialize, op_out
                ),
                "DeleteService": unary(
                    self._delete, run_v2.DeleteServiceRequest.deserialize, op_out
                ),
                "GetIamPolicy": unary(
                    self._get_iam, iam_policy_pb2.GetIamPolicyRequest.FromString,
                    policy_pb2.Policy.SerializeToString,
                ),
                "SetIamPolicy": unary(
                    self._set_iam, iam_policy_pb2.SetIamPolicyRequest.FromString,
                    policy_pb2.Policy.SerializeToString,
                ),
            },
        )
        operations = grpc.method_handlers_generic_handler(
            "google.longrunning.Operations",
            {
                "GetOperation": unary(
                    self._get_operation, operations_pb2.GetOperationRequest.FromString, op_out
                ),
            },
        )
        return (services, operations, *self.jobs.handlers())

    def stop(self) -> None:
        super().stop()
        for fake in self.services.values():
            for server in (fake.http, *fake.tag_servers.values()):
                server.shutdown()
                server.server_close()
        if self.containers is not None:
            self.containers.stop_all()
        self.jobs.stop()

    # --- knobs -----------------------------------------------------------------------------------

    def fail_next_rollout(
        self, service: str, message: str, *, as_operation_error: bool = False
    ) -> None:
        """The next new revision of `service` does not become ready: its terminal condition
        is FAILED (or the operation ends with an error) and traffic stays where it was."""
        with self._lock:
            self._failures[service] = _Failure(message, as_operation_error)

    def deny(self, service: str | None = None, method: str | None = None) -> None:
        """PERMISSION_DENIED on every call (or on `method`) about `service`, forever."""
        with self._lock:
            self._rules.append(
                _Rule(grpc.StatusCode.PERMISSION_DENIED, "", method, service, None)
            )

    def unavailable(self, method: str | None, times: int, service: str | None = None) -> None:
        """UNAVAILABLE for the next `times` calls of `method` (None: any method)."""
        with self._lock:
            self._rules.append(
                _Rule(grpc.StatusCode.UNAVAILABLE, "The service is currently unavailable.",
                      method, service, times)
            )

    def lose_answer(self, method: str, service: str) -> None:
        """The next `method` call about `service` does its work, then answers DEADLINE_EXCEEDED,
        as when the answer is lost on the way back."""
        with self._lock:
            self._lost.append((method, service))

    def exhausted(self, method: str | None, times: int, service: str | None = None) -> None:
        """RESOURCE_EXHAUSTED (a per-minute quota) for the next `times` calls of `method`."""
        with self._lock:
            self._rules.append(
                _Rule(grpc.StatusCode.RESOURCE_EXHAUSTED,
                      "Quota exceeded for quota metric 'Write requests' and limit 'Write"
                      " requests per minute per region' of service 'run.googleapis.com'.",
                      method, service, times)
            )

    def revision_conflict(self, service: str) -> None:
        """The next UpdateService of `service` is refused with the 409 Cloud Run gives when a
        revision name is taken by another template."""
        with self._lock:
            self._rules.append(
                _Rule(grpc.StatusCode.ALREADY_EXISTS,
                      f"Revision named '{service}-00001-abc' with different configuration"
                      " already exists.", "UpdateService", service, 1)
            )

    def iam_race(self, service: str, member: str) -> None:
        """Right after the next GetIamPolicy of `service`, someone else binds `member` to
        roles/run.invoker: a write based on that read must fail on its etag."""
        with self._lock:
            self._iam_races[service] = member

    def forbid_public(self, service: str) -> None:
        """An organization policy (iam.allowedPolicyMemberDomains): SetIamPolicy refuses any
        allUsers or allAuthenticatedUsers binding on `service`, for good."""
        with self._lock:
            self._no_public.add(service)

    def stuck(self, service: str) -> None:
        """The next rollout of `service` never ends: its operation is never done."""
        with self._lock:
            self._stuck.add(service)

    def lag(self, service: str, gets: int = 2) -> None:
        """The next rollout of `service` is reported done while Cloud Run still reconciles:
        the operation's service, and the next `gets` GetService answers, show `reconciling`,
        an observed_generation behind the generation, and the new revision not ready yet."""
        with self._lock:
            self._lags[service] = gets

    def concurrent_deploy(self, service: str, deploy_id: str = "teammate") -> None:
        """Right after the next update of `service`, a teammate's deploy replaces its template
        (another deploy id, another image): their revision is the latest, ready one."""
        with self._lock:
            self._concurrent[service] = deploy_id

    def unhealthy(self, service: str, status: int = 503) -> None:
        with self._lock:
            self.services[service].health_status = status

    def seed(self, name: str, service: run_v2.Service) -> str:
        """A service deployed by someone else (`name`: its full resource name), with its
        first revision ready and serving; returns that revision's name."""
        with self._lock:
            service_id = _service_id(name)
            svc = _copy(service)
            svc.name = name
            svc.uid = str(uuid.uuid4())
            svc.generation = 1
            http = self._start_http(service_id)
            svc.uri = f"http://127.0.0.1:{http.server_address[1]}"
            svc.urls = [svc.uri]
            fake = FakeService(svc, http)
            self.services[service_id] = fake
            self._roll_out(fake, new_template=True)
            return fake.service.latest_created_revision.rsplit("/", 1)[-1]

    def seed_running(self, running: list[Running]) -> dict[str, str]:
        """`seed` each service of the list, in order (`{uri:ID}` in an env value is the URL of
        one seeded before); returns each service id's serving revision."""
        seeded: dict[str, str] = {}
        for entry in running:
            env = [
                run_v2.EnvVar(name=name, value=re.sub(
                    r"\{uri:([^}]+)\}", lambda m: self.service(m[1]).uri, value
                ))
                for name, value in entry.env.items()
            ]
            container = run_v2.Container(image=entry.image, env=env)
            service = run_v2.Service(template=run_v2.RevisionTemplate(containers=[container]))
            service_id = _service_id(entry.service)
            seeded[service_id] = self.seed(entry.service, service)
            if not self.service(service_id).latest_ready_revision:
                raise RuntimeError(
                    f"{service_id}: {self.service(service_id).terminal_condition.message}"
                )
        return seeded

    def set_traffic(self, service: str, traffic: list[run_v2.TrafficTarget]) -> None:
        """Traffic set by someone else (a revision tag, a pinned revision)."""
        with self._lock:
            fake = self.services[service]
            fake.service.traffic = traffic
            fake.service.traffic_statuses = self._traffic_statuses(fake)
            fake.service.etag = uuid.uuid4().hex
            self._scale(fake)

    # --- inspection ------------------------------------------------------------------------------

    def mutating_calls(self) -> list[Call]:
        return [c for c in self.calls if c.method in MUTATING]

    def count(self, method: str, service: str | None = None) -> int:
        return sum(
            1 for c in self.calls if c.method == method and service in (None, c.service)
        )

    def service(self, service: str) -> run_v2.Service:
        with self._lock:
            return _copy(self.services[service].service)

    def template(self, service: str, revision: str) -> run_v2.RevisionTemplate:
        with self._lock:
            return self.services[service].revisions[revision]

    def tagged_revision(self, service: str, tag: str) -> str:
        """The revision a tag points at now ("" once the tag is gone)."""
        with self._lock:
            for status in self.services[service].service.traffic_statuses:
                if status.tag == tag:
                    return status.revision
            return ""

    def tags(self, service: str) -> dict[str, str]:
        """Each revision tag of `service`, and the revision it points at."""
        with self._lock:
            return {
                s.tag: s.revision for s in self.services[service].service.traffic_statuses
                if s.tag
            }

    def serving_revision(self, service: str) -> str:
        """The revision that gets 100% of the traffic (the fake serves one at a time)."""
        with self._lock:
            svc = self.services[service].service
            for status in svc.traffic_statuses:
                if status.percent == 100:
                    return status.revision
            return ""

    # --- RPCs ------------------------------------------------------------------------------------

    def _enter(self, method: str, resource: str, context: grpc.ServicerContext) -> None:
        """Record the call; answer it with an error when a knob says so."""
        call = Call(method, resource)
        with self._lock:
            self.calls.append(call)
            for rule in self._rules:
                if rule.matches(call) and (rule.times is None or rule.times > 0):
                    if rule.times is not None:
                        rule.times -= 1
                    message = rule.message or (
                        f"Permission '{_PERMISSIONS[method]}' denied on resource"
                        f" '{resource}' (or resource may not exist)."
                    )
                    break
            else:
                return
        context.abort(rule.code, message)

    def _maybe_lose(self, method: str, service: str, context: grpc.ServicerContext) -> None:
        with self._lock:
            if (method, service) not in self._lost:
                return
            self._lost.remove((method, service))
        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    def _get(self, request: run_v2.GetServiceRequest, context: grpc.ServicerContext) -> Any:
        self._enter("GetService", request.name, context)
        with self._lock:
            service_id = _service_id(request.name)
            fake = self.services.get(service_id)
            if fake is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Resource '{request.name}' was not found")
            if service_id in self._lagging:
                left, shown = self._lagging[service_id]
                if left > 1:
                    self._lagging[service_id] = (left - 1, shown)
                else:
                    del self._lagging[service_id]
                return _copy(shown)
            return _copy(fake.service)

    def _create(self, request: run_v2.CreateServiceRequest, context: grpc.ServicerContext) -> Any:
        name = f"{request.parent}/services/{request.service_id}"
        self._enter("CreateService", name, context)
        _check_labels(request.service, context)
        with self._lock:
            if request.service_id in self.services:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"Resource '{name}' already exists.")
            svc = _copy(request.service)
            svc.name = name
            svc.uid = str(uuid.uuid4())
            svc.generation = 1
            http = self._start_http(request.service_id)
            svc.uri = f"http://127.0.0.1:{http.server_address[1]}"
            svc.urls = [svc.uri]
            fake = FakeService(svc, http)
            self.services[request.service_id] = fake
            error = self._roll_out(fake, new_template=True)
            operation = self._operation(fake, error)
        self._maybe_lose("CreateService", request.service_id, context)
        return operation

    def _update(self, request: run_v2.UpdateServiceRequest, context: grpc.ServicerContext) -> Any:
        name = request.service.name
        self._enter("UpdateService", name, context)
        _check_labels(request.service, context)
        with self._lock:
            fake = self.services.get(_service_id(name))
            if fake is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Resource '{name}' was not found")
            old = fake.service
            if request.service.etag and request.service.etag != old.etag:
                context.abort(grpc.StatusCode.ABORTED, "etag mismatch: the service changed")
            named = request.service.template.revision
            if named and named in fake.revisions and run_v2.RevisionTemplate.pb(
                fake.revisions[named]
            ) != run_v2.RevisionTemplate.pb(request.service.template):
                context.abort(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"Revision named '{named}' with different configuration already exists.",
                )
            for target in request.service.traffic:
                if (
                    target.type_ == REVISION
                    and target.revision not in fake.revisions
                    and target.revision != named
                ):
                    context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"Revision named '{target.revision}' does not exist.",
                    )
            svc = _copy(request.service)
            for output_only in ("uid", "uri", "urls", "latest_ready_revision",
                                "latest_created_revision", "create_time"):
                setattr(svc, output_only, getattr(old, output_only))
            svc.generation = old.generation + 1
            changed = run_v2.RevisionTemplate.pb(svc.template) != run_v2.RevisionTemplate.pb(
                old.template
            )
            fake.service = svc
            before = fake.service.latest_ready_revision
            error = self._roll_out(fake, new_template=changed)
            teammate = self._concurrent.pop(_service_id(name), None)
            if teammate is not None:
                theirs = _copy(fake.service)
                theirs.template.annotations["deployloop/deploy-id"] = teammate
                theirs.template.containers[0].image += "-teammate"
                theirs.generation += 1
                fake.service = theirs
                self._roll_out(fake, new_template=True)
            operation = self._operation(fake, error, lag_from=before)
        self._maybe_lose("UpdateService", _service_id(name), context)
        return operation

    def _delete(self, request: run_v2.DeleteServiceRequest, context: grpc.ServicerContext) -> Any:
        self._enter("DeleteService", request.name, context)
        with self._lock:
            fake = self.services.pop(_service_id(request.name), None)
            if fake is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Resource '{request.name}' was not found")
            operation = self._operation(fake, None)
        for server in (fake.http, *fake.tag_servers.values()):
            server.shutdown()
            server.server_close()
        if self.containers is not None:
            self.containers.keep_only(_service_id(request.name), set())
        return operation

    def _get_iam(
        self, request: iam_policy_pb2.GetIamPolicyRequest, context: grpc.ServicerContext
    ) -> Any:
        self._enter("GetIamPolicy", request.resource, context)
        with self._lock:
            fake = self.services.get(_service_id(request.resource))
            if fake is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Resource '{request.resource}' not found")
            if not fake.policy.etag:
                fake.policy.etag = uuid.uuid4().bytes
            policy = policy_pb2.Policy()
            policy.CopyFrom(fake.policy)
            member = self._iam_races.pop(_service_id(request.resource), None)
            if member is not None:
                # A teammate's change lands between this read and the caller's write.
                fake.policy.bindings.add(role="roles/run.invoker", members=[member])
                fake.policy.etag = uuid.uuid4().bytes
            return policy

    def _set_iam(
        self, request: iam_policy_pb2.SetIamPolicyRequest, context: grpc.ServicerContext
    ) -> Any:
        self._enter("SetIamPolicy", request.resource, context)
        with self._lock:
            fake = self.services.get(_service_id(request.resource))
            if fake is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Resource '{request.resource}' not found")
            public = any(
                "allUsers" in b.members or "allAuthenticatedUsers" in b.members
                for b in request.policy.bindings
            )
            if public and _service_id(request.resource) in self._no_public:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "One or more users named in the policy do not belong to a permitted"
                    " customer, perhaps due to an organization policy.",
                )
            if request.policy.etag and request.policy.etag != fake.policy.etag:
                context.abort(
                    grpc.StatusCode.ABORTED,
                    "There were concurrent policy changes. Please retry the whole"
                    " read-modify-write with exponential backoff.",
                )
            fake.policy.CopyFrom(request.policy)
            fake.policy.etag = uuid.uuid4().bytes
            policy = policy_pb2.Policy()
            policy.CopyFrom(fake.policy)
            return policy

    def _get_operation(
        self, request: operations_pb2.GetOperationRequest, context: grpc.ServicerContext
    ) -> Any:
        self._enter("GetOperation", request.name, context)
        with self._lock:
            operation = self._operations.get(request.name)
            if operation is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Operation '{request.name}' not found")
            if request.name in self._never_done:
                return operations_pb2.Operation(name=request.name, done=False)
            return operation

    # --- behaviour -------------------------------------------------------------------------------

    def _roll_out(self, fake: FakeService, new_template: bool) -> str | None:
        """Make the new revision (if the template changed) and route traffic; return the
        error of the operation, if the knob asked for one."""
        svc = fake.service
        service_id = _service_id(svc.name)
        failure = None
        if new_template:
            fake.count += 1
            revision = svc.template.revision or f"{service_id}-{fake.count:05d}-abc"
            fake.revisions[revision] = _copy(svc.template)
            svc.latest_created_revision = f"{svc.name}/revisions/{revision}"
            failure = self._failures.pop(service_id, None)
            if failure is None and self.containers is not None:
                # Ready once its container listens on PORT, as on Cloud Run.
                plain = {v.name: v.value for v in svc.template.containers[0].env
                         if not v.value_source.secret_key_ref.secret}
                refused = self.containers.start(
                    service_id, revision, svc.template.containers[0].image, plain
                )
                if refused is not None:
                    failure = _Failure(refused, as_operation_error=False)
            if failure is None:
                svc.latest_ready_revision = svc.latest_created_revision
        svc.etag = uuid.uuid4().hex
        svc.observed_generation = svc.generation
        svc.traffic_statuses = self._traffic_statuses(fake)
        self._scale(fake)
        created = svc.latest_created_revision.rsplit("/", 1)[-1]
        if failure is not None:
            text = f"Revision '{created}' is not ready and cannot serve traffic. {failure.message}"
            svc.terminal_condition = run_v2.Condition(
                type_="Ready", state=State.CONDITION_FAILED, message=text,
                reason=run_v2.Condition.CommonReason.REVISION_FAILED,
            )
            svc.conditions = [
                run_v2.Condition(type_="ConfigurationsReady", state=State.CONDITION_FAILED,
                                 message=text),
                run_v2.Condition(type_="RoutesReady", state=State.CONDITION_SUCCEEDED),
            ]
            return text if failure.as_operation_error else None
        svc.terminal_condition = run_v2.Condition(type_="Ready", state=State.CONDITION_SUCCEEDED)
        svc.conditions = [
            run_v2.Condition(type_="ConfigurationsReady", state=State.CONDITION_SUCCEEDED),
            run_v2.Condition(type_="RoutesReady", state=State.CONDITION_SUCCEEDED),
        ]
        return None

    def _scale(self, fake: FakeService) -> None:
        """Stop the processes of revisions with no traffic and no tag: Cloud Run scales
        those to zero."""
        if self.containers is not None:
            self.containers.keep_only(
                _service_id(fake.service.name),
                {s.revision for s in fake.service.traffic_statuses},
            )

    def _traffic_statuses(self, fake: FakeService) -> list[run_v2.TrafficTargetStatus]:
        svc = fake.service
        ready = svc.latest_ready_revision.rsplit("/", 1)[-1]
        targets = list(svc.traffic) or [run_v2.TrafficTarget(type_=LATEST, percent=100)]
        statuses = []
        for target in targets:
            revision = ready if target.type_ == LATEST else target.revision
            if revision:
                status = run_v2.TrafficTargetStatus(
                    type_=target.type_, revision=revision, percent=target.percent,
                    tag=target.tag,
                )
                if target.tag:  # its own URL, answering for that revision
                    if target.tag not in fake.tag_servers:
                        fake.tag_servers[target.tag] = self._start_http(
                            _service_id(svc.name), target.tag
                        )
                    port = fake.tag_servers[target.tag].server_address[1]
                    status.uri = f"http://127.0.0.1:{port}"
                statuses.append(status)
        return statuses

    def _operation(
        self, fake: FakeService, error: str | None, lag_from: str | None = None
    ) -> operations_pb2.Operation:
        """An operation not done yet; GetOperation answers it done, with the service (as it
        looks while still reconciling, when `lag` asked for that)."""
        name = f"{fake.service.name.split('/services/')[0]}/operations/{uuid.uuid4()}"
        if _service_id(fake.service.name) in self._stuck:
            self._stuck.discard(_service_id(fake.service.name))
            self._never_done.add(name)
        shown = fake.service
        gets = self._lags.pop(_service_id(shown.name), 0)
        if gets:
            shown = _copy(fake.service)
            shown.reconciling = True
            shown.observed_generation = shown.generation - 1
            shown.latest_ready_revision = lag_from or ""
            self._lagging[_service_id(shown.name)] = (gets, shown)
        packed = any_pb2.Any()
        packed.Pack(run_v2.Service.pb(shown))
        self._operations[name] = done = operations_pb2.Operation(
            name=name, done=True, metadata=packed
        )
        if error is None:
            done.response.CopyFrom(packed)
        else:
            done.error.CopyFrom(
                status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message=error)
            )
        return operations_pb2.Operation(name=name, done=False, metadata=packed)

    def _start_http(self, service_id: str, tag: str = "") -> ThreadingHTTPServer:
        fake_api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                self._serve("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._serve("POST")

            def do_PUT(self) -> None:  # noqa: N802
                self._serve("PUT")

            def do_PATCH(self) -> None:  # noqa: N802
                self._serve("PATCH")

            def do_DELETE(self) -> None:  # noqa: N802
                self._serve("DELETE")

            def _serve(self, method: str) -> None:
                with fake_api._lock:
                    fake = fake_api.services.get(service_id)
                    if fake is None:
                        self._send(404, {"error": "deleted"})
                        return
                    fake.auth_headers.append(self.headers.get("Authorization", ""))
                    revision = (
                        fake_api.tagged_revision(service_id, tag) if tag
                        else fake_api.serving_revision(service_id)
                    )
                    template = fake.revisions.get(revision)
                    status = fake.health_status
                    internal = fake.service.ingress in INTERNAL_INGRESS
                running = (
                    fake_api.containers.address(revision)
                    if fake_api.containers is not None else None
                )
                if internal:
                    # As from the internet: Google's front end answers for an internal
                    # service with a 404 page of its own, never reaching the container.
                    self._send(404, {"error": "Page not found (internal ingress)"})
                elif running is not None:
                    forward(self, method, running)
                elif method != "GET":
                    self._send(405, {"error": f"{method} not served by the fake"})
                elif self.path == "/health":
                    code = status if template is not None else 503
                    self._send(code, {"ok": code == 200, "revision": revision})
                elif self.path == "/env" and template is not None:
                    self._send(200, _env(template))
                elif self.path == "/revision":
                    self._send(200, {"revision": revision})
                else:
                    self._send(404, {"error": "not found"})

            def _send(self, code: int, body: object) -> None:
                send_json(self, code, body)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return server


_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")


def send_json(handler: BaseHTTPRequestHandler, code: int, body: object) -> None:
    """A JSON answer with its length: what the fakes' small HTTP servers send."""
    data = json.dumps(body).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
    "upgrade", "host",
})


def forward(handler: BaseHTTPRequestHandler, method: str, address: tuple[str, int]) -> None:
    """Pass a request to a revision's process and stream its answer back as it comes (an
    event stream's events too), the way Cloud Run's front end does."""
    length = int(handler.headers.get("Content-Length") or 0)
    body = handler.rfile.read(length) if length else None
    headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
    connection = http.client.HTTPConnection(*address, timeout=300)
    try:
        connection.request(method, handler.path, body=body, headers=headers)
        answer = connection.getresponse()
    except OSError as exc:
        connection.close()
        handler.send_error(503, f"the revision's container did not answer: {exc}")
        return
    try:
        handler.send_response(answer.status, answer.reason)
        for key, value in answer.getheaders():
            if key.lower() not in _HOP_BY_HOP:
                handler.send_header(key, value)
        handler.send_header("Connection", "close")  # the body ends when this connection does
        handler.end_headers()
        while chunk := answer.read1(65536):
            handler.wfile.write(chunk)
            handler.wfile.flush()
    except OSError:
        pass  # the client or the container went away mid-answer
    finally:
        connection.close()
        handler.close_connection = True


def _check_labels(
    service: run_v2.Service | run_v2.Job, context: grpc.ServicerContext
) -> None:
    """Cloud Run refuses labels that break Google's rules, on the service (or job) and its
    template."""
    for where, labels in (("labels", service.labels), ("template.labels", service.template.labels)):
        for key, value in labels.items():
            if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"The request has errors: {where}: invalid label {key!r}: {value!r}",
                )


def _service_id(name: str) -> str:
    parts = name.split("/")
    return parts[5] if len(parts) > 5 else ""


def _copy(message: Any) -> Any:
    return type(message).deserialize(type(message).serialize(message))


def _env(template: run_v2.RevisionTemplate) -> dict[str, str]:
    out: dict[str, str] = {}
    for var in template.containers[0].env:
        ref = var.value_source.secret_key_ref
        out[var.name] = f"secret:{ref.secret}:{ref.version}" if ref.secret else var.value
    return out


def main() -> int:
    """Run the fake on its own, to try the cloudrun target without a Google account."""
    parser = argparse.ArgumentParser(
        description="A fake Cloud Run Admin API on 127.0.0.1, for the cloudrun target.",
        epilog="With a command after --, it runs that command with CLOUDRUN_EMULATOR_HOST set,"
        " then stops, exiting with the command's exit code.",
    )
    parser.add_argument(
        "--images", type=Path, metavar="TOML",
        help="run revisions for real: an [images] table mapping a repository to a local"
        " command, and [[running]] services deployed before (see fake_containers.py)",
    )
    parser.add_argument(
        "--logs", type=Path, default=Path(".loop-fake/logs"), metavar="DIR",
        help="where the revisions' processes write their output (default: %(default)s)",
    )
    parser.add_argument(
        "--task-env", action="append", default=[], metavar="NAME=VALUE",
        help="a variable every Cloud Run job task gets, for what the project's network gives"
        " it (an emulator's host, ...); repeatable",
    )
    parser.add_argument(
        "--storage", action="append", default=[], metavar="BUCKET",
        help="also start a Cloud Storage emulator (gcp-storage-emulator) holding this bucket;"
        " the command and every job task get STORAGE_EMULATOR_HOST; repeatable",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- a command to run")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    for item in args.task_env:
        if "=" not in item or not item.split("=", 1)[0]:
            parser.error(f"--task-env {item!r}: expected NAME=VALUE")
    containers = (
        Containers(read_image_map(args.images), args.logs) if args.images is not None else None
    )
    # SIGTERM (`kill`, make) ends the fake as Ctrl-C does, so no revision process is left.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging = FakeLogging(args.logs).start() if containers is not None else None
    storage = None
    try:
        if args.storage:
            storage = StorageEmulator(args.logs / "storage.log", tuple(args.storage)).start()
            os.environ["STORAGE_EMULATOR_HOST"] = storage.host  # the command's, below
            args.task_env.append(f"STORAGE_EMULATOR_HOST={storage.host}")
            print(f"fake: Cloud Storage emulator on {storage.host} with gs://"
                  + ", gs://".join(args.storage), flush=True)
        return _serve(args, containers, logging, command)
    finally:
        if storage is not None:
            storage.stop()
        if logging is not None:
            logging.stop()


def _serve(
    args: argparse.Namespace,
    containers: Containers | None,
    logging: FakeLogging | None,
    command: list[str],
) -> int:
    with FakeCloudRun(containers) as fake:
        for item in args.task_env:
            name, _, value = item.partition("=")
            fake.jobs.task_env[name] = value
        if args.images is not None:
            for service, revision in fake.seed_running(read_running(args.images)).items():
                print(f"fake: {service} was deployed before, serving {revision}", flush=True)
        if not command:
            print(f"fake Cloud Run Admin API on {fake.address}; Ctrl-C stops it. In another shell:")
            hosts = f"CLOUDRUN_EMULATOR_HOST={fake.address}"
            if logging is not None:
                hosts += f" LOGGING_EMULATOR_HOST={logging.address}"
            print(f"  {hosts} loop run --env <a cloudrun env>")
            if containers is not None:
                print(f"  revisions and job tasks run locally; their output is in {args.logs}/"
                      " (tasks' in jobs/<execution>/)")
            try:
                threading.Event().wait()
            except KeyboardInterrupt:
                pass
            return 0
        print(f"fake Cloud Run Admin API on {fake.address}", flush=True)
        env = {**os.environ, "CLOUDRUN_EMULATOR_HOST": fake.address}
        if logging is not None:  # the revisions' output, as Cloud Logging entries
            env["LOGGING_EMULATOR_HOST"] = logging.address
        try:
            child = subprocess.Popen(command, env=env)
        except OSError as exc:
            print(f"cloudrun_fake: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
            return 127
        # Ctrl-C reaches the command too (same terminal): it ends its own way, then the fake
        # stops. A SIGTERM to the fake is passed on to it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: child.terminate())
        return child.wait()


if __name__ == "__main__":
    sys.exit(main())
