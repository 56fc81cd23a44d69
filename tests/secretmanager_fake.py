"""An in-process fake of the Secret Manager API v1, for the real google-cloud-secret-manager client.

A `grpc.server` on 127.0.0.1:<free port> answers `google.cloud.secretmanager.v1.
SecretManagerService` GetSecretVersion and GetIamPolicy with the client's own message types.
Point the client at it with `SECRETMANAGER_EMULATOR_HOST=<fake.address>`.

Like the real API: a malformed name is INVALID_ARGUMENT; an unknown secret or version is
NOT_FOUND; `latest` is the most recently added version, whatever its state (a disabled latest
version is not skipped for an older enabled one); a caller without access is PERMISSION_DENIED
(`deny`). Values are never needed: the fake holds states and IAM bindings only.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc  # noqa: E402
from google.cloud import secretmanager_v1  # noqa: E402
from google.iam.v1 import iam_policy_pb2, policy_pb2  # noqa: E402
from grpc_fake import GrpcFake, unary  # noqa: E402

State = secretmanager_v1.SecretVersion.State
_VERSION_NAME = re.compile(r"^projects/([^/]+)/secrets/([^/]+)/versions/([^/]+)$")
_SECRET_NAME = re.compile(r"^projects/([^/]+)/secrets/([^/]+)$")


@dataclass
class FakeSecret:
    states: list[State]  # version 1 first
    readers: set[str] = field(default_factory=set)  # members with secretAccessor


class FakeSecretManager(GrpcFake):
    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], FakeSecret] = {}  # (project, secret)
        self.calls: list[tuple[str, str]] = []
        self._denied: set[str] = set()
        self._lock = threading.Lock()

    def add(
        self, project: str, secret: str, *states: State, readers: tuple[str, ...] = ()
    ) -> None:
        """A secret with versions in these states (ENABLED when none given)."""
        with self._lock:
            self.secrets[(project, secret)] = FakeSecret(
                list(states) or [State.ENABLED], set(readers)
            )

    def deny(self, method: str) -> None:
        """Every call of `method` is PERMISSION_DENIED: the caller lacks the permission."""
        self._denied.add(method)

    def handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        return (grpc.method_handlers_generic_handler(
            "google.cloud.secretmanager.v1.SecretManagerService",
            {
                "GetSecretVersion": unary(
                    self._get_version, secretmanager_v1.GetSecretVersionRequest.deserialize,
                    secretmanager_v1.SecretVersion.serialize,
                ),
                "GetIamPolicy": unary(
                    self._get_iam, iam_policy_pb2.GetIamPolicyRequest.FromString,
                    policy_pb2.Policy.SerializeToString,
                ),
            },
        ),)

    def _enter(self, method: str, name: str, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls.append((method, name))
        if method in self._denied:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"Permission denied on resource '{name}' (or it may not exist).")

    def _get_version(
        self, request: secretmanager_v1.GetSecretVersionRequest, context: grpc.ServicerContext
    ) -> Any:
        self._enter("GetSecretVersion", request.name, context)
        match = _VERSION_NAME.match(request.name)
        if match is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"Invalid resource field value in the request: {request.name}")
        project, secret, version = match.groups()
        with self._lock:
            found = self.secrets.get((project, secret))
            if found is None:
                context.abort(grpc.StatusCode.NOT_FOUND,
                              f"Secret [projects/{project}/secrets/{secret}] not found or has"
                              " no versions.")
            number = len(found.states) if version == "latest" else int(version)
            if not 1 <= number <= len(found.states):
                context.abort(grpc.StatusCode.NOT_FOUND,
                              f"Secret Version [{request.name}] not found.")
            state = found.states[number - 1]
        return secretmanager_v1.SecretVersion(
            name=f"projects/{project}/secrets/{secret}/versions/{number}", state=state
        )

    def _get_iam(
        self, request: iam_policy_pb2.GetIamPolicyRequest, context: grpc.ServicerContext
    ) -> Any:
        self._enter("GetIamPolicy", request.resource, context)
        match = _SECRET_NAME.match(request.resource)
        if match is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"Invalid resource field value in the request: {request.resource}")
        with self._lock:
            found = self.secrets.get((match[1], match[2]))
            if found is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Secret [{request.resource}] not found.")
            policy = policy_pb2.Policy(etag=b"\x00\x01")
            if found.readers:
                policy.bindings.add(
                    role="roles/secretmanager.secretAccessor", members=sorted(found.readers)
                )
            return policy
